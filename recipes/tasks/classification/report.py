"""Image-classification plots (confusion matrix, top losses) and model-card sections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recipes.decode.tensors import decode_to_tensor
from recipes.draw import plots
from recipes.tasks.base import RunContext

TOP_LOSS_SAMPLE = 2048
"""Most validation images scored for the top-losses plot (a seeded sample on larger sets)."""


def confusion_matrix_plot(context: RunContext, path: Path) -> Path | None:
    details = context.eval_details
    if not details.get("confusion_matrix"):
        return None
    return plots.confusion_matrix(np.asarray(details["confusion_matrix"]), details["labels"], path)


def top_losses_plot(context: RunContext, path: Path) -> Path | None:
    """The validation images the model gets most wrong (highest loss), fastai's "top losses"."""
    dataset = context.eval_dataset
    if dataset is None or len(dataset) == 0:
        return None
    # Score every validation image (a seeded sample on large sets, which are sorted by class).
    if len(dataset) > TOP_LOSS_SAMPLE:
        rows = np.random.default_rng(0).permutation(len(dataset))[:TOP_LOSS_SAMPLE]
    else:
        rows = np.arange(len(dataset))
    losses, probabilities = [], []
    for _, batch, outputs in context.validation_outputs(rows):
        logits = outputs.logits.float().cpu()
        losses.append(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none"))
        probabilities.append(logits.softmax(-1))
    loss, prob = torch.cat(losses), torch.cat(probabilities)
    order = torch.argsort(loss, descending=True)[: context.recipe.run.max_plot_images].tolist()
    id2label = context.trainer.model.config.id2label
    raw = context.data.validation
    image_column = context.recipe.data.image_column_name
    label_column = context.recipe.data.label_column_name
    images, titles = [], []
    for i in order:
        row = raw[int(rows[i])]
        images.append(decode_to_tensor(row[image_column]).permute(1, 2, 0).numpy())
        guess = int(prob[i].argmax())
        titles.append(
            f"true: {id2label[row[label_column]]}\npred: {id2label[guess]} ({prob[i, guess]:.2f}) loss {loss[i]:.2f}"
        )
    return plots.image_grid(images, titles, path, suptitle="Highest-loss validation images")


def per_class_markdown(per_class: dict[str, dict[str, float]]) -> str:
    rows = ["| Class | Precision | Recall | F1 |", "|---|---|---|---|"]
    rows += [f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} |" for name, v in per_class.items()]
    return "\n".join(rows)
