"""PNG plots written next to the model (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(log_history: Sequence[dict[str, Any]], main_metric: str, path: Path) -> Path | None:
    """Training/validation loss and the main validation metric against the step."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    metric_key = f"eval_{main_metric}"
    metric = [(h["step"], h[metric_key]) for h in log_history if metric_key in h]
    if not (train or evals or metric):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for points, label in ((train, "train loss"), (evals, "validation loss")):
        if points:
            axes[0].plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
    axes[0].set(xlabel="step", ylabel="loss", title="Loss")
    axes[0].legend()
    if metric:
        axes[1].plot(*zip(*metric), marker="o", color="tab:green")
    axes[1].set(xlabel="step", ylabel=main_metric, title=f"Validation {main_metric}")
    return _save(fig, path)


def confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path, max_classes: int = 40) -> Path:
    """Row-normalised confusion matrix (the ``max_classes`` most frequent classes when there are many)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    labels = list(labels)
    if len(labels) > max_classes:
        keep = np.argsort(-matrix.sum(axis=1))[:max_classes]
        matrix, labels = matrix[np.ix_(keep, keep)], [labels[i] for i in keep]
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalised)")
    if len(labels) <= 15:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, int(count), ha="center", va="center", fontsize=8,
                    color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def image_grid(
    images: Sequence[np.ndarray], titles: Sequence[str], path: Path, columns: int = 4, suptitle: str = ""
) -> Path:
    """A grid of RGB images (H, W, 3 ``uint8``) with a title each."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def bar_chart(values: dict[str, float], path: Path, title: str, xlabel: str) -> Path:
    """Horizontal bar chart, e.g. per-class IoU."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.3 * len(names) + 1)))
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title, xlim=(0, 1))
    return _save(fig, path)


def classification_top_losses(context: Any, path: Path) -> Path | None:
    """The validation images the model gets most wrong (highest loss), fastai's "top losses"."""
    trainer, dataset = context.trainer, context.eval_dataset
    limit = context.recipe.run.max_plot_images
    if dataset is None or len(dataset) == 0:
        return None
    model = trainer.model.eval()
    device = next(model.parameters()).device
    # Score every validation image (a seeded sample of 2048 on large sets, which are sorted by class).
    rows = np.random.default_rng(0).permutation(len(dataset))[:2048] if len(dataset) > 2048 else np.arange(len(dataset))
    collate = trainer.data_collator
    losses, preds = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            batch = collate([dataset[int(i)] for i in rows[start : start + 32]])
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits.float().cpu()
            losses.append(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none"))
            preds.append(logits.softmax(-1))
    loss, prob = torch.cat(losses), torch.cat(preds)
    order = torch.argsort(loss, descending=True)[:limit].tolist()
    id2label = trainer.model.config.id2label
    raw = context.data.validation
    image_column = context.recipe.data.image_column_name
    label_column = context.recipe.data.label_column_name
    from recipes.transforms import decode_to_tensor

    images, titles = [], []
    for i in order:
        row = raw[int(rows[i])]
        images.append(decode_to_tensor(row[image_column]).permute(1, 2, 0).numpy())
        guess = int(prob[i].argmax())
        titles.append(
            f"true: {id2label[row[label_column]]}\npred: {id2label[guess]} ({prob[i, guess]:.2f}) loss {loss[i]:.2f}"
        )
    return image_grid(images, titles, path, suptitle="Highest-loss validation images")
