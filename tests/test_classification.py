"""Image classification: data sources, transforms, streaming metrics (vs scikit-learn), end to end."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TWO_CPU_PROCESSES, assert_ok, run_cli, shared_dataset
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from transformers import EvalPrediction, ViTImageProcessor

from recipes.config import RecipeError
from recipes.parse import parse_recipe
from recipes.tasks.classification.metric import ClassificationMetric
from recipes.tasks.classification.transforms import (
    build_train_augmentation,
    transform_classification_batch,
)
from recipes.transforms import collate_images_and_labels

QUICKSTART = "configs/quickstart/classification.yaml"
TINY_VIT = [  # the quickstart recipe runs a tiny ResNet; this switches it to a tiny ViT
    "--model_type",
    "vit",
    "--config_overrides",
    '{"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, '
    '"num_attention_heads": 2, "intermediate_size": 64}',
    "--image_processor_overrides",
    '{"size": {"height": 32, "width": 32}}',
]


def _recipe(tmp_path: Path, *extra: str):
    return parse_recipe([QUICKSTART, "--output_dir", str(tmp_path / "out"), *extra])


def _load(tmp_path: Path, *extra: str):
    from recipes.tasks import get_task

    recipe = _recipe(tmp_path, *extra)
    return recipe, get_task("image-classification").load_data(recipe.data, seed=0)


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("num_classes", [3, 7])
def test_streaming_metrics_match_sklearn(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    id2label = {i: f"c{i}" for i in range(num_classes)}
    labels = rng.integers(0, num_classes - 1, size=103)  # the last class never occurs in the labels
    logits = rng.normal(size=(103, num_classes)).astype(np.float32)
    logits[np.arange(103), labels] += 1.0
    metric = ClassificationMetric(id2label)
    for start in range(0, 103, 16):  # streamed in uneven batches
        batch = slice(start, start + 16)
        out = metric(EvalPrediction(logits[batch], labels[batch]), compute_result=start + 16 >= 103)
    preds = logits.argmax(1)
    assert out["samples"] == 103
    assert out["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert out["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"), abs=1e-6)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=list(range(num_classes)), zero_division=0
    )
    per_class = metric.details["per_class"]
    for i in range(num_classes):
        assert per_class[f"c{i}"]["precision"] == pytest.approx(precision[i], abs=1e-6)
        assert per_class[f"c{i}"]["recall"] == pytest.approx(recall[i], abs=1e-6)
        assert per_class[f"c{i}"]["f1"] == pytest.approx(f1[i], abs=1e-6)
    assert np.array_equal(
        np.array(metric.details["confusion_matrix"]), confusion_matrix(labels, preds, labels=list(range(num_classes)))
    )
    if num_classes >= 5:
        expected = top_k_accuracy_score(labels, logits, k=5, labels=list(range(num_classes)))
        assert out["top5_accuracy"] == pytest.approx(expected)
    else:
        assert "top5_accuracy" not in out


def test_metric_state_resets_between_evaluations() -> None:
    metric = ClassificationMetric({0: "a", 1: "b"})
    metric(EvalPrediction(np.array([[1.0, 0.0]]), np.array([1])), compute_result=True)
    out = metric(EvalPrediction(np.array([[1.0, 0.0]]), np.array([0])), compute_result=True)
    assert out["accuracy"] == 1.0 and out["samples"] == 1


# ----------------------------------------------------------------------------- data


def test_image_folder_with_seeded_stratified_split(tmp_path: Path, shapes_dir: Path) -> None:
    _, data = _load(tmp_path, "--train_dir", str(shapes_dir))
    assert sorted(data.id2label.values()) == ["circle", "cross", "square", "triangle"]
    assert len(data.train) + len(data.validation) == 96
    val_counts = np.bincount(data.validation["label"])
    assert val_counts.min() >= 4  # stratified: every class in validation
    _, again = _load(tmp_path, "--train_dir", str(shapes_dir))
    assert again.validation["label"] == data.validation["label"]


def test_split_subfolders_use_their_own_validation(tmp_path: Path) -> None:
    from recipes.sample_data.shapes import make_shapes_dataset

    make_shapes_dataset(tmp_path / "data" / "train", images_per_class=5, size=16, classes=("circle", "square"))
    make_shapes_dataset(
        tmp_path / "data" / "validation", images_per_class=2, size=16, seed=1, classes=("circle", "square")
    )
    make_shapes_dataset(tmp_path / "data" / "test", images_per_class=3, size=16, seed=2, classes=("circle", "square"))
    _, data = _load(tmp_path, "--train_dir", str(tmp_path / "data"))
    assert (len(data.train), len(data.validation), len(data.test)) == (10, 4, 6)


def test_csv_listing_with_string_labels(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    rows = ["path,food"]
    for i in range(12):
        Image.new("RGB", (10, 10), (i * 20, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'pizza' if i % 2 else 'sushi'}")
    (tmp_path / "train.csv").write_text("\n".join(rows))
    _, data = _load(
        tmp_path,
        "--train_file",
        str(tmp_path / "train.csv"),
        "--image_column_name",
        "path",
        "--label_column_name",
        "food",
        "--train_val_split",
        "0.25",
    )
    assert sorted(data.id2label.values()) == ["pizza", "sushi"]
    assert len(data.train) == 9 and len(data.validation) == 3


def test_missing_label_column_lists_the_columns(tmp_path: Path, shapes_dir: Path) -> None:
    with pytest.raises(RecipeError, match=r"Column `labels`.*Available columns: \['image', 'label'\]"):
        _load(tmp_path, "--train_dir", str(shapes_dir), "--label_column_name", "labels")


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        _load(tmp_path, "--train_dir", str(tmp_path / "nope"))


def test_a_file_name_that_is_not_utf8_is_skipped_and_named(tmp_path: Path) -> None:
    import os

    from recipes.sample_data.shapes import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "data", images_per_class=6, size=16, classes=("circle", "square"))
    shutil.copy(root / "circle" / sorted(os.listdir(root / "circle"))[0],
                os.fsdecode(os.fsencode(str(root / "circle")) + b"/latin1-\xe9t\xe9.png"))
    _, data = _load(tmp_path, "--train_dir", str(root), "--train_val_split", "0.25")
    skipped = data.summary["skipped_files"]
    assert [s["path"] for s in skipped] == [f"{root}/circle/latin1-\\xe9t\\xe9.png"], skipped
    assert "UTF-8" in skipped[0]["reason"]
    assert len(data.train) + len(data.validation) == 12
    with pytest.raises(RecipeError, match=r"(?s)not valid UTF-8 \(strict mode\).*latin1-\\xe9t\\xe9\.png.*strict"):
        _load(tmp_path, "--train_dir", str(root), "--strict", "true")


def _folder_with_bad_files(tmp_path: Path) -> Path:
    from recipes.sample_data.shapes import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "data", images_per_class=6, size=16, classes=("circle", "square"))
    (root / "circle" / "empty.jpg").write_bytes(b"")
    good = (root / "square" / "square_0000.png").read_bytes()
    (root / "square" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def test_unreadable_images_are_skipped_and_reported(tmp_path: Path) -> None:
    root = _folder_with_bad_files(tmp_path)
    _, data = _load(tmp_path, "--train_dir", str(root), "--train_val_split", "0.25")
    skipped = {Path(item["path"]).name for item in data.summary["skipped_files"]}
    assert skipped == {"empty.jpg", "truncated.png"}
    assert len(data.train) + len(data.validation) == 12


def test_unreadable_images_stop_a_strict_run(tmp_path: Path) -> None:
    root = _folder_with_bad_files(tmp_path)
    with pytest.raises(RecipeError, match=r"(?s)empty\.jpg: .*truncated\.png: .*without `strict`"):
        _load(tmp_path, "--train_dir", str(root), "--strict")


def test_decompression_bombs_are_skipped_and_listed_at_start_up(tmp_path: Path) -> None:
    from helpers import jpeg_bomb, png_bomb

    from recipes.sample_data.shapes import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "data", images_per_class=6, size=16, classes=("circle", "square"))
    (root / "circle" / "bomb.png").write_bytes(png_bomb())
    (root / "square" / "bomb.jpg").write_bytes(jpeg_bomb())
    _, data = _load(tmp_path, "--train_dir", str(root), "--train_val_split", "0.25")
    skipped = {Path(item["path"]).name: item["reason"] for item in data.summary["skipped_files"]}
    assert set(skipped) == {"bomb.png", "bomb.jpg"}
    assert all("over the limit of 178,956,970 pixels" in reason and "--max_image_pixels" in reason
               for reason in skipped.values())
    assert len(data.train) + len(data.validation) == 12
    with pytest.raises(RecipeError, match=r"(?s)bomb\.(png|jpg): over the limit.*without `strict`"):
        _load(tmp_path, "--train_dir", str(root), "--strict")


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("preset", ["none", "basic", "strong"])
def test_presets_produce_model_sized_uint8(preset: str) -> None:
    augment = build_train_augmentation(preset, 24, 32)
    image = Image.new("RGB", (50, 40), (10, 200, 30))
    processor = ViTImageProcessor(size={"height": 24, "width": 32})
    batch = transform_classification_batch(
        {"image": [image, image], "label": [0, 1]}, image_column="image", label_column="label", augment=augment,
        processor=processor,
    )
    assert all(p.shape == (3, 24, 32) and p.dtype == torch.uint8 for p in batch["pixel_values"])
    collated = collate_images_and_labels(
        [{"pixel_values": p, "labels": label} for p, label in zip(batch["pixel_values"], batch["labels"])],
        processor=processor,
    )
    assert collated["pixel_values"].shape == (2, 3, 24, 32) and collated["pixel_values"].dtype == torch.float32
    assert collated["labels"].tolist() == [0, 1]


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(RecipeError, match="Unknown augmentation preset `fancy`"):
        build_train_augmentation("fancy", 8, 8)


def test_eval_normalisation_matches_the_image_processor() -> None:
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    expected = processor(image, return_tensors="pt")["pixel_values"]
    eval_fn = partial(transform_classification_batch, image_column="image", label_column="label", augment=None,
                      processor=processor)
    ours = collate_images_and_labels(
        [{"pixel_values": eval_fn({"image": [image], "label": [0]})["pixel_values"][0], "labels": 0}],
        processor=processor,
    )["pixel_values"]
    assert torch.allclose(ours, expected, atol=1e-5)


def test_a_short_run_logs_the_training_loss_at_least_20_times(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``logging_steps`` is lowered (and the log says so) when the run would log its loss fewer than 20 times."""
    import logging

    from transformers import TrainingArguments

    from recipes.lifecycle import enough_log_points

    def interval(train_examples: int | None, **kwargs) -> float:
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)
        enough_log_points(args, train_examples)
        return args.logging_steps

    with caplog.at_level(logging.INFO, logger="recipes"):
        assert interval(None, max_steps=60, logging_steps=10) == 3
    assert "logging_steps 10 → 3: the run has 60 optimizer steps" in caplog.text
    assert interval(77, num_train_epochs=2, per_device_train_batch_size=16, logging_steps=10) == 1  # 10 steps
    assert interval(800, num_train_epochs=2, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                    logging_steps=10) == 5  # 100 steps
    assert interval(None, max_steps=100, logging_steps=0.5) == 5  # a ratio of the run: every 50 → every 5
    assert interval(None, max_steps=1000, logging_steps=10) == 10  # 100 points already: unchanged
    assert interval(None, max_steps=60, logging_steps=10, logging_strategy="epoch") == 10
    assert interval(None, logging_steps=10) == 10  # a stream without max_steps: length unknown, unchanged


