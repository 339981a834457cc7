"""Semantic-segmentation plots and model-card sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.draw import plots
from recipes.tasks.base import RunContext
from recipes.tasks.segmentation import formats
from recipes.tasks.segmentation.data import IGNORED_COLOUR
from recipes.tasks.segmentation.transforms import logits_to_class_ids
from recipes.transforms import ProcessorGeometry


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def labels_note(context: RunContext) -> str:
    summary = context.data.summary
    ignored = ", ".join(summary.get("ignored_classes") or []) or "none"
    geometry = ProcessorGeometry.from_processor(context.image_processor)
    return (
        f"- Masks: {summary.get('mask_encoding', '?')} masks ({summary.get('layout', '?')} layout).\n"
        f"- `reduce_labels`: {summary.get('reduce_labels')}; classes mapped to `ignore_index` "
        f"({context.data.ignore_index}): {ignored}. Ignored pixels count neither in the loss nor in the metrics.\n"
        f"- Evaluation: the checkpoint's image processor makes the inputs (as `pipeline()` does) and brings the "
        f"masks to the same {geometry.height}x{geometry.width} geometry (nearest neighbour); logits are upsampled "
        "bilinearly to that size; mIoU averages the classes present in the predictions or the masks. The pipeline "
        "returns masks at each input image's own size."
    )


def training_palette(palette: formats.Palette | None, mapping: formats.LabelMapping) -> dict[int, tuple[int, ...]]:
    """Class id → RGB for plots and the card: the mask colours, or generated ones for index masks."""
    if palette is None:
        generated = formats.default_palette(list(mapping.id2label.values()))
        return {index: tuple(colour) for index, colour in enumerate(generated.colours)}
    by_name = dict(zip(palette.names, palette.colours))
    return {index: tuple(by_name[name]) for index, name in mapping.id2label.items()}


def colourise(class_ids: np.ndarray, palette: dict[int, tuple[int, ...]]) -> np.ndarray:
    """Class-id mask → ``(H, W, 3)`` ``uint8`` image; ignored / unknown ids in :data:`IGNORED_COLOUR`."""
    table = np.array([palette[i] for i in range(len(palette))] + [IGNORED_COLOUR], dtype=np.uint8)
    ids = np.where((class_ids >= 0) & (class_ids < len(palette)), class_ids, len(palette))
    return table[ids]


def displayable(pixel_values: torch.Tensor, geometry: ProcessorGeometry, processor: Any) -> np.ndarray:
    """Undo the processor's normalisation (and BGR order) of one input: ``(H, W, 3)`` ``uint8`` for plots."""
    mean = torch.tensor(geometry.mean).view(-1, 1, 1)
    std = torch.tensor(geometry.std).view(-1, 1, 1)
    pixels = (pixel_values.float() * std + mean) / geometry.rescale_factor
    if getattr(processor, "do_flip_channel_order", False):
        pixels = pixels.flip(0)
    return pixels.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def prediction_grid(context: RunContext, path: Path) -> Path | None:
    """Validation image | prediction | ground truth rows, coloured with the dataset's palette."""
    dataset = context.eval_dataset
    if dataset is None or len(dataset) == 0:
        return None
    rows = min(len(dataset), max(1, context.recipe.run.max_plot_images // 3))
    [(examples, batch, outputs)] = context.validation_outputs(range(rows), batch_size=rows)
    predicted = logits_to_class_ids(outputs.logits.float().cpu(), batch["labels"]).long().numpy()
    palette = context.data.palette
    images, titles = [], []
    geometry = ProcessorGeometry.from_processor(context.image_processor)
    for example, prediction in zip(examples, predicted):
        images += [
            displayable(example["pixel_values"], geometry, context.image_processor),
            colourise(prediction, palette),
            colourise(example["labels"].numpy(), palette),
        ]
        titles += ["image", "prediction", "ground truth (white: ignored)"]
    return plots.image_grid(images, titles, path, columns=3, suptitle="Validation predictions")
