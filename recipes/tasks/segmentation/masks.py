"""Mask conversion to class-id PNGs and the per-image check + conversion pass."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from recipes.decode.images import BadImageError, open_header, open_image, record_path
from recipes.decode.jpeg import oriented_size
from recipes.tasks.segmentation.formats import (
    INDEX_MASK_MODES,
    LabelMapping,
    Palette,
    colours_to_indices,
    hex_colour,
    unpack_rgb,
)

logger = logging.getLogger("recipes")
# --------------------------------------------------------------------------- mask conversion


class MaskFormatError(ValueError):
    """A mask that cannot be read as the configured kind (colour vs index)."""


@dataclass
class ConvertedMask:
    """A mask converted to training class ids (``stored_ignore`` where ignored)."""

    class_ids: np.ndarray
    invalid_pixels: int
    """Unknown colours / out-of-range indices, mapped to ignore."""
    invalid_examples: list[str]


def raw_index_values(mask: Image.Image) -> np.ndarray:
    """The class index of each pixel of an index mask (``L``, ``P``, ``I;16``, ``I``, or grey-as-RGB)."""
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask)[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise MaskFormatError(
                "is an RGB colour mask, not a class-index mask: give its palette with `label_colors_file` "
                "(label_colors.txt or class_dict.csv) or use `dataset_format: camvid`"
            )
        return rgb[..., 0].astype(np.int64)
    if mask.mode in INDEX_MASK_MODES:
        return np.asarray(mask).astype(np.int64)
    raise MaskFormatError(
        f"has image mode {mask.mode}, which holds no class indices (index masks are {', '.join(INDEX_MASK_MODES)})"
    )


def convert_mask(mask: Image.Image, mapping: LabelMapping, palette: Palette | None) -> ConvertedMask:
    """Colour or index mask → training class ids, vectorised. Unknown colours and out-of-range
    indices become ignore pixels and are counted (with up to three examples)."""
    if palette is not None:
        raw, packed = colours_to_indices(np.asarray(mask.convert("RGB")), palette)
        invalid = raw < 0
        describe = [hex_colour(unpack_rgb(v)) for v in _most_common(packed[invalid])]
    else:
        raw = raw_index_values(mask)
        invalid = (raw < 0) | (raw >= len(mapping.target_of_source))
        if mapping.raw_ignore_value is not None:
            invalid &= raw != mapping.raw_ignore_value
        describe = [str(v) for v in _most_common(raw[invalid])]
    dtype = np.uint8 if mapping.stored_ignore == 255 else np.uint16
    lookup = np.append(mapping.lookup_table(), mapping.stored_ignore).astype(dtype)  # last entry: not a class
    not_a_class = (raw < 0) | (raw >= len(mapping.target_of_source))
    class_ids = lookup.take(np.where(not_a_class, len(lookup) - 1, raw))
    return ConvertedMask(class_ids, int(invalid.sum()), describe)


def _most_common(values: np.ndarray, top: int = 3) -> list[int]:
    if values.size == 0:
        return []
    unique, counts = np.unique(values, return_counts=True)
    return [int(v) for v in unique[np.argsort(-counts)[:top]]]


def encode_class_ids(class_ids: np.ndarray) -> bytes:
    """Class-id mask → lossless single-channel PNG bytes (8-bit or 16-bit)."""
    buffer = io.BytesIO()
    Image.fromarray(class_ids).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_class_ids(record: Any) -> np.ndarray:
    """Inverse of :func:`encode_class_ids` for a ``{"bytes", "path"}`` record (``uint8`` or ``int32``)."""
    array = np.array(open_image(record))  # a writable copy, for torch.from_numpy
    return array if array.dtype == np.uint8 else array.astype(np.int32)


# --------------------------------------------------------------------------- the check + conversion pass


def check_and_convert_one(
    image_record: Any, mask_record: Any, *, mapping: LabelMapping, palette: Palette | None, check_images: bool
) -> dict[str, Any]:
    """Check one (image, mask) pair and convert its mask; the problem (if any) names the file and the fix."""
    result: dict[str, Any] = {"mask": None, "problem": "", "invalid_pixels": 0, "invalid_examples": "",
                              "class_pixels": [], "ignored_pixels": 0}
    mask_name = record_path(mask_record, "<in-memory mask>")
    if mask_record is None or (isinstance(mask_record, str) and not Path(mask_record).is_file()):
        expected = f" {mask_name}" if mask_record else ""
        result["problem"] = f"missing mask{expected}: every image needs its mask (add it, or remove the image)"
        return result
    try:
        image = open_image(image_record) if check_images else _lazy_open(image_record)
        image_size = oriented_size(image)
        image.close()
    except BadImageError as err:
        result["problem"] = f"{err} (fix or remove the file)"
        return result
    try:
        mask = open_image(mask_record)
    except BadImageError as err:
        result["problem"] = f"{err} (fix or remove the mask)"
        return result
    if mask.size != image_size:
        result["problem"] = (
            f"mask {mask_name} is {mask.width}x{mask.height} but its image is {image_size[0]}x{image_size[1]}: "
            "a mask must have its image's size (re-export it at the image's resolution)"
        )
        return result
    try:
        converted = convert_mask(mask, mapping, palette)
    except MaskFormatError as err:
        result["problem"] = f"mask {mask_name} {err}"
        return result
    counts = np.bincount(converted.class_ids.ravel(), minlength=mapping.stored_ignore + 1)
    result.update(
        mask={"bytes": encode_class_ids(converted.class_ids), "path": None},
        invalid_pixels=converted.invalid_pixels,
        invalid_examples=", ".join(converted.invalid_examples),
        class_pixels=counts[: mapping.num_classes].tolist(),
        ignored_pixels=int(counts[mapping.stored_ignore]),
    )
    return result


def _lazy_open(record: Any) -> Image.Image:
    """Open an image's header only (size, EXIF) without decoding its pixels; over the pixel cap: a bad image."""
    return open_header(record)


def check_and_convert_batch(
    batch: dict[str, list],
    *,
    image_column: str,
    mask_column: str,
    mapping: LabelMapping,
    palette: Palette | None,
    check_images: bool,
) -> dict[str, list]:
    """``Dataset.map`` function (batched): :func:`check_and_convert_one` on every row."""
    rows = [
        check_and_convert_one(image, mask, mapping=mapping, palette=palette, check_images=check_images)
        for image, mask in zip(batch[image_column], batch[mask_column])
    ]
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


