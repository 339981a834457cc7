"""Random-resized crops decoded straight from JPEG bytes (the default training input path).

The crop box is drawn by the preset's own ``RandomResizedCrop`` from the size in the JPEG header (upright, EXIF
orientation applied), so the crop distribution is exactly torchvision's; the JPEG is then decoded with
libjpeg-turbo's DCT scaling (``simplejpeg``) at the smallest 1/2, 1/4 or 1/8 scale at which the box still has at
least the output resolution, and the box is cut and resized from that smaller image; at full scale, where
libjpeg-turbo 3 is installed, only the box itself is decoded (:mod:`recipes.decode.turbojpeg`). Anything unusual (no
``simplejpeg``, not a JPEG, a JPEG libjpeg-turbo cannot decode to RGB) returns ``None``: the caller then takes the
full-decode path, which handles every format and reports bad files by name.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from recipes.decode.images import max_image_pixels
from recipes.decode.jpeg import JPEG_MAGIC, TRANSPOSED, exif_orientation, orient
from recipes.decode.turbojpeg import decode_region

try:  # optional at run time: without it, training decodes at full size (same crops, slower)
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

SCALES = (8, 4, 2)


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(upright height, upright width, EXIF orientation) of JPEG bytes, or ``None`` when this path cannot decode
    them (no ``simplejpeg``, not a JPEG, unreadable header, over the pixel cap)."""
    if simplejpeg is None or data[:2] != JPEG_MAGIC:
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, RuntimeError):
        return None
    if width * height > max_image_pixels():  # over the cap: the full decode reports the file by name
        return None
    orientation = exif_orientation(data)
    return (width, height, orientation) if orientation in TRANSPOSED else (height, width, orientation)


def crop_box(crop: v2.RandomResizedCrop, height: int, width: int) -> dict[str, int]:
    """The box ``crop`` draws for an image of this (upright) size: torchvision's ``RandomResizedCrop`` sampling
    (area fraction uniform in ``crop.scale``, log aspect ratio uniform in ``log(crop.ratio)``, ten tries, then
    the central fallback; uniform position), with all its random numbers from one ``torch.rand`` call instead
    of a dozen small tensor operations (a quarter of the crop's cost)."""
    area, (low, high) = height * width, crop.scale
    log_low, log_high = math.log(crop.ratio[0]), math.log(crop.ratio[1])
    for u_area, u_ratio, u_top, u_left in torch.rand((10, 4), dtype=torch.float64).tolist():
        target_area = area * (low + u_area * (high - low))
        aspect_ratio = math.exp(log_low + u_ratio * (log_high - log_low))
        w, h = round(math.sqrt(target_area * aspect_ratio)), round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            top, left = min(int(u_top * (height - h + 1)), height - h), min(int(u_left * (width - w + 1)), width - w)
            return {"top": top, "left": left, "height": h, "width": w}
    in_ratio = width / height
    if in_ratio < min(crop.ratio):
        w, h = width, round(width / min(crop.ratio))
    elif in_ratio > max(crop.ratio):
        w, h = round(height * max(crop.ratio)), height
    else:
        w, h = width, height
    return {"top": (height - h) // 2, "left": (width - w) // 2, "height": h, "width": w}


def dct_scale(box: dict[str, int], size: tuple[int, int]) -> int:
    """The largest reduction (8, 4, 2 or 1) at which the box keeps at least the output size ``(height, width)``."""
    return next((k for k in SCALES if box["height"] >= k * size[0] and box["width"] >= k * size[1]), 1)


def decode_scaled(data: bytes, height: int, width: int, orientation: int, scale: int) -> torch.Tensor | None:
    """Upright RGB ``uint8`` (C, H, W) pixels decoded at about 1/``scale`` of the upright size (at least
    ``ceil(size / scale)``), or ``None`` when libjpeg-turbo cannot decode them to RGB."""
    stored_h, stored_w = (width, height) if orientation in TRANSPOSED else (height, width)
    try:
        array = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=math.ceil(stored_h / scale), min_width=math.ceil(stored_w / scale)
        )
    except (ValueError, RuntimeError):
        return None
    return orient(torch.from_numpy(array).permute(2, 0, 1), orientation)  # channels-last view: resize's fast path


