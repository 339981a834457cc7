"""The CUDA branches of the training input path, checked against their CPU counterparts on the same inputs.

They need a CUDA GPU and skip elsewhere (CI has none); run them on a GPU machine with ``pytest -m gpu``. The
tolerances come from an H200 with torch 2.11 / torchvision 0.26 (nvJPEG's hardware decoder for baseline files, its
CUDA path for progressive ones); other versions may need them revisited."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from transformers import ViTImageProcessor

from recipes.decode.crop import cut_and_resize
from recipes.decode.device import EncodedImages, decode_batch, encode_for_device
from recipes.decode.images import BadImageError
from recipes.decode.tensors import decode_to_tensor
from recipes.tasks.classification.transforms import build_train_augmentation
from recipes.transforms import normalize_batch, normalize_uint8_inputs, pixels_on_device, verified_fast_normalisation

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with `pytest -m gpu` on one)"),
]
CUDA = torch.device("cuda")
PROCESSOR = ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.485, 0.456, 0.406],
                              image_std=[0.229, 0.224, 0.225])


def photo_like_jpeg(seed: int, size: tuple[int, int], subsampling: int = 2, progressive: bool = False,
                    mode: str = "RGB") -> bytes:
    """A JPEG of smooth gradients with some texture (what real photos look like to a codec)."""
    generator = np.random.default_rng(seed)
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [127 + 100 * np.sin(rows / (20 + 15 * c) + cols / (35 - 5 * c) + seed) for c in range(3)]
    pixels = np.stack(channels, axis=-1) + generator.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, subsampling=subsampling, progressive=progressive)
    return buffer.getvalue()


def sample_records() -> list[dict]:
    return [
        {"bytes": photo_like_jpeg(0, (300, 400)), "path": "a.jpg"},
        {"bytes": photo_like_jpeg(1, (480, 360), subsampling=0), "path": "b.jpg"},
        {"bytes": photo_like_jpeg(2, (256, 512), progressive=True), "path": "c.jpg"},
        {"bytes": photo_like_jpeg(3, (333, 250), mode="L"), "path": "d.jpg"},
    ]


def grey_level_gap(gpu: torch.Tensor, cpu: torch.Tensor) -> tuple[float, float]:
    """Mean and 99th-percentile absolute difference, in 0-255 grey levels."""
    gap = (gpu.cpu().float() - cpu.float()).abs().flatten()
    return gap.mean().item(), gap.quantile(0.99).item()


def test_normalize_batch_on_the_gpu_equals_the_cpu_result() -> None:
    geometry = verified_fast_normalisation(PROCESSOR)
    pixels = torch.randint(0, 256, (5, 3, 224, 224), dtype=torch.uint8)
    on_gpu = normalize_batch(pixels.to(CUDA), geometry)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32 and on_gpu.is_contiguous()
    torch.testing.assert_close(on_gpu.cpu(), normalize_batch(pixels, geometry), atol=1e-5, rtol=1e-5)


def test_uint8_training_batches_are_normalised_on_the_gpu() -> None:
    """The default ``normalize_on_device`` path: workers hand over uint8, the training process normalises on CUDA."""
    geometry = verified_fast_normalisation(PROCESSOR)
    pixels = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8)
    inputs = normalize_uint8_inputs({"pixel_values": pixels.clone(), "labels": torch.arange(4)}, CUDA,
                                    geometry=geometry)
    assert inputs["pixel_values"].device.type == "cuda"
    expected = PROCESSOR(images=list(pixels), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(inputs["pixel_values"].cpu(), expected, atol=1e-5, rtol=1e-5)


def test_nvjpeg_decodes_the_batch_like_libjpeg_turbo() -> None:
    """nvJPEG's pixels are libjpeg-turbo's with plain chroma upsampling (``fastupsample``), and within about a grey
    level on average of the CPU path's "fancy" upsampling. Greyscale JPEGs stay with the worker (see
    :func:`test_nvjpeg_decodes_greyscale_jpegs_to_rgb`), so for d.jpg this checks the routing."""
    import simplejpeg

    records = sample_records()
    items, encoded = encode_for_device(records)
    assert encoded == [True, True, True, False]  # d.jpg is greyscale
    decoded = decode_batch(EncodedImages(items, encoded), CUDA)
    for record, image in zip(records, decoded):
        reference = decode_to_tensor(record)
        assert image.device.type == "cuda" and image.shape == reference.shape, record["path"]
        mean, p99 = grey_level_gap(image, reference)
        plain = torch.from_numpy(simplejpeg.decode_jpeg(record["bytes"], colorspace="RGB", fastupsample=True))
        plain_mean, plain_max = grey_level_gap(image, plain.permute(2, 0, 1))[0], (
            image.cpu().int() - plain.permute(2, 0, 1).int()).abs().max().item()
        print(f"{record['path']}: vs CPU path mean {mean:.2f}, p99 {p99:.1f}; vs fastupsample mean {plain_mean:.2f}, "
              f"max {plain_max}")
        assert mean < 2 and p99 <= 16, (record["path"], mean, p99)
        assert plain_mean < 0.1 and plain_max <= 8, (record["path"], plain_mean, plain_max)


def test_a_truncated_jpeg_never_reaches_nvjpeg_and_is_reported_by_name() -> None:
    records = sample_records()
    cut = {"bytes": records[1]["bytes"][: len(records[1]["bytes"]) // 3], "path": "cut.jpg"}
    with pytest.raises(BadImageError, match=r"cut\.jpg"):
        encode_for_device([records[0], cut])


GREYSCALE_FAULT = ("torchvision 0.26's nvJPEG path returned wrong RGB pixels for greyscale JPEGs (65.9 grey levels "
                   "off on average, H200), so they are decoded by the workers; when this passes, "
                   "device_decodable_bytes can send them to nvJPEG again")
TRUNCATION_FAULT = ("torchvision 0.26's nvJPEG path decoded a truncated JPEG without an error (H200), so files without "
                    "the end marker are decoded by the workers, which name them")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=GREYSCALE_FAULT)
def test_nvjpeg_decodes_greyscale_jpegs_to_rgb() -> None:
    grey = sample_records()[3]
    on_gpu = decode_jpeg(torch.frombuffer(bytearray(grey["bytes"]), dtype=torch.uint8), mode=ImageReadMode.RGB,
                         device=CUDA)
    mean, _ = grey_level_gap(on_gpu, decode_to_tensor(grey))
    assert mean < 2, mean


@pytest.mark.xfail(strict=True, raises=pytest.fail.Exception, reason=TRUNCATION_FAULT)
def test_nvjpeg_reports_a_truncated_jpeg() -> None:
    data = sample_records()[1]["bytes"]
    with pytest.raises(RuntimeError):
        decode_jpeg(torch.frombuffer(bytearray(data[: len(data) // 3]), dtype=torch.uint8), device=CUDA)


def test_gpu_decode_training_batch_matches_the_same_steps_on_the_cpu() -> None:
    """``pixels_on_device`` on CUDA (nvJPEG, augmentation and normalisation on the GPU) against the same function on
    the CPU with the same seed: same boxes and flips, so the pixels agree up to decoder and resize rounding."""
    records = sample_records()
    augment = build_train_augmentation("basic", 224, 224)
    fast = verified_fast_normalisation(PROCESSOR)
    batches = {}
    for device in (CUDA, torch.device("cpu")):
        items, encoded = encode_for_device(records)
        torch.manual_seed(7)
        inputs = {"encoded_images": EncodedImages(items, encoded), "labels": torch.arange(len(records))}
        batches[device.type] = pixels_on_device(inputs, device, augment=augment, processor=PROCESSOR,
                                                fast=fast)["pixel_values"]
    assert batches["cuda"].device.type == "cuda" and batches["cuda"].shape == (len(records), 3, 224, 224)
    std = torch.tensor(PROCESSOR.image_std).view(3, 1, 1) * 255  # back to grey levels
    for record, on_gpu, on_cpu in zip(records, batches["cuda"].cpu(), batches["cpu"]):
        mean, p99 = grey_level_gap(on_gpu * std, on_cpu * std)
        print(f"gpu_decode {record['path']} vs the CPU: mean {mean:.2f}, p99 {p99:.1f} grey levels")
        assert mean < 1.5 and p99 <= 10, (record["path"], mean, p99)


@pytest.mark.parametrize("flip", [False, True])
def test_cut_and_resize_on_the_gpu_matches_the_cpu_kernel(flip: bool) -> None:
    image = decode_to_tensor(sample_records()[0])
    crop = build_train_augmentation("basic", 224, 224).transforms[0]
    region = image[:, 40:260, 30:330]
    on_cpu = cut_and_resize(region, (224, 224), crop, flip)
    on_gpu = cut_and_resize(region.to(CUDA), (224, 224), crop, flip)
    assert on_gpu.device.type == "cuda" and on_gpu.shape == on_cpu.shape == (3, 224, 224)
    mean, p99 = grey_level_gap(on_gpu, on_cpu)
    assert mean < 0.5 and p99 <= 2, (mean, p99)
