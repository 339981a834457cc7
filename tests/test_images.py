"""Decoding: EXIF orientation, every PIL mode to correct RGB, unreadable files reported by name."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import jpeg_bomb, png_bomb
from PIL import Image

from recipes.config import RecipeError
from recipes.decode.images import BadImageError, check_image_record, load_rgb, to_rgb
from recipes.decode.jpeg import jpeg_has_end_marker, jpeg_size
from recipes.decode.tensors import decode_raw_rgb, decode_to_tensor, encode_raw_rgb


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


# ----------------------------------------------------------------------------- decompression bombs


@pytest.fixture
def no_decoder_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bomb must be refused from its header: the full JPEG decoders fail the test if they are reached."""
    import recipes.decode.crop
    import recipes.decode.tensors

    def reached(*args, **kwargs):
        raise AssertionError("a decoder was given a decompression bomb")

    monkeypatch.setattr(recipes.decode.tensors, "decode_jpeg", reached)
    if recipes.decode.crop.simplejpeg is not None:
        monkeypatch.setattr(recipes.decode.crop.simplejpeg, "decode_jpeg", reached)


def test_jpeg_size_reads_the_frame_header() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (37, 21)).save(buffer, format="JPEG", progressive=True, exif=Image.Exif().tobytes())
    assert jpeg_size(buffer.getvalue()) == (37, 21) and jpeg_size(memoryview(buffer.getvalue())) == (37, 21)
    assert jpeg_size(jpeg_bomb()) == (65000, 65000)
    assert jpeg_size(png_bomb()) is None and jpeg_size(b"\xff\xd8\xff") is None and jpeg_size(b"") is None


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_a_decompression_bomb_is_a_bad_image_named_on_every_decoding_path(
    kind: str, tmp_path: Path, no_decoder_reached: None
) -> None:
    from torchvision.transforms import v2

    from recipes.decode.crop import jpeg_random_resized_crop
    from recipes.decode.device import device_decodable_bytes
    from recipes.decode.tensors import decode_augmented
    from recipes.tasks.segmentation.masks import _lazy_open

    path = tmp_path / f"bomb.{'png' if kind == 'png' else 'jpg'}"
    path.write_bytes(png_bomb() if kind == "png" else jpeg_bomb())
    # torchvision's JPEG path reads the frame header itself; Pillow reports its own check in the same terms
    size = "is over the limit of 178,956,970 pixels" if kind == "png" else "is 65000 x 65000 = 4,225,000,000 pixels"
    records = [str(path), {"bytes": None, "path": str(path)}, {"bytes": path.read_bytes(), "path": str(path)}]
    for record in records:
        reason = check_image_record(record)
        assert reason is not None and "over the limit of 178,956,970" in reason and "--max_image_pixels" in reason
        for decode in (load_rgb, decode_to_tensor, _lazy_open):
            if decode is decode_to_tensor and isinstance(record, str):
                continue
            with pytest.raises(BadImageError, match=rf"{path.name}"):
                decode(record)
    with pytest.raises(BadImageError, match=rf"{path.name} {size}"):
        decode_to_tensor({"bytes": None, "path": str(path)})
    crop = v2.Compose([v2.RandomResizedCrop(32), v2.RandomHorizontalFlip()])
    with pytest.raises(BadImageError, match=path.name):
        decode_augmented({"bytes": None, "path": str(path)}, crop)
    assert jpeg_random_resized_crop(path.read_bytes(), crop.transforms[0]) is None
    assert device_decodable_bytes({"bytes": path.read_bytes(), "path": str(path)}) is None


def test_the_pixel_cap_is_one_setting_for_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recipes.decode.images import MAX_PIXELS_ENV, max_image_pixels, set_max_image_pixels

    monkeypatch.setenv(MAX_PIXELS_ENV, str(max_image_pixels()))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, format="JPEG")
    photo = {"bytes": buffer.getvalue(), "path": "photo.jpg"}
    assert decode_to_tensor(photo).shape == (3, 48, 64)
    set_max_image_pixels(64 * 48 - 1)
    with pytest.raises(BadImageError, match=r"photo\.jpg is 64 x 48 = 3,072 pixels, over the limit of 3,071"):
        decode_to_tensor(photo)
    assert "over the limit of 3,071" in check_image_record(photo)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    set_max_image_pixels(500_000_000)  # above Pillow's own limit: Pillow's is raised with it
    # 400 M pixels: allowed through the cap and Pillow's check; the (tiny) data is then found truncated
    assert "limit" not in (check_image_record({"bytes": png_bomb(), "path": "big.png"}) or "")
    with pytest.raises(RecipeError, match="positive"):
        set_max_image_pixels(0)
    # A process started with the raised cap in its environment (a spawned loader worker) applies it to Pillow too.
    import os
    import subprocess
    import sys

    probe = ("from recipes.decode.images import check_image_record; from helpers import png_bomb; "
             "print(check_image_record({'bytes': png_bomb(), 'path': 'big.png'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=Path(__file__).parent,
                            env={**os.environ, MAX_PIXELS_ENV: "500000000"}, timeout=120)
    assert result.returncode == 0 and "limit" not in result.stdout, result.stdout + result.stderr[-2000:]


@pytest.mark.parametrize("orientation", [*range(0, 10), 0x1234])
def test_one_exif_reader_for_jpeg_bytes_and_opened_images(orientation: int) -> None:
    """``exif_orientation`` gives the same answer from a JPEG's bytes and from the opened image (1 for a missing
    or out-of-range tag, as decoders assume), and ``oriented_size`` swaps width and height for 5-8."""
    from recipes.decode.jpeg import exif_orientation, oriented_size

    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buffer, format="JPEG", exif=exif.tobytes())
    expected = orientation if 1 <= orientation <= 8 else 1
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert exif_orientation(buffer.getvalue()) == exif_orientation(image) == expected
        assert oriented_size(image) == ((20, 30) if expected in (5, 6, 7, 8) else (30, 20))
