"""Image decoding shared by every task: EXIF orientation, any mode to RGB, bad-file reports."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# A truncated file must be reported, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def jpeg_has_end_marker(data: bytes | bytearray | memoryview) -> bool:
    """Whether JPEG ``data`` ends with the end-of-image marker (up to 4 KiB of trailing zero padding allowed).
    Decoders that stop early (a region decode) or fill missing rows silently (nvJPEG) would not notice a truncated
    file; without the marker, the file goes to the full CPU decode, which reports it by name (files with data
    after the marker, such as motion photos, take that path too: slower, not wrong)."""
    return bytes(data[-4096:]).rstrip(b"\0").endswith(b"\xff\xd9")


class BadImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def record_path(record: Any, fallback: str = "<in-memory image>") -> str:
    """The file behind an image record (a ``{"bytes", "path"}`` dict, a path or a PIL image), for messages."""
    if isinstance(record, dict):
        return str(record.get("path") or fallback)
    if isinstance(record, (str, Path)):
        return str(record)
    return getattr(record, "filename", None) or fallback


def open_image(record: Any, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open an image from a path, a ``datasets`` ``{"bytes", "path"}`` record or a PIL image.

    ``draft_size`` lets the JPEG decoder skip resolution the transform would throw away
    (DCT scaling: the decoded image stays at least that large).
    """
    try:
        if isinstance(record, Image.Image):
            image = record
        elif isinstance(record, dict):
            data = record.get("bytes")
            image = Image.open(io.BytesIO(data)) if data else Image.open(record["path"])
        else:
            image = Image.open(record)
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, KeyError, TypeError) as err:
        raise BadImageError(f"Cannot decode image {record_path(record)}: {err}") from err
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (CMYK, L, I;16, I, F, RGBA, P, LA) to RGB.

    High-bit-depth greyscale is rescaled to 8 bits instead of clipped; transparency is
    composited on white.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = (0.0, 65535.0) if mode.startswith("I;16") else (float(array.min()), float(array.max()))
        scale = 255.0 / (high - low) if high > low else 0.0
        array = np.clip((array - low) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(record: Any, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``record`` (see :func:`open_image`) into an upright RGB image."""
    return to_rgb(open_image(record, draft_size=draft_size))


@dataclass
class BadFile:
    """One file skipped by the data checks."""

    path: str
    reason: str


def check_image_record(record: Any) -> str | None:
    """Fully decode one image; return the reason it is unusable, or ``None`` when it is fine."""
    try:
        image = open_image(record)
        if image.width < 1 or image.height < 1:
            return "image has zero width or height"
    except BadImageError as err:
        return str(err.__cause__ or err)
    return None
