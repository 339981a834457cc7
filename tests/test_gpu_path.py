"""The GPU-path options, exercised on the CPU: ``gpu_decode`` (the same decode + augmentation + pixel steps, run
in the main process on the model's device), ``normalize_on_device`` (uint8 batches from the workers, normalised by
the training process) and ``torch_compile`` reaching the model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from helpers import REPO, shared_dataset
from PIL import Image

from recipes import transforms
from recipes.decode import device as device_decode
from recipes.decode import jpeg
from recipes.decode.device import EncodedImages, encode_for_device
from recipes.decode.images import BadImageError
from recipes.tasks.classification.transforms import build_train_augmentation, transform_classification_batch
from recipes.transforms import ProcessorGeometry, collate_images_and_labels, normalize_uint8_inputs, pixels_on_device

GEOMETRY = ProcessorGeometry(height=64, width=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def _jpeg(size: tuple[int, int], seed: int, **save: object) -> bytes:
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed),
                           dtype=torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=save.pop("format", "JPEG"), **save)
    return buffer.getvalue()


def _rotated_jpeg() -> bytes:
    image = Image.open(io.BytesIO(_jpeg((40, 30), 3)))
    exif = Image.Exif()
    exif[jpeg.EXIF_ORIENTATION_TAG] = 6  # rotate 90° on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_jpegs_travel_encoded_and_the_rest_is_decoded_by_the_worker() -> None:
    records = [{"bytes": _jpeg((48, 32), 0), "path": "a.jpg"}, {"bytes": _jpeg((20, 20), 1, format="PNG"),
               "path": "b.png"}, {"bytes": _rotated_jpeg(), "path": "c.jpg"}]
    items, encoded = encode_for_device(records)
    assert encoded == [True, False, False]
    assert items[0].dim() == 1 and items[1].shape == (3, 20, 20)
    assert items[2].shape == (3, 40, 30)  # EXIF rotation applied by the worker, as on the CPU path


def test_greyscale_rgb_stored_and_truncated_jpegs_never_reach_nvjpeg() -> None:
    """Measured on an H200 (tests/test_gpu.py): nvJPEG returns wrong RGB pixels for greyscale JPEGs and fills a
    truncated file's missing rows without an error. The worker decodes these on the CPU instead, which converts
    greyscale to RGB and names a truncated file; JPEGs stored as RGB (not YCbCr) go there too."""
    grey = Image.open(io.BytesIO(_jpeg((40, 30), 4))).convert("L")
    buffer, stored_rgb = io.BytesIO(), io.BytesIO()
    grey.save(buffer, format="JPEG")
    Image.open(io.BytesIO(_jpeg((40, 30), 6))).save(stored_rgb, format="JPEG", keep_rgb=True)
    complete = _jpeg((48, 32), 5)
    assert device_decode.device_decodable_bytes({"bytes": complete + b"\0\0"}) is not None  # zero padding is fine
    assert device_decode.device_decodable_bytes({"bytes": stored_rgb.getvalue()}) is None
    assert device_decode.device_decodable_bytes({"bytes": buffer.getvalue()}) is None
    assert device_decode.device_decodable_bytes({"bytes": complete[: len(complete) // 2]}) is None
    items, encoded = encode_for_device([{"bytes": buffer.getvalue(), "path": "grey.jpg"}])
    assert encoded == [False] and items[0].shape == (3, 30, 40)
    with pytest.raises(BadImageError, match=r"cut\.jpg"):
        encode_for_device([{"bytes": complete[: len(complete) // 2], "path": "cut.jpg"}])


def test_device_path_gives_the_cpu_path_pixels_exactly() -> None:
    """Deterministic preset: the main-process decode + augmentation + normalisation equals the worker path."""
    records = [{"bytes": _jpeg((96, 80), seed), "path": f"{seed}.jpg"} for seed in range(3)]
    records.append({"bytes": _jpeg((70, 90), 9, format="PNG"), "path": "x.png"})
    augment = build_train_augmentation("none", GEOMETRY.height, GEOMETRY.width)
    worker = transform_classification_batch({"image": records, "label": [0, 1, 2, 0]}, image_column="image",
                                            label_column="label", augment=augment)
    expected = collate_images_and_labels([{"pixel_values": p, "labels": 0} for p in worker["pixel_values"]],
                                         processor=None, fast=GEOMETRY)["pixel_values"]
    items, encoded = encode_for_device(records)
    inputs = pixels_on_device({"encoded_images": EncodedImages(items, encoded)}, torch.device("cpu"),
                              augment=augment, processor=None, fast=GEOMETRY)
    assert "encoded_images" not in inputs
    assert torch.equal(inputs["pixel_values"], expected)


def test_uint8_batches_normalised_by_the_training_process_equal_worker_normalised_batches() -> None:
    """``normalize_on_device``: the workers hand over ``uint8`` batches (channels-last crops and contiguous images
    alike), and the training process's normalisation gives exactly the batch the workers used to normalise."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=generator) for _ in range(3)]
    images[1] = images[1].permute(1, 2, 0).contiguous().permute(2, 0, 1)  # channels-last, as the crop path gives
    examples = [{"pixel_values": image, "labels": label} for image, label in zip(images, [2, 0, 1])]
    expected = collate_images_and_labels(examples, processor=None, fast=GEOMETRY)
    handed = collate_images_and_labels(examples, processor=None, fast=GEOMETRY, keep_uint8=True)
    assert handed["pixel_values"].dtype == torch.uint8 and handed["pixel_values"].shape == (3, 3, 64, 64)
    assert torch.equal(handed["pixel_values"], torch.stack(images))
    ready = normalize_uint8_inputs(handed, torch.device("cpu"), geometry=GEOMETRY)
    assert ready["pixel_values"].is_contiguous() and torch.equal(ready["pixel_values"], expected["pixel_values"])
    assert ready["labels"].tolist() == [2, 0, 1]
    evaluation = {"pixel_values": expected["pixel_values"].clone()}  # float batches pass unchanged
    assert torch.equal(normalize_uint8_inputs(evaluation, torch.device("cpu"), geometry=GEOMETRY)["pixel_values"],
                       expected["pixel_values"])