def scaled_box(box: dict[str, int], height: int, width: int, scaled: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of ``box``, drawn in the ``height`` x ``width`` frame, in the same image
    decoded at size ``scaled``: edges rounded to the nearest scaled pixel, at least one pixel."""
    scale_y, scale_x = scaled[0] / height, scaled[1] / width
    top, left = round(box["top"] * scale_y), round(box["left"] * scale_x)
    bottom = max(top + 1, round((box["top"] + box["height"]) * scale_y))
    right = max(left + 1, round((box["left"] + box["width"]) * scale_x))
    return top, left, bottom - top, right - left


def effective_box(box: dict[str, int], height: int, width: int, size: tuple[int, int]) -> tuple[float, ...]:
    """(top, left, height, width) in full-size units of what this path cuts for ``box``: the box rounded to the
    pixels of the DCT-scaled decode that :func:`dct_scale` picks for output ``size`` (for distribution checks)."""
    scale = dct_scale(box, size)
    scaled = (math.ceil(height / scale), math.ceil(width / scale))  # libjpeg-turbo's scaled size
    top, left, box_h, box_w = scaled_box(box, height, width, scaled)
    sy, sx = scaled[0] / height, scaled[1] / width
    return top / sy, left / sx, box_h / sy, box_w / sx


def cut_and_resize(region: torch.Tensor, size: tuple[int, int], crop: v2.RandomResizedCrop, flip: bool) -> torch.Tensor:
    """Resize ``region`` (a (C, h, w) view of decoded pixels, often channels-last) to ``size`` with the crop's
    interpolation and antialiasing, mirrored left-right when ``flip`` (a flip commutes with the symmetric resize
    filter; folded into the one copy made here instead of a second pass over the output).

    On the CPU, bilinear/bicubic crops resize ``uint8`` straight from a channels-last copy of the region, the
    layout of torch's vectorised ``uint8`` kernel (what ``F.resized_crop`` does on a whole image, minus the
    wrapper cost); the output keeps that layout, which the collate reads as is. Elsewhere (``gpu_decode`` on a
    GPU) torchvision's ``resize`` runs, which converts for the device's kernels."""
    mode = str(getattr(crop.interpolation, "value", crop.interpolation)).lower()
    native = region.dtype == torch.uint8 and region.device.type == "cpu"  # torch's uint8 kernels are CPU-only
    if native and crop.antialias and mode in ("bilinear", "bicubic"):
        rows = region.permute(1, 2, 0)  # (h, w, C)
        rows = (rows.flip(1) if flip else rows).contiguous()
        channels, height, width = region.shape
        batch = rows.as_strided((1, channels, height, width), (rows.numel(), 1, width * channels, channels))
        return torch.nn.functional.interpolate(batch, size=size, mode=mode, antialias=True, align_corners=False)[0]
    out = F.resize(region, list(size), interpolation=crop.interpolation, antialias=crop.antialias)
    return out.flip(-1) if flip else out


def resized_crop_scaled(
    pixels: torch.Tensor, box: dict[str, int], height: int, width: int, crop: v2.RandomResizedCrop,
    flip: bool = False,
) -> torch.Tensor:
    """Cut ``box`` (drawn in the full-size ``height`` x ``width`` frame) out of ``pixels`` (the same image,
    possibly decoded smaller), resize it to the crop's output size (:func:`cut_and_resize`), mirrored when
    ``flip``."""
    top, left, box_h, box_w = scaled_box(box, height, width, tuple(pixels.shape[-2:]))
    return cut_and_resize(pixels[..., top : top + box_h, left : left + box_w], tuple(crop.size), crop, flip)


def draw_flip(flip: v2.RandomHorizontalFlip | None) -> bool:
    """The horizontal-flip decision of ``flip`` (``None``: no flip), with its own random draw."""
    return flip is not None and torch.rand(1).item() < flip.p


def jpeg_random_resized_crop(
    data: bytes, crop: v2.RandomResizedCrop, flip: v2.RandomHorizontalFlip | None = None
) -> torch.Tensor | None:
    """``crop`` (then ``flip``, if given) applied to the upright RGB image in JPEG ``data``, decoding no more
    resolution than the drawn box needs; ``None`` when this path cannot decode ``data`` (the caller decodes it
    in full instead)."""
    header = jpeg_header(data)
    if header is None:
        return None
    height, width, orientation = header
    decoded = decode_for_crop(data, crop_box(crop, height, width), height, width, orientation, tuple(crop.size))
    return None if decoded is None else resized_crop_scaled(*decoded, crop, draw_flip(flip))


def decode_for_crop(
    data: bytes, box: dict[str, int], height: int, width: int, orientation: int, size: tuple[int, int]
) -> tuple[torch.Tensor, dict[str, int], int, int] | None:
    """What to cut ``box`` (drawn in the upright ``height`` x ``width`` frame) from, as ``(pixels, box, frame
    height, frame width)`` for :func:`resized_crop_scaled`: at full scale, where libjpeg-turbo 3 is available, the
    box alone (:func:`recipes.decode.turbojpeg.decode_region`: its own frame); else the image decoded at the DCT scale
    the box allows for output ``size``. ``None`` when libjpeg-turbo cannot decode ``data`` to RGB."""
    scale = dct_scale(box, size)
    if scale == 1 and orientation == 1:  # the region is cut from the stored image, which is the upright one
        rows = decode_region(data, box["top"], box["left"], box["height"], box["width"])
        if rows is not None:
            whole = {"top": 0, "left": 0, "height": box["height"], "width": box["width"]}
            return torch.from_numpy(rows).permute(2, 0, 1), whole, box["height"], box["width"]
    pixels = decode_scaled(data, height, width, orientation, scale)
    return None if pixels is None else (pixels, box, height, width)


def random_resized_crop(
    pixels: torch.Tensor, crop: v2.RandomResizedCrop, flip: v2.RandomHorizontalFlip | None = None
) -> torch.Tensor:
    """``crop`` (then ``flip``, if given) applied to decoded pixels through the functional kernels (same box and
    flip draws as the transforms, without their wrapper cost)."""
    box = crop_box(crop, pixels.shape[-2], pixels.shape[-1])
    return resized_crop_scaled(pixels, box, pixels.shape[-2], pixels.shape[-1], crop, draw_flip(flip))


def apply_transform(transform: Any, pixels: torch.Tensor) -> torch.Tensor:
    """One augmentation step; crops and flips run their functional kernels with the transform's own random
    draws (identical results, a fraction of the v2 wrapper's per-call cost), anything else runs as is."""
    if type(transform) is v2.RandomResizedCrop:
        return random_resized_crop(pixels, transform)
    if type(transform) is v2.RandomHorizontalFlip:
        return pixels.flip(-1) if draw_flip(transform) else pixels
    return transform(pixels)
