"""Decoding: EXIF orientation, every PIL mode to correct RGB, unreadable files reported by name."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recipes.images import BadImageError, check_image_record, jpeg_has_end_marker, load_rgb, to_rgb
from recipes.transforms import decode_raw_rgb, decode_to_tensor, encode_raw_rgb


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "I", "LA", "1", "F"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    base = Image.new("RGB", (8, 6), (200, 100, 50))
    image = base.convert(mode) if mode not in ("I;16", "I", "F") else Image.new(mode, (8, 6), 1000)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (8, 6)


def test_sixteen_bit_grey_is_rescaled_not_clipped() -> None:
    array = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    image = Image.fromarray(array)
    assert image.mode.startswith("I;16")
    value = np.asarray(to_rgb(image))[0, 0]
    assert 120 <= value[0] <= 135  # mid-grey, not saturated white


def test_transparency_is_composited_on_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert tuple(np.asarray(to_rgb(image))[0, 0]) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    data = _png_bytes(image, "JPEG", exif=exif.tobytes())
    assert load_rgb({"bytes": data, "path": None}).size == (10, 20)
    assert tuple(decode_to_tensor({"bytes": data, "path": None}).shape) == (3, 20, 10)


def test_jpeg_fast_path_matches_pil(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    path = tmp_path / "x.jpg"
    image.save(path, quality=95)
    fast = decode_to_tensor({"bytes": None, "path": str(path)})
    reference = torch.from_numpy(np.array(load_rgb(str(path)))).permute(2, 0, 1)
    assert fast.shape == reference.shape
    assert (fast.int() - reference.int()).abs().float().mean() < 2.0


def test_truncated_file_is_reported_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    data = _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    path.write_bytes(data[: len(data) // 2])
    reason = check_image_record({"bytes": None, "path": str(path)})
    assert reason is not None and "truncated" in reason.lower()
    with pytest.raises(BadImageError, match=r"broken\.jpg"):
        load_rgb({"bytes": None, "path": str(path)})


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello")
    assert "cannot identify" in check_image_record(str(path))


def test_raw_cache_roundtrip() -> None:
    pixels = torch.randint(0, 255, (3, 7, 5), dtype=torch.uint8)
    assert torch.equal(decode_raw_rgb(encode_raw_rgb(pixels)), pixels)
    assert torch.equal(decode_to_tensor({"bytes": encode_raw_rgb(pixels), "path": None}), pixels)


def test_jpeg_end_marker_check_allows_padding_and_catches_a_cut() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    assert jpeg_has_end_marker(data) and jpeg_has_end_marker(data + b"\0" * 100)
    assert jpeg_has_end_marker(bytearray(data)) and jpeg_has_end_marker(memoryview(data))
    assert not jpeg_has_end_marker(data[:-1]) and not jpeg_has_end_marker(data[: len(data) // 2])
    assert not jpeg_has_end_marker(data + b"trailer") and not jpeg_has_end_marker(b"")
