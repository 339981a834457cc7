"""Region decoding with libjpeg-turbo 3 (``recipes.decode.turbojpeg``) and its use by the training crop path."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import simplejpeg
import torch
from helpers import photo_jpeg, require_libturbojpeg3
from PIL import Image
from torchvision.transforms import v2

from recipes.decode.crop import crop_box, jpeg_random_resized_crop
from recipes.decode.turbojpeg import LIBRARY_ENV, decode_region, region_decoding_library


@pytest.fixture
def turbojpeg3(monkeypatch: pytest.MonkeyPatch) -> str:
    path = require_libturbojpeg3()
    monkeypatch.setenv(LIBRARY_ENV, path)
    return path


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _photo(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)],
                    -1).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("options", [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2},
                                     {"subsampling": 2, "progressive": True}, {"grey": True}])
def test_a_region_decodes_to_the_full_decodes_pixels(turbojpeg3: str, options: dict) -> None:
    """Boxes anywhere (edges, a left edge off the MCU grid, the whole image) of 4:4:4, 4:2:2, 4:2:0, progressive
    and greyscale JPEGs of sizes off the MCU grid: the same pixels as the full decode, except near the box's
    edges, where chroma upsampling lacks its context (a few levels)."""
    pixels = _photo(101, 157)
    grey = options.pop("grey", False)
    data = _jpeg(pixels[..., 0] if grey else pixels, **options)
    full = simplejpeg.decode_jpeg(data, colorspace="RGB")
    for top, left, height, width in [(0, 0, 101, 157), (3, 5, 40, 33), (60, 121, 41, 36), (17, 16, 1, 1),
                                     (100, 0, 1, 157), (0, 156, 101, 1)]:
        region = decode_region(data, top, left, height, width)
        assert region is not None and region.shape == (height, width, 3)
        reference = full[top : top + height, left : left + width]
        difference = np.abs(region.astype(int) - reference.astype(int))
        assert difference.max() <= 24, (top, left, height, width, difference.max())
        assert min(height, width) < 20 or difference.mean() < 1.0, (top, left, height, width)
        inner = difference[2:-2, 9:-9]  # away from the edges: exact
        assert inner.size == 0 or inner.max() <= 1, (top, left, height, width)


def test_what_the_region_decoder_cannot_take_falls_back(turbojpeg3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a JPEG, a box outside the image, truncated data (a libjpeg warning) or CMYK: ``None`` (the caller
    decodes in full and reports bad files); ``off`` or no library: ``None`` for every JPEG."""
    data = _jpeg(_photo(64, 80))
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 32), (10, 20, 30, 40)).save(cmyk, "JPEG")
    assert decode_region(png.getvalue(), 0, 0, 4, 4) is None
    assert decode_region(data, 40, 0, 30, 10) is None and decode_region(data, 0, 70, 10, 20) is None
    assert decode_region(data[: len(data) // 2], 0, 0, 64, 80) is None
    assert decode_region(data[: len(data) * 9 // 10], 0, 0, 8, 8) is None  # truncated below the box: still caught
    assert decode_region(data + b"\0\0", 0, 0, 8, 8) is not None  # zero padding after the end marker is fine
    assert decode_region(cmyk.getvalue(), 0, 0, 8, 8) is None
    assert decode_region(data, 0, 0, 8, 8) is not None
    assert np.array_equal(decode_region(memoryview(data), 3, 9, 20, 30), decode_region(data, 3, 9, 20, 30))
    assert region_decoding_library() == turbojpeg3
    monkeypatch.setenv(LIBRARY_ENV, "off")
    assert decode_region(data, 0, 0, 8, 8) is None and region_decoding_library() is None
    monkeypatch.setenv(LIBRARY_ENV, "/nonexistent/libturbojpeg.so")
    assert decode_region(data, 0, 0, 8, 8) is None


def test_the_training_crop_path_decodes_only_the_box_when_it_can(turbojpeg3: str, monkeypatch) -> None:
    """Same random draws, same box and flip: the crop path's output with the region decode is the one decoded in
    full, within the edge difference; EXIF-rotated photos keep the full decode (the box is drawn upright)."""
    crop = v2.RandomResizedCrop((112, 112), antialias=True)  # boxes of a 200-px-high photo: never a DCT scale
    flip = v2.RandomHorizontalFlip()
    used = []
    original = decode_region

    def spy(*args):
        rows = original(*args)
        used.append((args[1:], rows is not None))
        return rows

    monkeypatch.setattr("recipes.decode.crop.decode_region", spy)
    for orientation in (1, 6):
        data = photo_jpeg(200, 300, orientation)
        outputs = {}
        for library in ("off", turbojpeg3):
            monkeypatch.setenv(LIBRARY_ENV, library)
            torch.manual_seed(3)
            outputs[library] = torch.stack([jpeg_random_resized_crop(data, crop, flip) for _ in range(12)])
        difference = (outputs["off"].float() - outputs[turbojpeg3].float()).abs()
        assert difference.mean() < 0.5 and difference.max() <= 16, orientation
    torch.manual_seed(3)
    first = crop_box(crop, 200, 300)
    # asked for 12 boxes with the library off (declined), 12 with it on (decoded); never for the rotated photo
    assert [decoded for _, decoded in used] == [False] * 12 + [True] * 12 and used[0][0] == tuple(first.values())


def test_loader_workers_each_open_their_own_decoder(turbojpeg3: str) -> None:
    """Forked ``DataLoader`` workers (the training setup) decode regions with their own TurboJPEG handle."""
    data = photo_jpeg(120, 160)
    crop = v2.RandomResizedCrop((32, 32), antialias=True)

    class Crops(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 16

        def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, int]:
            return jpeg_random_resized_crop(data, crop), decode_region(data, 0, 0, 8, 8) is not None, os.getpid()

    decode_region(data, 0, 0, 8, 8)  # a handle in this process before the fork
    batches = list(torch.utils.data.DataLoader(Crops(), batch_size=4, num_workers=2))
    assert [tuple(crops.shape) for crops, _, _ in batches] == [(4, 3, 32, 32)] * 4
    assert all(bool(decoded.all()) for _, decoded, _ in batches)  # the region decode worked in the workers
    assert len({int(pid) for _, _, pids in batches for pid in pids} - {os.getpid()}) == 2


def test_a_conda_environments_library_is_found_without_configuration(turbojpeg3: str, tmp_path, monkeypatch) -> None:
    """conda-forge's libturbojpeg sits in ``$CONDA_PREFIX/lib``, which ``ctypes.util.find_library`` does not
    search on Linux: it is among the candidates, and loads."""
    from recipes.decode.turbojpeg import library_candidates, load_library

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libturbojpeg.so.0").symlink_to(turbojpeg3)
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path))
    monkeypatch.delenv(LIBRARY_ENV)
    assert str(tmp_path / "lib" / "libturbojpeg.so.0") in library_candidates()
    load_library.cache_clear()
    try:
        assert load_library() is not None and region_decoding_library() is not None
    finally:
        load_library.cache_clear()


def test_without_libturbojpeg3_only_ci_where_its_wheel_installs_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import helpers

    assert helpers.turbojpeg_wheel_exists("linux", (3, 11))
    assert not helpers.turbojpeg_wheel_exists("linux", (3, 12))
    assert not helpers.turbojpeg_wheel_exists("darwin", (3, 11))
    monkeypatch.setattr(helpers, "libturbojpeg3", lambda: None)
    for ci, wheel, outcome in (("1", True, pytest.fail.Exception), ("1", False, pytest.skip.Exception),
                               ("", True, pytest.skip.Exception)):
        monkeypatch.setenv("CI", ci)
        monkeypatch.setattr(helpers, "turbojpeg_wheel_exists", lambda wheel=wheel: wheel)
        with pytest.raises(outcome) as info:
            helpers.require_libturbojpeg3()
        assert "libturbojpeg >= 3" in str(info.value)
