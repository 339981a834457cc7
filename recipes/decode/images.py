"""Image decoding shared by every task (Pillow): the pixel cap, EXIF orientation, any mode to RGB, bad-file reports."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from recipes.config import RecipeError

# A truncated file must be reported, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
"""The pixel cap of every decoding path (:func:`check_pixels`): Pillow's own limit (twice
``PIL.Image.MAX_IMAGE_PIXELS``, about 179 million pixels, e.g. 13,000 x 13,700; a 108 MP phone photo fits), where
decoding a single RGB image takes about 0.5 GB. A file whose header claims more is a bad image, named and skipped,
before anything is allocated for its pixels (a 57-byte PNG can claim 20000 x 20000)."""
MAX_PIXELS_ENV = "VISION_RECIPES_MAX_IMAGE_PIXELS"
"""Carries the cap to processes started afresh (spawned loader workers, data-check processes)."""


def max_image_pixels() -> int:
    """The pixel cap in force (:func:`set_max_image_pixels`; else :data:`DEFAULT_MAX_IMAGE_PIXELS`)."""
    try:
        return int(os.environ.get(MAX_PIXELS_ENV) or DEFAULT_MAX_IMAGE_PIXELS)
    except ValueError:
        return DEFAULT_MAX_IMAGE_PIXELS


def set_max_image_pixels(limit: int | None) -> None:
    """Set the pixel cap of this process and the processes it starts (``max_image_pixels`` of a recipe, predict's
    ``--max_image_pixels``); ``None`` keeps the current one. A cap above Pillow's own limit raises Pillow's too
    (``PIL.Image.MAX_IMAGE_PIXELS``, process-wide), so the cap stays the only rule."""
    if limit is None:
        return
    if limit < 1:
        raise RecipeError(f"max_image_pixels must be a positive number of pixels, got {limit}.")
    os.environ[MAX_PIXELS_ENV] = str(int(limit))
    _let_pillow_decode(limit)


def _let_pillow_decode(limit: int) -> None:
    """Raise Pillow's decompression-bomb limit (an error above twice ``MAX_IMAGE_PIXELS``) to ``limit`` if lower."""
    if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = -(-limit // 2)


_let_pillow_decode(max_image_pixels())  # a process started with the cap in its environment (a spawned worker)


LIMIT_FIX = "Fix: downscale the file, or raise the limit with --max_image_pixels N (recipes and predict)."


def check_pixels(width: int, height: int, source: Any) -> None:
    """Raise :class:`ImageTooLargeError` naming ``source`` when an image of ``width`` x ``height`` (read from its
    header) is over the pixel cap: the check every decoding path makes before it allocates the pixels."""
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageTooLargeError(source, f"{width} x {height} = {width * height:,} pixels, over the limit of "
                                 f"{limit:,} pixels (a decompression bomb, or a very large photo). {LIMIT_FIX}")


class BadImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


class ImageTooLargeError(BadImageError):
    """An image whose header claims more pixels than the cap (:func:`check_pixels`); ``reason`` without the file."""

    def __init__(self, source: Any, reason: str) -> None:
        super().__init__(f"Image {record_path(source)} is {reason}")
        self.reason = reason


def record_path(record: Any, fallback: str = "<in-memory image>") -> str:
    """The file behind an image record (a ``{"bytes", "path"}`` dict, a path or a PIL image), for messages."""
    if isinstance(record, dict):
        return str(record.get("path") or fallback)
    if isinstance(record, (str, Path)):
        return str(record)
    return getattr(record, "filename", None) or fallback


def open_header(record: Any) -> Image.Image:
    """Open an image from a path, a ``datasets`` ``{"bytes", "path"}`` record or a PIL image, reading its header
    only, with its size checked against the pixel cap (:func:`check_pixels`; Pillow's own decompression-bomb
    error or warning becomes the same :class:`BadImageError`)."""
    try:
        if isinstance(record, Image.Image):
            image = record
        elif isinstance(record, dict):
            data = record.get("bytes")
            image = Image.open(io.BytesIO(data)) if data else Image.open(record["path"])
        else:
            image = Image.open(record)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(record, f"over the limit of {max_image_pixels():,} pixels (Pillow: {err}) "
                                 f"{LIMIT_FIX}") from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, KeyError, TypeError) as err:
        raise BadImageError(f"Cannot decode image {record_path(record)}: {err}") from err
    check_pixels(image.width, image.height, record)
    return image


def open_image(record: Any, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open and decode an image from a path, a ``datasets`` ``{"bytes", "path"}`` record or a PIL image (its size
    checked first, :func:`open_header`).

    ``draft_size`` lets the JPEG decoder skip resolution the transform would throw away
    (DCT scaling: the decoded image stays at least that large).
    """
    image = open_header(record)
    try:
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(record, f"over the limit of {max_image_pixels():,} pixels (Pillow: {err}) "
                                 f"{LIMIT_FIX}") from err
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
    except ImageTooLargeError as err:
        return err.reason
    except BadImageError as err:
        return str(err.__cause__ or err)
    return None