# ----------------------------------------------------------------------------- end to end


def _check_outputs(out: Path, labels: set[str]) -> dict:
    config = json.loads((out / "config.json").read_text())
    assert set(config["id2label"].values()) == labels
    for name in (
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "run_manifest.json",
        "eval_results.json",
        "train_results.json",
        "training_curves.png",
        "confusion_matrix.png",
        "top_losses.png",
    ):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card and "library_name: transformers" in card
    assert "model-index" in card and "type: accuracy" in card
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["versions"]["transformers"] and manifest["dataset_fingerprints"]["train"]
    return json.loads((out / "eval_results.json").read_text())


def _pipeline_predicts(out: Path, image: Path) -> list:
    from transformers import pipeline

    classifier = pipeline("image-classification", model=str(out), device="cpu")
    return classifier(str(image))


@pytest.mark.slow
def test_quickstart_recipe_end_to_end(tmp_path: Path, shapes_dir: Path) -> None:
    metric_dir = tmp_path / "my_accuracy"
    metric_dir.mkdir()
    (metric_dir / "my_accuracy.py").write_text(LOCAL_EVALUATE_METRIC)
    out = tmp_path / "out"
    result = run_cli(
        QUICKSTART,
        "--train_dir",
        str(shapes_dir),
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "2",
        "--extra_metrics",
        str(metric_dir / "my_accuracy.py"),
        "--trust_remote_code",  # an evaluate module is Python code the run executes
        "true",
        *TINY_VIT,
    )
    assert_ok(result)
    assert "Vision Recipes run summary" in result.stdout
    metrics = _check_outputs(out, {"circle", "square", "triangle", "cross"})
    # 2 epochs of 77 images in batches of 16 are 10 steps: the recipe's logging_steps 10 would draw one loss dot
    assert "logging_steps 10 → 1: the run has 10 optimizer steps" in result.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, 11))
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert metrics["eval_samples"] == manifest["data_summary"]["validation_examples"] == 19  # each image once
    assert metrics["eval_my_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    predictions = _pipeline_predicts(out, next(shapes_dir.glob("circle/*.png")))
    assert predictions[0]["label"] in {"circle", "square", "triangle", "cross"}


LOCAL_EVALUATE_METRIC = """
import datasets
import evaluate


class MyAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="accuracy", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"my_accuracy": sum(p == r for p, r in zip(predictions, references)) / len(references)}
"""


@pytest.mark.slow
def test_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path: Path, shapes_dir: Path) -> None:
    common = [
        "--train_dir",
        str(shapes_dir),
        "--augmentation",
        "none",
        "--dataloader_num_workers",
        "0",
        "--per_device_train_batch_size",
        "32",
        "--make_plots",
        "false",
        "--logging_steps",
        "1",
    ]
    # An uninterrupted run; then the state it had when it saved checkpoint-4 (later checkpoint and final outputs
    # removed) stands for a run interrupted after that checkpoint: rerunning the same command continues it.
    full = tmp_path / "full"
    command = [QUICKSTART, *common, "--output_dir", str(full), "--num_train_epochs", "3", "--save_total_limit", "3"]
    assert_ok(run_cli(*command))
    full_metrics = json.loads((full / "eval_results.json").read_text())
    shutil.rmtree(full / "checkpoint-6")
    for path in full.glob("*.json"):
        path.unlink()
    (full / "model.safetensors").unlink()
    resumed = run_cli(*command)
    assert_ok(resumed)
    assert "resuming the interrupted run" in resumed.stderr
    resumed_metrics = json.loads((full / "eval_results.json").read_text())
    assert resumed_metrics["eval_accuracy"] == pytest.approx(full_metrics["eval_accuracy"])
    assert resumed_metrics["eval_loss"] == pytest.approx(full_metrics["eval_loss"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_accelerate_launch(tmp_path: Path, shapes_dir: Path) -> None:
    out = tmp_path / "ddp"
    # 96 images, 0.15 held out -> 14 validation images over 2 processes with per-device batch 4:
    # the last batch is uneven, so duplicated padding samples must not be counted.
    result = run_cli(QUICKSTART, "--train_dir", str(shapes_dir), "--output_dir", str(out), "--use_cpu", "true",
                     "--num_train_epochs", "1", "--train_val_split", "0.15", "--per_device_eval_batch_size", "4",
                     "--make_plots", "false", launcher=TWO_CPU_PROCESSES,
                     env={"OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")})
    assert_ok(result)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["world_size"] == 2
    # Rank 1 loaded the data after rank 0 and found its check results under the same keys (no second set).
    passes = manifest["data_summary"]["check_cache"]["passes"]
    assert {p["result"] for p in passes} == {"computed"}
    assert sorted(p.name for p in (tmp_path / "hf-datasets" / "vision_recipes_checks").glob("*.arrow")) == sorted(
        Path(p["file"]).name for p in passes)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_samples"] == manifest["data_summary"]["validation_examples"] == 14
    from transformers import AutoModelForImageClassification

    assert AutoModelForImageClassification.from_pretrained(out).config.num_labels == 4


@pytest.mark.slow
def test_push_to_hub_then_pipeline_downloads_it(tmp_path: Path, shapes_dir: Path, fake_hub) -> None:
    out = tmp_path / "out"
    env = fake_hub.client_env(tmp_path / "hf_home", token=False)  # the token comes from the command line
    result = run_cli(
        QUICKSTART,
        "--train_dir",
        str(shapes_dir),
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "1",
        "--push_to_hub",
        "--hub_model_id",
        "user/tiny-shapes",
        "--hub_token",
        fake_hub.token,
        env=env,
    )
    assert_ok(result)
    files = fake_hub.files("user/tiny-shapes")
    for name in (
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "training_curves.png",
        "confusion_matrix.png",
    ):
        assert name in files, name
    assert not any(name.startswith("checkpoint-") for name in files)
    # Nothing private by default: no data photo, no local record, no absolute local path in any pushed file.
    assert (out / "examples").is_dir() and (out / "top_losses.png").is_file() and (out / "run_manifest.json").is_file()
    assert not [name for name in files if name.startswith("examples/") or name in (
        "top_losses.png", "run_manifest.json", "trainer_state.json", "run_fingerprint.json", "training_args.bin")]
    assert not [name for name, content in files.items() if str(tmp_path).encode() in content]
    assert "top_losses.png" not in files["README.md"].decode()
    token = fake_hub.token
    assert all(token.encode() not in content for content in files.values())
    assert token not in result.stdout + result.stderr
    local_files = [path for path in out.rglob("*") if path.is_file()]  # training_args.bin, checkpoints, manifest
    assert any(path.name == "training_args.bin" for path in local_files)
    assert not [path for path in local_files if token.encode() in path.read_bytes()]
    image = next(shapes_dir.glob("square/*.png"))
    check = fake_hub.run_python(
        "from transformers import pipeline\n"
        f"print(pipeline('image-classification', model='user/tiny-shapes')({str(image)!r})[0]['label'])",
        tmp_path / "hf_home2",
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.strip().splitlines()[-1] in {"circle", "square", "triangle", "cross"}


@pytest.mark.slow
def test_push_failure_keeps_outputs_and_prints_the_retry_command(tmp_path: Path, shapes_dir: Path, fake_hub) -> None:
    out = tmp_path / "out"
    env = fake_hub.client_env(tmp_path / "hf_home", token="hf_wrong_token")
    result = run_cli(
        QUICKSTART,
        "--train_dir",
        str(shapes_dir),
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "1",
        "--make_plots",
        "false",
        "--push_to_hub",
        "--hub_model_id",
        "user/x",
        env=env,
    )
    assert result.returncode == 1
    assert "python scripts/push_to_hub.py" in result.stderr and "--repo-id user/x" in result.stderr
    assert "hf_wrong_token" not in result.stdout + result.stderr
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


@pytest.mark.real_data
@pytest.mark.slow
def test_real_food101_mini_through_the_cli(tmp_path: Path) -> None:
    data = shared_dataset("food101-mini")
    out = tmp_path / "food"
    result = run_cli(
        QUICKSTART,
        "--train_dir",
        str(data),
        "--output_dir",
        str(out),
        "--max_steps",
        "6",
        "--per_device_train_batch_size",
        "16",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "3",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
    )
    assert_ok(result)
    metrics = _check_outputs(out, {"pizza", "steak", "sushi"})
    assert metrics["eval_samples"] == 58  # the dataset's own test split is the validation split
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and np.isfinite(metrics["eval_loss"])
    predictions = _pipeline_predicts(out, next((data / "test" / "sushi").glob("*.jpg")))
    assert {p["label"] for p in predictions} <= {"pizza", "steak", "sushi"}


def test_hub_style_dataset_with_split_slicing(tmp_path: Path, shapes_dir: Path) -> None:
    """`dataset_name` goes through `load_dataset` like a Hub id; a local parquet repo stands in for the Hub."""
    from datasets import load_dataset

    repo = tmp_path / "food-like"
    full = load_dataset("imagefolder", data_dir=str(shapes_dir), split="train").rename_column("label", "labels")
    (repo / "data").mkdir(parents=True)
    parts = full.train_test_split(test_size=0.25, seed=0)
    parts["train"].to_parquet(repo / "data" / "train-00000.parquet")
    parts["test"].to_parquet(repo / "data" / "validation-00000.parquet")
    _, data = _load(tmp_path, "--dataset_name", str(repo), "--train_split", "train[:20]",
                    "--label_column_name", "labels")
    assert len(data.train) == 20 and len(data.validation) == 24
    assert sorted(data.id2label.values()) == ["circle", "cross", "square", "triangle"]


def test_train_dir_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "images.zip"
    file.write_bytes(b"PK")
    with pytest.raises(RecipeError, match="must be a folder"):
        _load(tmp_path, "--train_dir", str(file))


def test_listing_with_an_empty_path_names_the_line(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text("image,label\na.png,x\n,y\na.png,y\n")
    with pytest.raises(RecipeError, match=r"train\.csv: empty `image` on line\(s\) \[3\]"):
        _load(tmp_path, "--train_file", str(tmp_path / "train.csv"))


def test_config_overrides_cannot_set_the_labels(tmp_path: Path, shapes_dir: Path) -> None:
    from recipes.tasks import get_task

    recipe, data = _load(tmp_path, "--train_dir", str(shapes_dir), "--config_overrides", '{"num_labels": 3}')
    with pytest.raises(RecipeError, match="num_labels"):
        get_task("image-classification").build_model(recipe.model, data)


def test_max_eval_samples_is_a_seeded_sample_of_every_class(tmp_path: Path) -> None:
    from recipes.sample_data.shapes import make_shapes_dataset

    make_shapes_dataset(tmp_path / "d" / "train", images_per_class=4, size=16, classes=("circle", "square"))
    make_shapes_dataset(tmp_path / "d" / "validation", images_per_class=20, size=16, classes=("circle", "square"))
    _, data = _load(tmp_path, "--train_dir", str(tmp_path / "d"), "--max_eval_samples", "10")
    assert len(data.validation) == 10 and len(set(data.validation["label"])) == 2


def test_train_and_validation_folders_can_live_anywhere(tmp_path: Path) -> None:
    """Validation images at another depth than the training images (datasets' imagefolder drops the labels)."""
    for folder, classes in ((tmp_path / "a" / "train", ("cat", "dog")), (tmp_path / "b" / "c" / "d" / "val", ("dog",))):
        for name in classes:
            (folder / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(folder / name / f"{i}.png")
    _, data = _load(tmp_path, "--train_dir", str(tmp_path / "a" / "train"),
                    "--validation_dir", str(tmp_path / "b" / "c" / "d" / "val"))
    assert data.id2label == {0: "cat", 1: "dog"}
    assert sorted(data.train["label"]) == [0, 0, 0, 1, 1, 1] and data.validation["label"] == [1, 1, 1]
