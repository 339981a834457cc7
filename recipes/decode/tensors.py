"""Decoding image records to upright RGB ``uint8`` tensors: the full decode (torchvision's libjpeg-turbo for JPEG
bytes, Pillow for everything else), the training decode that folds a leading crop and flip into a crop-aware JPEG
decode (:mod:`recipes.decode.crop`), and the raw-pixel records of the decode cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from recipes.decode.crop import apply_transform, jpeg_random_resized_crop, random_resized_crop
from recipes.decode.images import BadImageError, load_rgb
from recipes.decode.jpeg import JPEG_MAGIC, check_jpeg_pixels

RAW_MAGIC = b"VRRAW1"
"""Header of decoded-pixel records in the decode cache: magic, uint32 height, uint32 width, RGB bytes."""


def encode_raw_rgb(pixels: torch.Tensor) -> bytes:
    """Serialise an RGB ``uint8`` (C, H, W) tensor losslessly for the decode cache."""
    _, height, width = pixels.shape
    header = RAW_MAGIC + np.array([height, width], dtype="<u4").tobytes()
    return header + pixels.permute(1, 2, 0).contiguous().numpy().tobytes()


def decode_raw_rgb(data: bytes) -> torch.Tensor:
    """Inverse of :func:`encode_raw_rgb`."""
    offset = len(RAW_MAGIC)
    height, width = np.frombuffer(data, dtype="<u4", count=2, offset=offset)
    array = np.frombuffer(data, dtype=np.uint8, offset=offset + 8).reshape(int(height), int(width), 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def record_bytes(record: Any) -> bytes | None:
    """The encoded bytes of a ``{"bytes", "path"}`` record (a JPEG path is read), else ``None``."""
    data = record.get("bytes") if isinstance(record, dict) else None
    if data is None and isinstance(record, dict) and record.get("path"):
        path = record["path"]
        if str(path).lower().endswith((".jpg", ".jpeg")):
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as err:
                raise BadImageError(f"Cannot read image {path}: {err}") from err
    return data


def decode_augmented(record: Any, augment: v2.Compose) -> torch.Tensor:
    """Decode ``record`` and apply the training ``augment`` to it, as ``augment(decode_to_tensor(record))`` does.

    When the augmentation starts with a ``RandomResizedCrop`` (and a ``RandomHorizontalFlip``, folded into the
    crop's one copy) and the record is a JPEG, the box is drawn from the header and only the resolution it needs
    is decoded (:mod:`recipes.decode.crop`); every other record is decoded in full (:func:`decode_to_tensor`:
    any format, EXIF orientation, errors naming the file). Crops and flips run their functional kernels with the
    transforms' own random draws."""
    if not isinstance(augment, v2.Compose):
        return augment(decode_to_tensor(record))
    transforms = list(augment.transforms)
    if not transforms or type(transforms[0]) is not v2.RandomResizedCrop:
        pixels = decode_to_tensor(record)
        for transform in transforms:
            pixels = apply_transform(transform, pixels)
        return pixels
    crop, flip = transforms[0], None
    if len(transforms) > 1 and type(transforms[1]) is v2.RandomHorizontalFlip:
        flip = transforms[1]
    rest = transforms[2 if flip is not None else 1 :]
    data = record_bytes(record) if not isinstance(record, (torch.Tensor, np.ndarray)) else None
    pixels = jpeg_random_resized_crop(data, crop, flip) if data is not None else None
    if pixels is None:
        pixels = random_resized_crop(decode_to_tensor(record), crop, flip)
    for transform in rest:
        pixels = apply_transform(transform, pixels)
    return pixels


def decode_to_tensor(record: Any) -> torch.Tensor:
    """Decode an image record into an upright RGB ``uint8`` tensor (C, H, W).

    JPEG bytes take torchvision's libjpeg-turbo path (EXIF orientation applied); every other
    format and mode goes through :func:`recipes.decode.images.load_rgb`. Either way an image over the pixel cap is a
    :class:`~recipes.decode.images.BadImageError`, from its header, before its pixels are allocated.
    """
    if isinstance(record, torch.Tensor):
        return record
    if isinstance(record, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(record)).permute(2, 0, 1)
    data = record_bytes(record)
    if data is not None and data[: len(RAW_MAGIC)] == RAW_MAGIC:
        return decode_raw_rgb(data)
    if data is not None and data[:2] == JPEG_MAGIC:
        check_jpeg_pixels(data, record)  # before libjpeg-turbo allocates the pixels
        try:
            tensor = decode_jpeg(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.RGB,
                apply_exif_orientation=True,
            )
            return tensor
        except RuntimeError:
            pass  # unusual JPEG (e.g. CMYK variants): let PIL try, it reports the file if it fails too
    return F.pil_to_tensor(load_rgb(record))
