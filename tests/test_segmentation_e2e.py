"""Semantic segmentation through the real CLI: quickstart recipe (with auto-resume), a second architecture,
clear errors, two processes, and the real CamSeq frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TWO_CPU_PROCESSES, assert_ok, run_cli, shared_dataset
from PIL import Image

from recipes.sample_data.streets import CLASSES, draw_street, make_streets_dataset

QUICKSTART = "configs/quickstart/segmentation.yaml"
STREET_CLASSES = set(CLASSES) - {"Void"}  # the quickstart recipe maps Void to ignore_index
FAST = ["--dataloader_num_workers", "0", "--logging_steps", "1"]
TINY_UPERNET = json.dumps({
    "backbone_config": {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 16],
                        "depths": [1, 1, 1, 1], "out_features": ["stage1", "stage2", "stage3", "stage4"]},
    "hidden_size": 16, "auxiliary_channels": 8,
})


@pytest.fixture(scope="module")
def streets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 synthetic CamSeq-layout frames: 0.2 held out → 4 training-order-last validation frames."""
    return make_streets_dataset(tmp_path_factory.mktemp("streets"), n_frames=21, seed=1, size=(48, 64))


@pytest.fixture(scope="module")
def new_street_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frame the model never saw, at another size than the training frames."""
    frame, _ = draw_street(50, 70, np.random.default_rng(99))
    path = tmp_path_factory.mktemp("new") / "street.png"
    Image.fromarray(frame).save(path)
    return path


def _check_outputs(out: Path, labels: set[str]) -> dict:
    config = json.loads((out / "config.json").read_text())
    assert set(config["id2label"].values()) == labels and config["semantic_loss_ignore_index"] == 255
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["do_reduce_labels"] is False
    for name in ("model.safetensors", "README.md", "run_manifest.json", "eval_results.json", "training_curves.png",
                 "per_class_iou.png", "predictions.png", "palette.json"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "model-index" in card
    assert "type: mean_iou" in card and "type: mean_accuracy" in card and "type: overall_accuracy" in card
    assert "## Per-class results (validation)" in card and "| Class | IoU | Accuracy |" in card
    assert "## Palette" in card and "![predictions](predictions.png)" in card
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["task"] == "semantic-segmentation" and manifest["data_summary"]["train_pixel_share"]
    metrics = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_mean_iou"] <= 1.0 and np.isfinite(metrics["eval_loss"])
    return metrics


def _segment(out: Path, image: Path) -> list[dict]:
    from transformers import pipeline

    segments = pipeline("image-segmentation", model=str(out), device="cpu")(str(image))
    width, height = Image.open(image).size
    assert segments, "the pipeline found no class at all"
    for segment in segments:
        assert segment["mask"].size == (width, height) and segment["mask"].mode == "L"
    return segments


@pytest.mark.slow
def test_quickstart_recipe_end_to_end_and_resume(tmp_path: Path, streets: Path, new_street_image: Path) -> None:
    out = tmp_path / "out"
    common = [QUICKSTART, "--train_dir", str(streets), "--output_dir", str(out), *FAST, "--eval_strategy", "steps",
              "--eval_steps", "3", "--save_strategy", "steps", "--save_steps", "3"]
    first = run_cli(*common, "--max_steps", "3", "--make_plots", "false")
    assert_ok(first)
    assert "eval_mean_iou" in first.stdout
    # A longer run continues the finished one from its checkpoint when asked to (rerunning with another max_steps
    # alone stops: the fingerprint differs), with a warning naming what changed.
    second = run_cli(*common, "--max_steps", "6", "--resume_from_checkpoint", str(out / "checkpoint-3"))
    assert_ok(second)
    assert "max_steps: 3 → 6" in second.stderr
    metrics = _check_outputs(out, STREET_CLASSES)
    assert metrics["eval_samples"] == 4  # every validation frame counted once
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    segments = _segment(out, new_street_image)
    assert {segment["label"] for segment in segments} <= STREET_CLASSES


@pytest.mark.slow
def test_second_architecture_upernet_through_the_cli(tmp_path: Path, streets: Path, new_street_image: Path) -> None:
    out = tmp_path / "upernet"
    result = run_cli(QUICKSTART, "--train_dir", str(streets), "--output_dir", str(out), *FAST,
                     "--model_type", "upernet", "--config_overrides", TINY_UPERNET, "--max_steps", "2",
                     "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                     "--max_plot_images", "3")
    assert_ok(result)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "upernet" and config["loss_ignore_index"] == 255
    assert "eval_mean_iou" in json.loads((out / "eval_results.json").read_text())
    assert {segment["label"] for segment in _segment(out, new_street_image)} <= STREET_CLASSES


def test_bad_input_is_one_clear_line_without_traceback(tmp_path: Path, streets: Path, capsys) -> None:
    from recipes.cli import main

    code = main([QUICKSTART, "--train_dir", str(streets), "--output_dir", str(tmp_path / "out"),
                 "--dataset_format", "index-masks"])
    stderr = capsys.readouterr().err
    assert code == 2
    assert "error: dataset_format `index-masks` expects" in stderr and "--dataset_format camvid" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_accelerate_launch_counts_each_image_once(tmp_path: Path) -> None:
    data = make_streets_dataset(tmp_path / "streets", n_frames=30, seed=2, size=(48, 64))
    out = tmp_path / "ddp"
    # 30 frames, 0.3 held out -> 9 validation frames (odd) over 2 processes with per-device batch 2: the last
    # batches are uneven, so the samples accelerate duplicates to even them out must not be counted.
    result = run_cli(QUICKSTART, "--train_dir", str(data), "--output_dir", str(out), *FAST,
                     "--train_val_split", "0.3", "--max_steps", "2", "--per_device_eval_batch_size", "2",
                     "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                     "--make_plots", "false", "--use_cpu", "true",
                     launcher=TWO_CPU_PROCESSES, env={"OMP_NUM_THREADS": "1"})
    assert_ok(result)
    assert json.loads((out / "run_manifest.json").read_text())["world_size"] == 2
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_samples"] == 9
    from transformers import AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(out)
    assert set(model.config.id2label.values()) == STREET_CLASSES


@pytest.mark.real_data
@pytest.mark.slow
def test_real_camseq_through_the_cli(tmp_path: Path) -> None:
    data = shared_dataset("camseq")
    out = tmp_path / "camseq"
    result = run_cli(QUICKSTART, "--train_dir", str(data), "--output_dir", str(out), *FAST,
                     "--image_processor_overrides", '{"size": {"height": 48, "width": 64}}',
                     "--max_steps", "4", "--per_device_train_batch_size", "4", "--eval_strategy", "steps",
                     "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2", "--max_plot_images", "6")
    assert_ok(result)
    names = {line.split(maxsplit=3)[3].strip() for line in (data / "label_colors.txt").read_text().splitlines()
             if line.strip()}
    metrics = _check_outputs(out, names - {"Void"})
    assert metrics["eval_samples"] == 12  # the last 20% of the 58 frames, in time order
    summary = json.loads((out / "run_manifest.json").read_text())["data_summary"]
    assert summary["layout"] == "camvid" and summary["train_invalid_label_pixels"] == 0
    assert summary["train_pixel_share"]["Road"] > 0.1
    card = (out / "README.md").read_text()
    assert "`#804080`" in card  # Road's colour in the palette legend
    segments = _segment(out, data / "0016E5_08151.png")
    assert {segment["label"] for segment in segments} <= names
