"""Semantic-segmentation transforms: joint image + mask augmentation presets, the collate, and
logits reduced to class ids before gathering."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from recipes.config import RecipeError
from recipes.decode.tensors import decode_to_tensor
from recipes.tasks.segmentation import masks
from recipes.tasks.segmentation.data import MASK_COLUMN
from recipes.transforms import processor_pixel_values

# --------------------------------------------------------------------------- transforms


def build_train_augmentation(preset: str, height: int, width: int, mask_fill: int) -> v2.Compose:
    """Named presets applied jointly to an image and its ``tv_tensors.Mask`` (masks: nearest, padding
    ``mask_fill``): ``none`` (resize), ``basic`` (random scale 0.5-2x + crop + flip + brightness/contrast/saturation
    jitter), ``strong`` (basic + rotation, stronger jitter with hue, grey and blur)."""
    size = (height, width)
    if preset == "none":
        return v2.Compose([v2.Resize(size, antialias=True)])
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


def processor_resizes_masks_exactly(processor: Any) -> bool:
    """Whether the processor takes ``segmentation_maps`` and resizes them without inventing class ids.

    SegFormer, UperNet, MobileNetV2 (DeepLabV3) and MobileViT use nearest-neighbour for masks; BEiT and DPT
    resize them with the image filter (bilinear/bicubic), which creates ids that are in no mask. Probed on a
    striped two-value mask rather than trusted by class name.
    """
    if "segmentation_maps" not in inspect.signature(processor.preprocess).parameters:
        return False
    stripes = torch.zeros((37, 53), dtype=torch.uint8)
    stripes[:, ::3] = 7
    blank = torch.zeros((3, 37, 53), dtype=torch.uint8)
    out = processor(images=[blank], segmentation_maps=[stripes], do_reduce_labels=False, return_tensors="pt")
    return set(out["labels"].unique().tolist()) <= {0, 7}


def evaluation_inputs(
    image: torch.Tensor, class_ids: torch.Tensor, *, processor: Any, masks_through_processor: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image (``uint8``) and its class-id mask as evaluation sees them: ``pixel_values`` exactly as the
    processor (and ``pipeline()``) makes them, the mask resized and cropped by the processor too (or, for
    processors that would interpolate it, resized with exact nearest neighbour to the same size)."""
    if masks_through_processor:
        out = processor(images=[image], segmentation_maps=[class_ids], do_reduce_labels=False, return_tensors="pt")
        return out["pixel_values"][0], out["labels"][0].long()
    pixel_values = processor_pixel_values(processor, [image], sized=False)[0]
    labels = v2.functional.resize(
        class_ids[None], list(pixel_values.shape[-2:]), interpolation=v2.InterpolationMode.NEAREST_EXACT
    )[0]
    return pixel_values, labels.long()


def transform_segmentation_batch(
    batch: dict[str, list],
    *,
    image_column: str,
    augment: Callable | None,
    stored_ignore: int,
    ignore_index: int,
    processor: Any = None,
    masks_through_processor: bool = False,
    label_lookup: tuple[int, ...] | None = None,
) -> dict[str, list]:
    """``with_transform`` function: decode image and class-id mask; training augments them together to the
    processor's output size (``uint8`` image, normalised per batch in the collate), evaluation runs the image
    processor (:func:`evaluation_inputs`). Labels are ``int64`` with ``ignore_index`` where ignored."""
    pixel_values, labels = [], []
    for image_record, mask_record in zip(batch[image_column], batch[MASK_COLUMN]):
        image = decode_to_tensor(image_record)
        ids = masks.decode_class_ids(mask_record)
        if label_lookup is not None:
            ids = np.asarray(label_lookup, dtype=ids.dtype)[ids]
        class_ids = torch.from_numpy(ids if ids.dtype == np.uint8 else ids.astype(np.int32))
        if augment is not None:
            augmented_image, mask = augment(tv_tensors.Image(image), tv_tensors.Mask(class_ids))
            pixels, label = augmented_image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()
        else:
            pixels, label = evaluation_inputs(
                image, class_ids, processor=processor, masks_through_processor=masks_through_processor
            )
        if stored_ignore != ignore_index:
            label[label == stored_ignore] = ignore_index
        pixel_values.append(pixels)
        labels.append(label)
    return {"pixel_values": pixel_values, "labels": labels}


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


