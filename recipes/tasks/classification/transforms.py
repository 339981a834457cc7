"""Image-classification transforms: augmentation presets on ``uint8`` tensors, the collate, the decode cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

from recipes.config import RecipeError
from recipes.transforms import ProcessorGeometry, decode_to_tensor, encode_raw_rgb, normalize_batch

# --------------------------------------------------------------------------- transforms


def build_train_augmentation(preset: str, height: int, width: int) -> v2.Compose:
    """Named training presets on ``uint8`` tensors: ``none``, ``basic`` (random-resized-crop + flip),
    ``strong`` (basic + TrivialAugmentWide + random erasing)."""
    size = (height, width)
    if preset == "none":
        return build_eval_transform(height, width)
    basic = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    if preset == "basic":
        return v2.Compose(basic)
    if preset == "strong":
        return v2.Compose([*basic, v2.TrivialAugmentWide(), v2.RandomErasing(p=0.25, value=0)])
    raise RecipeError(f"Unknown augmentation preset `{preset}` for image-classification: use none, basic or strong.")


def build_eval_transform(height: int, width: int, crop_pct: float = 0.875) -> v2.Compose:
    """Resize the short side to ``size / crop_pct`` then centre-crop to the model's input size."""
    resize = round(max(height, width) / crop_pct)
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop((height, width))])


def transform_classification_batch(
    batch: dict[str, list], *, image_column: str, label_column: str, augment: Callable
) -> dict[str, list]:
    """``with_transform`` function: decode, augment to ``uint8`` tensors, keep the labels."""
    return {
        "pixel_values": [augment(decode_to_tensor(record)) for record in batch[image_column]],
        "labels": list(batch[label_column]),
    }


def collate_classification(examples: list[dict[str, Any]], *, geometry: ProcessorGeometry) -> dict[str, torch.Tensor]:
    """Stack ``uint8`` images, normalise the batch at once, and stack the labels."""
    pixels = torch.stack([example["pixel_values"] for example in examples])
    return {
        "pixel_values": normalize_batch(pixels, geometry),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
    }


def decode_into_cache(batch: dict[str, list], *, image_column: str) -> dict[str, list]:
    """``Dataset.map`` function: replace encoded images by their decoded RGB pixels (lossless)."""
    return {
        image_column: [
            {"bytes": encode_raw_rgb(decode_to_tensor(record)), "path": record.get("path")}
            for record in batch[image_column]
        ]
    }


