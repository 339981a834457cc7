"""Semantic-segmentation transforms: joint image + mask augmentation presets, the collate, and
logits reduced to class ids before gathering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from recipes.config import RecipeError
from recipes.tasks.segmentation import masks
from recipes.tasks.segmentation.data import MASK_COLUMN
from recipes.transforms import ProcessorGeometry, decode_to_tensor, normalize_batch

# --------------------------------------------------------------------------- transforms


def build_train_augmentation(preset: str, height: int, width: int, mask_fill: int) -> v2.Compose:
    """Named presets applied jointly to an image and its ``tv_tensors.Mask`` (masks: nearest, padding
    ``mask_fill``): ``none`` (resize), ``basic`` (random scale 0.5-2x + crop + flip + brightness/contrast/saturation
    jitter), ``strong`` (basic + rotation, stronger jitter with hue, grey and blur)."""
    size = (height, width)
    if preset == "none":
        return build_eval_transform(height, width)
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}
    short_side = min(height, width)
    scale = v2.RandomResize(max(1, short_side // 2), short_side * 2, antialias=True)
    crop = v2.RandomCrop(size, pad_if_needed=True, fill=fill)
    if preset == "basic":
        return v2.Compose([scale, crop, v2.RandomHorizontalFlip(),
                           v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3)])
    if preset == "strong":
        return v2.Compose([
            scale,
            v2.RandomApply([v2.RandomRotation(10, fill=fill)], p=0.3),
            crop,
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
            v2.RandomGrayscale(p=0.1),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
        ])
    raise RecipeError(f"Unknown augmentation preset `{preset}` for semantic-segmentation: use none, basic or strong.")


def build_eval_transform(height: int, width: int) -> v2.Compose:
    """Resize image (bilinear) and mask (nearest) to the model's input size, as the image processor does."""
    return v2.Compose([v2.Resize((height, width), antialias=True)])


def transform_segmentation_batch(
    batch: dict[str, list], *, image_column: str, augment: Callable, stored_ignore: int, ignore_index: int
) -> dict[str, list]:
    """``with_transform`` function: decode image and class-id mask, augment them together, and
    return ``uint8`` images with ``int64`` labels (``ignore_index`` where ignored)."""
    pixel_values, labels = [], []
    for image_record, mask_record in zip(batch[image_column], batch[MASK_COLUMN]):
        image = tv_tensors.Image(decode_to_tensor(image_record))
        mask = tv_tensors.Mask(torch.from_numpy(masks.decode_class_ids(mask_record)))
        image, mask = augment(image, mask)
        label = mask.as_subclass(torch.Tensor).long()
        if stored_ignore != ignore_index:
            label[label == stored_ignore] = ignore_index
        pixel_values.append(image.as_subclass(torch.Tensor))
        labels.append(label)
    return {"pixel_values": pixel_values, "labels": labels}


def collate_segmentation(examples: list[dict[str, Any]], *, geometry: ProcessorGeometry) -> dict[str, torch.Tensor]:
    """Stack ``uint8`` images, normalise the batch at once, and stack the label masks."""
    pixels = torch.stack([example["pixel_values"] for example in examples])
    return {
        "pixel_values": normalize_batch(pixels, geometry),
        "labels": torch.stack([example["labels"] for example in examples]),
    }


UPSAMPLE_BUDGET = 2**26
"""Most logit values upsampled at once in :func:`logits_to_class_ids` (256 MiB of float32)."""


def logits_to_class_ids(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: upsample the logits (bilinear) to the label size and keep the
    arg-max class id, so only a small ``(B, H, W)`` integer tensor is gathered. Images are upsampled a
    few at a time so that ``B x C x H x W`` floats never exist at once for large label maps."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    size = tuple(labels.shape[-2:])
    num_classes = logits.shape[1]
    dtype = torch.uint8 if num_classes <= 256 else torch.int32
    if tuple(logits.shape[-2:]) == size:
        return logits.argmax(dim=1).to(dtype)
    chunk = max(1, UPSAMPLE_BUDGET // (num_classes * size[0] * size[1]))
    return torch.cat([
        torch.nn.functional.interpolate(part.float(), size=size, mode="bilinear", align_corners=False)
        .argmax(dim=1).to(dtype)
        for part in logits.split(chunk)
    ])


