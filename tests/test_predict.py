"""`vision-recipes predict` and `evaluate` through the real CLI on real checkpoints fine-tuned briefly
(``fine_tuned``), compared with ``transformers.pipeline()`` on the same images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import REPO, assert_ok, shared_dataset
from PIL import Image

from recipes.decode.images import load_rgb


def run_mode(mode: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python scripts/<mode>.py ARGS`` as a user runs it (offline unless ``env`` says otherwise)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{mode}.py"), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=600)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def food_photos() -> list[Path]:
    root = shared_dataset("food101-mini") / "test"
    return [sorted((root / name).glob("*.jpg"))[i] for name, i in (("pizza", 0), ("steak", 0), ("sushi", 0),
                                                                    ("sushi", 1))]


# ----------------------------------------------------------------------------- classification


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_classification_matches_the_pipeline_and_skips_a_corrupt_file(fine_tuned, tmp_path: Path) -> None:
    from transformers import pipeline

    model, photos = fine_tuned("classification"), food_photos()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    out, drawn = tmp_path / "predictions.jsonl", tmp_path / "drawn"
    result = run_mode("predict", str(model), *map(str, photos[:2]), str(broken), *map(str, photos[2:]),
                      "--output", str(out), "--top_k", "3", "--batch_size", "3", "--num_workers", "1",
                      "--visualize", str(drawn))
    assert_ok(result)
    assert f"skipped {broken}: Cannot decode image" in result.stderr
    assert "4 images, 1 skipped" in result.stdout and "images/s" in result.stdout
    rows = read_jsonl(out)
    assert [row["file"] for row in rows] == [str(p) for p in photos]
    pipe = pipeline("image-classification", model=str(model))
    for row, photo in zip(rows, photos):
        expected = pipe(str(photo), top_k=3)
        assert set(row) == {"file", "label", "score", "top_k"}
        assert [t["label"] for t in row["top_k"]] == [e["label"] for e in expected]
        assert [t["score"] for t in row["top_k"]] == pytest.approx([e["score"] for e in expected], abs=1e-4)
        assert (row["label"], row["score"]) == (row["top_k"][0]["label"], row["top_k"][0]["score"])
    pictures = sorted(drawn.glob("*.png"))
    assert len(pictures) == 4 and Image.open(pictures[0]).size == Image.open(photos[0]).size


@pytest.mark.real_data
def test_predict_with_nothing_readable_fails_with_the_files_listed(fine_tuned, tmp_path: Path, capsys) -> None:
    from recipes.modes.predict import main

    model = str(fine_tuned("classification"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n nothing else")
    assert main([model, str(broken), "--output", str(tmp_path / "p.jsonl"), "--num_workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"skipped {broken}" in err and "error: none of the 1 input image(s) could be read" in err
    assert main([model, str(tmp_path / "missing.jpg"), "--output", str(tmp_path / "p.jsonl")]) == 2
    assert "missing.jpg does not exist" in capsys.readouterr().err
    assert main([model, str(broken), "--output", str(tmp_path / "p.json"), "--format", "coco"]) == 2
    assert "--format coco: this task writes jsonl" in capsys.readouterr().err


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_from_a_hub_id_gives_the_local_results(fine_tuned, fake_hub, tmp_path: Path) -> None:
    model, photo = fine_tuned("classification"), food_photos()[0]
    fake_hub.seed("user/food-mobilenet", {name: (model / name).read_bytes()
                                          for name in ("config.json", "model.safetensors", "preprocessor_config.json")})
    from recipes.modes.predict import main

    local, hub = tmp_path / "local.jsonl", tmp_path / "hub.jsonl"
    assert main([str(model), str(photo), "--output", str(local), "--num_workers", "0"]) == 0
    env = fake_hub.client_env(tmp_path / "home")
    assert_ok(run_mode("predict", "user/food-mobilenet", str(photo), "--output", str(hub), "--num_workers", "0",
                       env=env))
    assert read_jsonl(hub) == read_jsonl(local)


# ----------------------------------------------------------------------------- detection


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_detection_matches_the_pipeline_and_writes_a_scorable_coco_file(fine_tuned, tmp_path: Path) -> None:
    from faster_coco_eval import COCO
    from transformers import pipeline

    from recipes.modes.predict import main

    model = fine_tuned("detection")
    images = [shared_dataset("car-plates") / "images" / f"Cars{i}.png" for i in (0, 1, 10)]
    # pipeline() is given the images as Vision Recipes decodes them: it would drop the alpha channel of these
    # partly transparent PNGs, training and predict composite them on white.
    pipe = pipeline("object-detection", model=str(model))
    out = tmp_path / "boxes.jsonl"
    # One image per batch: DETR pads a batch to its largest image, which pipeline() (one image at a time) never does.
    # Threshold 0: all of the model's top 100 detections (a briefly trained DETR scores them almost alike).
    assert_ok(run_mode("predict", str(model), *map(str, images), "--output", str(out), "--batch_size", "1",
                       "--threshold", "0", "--num_workers", "0", "--visualize", str(tmp_path / "drawn")))
    rows = read_jsonl(out)
    assert len(rows) == 3 and len(list((tmp_path / "drawn").glob("*.png"))) == 3
    for row, image in zip(rows, images):
        width, height = Image.open(image).size
        assert (row["width"], row["height"]) == (width, height)
        assert row["scores"] == sorted(row["scores"], reverse=True) and set(row["labels"]) == {"licence"}
        expected = pipe(load_rgb(image), threshold=0.0)
        theirs = np.array([[e["score"], *(e["box"][k] for k in ("xmin", "ymin", "xmax", "ymax"))] for e in expected])
        assert len(row["boxes"]) == len(theirs) > 0
        for score, box in zip(row["scores"], row["boxes"]):  # the same detection, in any order among equal scores
            same = (np.abs(theirs[:, 0] - score) < 1e-4) & (np.abs(theirs[:, 1:] - box) <= 1.01).all(axis=1)
            assert same.any(), (score, box)  # pipeline() truncates corners to integers

    coco_path = tmp_path / "boxes.json"
    threshold = float(np.median([score for row in rows for score in row["scores"]]))
    assert main([str(model), *map(str, images), "--output", str(coco_path), "--format", "coco", "--batch_size", "2",
                 "--threshold", str(threshold), "--num_workers", "0"]) == 0
    document = json.loads(coco_path.read_text())
    assert 0 < len(document["annotations"]) < 300
    assert min(a["score"] for a in document["annotations"]) >= threshold
    ground_truth = COCO({**document, "annotations": []})
    results = ground_truth.loadRes(document["annotations"])
    assert [image["file_name"] for image in document["images"]] == [str(p) for p in images]
    assert document["categories"] == [{"id": 1, "name": "licence"}]
    assert len(results.getAnnIds()) == len(document["annotations"]) > 0


# ----------------------------------------------------------------------------- segmentation


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_segmentation_writes_the_pipeline_masks_as_png(fine_tuned, tmp_path: Path) -> None:
    from transformers import pipeline

    model = fine_tuned("segmentation")
    frames = sorted(p for p in shared_dataset("camseq").glob("*.png") if not p.stem.endswith("_L"))[:3]
    masks, drawn = tmp_path / "masks", tmp_path / "drawn"
    assert_ok(run_mode("predict", str(model), *map(str, frames), "--output", str(masks), "--format", "color",
                       "--batch_size", "2", "--num_workers", "1", "--visualize", str(drawn)))
    rows = read_jsonl(masks / "predictions.jsonl")
    pipe = pipeline("image-segmentation", model=str(model))
    label2id = pipe.model.config.label2id
    palette = json.loads((model / "palette.json").read_text())
    for row, frame in zip(rows, frames):
        png = Image.open(masks / row["mask"])
        assert png.mode == "P" and png.size == Image.open(frame).size == (row["width"], row["height"])
        assert png.getpalette()[:6] == [*palette["0"], *palette["1"]]
        ids = np.asarray(png)
        expected = np.full(ids.shape, -1)
        for found in pipe(str(frame)):
            expected[np.asarray(found["mask"]) > 0] = label2id[found["label"]]
        assert (ids == expected).mean() > 0.9999  # batched convolutions may flip an arg-max tie here and there
        assert sum(row["shares"].values()) == pytest.approx(1, abs=1e-4)
        first = next(iter(row["shares"]))
        assert row["shares"][first] == pytest.approx((ids == label2id[first]).mean(), abs=1e-5)
    assert len(list(drawn.glob("*.png"))) == 3


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.real_data
@pytest.mark.slow
def test_evaluate_on_unseen_photos_matches_the_pipeline_and_updates_the_card(fine_tuned, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from transformers import pipeline

    model = tmp_path / "model"
    shutil.copytree(fine_tuned("classification"), model, ignore=shutil.ignore_patterns("checkpoint-*"))
    test_dir = shared_dataset("food101-mini") / "test"
    result = run_mode("evaluate_model", str(model), "--validation_dir", str(test_dir), "--update_card", "--use_cpu",
                      "true", "--dataloader_num_workers", "0", "--per_device_eval_batch_size", "16")
    assert_ok(result)
    out = model / "eval-food101-mini-test"
    metrics = json.loads((out / "eval_results.json").read_text())
    pipe = pipeline("image-classification", model=str(model))
    photos = sorted(test_dir.rglob("*.jpg"))
    correct = sum(pipe(str(photo), top_k=1)[0]["label"] == photo.parent.name for photo in photos)
    assert metrics["eval_samples"] == len(photos)
    assert metrics["eval_accuracy"] == pytest.approx(correct / len(photos))
    report = (out / "evaluation.md").read_text()
    assert f"| Accuracy | {metrics['eval_accuracy']:.4f} |" in report and "confusion_matrix.png" in report
    assert (out / "confusion_matrix.png").is_file()
    card = ModelCard.load(model / "README.md")
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("food101-mini/test", "accuracy")] == round(metrics["eval_accuracy"], 4)
    assert ("local dataset", "accuracy") in results  # the training run's entry stays


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize(("task", "dataset", "main_metric", "samples"),
                         [("detection", "car-plates", "map", 6), ("segmentation", "camseq", "mean_iou", 4)])
def test_evaluate_detection_and_segmentation_on_a_folder_alone(
    fine_tuned, tmp_path: Path, task: str, dataset: str, main_metric: str, samples: int
) -> None:
    """`evaluate MODEL --validation_dir DIR` for the other two tasks: the folder's own layout (VOC; CamSeq frames,
    colour masks and label_colors.txt), labels matched by name, the task's metrics, plots and report."""
    model = tmp_path / "model"
    shutil.copytree(fine_tuned(task), model, ignore=shutil.ignore_patterns("checkpoint-*"))
    out = tmp_path / "eval"
    result = run_mode("evaluate_model", str(model), "--validation_dir", str(shared_dataset(dataset)),
                      "--max_eval_samples", str(samples), "--output_dir", str(out), "--use_cpu", "true",
                      "--dataloader_num_workers", "0", "--per_device_eval_batch_size", "2")
    assert_ok(result)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_samples"] == samples
    assert 0.0 <= metrics[f"eval_{main_metric}"] <= 1.0
    assert "evaluation.md" in {p.name for p in out.iterdir()}
    assert f"{metrics[f'eval_{main_metric}']:.4f}" in (out / "evaluation.md").read_text()


