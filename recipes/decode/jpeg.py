"""The one JPEG header and EXIF reader: frame size, end marker and EXIF orientation, read from the markers before
the image data (no pixels decoded), and the orientation applied to a decoded tensor.

Every decoding path asks :func:`exif_orientation` (JPEG bytes: the first ``Exif`` APP1 segment; an opened image:
Pillow's EXIF, which also covers PNG, TIFF and WebP) and :func:`oriented_size`; Pillow images are turned upright by
``PIL.ImageOps.exif_transpose`` (:func:`recipes.decode.images.to_rgb`), tensors by :func:`orient`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image

from recipes.decode.images import check_pixels

JPEG_MAGIC = b"\xff\xd8"
JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSED = (5, 6, 7, 8)
"""EXIF orientations that swap width and height (1 is upright; 2-4 mirror or turn by 180 degrees)."""


def jpeg_segments(data: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, int]]:
    """``(marker, position, length)`` of each length-bearing segment of JPEG ``data`` before the image data (start
    of scan or end of image), from position 2 (after the start-of-image marker); stops at anything malformed."""
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no header after it
            return
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        yield marker, position, length
        position += 2 + length


def jpeg_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(width, height) stored in a JPEG's frame header (the SOF segment), reading only the markers before it; None
    when ``data`` is not a JPEG or has no readable frame header (the decoder then reports it)."""
    if bytes(data[:2]) != JPEG_MAGIC:
        return None
    for marker, position, _ in jpeg_segments(data):
        if marker in JPEG_SOF_MARKERS:
            if position + 9 > len(data):
                return None
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
    return None


def check_jpeg_pixels(data: bytes | bytearray | memoryview, source: Any) -> None:
    """:func:`recipes.decode.images.check_pixels` for JPEG bytes, from their frame header (before a decoder
    allocates anything)."""
    size = jpeg_size(data)
    if size is not None:
        check_pixels(*size, source)


def jpeg_has_end_marker(data: bytes | bytearray | memoryview) -> bool:
    """Whether JPEG ``data`` ends with the end-of-image marker (up to 4 KiB of trailing zero padding allowed).
    Decoders that stop early (a region decode) or fill missing rows silently (nvJPEG) would not notice a truncated
    file; without the marker, the file goes to the full CPU decode, which reports it by name (files with data
    after the marker, such as motion photos, take that path too: slower, not wrong)."""
    return bytes(data[-4096:]).rstrip(b"\0").endswith(b"\xff\xd9")


def _tiff_orientation(tiff: bytes) -> int:
    """The orientation tag of IFD0 in an EXIF TIFF block; 1 when absent or malformed."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    offset = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[offset : offset + 2], order) if offset + 2 <= len(tiff) else 0
    for entry in range(offset + 2, offset + 2 + 12 * count, 12):
        if entry + 12 > len(tiff):
            break
        if int.from_bytes(tiff[entry : entry + 2], order) == EXIF_ORIENTATION_TAG:
            return _valid(int.from_bytes(tiff[entry + 8 : entry + 10], order))
    return 1


def _valid(value: Any) -> int:
    """An orientation tag's value, 1 (upright, as decoders assume) when it is not one of the eight orientations."""
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def exif_orientation(source: bytes | bytearray | memoryview | Image.Image) -> int:
    """EXIF orientation (1-8) of JPEG bytes (the first ``Exif`` APP1 segment before the image data) or of an opened
    image (its header's EXIF, any format); 1 (upright) when there is none or it is malformed, as decoders assume."""
    if isinstance(source, Image.Image):
        return _valid(source.getexif().get(EXIF_ORIENTATION_TAG, 1))
    for marker, position, length in jpeg_segments(source):
        if marker == 0xE1 and bytes(source[position + 4 : position + 10]) == b"Exif\x00\x00":
            return _tiff_orientation(bytes(source[position + 10 : position + 2 + length]))
    return 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image after EXIF orientation, as it will be decoded (header only)."""
    width, height = image.size
    return (height, width) if exif_orientation(image) in TRANSPOSED else (width, height)


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a (C, H, W) tensor, as ``PIL.ImageOps.exif_transpose`` does to an image."""
    if orientation in TRANSPOSED:
        pixels = pixels.transpose(-2, -1)
    flips = {2: (-1,), 3: (-2, -1), 4: (-2,), 6: (-1,), 7: (-2, -1), 8: (-2,)}.get(orientation)
    return pixels.flip(flips) if flips else pixels