@pytest.mark.parametrize("on_device", [True, False])
def test_normalize_on_device_reaches_the_trainer(tmp_path: Path, shapes_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 on_device: bool) -> None:
    """The default hands ``uint8`` training batches to the Trainer, which normalises every one before the model;
    ``--normalize_on_device false`` normalises in the workers (the Trainer then converts nothing)."""
    from recipes.lifecycle import run
    from recipes.parse import parse_recipe

    converted: list[tuple[int, torch.dtype]] = []
    original = transforms.normalize_uint8_inputs

    def spy(inputs: dict, device: torch.device, **kwargs: object) -> dict:
        was_uint8 = inputs["pixel_values"].dtype == torch.uint8
        inputs = original(inputs, device, **kwargs)
        if was_uint8:
            converted.append((len(inputs["pixel_values"]), inputs["pixel_values"].dtype))
        return inputs

    monkeypatch.setattr(transforms, "normalize_uint8_inputs", spy)
    recipe = parse_recipe([str(REPO / "configs/quickstart/classification.yaml"), "--train_dir", str(shapes_dir),
                           "--normalize_on_device", str(on_device).lower(), "--max_steps", "2",
                           "--per_device_train_batch_size", "4", "--make_plots", "false",
                           "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])
    run(recipe)
    assert converted == ([(4, torch.float32)] * 2 if on_device else [])


@pytest.mark.real_data
def test_gpu_decode_runs_through_the_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--gpu_decode true`` end to end (on the CPU here): every training batch goes through the device-side
    decode, real Food-101 JPEGs, and the run trains and evaluates."""
    from recipes.lifecycle import run
    from recipes.parse import parse_recipe

    food = shared_dataset("food101-mini")
    calls: list[int] = []
    original = device_decode.decode_batch
    monkeypatch.setattr(device_decode, "decode_batch",
                        lambda batch, device: calls.append(sum(batch.encoded)) or original(batch, device))
    recipe = parse_recipe([str(REPO / "configs/quickstart/classification.yaml"), "--train_dir",
                           str(food / "train"), "--validation_dir", str(food / "test"), "--gpu_decode", "true",
                           "--augmentation", "basic", "--max_train_samples", "16", "--max_eval_samples", "8",
                           "--max_steps", "2", "--per_device_train_batch_size", "8", "--make_plots", "false",
                           "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])
    context = run(recipe)
    assert calls == [8, 8]  # two steps, every JPEG decoded by the device path
    assert context.metrics["train"]["train_samples"] == 16
    assert "eval_accuracy" in json.loads((tmp_path / "out" / "eval_results.json").read_text())


def test_gpu_decode_and_the_decode_cache_exclude_each_other() -> None:
    from recipes.config import RecipeError
    from recipes.parse import parse_recipe
    from recipes.tasks import get_task

    recipe = parse_recipe([str(REPO / "configs/quickstart/classification.yaml"), "--gpu_decode", "true",
                           "--cache_decoded_images", "true"])
    with pytest.raises(RecipeError, match="choose one"):
        get_task("image-classification").device_transform(None, recipe.data)


def test_torch_compile_reaches_the_model(tmp_path: Path, shapes_dir: Path) -> None:
    """``torch_compile: true`` (a TrainingArguments key, so a recipe key) compiles the model the Trainer trains
    (the `eager` backend keeps it fast; the option and the wiring are what is tested)."""
    from torch._dynamo.utils import counters

    from recipes.lifecycle import run
    from recipes.parse import parse_recipe

    counters.clear()
    recipe = parse_recipe([str(REPO / "configs/quickstart/classification.yaml"), "--train_dir", str(shapes_dir),
                           "--torch_compile", "true", "--torch_compile_backend", "eager", "--max_steps", "1",
                           "--make_plots", "false", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])
    assert recipe.training.torch_compile and recipe.training.torch_compile_backend == "eager"
    run(recipe)
    assert counters["stats"]["unique_graphs"] > 0


def test_gpu_benchmark_without_a_gpu_says_so_and_exits_0() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_training"], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No CUDA GPU" in result.stdout


@pytest.mark.real_data
@pytest.mark.slow
def test_gpu_benchmark_code_path_on_the_cpu(tmp_path: Path) -> None:
    """The benchmark's measurement code on a tiny ViT on the CPU (the figures only mean something on a GPU)."""
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_training", "--device", "cpu", "--quick",
                             "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"synthetic", "input pipeline alone (no model)", "input pipeline", "input pipeline + gpu_decode"} <= set(
        report["images_per_second"])
    assert all(v > 0 for v in report["images_per_second"].values())
    assert report["flops_per_image"] > 0