def test_update_card_replaces_the_same_dataset_entry_and_keeps_the_others(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from recipes.modes.evaluate import update_model_card
    from recipes.tasks import get_task

    (tmp_path / "README.md").write_text(
        "---\nlicense: apache-2.0\nmodel-index:\n- name: m\n  results:\n  - task: {type: image-classification}\n"
        "    dataset: {name: other/data, type: other/data}\n    metrics:\n    - {type: accuracy, value: 0.9}\n---\n"
        "# m\n\nText kept.\n"
    )
    task = get_task("image-classification")
    for accuracy in (0.25, 0.75):
        context = SimpleNamespace(task=task, metrics={"eval": {"eval_accuracy": accuracy, "eval_f1_macro": 0.5}})
        update_model_card(tmp_path, context, "food/test", "food/test", "test")
    card = ModelCard.load(tmp_path / "README.md")
    results = sorted((r.dataset_name, r.metric_type, r.metric_value) for r in card.data.eval_results)
    assert results == [("food/test", "accuracy", 0.75), ("food/test", "f1_macro", 0.5), ("other/data", "accuracy", 0.9)]
    assert "Text kept." in card.text


# ----------------------------------------------------------------------------- decompression bombs


@pytest.fixture(scope="module")
def quickstart_model(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path) -> Path:
    """The quickstart's tiny ResNet trained for one epoch (seconds): a model for predict's input handling."""
    from helpers import run_cli

    out = tmp_path_factory.mktemp("quickstart-model") / "model"
    assert_ok(run_cli("configs/quickstart/classification.yaml", "--train_dir", str(shapes_dir), "--output_dir",
                      str(out), "--num_train_epochs", "1", "--make_plots", "false", "--save_total_limit", "1"))
    return out


@pytest.mark.parametrize("workers", ["0", "1"])
def test_predict_skips_and_names_decompression_bombs_and_predicts_the_other_images(
    quickstart_model: Path, shapes_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    from helpers import jpeg_bomb, png_bomb

    from recipes.decode.images import MAX_PIXELS_ENV, max_image_pixels
    from recipes.modes.predict import main

    monkeypatch.setenv(MAX_PIXELS_ENV, str(max_image_pixels()))  # predict sets it for its workers
    photos = sorted(shapes_dir.glob("*/*.png"))[:3]
    png, jpeg = tmp_path / "bomb.png", tmp_path / "bomb.jpg"
    png.write_bytes(png_bomb())
    jpeg.write_bytes(jpeg_bomb())
    out = tmp_path / "predictions.jsonl"
    inputs = [str(photos[0]), str(png), str(photos[1]), str(jpeg), str(photos[2])]
    assert main(["--num_workers", workers, "--batch_size", "2", str(quickstart_model), *inputs, "--output",
                 str(out)]) == 0
    captured = capsys.readouterr()
    assert f"skipped {png}: Image {png} is over the limit of 178,956,970 pixels" in captured.err
    assert f"skipped {jpeg}: Image {jpeg} is 65000 x 65000 = 4,225,000,000 pixels, over the limit" in captured.err
    assert "--max_image_pixels" in captured.err and "3 images, 2 skipped" in captured.out
    assert [row["file"] for row in read_jsonl(out)] == [str(p) for p in photos]
    # A lower limit of its own: the photos (32 x 32) are over it too, so nothing is readable.
    assert main([str(quickstart_model), str(photos[0]), "--output", str(out), "--max_image_pixels", "1000",
                 "--num_workers", workers, "--overwrite"]) == 2
    assert "32 x 32 = 1,024 pixels, over the limit of 1,000" in capsys.readouterr().err


def test_predict_replaces_its_output_only_with_overwrite_and_only_once_complete(
    quickstart_model: Path, shapes_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recipes.config import RecipeError
    from recipes.modes.predict import check_output, main
    from recipes.tasks.classification.outputs import ClassificationSink

    photos = [str(path) for path in sorted(shapes_dir.glob("*/*.png"))[:3]]
    out = tmp_path / "predictions.jsonl"
    out.write_text("earlier predictions\n")
    command = [str(quickstart_model), *photos, "--output", str(out), "--num_workers", "0", "--batch_size", "1"]
    assert main(command) == 2
    assert f"--output {out} exists. Fix: --overwrite" in capsys.readouterr().err
    assert out.read_text() == "earlier predictions\n"
    # Killed after the first image (here: an error in the sink): the earlier output stays, no partial file anywhere.
    add = ClassificationSink.add

    def add_then_fail(self, *args):
        if getattr(self, "added", False):
            raise KeyboardInterrupt
        self.added = True
        add(self, *args)

    monkeypatch.setattr(ClassificationSink, "add", add_then_fail)
    with pytest.raises(KeyboardInterrupt):
        main([*command, "--overwrite"])
    assert out.read_text() == "earlier predictions\n" and [p.name for p in tmp_path.iterdir()] == [out.name]
    monkeypatch.setattr(ClassificationSink, "add", add)
    drawn = tmp_path / "drawn"
    assert main([*command, "--overwrite", "--visualize", str(drawn)]) == 0
    assert [row["file"] for row in read_jsonl(out)] == photos
    assert sorted(p.name for p in tmp_path.iterdir()) == [drawn.name, out.name] and len(list(drawn.iterdir())) == 3
    # Fewer images the next time: no drawing (nor line) of the earlier run stays.
    command = [str(quickstart_model), photos[1], "--output", str(out), "--num_workers", "0", "--overwrite"]
    assert main([*command, "--visualize", str(drawn)]) == 0
    assert [row["file"] for row in read_jsonl(out)] == [photos[1]] and len(list(drawn.iterdir())) == 1
    out.unlink()
    assert main([*command, "--visualize", str(drawn)]) == 0 and out.is_file()
    # A folder output (segmentation masks) is replaced whole, and never when it holds files predict does not write.
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "old_mask.png").write_bytes(b"")
    check_output(masks, overwrite=True)
    (masks / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match=r"holds files predict did not write \(notes\.txt\)"):
        check_output(masks, overwrite=True)
