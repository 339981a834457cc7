"""Image-classification transforms: augmentation presets on ``uint8`` tensors, the collate, the decode cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision.transforms import v2

from recipes.config import RecipeError
from recipes.decode.device import collate_encoded_images, encode_for_device
from recipes.decode.tensors import decode_augmented, decode_to_tensor, encode_raw_rgb
from recipes.transforms import ProcessorGeometry, collate_images_and_labels, processor_pixel_values

# --------------------------------------------------------------------------- transforms


def build_train_augmentation(preset: str, height: int, width: int) -> v2.Compose:
    """Named training presets on ``uint8`` tensors: ``none``, ``basic`` (random-resized-crop + flip),
    ``strong`` (basic + TrivialAugmentWide + random erasing)."""
    size = (height, width)
    if preset == "none":  # what evaluation does, at the size the processor outputs
        return v2.Compose([v2.Resize(min(size), antialias=True), v2.CenterCrop(size)])
    basic = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    if preset == "basic":
        return v2.Compose(basic)
    if preset == "strong":
        return v2.Compose([*basic, v2.TrivialAugmentWide(), v2.RandomErasing(p=0.25, value=0)])
    raise RecipeError(f"Unknown augmentation preset `{preset}` for image-classification: use none, basic or strong.")


def transform_classification_batch(
    batch: dict[str, list], *, image_column: str, label_column: str, augment: Callable | None,
    processor: Any = None,
) -> dict[str, list]:
    """``with_transform`` function: decode to ``uint8`` tensors, then either augment them to the processor's
    output size (training: ``uint8``, normalised per batch in the collate) or, without ``augment``, run the
    image processor itself (evaluation: exactly the ``pixel_values`` that ``pipeline()`` computes)."""
    records = batch[image_column]
    if augment is not None:  # decoding and cropping in one step: only the resolution the crop needs
        pixel_values = [decode_augmented(record, augment) for record in records]
    else:
        images = [decode_to_tensor(record) for record in records]
        pixel_values = list(processor_pixel_values(processor, images, sized=False))
    return {"pixel_values": pixel_values, "labels": list(batch[label_column])}


def encoded_classification_batch(batch: dict[str, list], *, image_column: str, label_column: str) -> dict[str, list]:
    """``with_transform`` function of ``gpu_decode`` training: JPEG bytes for the device (other files decoded
    here); :func:`recipes.transforms.pixels_on_device` finishes the batch on the GPU."""
    items, encoded = encode_for_device(batch[image_column])
    return {"encoded_image": items, "is_encoded": encoded, "labels": list(batch[label_column])}


def collate_classification(
    examples: list[dict[str, Any]], *, processor: Any, fast: ProcessorGeometry | None, keep_uint8: bool = False
) -> dict[str, Any]:
    """The task's collate: pixel batches (:func:`collate_images_and_labels`) or still-encoded ``gpu_decode``
    batches (:func:`collate_encoded_images`)."""
    if "encoded_image" in examples[0]:
        return collate_encoded_images(examples)
    return collate_images_and_labels(examples, processor=processor, fast=fast, keep_uint8=keep_uint8)


def decode_into_cache(batch: dict[str, list], *, image_column: str) -> dict[str, list]:
    """``Dataset.map`` function: replace encoded images by their decoded RGB pixels (lossless)."""
    return {
        image_column: [
            {"bytes": encode_raw_rgb(decode_to_tensor(record)), "path": record.get("path")}
            for record in batch[image_column]
        ]
    }


