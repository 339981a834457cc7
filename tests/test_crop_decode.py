"""The default training input path: random-resized crops decoded from JPEG headers at reduced DCT scale."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from helpers import photo_jpeg
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from recipes.decode.crop import (
    crop_box,
    dct_scale,
    decode_scaled,
    effective_box,
    jpeg_header,
    resized_crop_scaled,
    scaled_box,
)
from recipes.decode.images import BadImageError
from recipes.decode.jpeg import exif_orientation
from recipes.decode.tensors import decode_augmented, decode_to_tensor
from recipes.tasks.classification.transforms import build_train_augmentation


@pytest.mark.parametrize("little_endian", [False, True])
def test_exif_orientation_is_read_and_applied_exactly_like_the_full_decode(little_endian: bool) -> None:
    for orientation in range(1, 9):
        data = photo_jpeg(40, 64, orientation, little_endian)
        assert exif_orientation(data) == orientation
        assert Image.open(io.BytesIO(data)).getexif().get(0x0112, 1) == orientation
        height, width, found = jpeg_header(data)
        expected = decode_to_tensor({"bytes": data, "path": "x.jpg"})  # torchvision, EXIF applied
        assert (height, width, found) == (*expected.shape[-2:], orientation)
        assert torch.equal(decode_scaled(data, height, width, found, 1), expected), orientation


def test_reduced_decode_keeps_at_least_the_output_resolution_in_the_box() -> None:
    data, crop = photo_jpeg(1200, 1600), build_train_augmentation("basic", 224, 224).transforms[0]
    torch.manual_seed(0)
    scales = set()
    for _ in range(25):
        box = crop_box(crop, 1200, 1600)
        scale = dct_scale(box, (224, 224))
        scales.add(scale)
        pixels = decode_scaled(data, 1200, 1600, 1, scale)
        assert pixels.shape[-2:] == (math.ceil(1200 / scale), math.ceil(1600 / scale))
        _, _, box_h, box_w = scaled_box(box, 1200, 1600, tuple(pixels.shape[-2:]))
        assert (box_h >= 224 and box_w >= 224) or scale == 1
    assert scales >= {1, 2, 4}


def test_the_fast_path_matches_cropping_the_full_decode() -> None:
    """The same box cut from a DCT-scaled decode and from the full decode gives nearly the same pixels."""
    data = photo_jpeg(1200, 1600)
    crop = v2.RandomResizedCrop((224, 224), scale=(0.9, 1.0), antialias=True)  # large boxes: scale 4
    full = decode_to_tensor({"bytes": data})
    torch.manual_seed(1)
    box = crop_box(crop, 1200, 1600)
    assert dct_scale(box, (224, 224)) == 4
    reduced = decode_scaled(data, 1200, 1600, 1, 4)
    fast = resized_crop_scaled(reduced, box, 1200, 1600, crop)
    exact = resized_crop_scaled(full, box, 1200, 1600, crop)
    assert fast.shape == exact.shape == (3, 224, 224) and fast.dtype == torch.uint8
    assert (fast.float() - exact.float()).abs().mean() < 2.0


def crop_statistics(boxes: list[tuple[float, float, float, float]], height: int, width: int) -> dict[str, np.ndarray]:
    """Area fraction, log aspect ratio and horizontal/vertical centre of (top, left, height, width) boxes."""
    array = np.array(boxes, dtype=np.float64)
    top, left, box_h, box_w = array.T
    return {"area": box_h * box_w / (height * width), "log_ratio": np.log(box_w / box_h),
            "centre_y": (top + box_h / 2) / height, "centre_x": (left + box_w / 2) / width}


def effective_boxes(crop: v2.RandomResizedCrop, height: int, width: int, count: int) -> list[tuple]:
    """The boxes the fast path actually cuts (in the reduced image, mapped back to full-size units)."""
    return [effective_box(crop_box(crop, height, width), height, width, tuple(crop.size)) for _ in range(count)]


def torchvision_boxes(crop: v2.RandomResizedCrop, height: int, width: int, count: int) -> list[tuple]:
    placeholder = torch.empty((1, 1, 1), dtype=torch.uint8).expand(1, height, width)
    params = [crop.make_params([placeholder]) for _ in range(count)]
    return [(p["top"], p["left"], p["height"], p["width"]) for p in params]


@pytest.mark.parametrize(("height", "width"), [(384, 512), (512, 512), (3000, 4000)])
def test_crop_distribution_equals_torchvision_random_resized_crop(height: int, width: int) -> None:
    """Two-sample KS tests on area fraction, aspect ratio and position: the fast path vs torchvision; a crop
    with a slightly different scale range (0.15 instead of 0.08) must be told apart (the test has power)."""
    torch.manual_seed(0)
    crop = build_train_augmentation("basic", 224, 224).transforms[0]
    reference = crop_statistics(torchvision_boxes(crop, height, width, 2000), height, width)
    ours = crop_statistics(effective_boxes(crop, height, width, 2000), height, width)
    for name in reference:
        assert ks_2samp(reference[name], ours[name]).pvalue > 1e-3, name
    biased = v2.RandomResizedCrop((224, 224), scale=(0.15, 1.0), antialias=True)
    wrong = crop_statistics(effective_boxes(biased, height, width, 2000), height, width)
    assert ks_2samp(reference["area"], wrong["area"]).pvalue < 1e-3


def test_non_jpeg_and_bad_files_take_the_full_decode_path(tmp_path) -> None:
    augment = build_train_augmentation("strong", 32, 48)
    png, grey = io.BytesIO(), io.BytesIO()
    Image.new("RGBA", (80, 60), (10, 200, 30, 128)).save(png, "PNG")
    Image.new("L", (80, 60), 77).save(grey, "JPEG")
    for data in (png.getvalue(), grey.getvalue()):
        out = decode_augmented({"bytes": data, "path": "a"}, augment)
        assert out.shape == (3, 32, 48) and out.dtype == torch.uint8
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo_jpeg(64, 64)[:300])
    with pytest.raises(BadImageError, match=r"broken\.jpg"):
        decode_augmented({"bytes": None, "path": str(broken)}, augment)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_resize_and_folded_flip_equal_torchvision_kernels(orientation: int, flip: bool) -> None:
    """The one-copy crop+resize(+flip) equals torchvision's ``resized_crop`` then ``hflip`` (exactly without the
    flip; within one grey level with it, the filter being symmetric), for whole-image boxes of rotated images
    (dense, transposed views) as well as inner boxes."""
    data = photo_jpeg(120, 160, orientation)
    height, width, found = jpeg_header(data)
    pixels = decode_scaled(data, height, width, found, 1)
    crop = build_train_augmentation("basic", 48, 64).transforms[0]
    for box in ({"top": 0, "left": 0, "height": height, "width": width},
                {"top": 7, "left": 11, "height": height // 2, "width": width // 3}):
        ours = resized_crop_scaled(pixels, box, height, width, crop, flip)
        reference = v2.functional.resized_crop(pixels.contiguous(), box["top"], box["left"], box["height"],
                                               box["width"], [48, 64], antialias=True)
        reference = reference.flip(-1) if flip else reference
        assert ours.shape == (3, 48, 64) and ours.dtype == torch.uint8
        difference = (ours.int() - reference.int()).abs().max().item()
        assert difference <= (1 if flip else 0), (box, difference)
