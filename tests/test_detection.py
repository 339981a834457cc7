"""Object detection: transforms, collate, COCO metric vs pycocotools, architectures, and CLI runs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers import REPO, TWO_CPU_PROCESSES, assert_ok, run_cli, shared_dataset
from torchvision.transforms import v2
from transformers import AutoConfig, AutoModelForObjectDetection, EvalPrediction

from recipes.cli import main as cli_main
from recipes.config import RecipeError
from recipes.metrics.coco import METRIC_NAMES, coco_inputs
from recipes.parse import parse_recipe
from recipes.sample_data.plates import draw_plates_image, make_plates_dataset
from recipes.tasks import get_task
from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data
from recipes.tasks.detection.demo import without_duplicates
from recipes.tasks.detection.metric import DetectionMetric, detections_at_original_size, post_process
from recipes.tasks.detection.transforms import augment_sample, build_detection_augmentation, collate_detection

QUICKSTART = str(REPO / "configs" / "quickstart" / "detection.yaml")
TINY_RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 32, 32], "depths": [1, 1, 1, 1],
               "layer_type": "basic", "out_features": ["stage4"]}
TINY_DETR = {"use_timm_backbone": False, "use_pretrained_backbone": False, "backbone_config": TINY_RESNET,
             "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_queries": 8}
TINY_YOLOS = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
              "image_size": [64, 96], "patch_size": 16, "num_detection_tokens": 8}
SMALL_SIZE = {"shortest_edge": 64, "longest_edge": 96}


@pytest.fixture(scope="session")
def plates_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic plate images in the Kaggle VOC layout (validation split: 5 images)."""
    return make_plates_dataset(tmp_path_factory.mktemp("plates"), n_images=24, seed=1, size=128)


@pytest.fixture(scope="session")
def plates_data(plates_dir: Path):
    return load_detection_data(DetectionDataArguments(train_dir=str(plates_dir), train_val_split=0.2), seed=0)


def _processor(name: str = "DetrImageProcessor", **kwargs):
    return getattr(transformers, name)(size=dict(SMALL_SIZE), **kwargs)


# --------------------------------------------------------------------------- transforms


def _white_box_image(boxes: list[list[int]], size: tuple[int, int] = (60, 100)) -> torch.Tensor:
    image = torch.zeros((3, *size), dtype=torch.uint8)
    for x0, y0, x1, y1 in boxes:
        image[:, y0:y1, x0:x1] = 255
    return image


def test_flip_moves_boxes_with_the_image() -> None:
    image = _white_box_image([[10, 5, 30, 20]])
    flipped, boxes, labels = augment_sample(
        v2.Compose([v2.RandomHorizontalFlip(p=1.0)]), image, torch.tensor([[10.0, 5.0, 20.0, 15.0]]), torch.tensor([0])
    )
    assert boxes.tolist() == [[70.0, 5.0, 20.0, 15.0]]  # xywh, mirrored: x = 100 - 30
    x, y, w, h = (int(v) for v in boxes[0])
    assert flipped[:, y : y + h, x : x + w].float().mean() == 255
    assert labels.tolist() == [0]


@pytest.mark.parametrize("preset", ["basic", "strong"])
def test_presets_keep_boxes_on_their_objects(preset: str) -> None:
    torch.manual_seed(0)
    augment = build_detection_augmentation(preset, _processor())
    image = _white_box_image([[10, 10, 40, 25], [60, 30, 90, 50]])
    boxes = torch.tensor([[10.0, 10.0, 30.0, 15.0], [60.0, 30.0, 30.0, 20.0]])
    for _ in range(15):
        out, moved, labels = augment_sample(augment, image, boxes, torch.tensor([0, 1]))
        assert len(moved) == len(labels) and out.dtype == torch.uint8
        assert min(out.shape[-2:]) <= SMALL_SIZE["shortest_edge"] and max(out.shape[-2:]) <= SMALL_SIZE["longest_edge"]
        brightness = out.float().mean(0)
        for x, y, w, h in moved.tolist():
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0
            assert x + w <= out.shape[-1] + 1e-3 and y + h <= out.shape[-2] + 1e-3
            inside = brightness[int(y) : int(y + h), int(x) : int(x + w)]
            assert inside.mean() > brightness.mean() + 20, "a box no longer covers its (bright) object"
    with pytest.raises(RecipeError, match="Unknown augmentation preset"):
        build_detection_augmentation("extreme", _processor())


def test_transforms_and_collate_make_model_inputs(plates_data) -> None:
    task = get_task("object-detection")
    processor = _processor()
    args = DetectionDataArguments(train_dir="unused", augmentation="strong")
    train_transform, eval_transform = task.transforms(processor, args, plates_data)
    train = plates_data.train.with_transform(train_transform)
    evaluation = plates_data.validation.with_transform(eval_transform)
    collate = task.collator(processor, plates_data)

    batch = collate(train.__getitems__([0, 1, 2, 3]))
    assert batch["pixel_values"].dtype == torch.float32 and batch["pixel_values"].shape[:2] == (4, 3)
    assert batch["pixel_mask"].shape == (4, *batch["pixel_values"].shape[-2:])
    for target in batch["labels"]:
        assert target["boxes"].shape[-1] == 4 and len(target["boxes"]) == len(target["class_labels"])
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all(), "DETR targets are normalised cxcywh"

    examples = evaluation.__getitems__(list(range(len(evaluation))))
    batch = collate(examples)
    for i, (example, target) in enumerate(zip(examples, batch["labels"])):
        height, width = example["pixel_values"].shape[-2:]
        assert batch["pixel_mask"][i].sum() == height * width
        assert batch["pixel_mask"][i, :height, :width].all()
        row = plates_data.validation[i]
        assert target["orig_size"].tolist() == [row["height"], row["width"]]

    # Ground truth goes back to original-size xyxy exactly; a perfect model scores mAP 1.
    labels = batch["labels"]
    queries = max(len(t["boxes"]) for t in labels) + 2
    logits = torch.full((len(labels), queries, 2), -10.0)
    boxes = torch.full((len(labels), queries, 4), 0.1)
    for i, target in enumerate(labels):
        logits[i, : len(target["boxes"]), 0] = 10.0
        boxes[i, : len(target["boxes"])] = target["boxes"]
    per_image = detections_at_original_size((logits, boxes), labels, image_processor=processor)
    assert isinstance(per_image, list) and len(per_image) == len(labels)
    for image, row in zip(per_image, plates_data.validation):
        xywh = np.asarray(row["objects"]["bbox"], dtype=np.float64).reshape(-1, 4)
        expected = np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]])
        np.testing.assert_allclose(image["gt_boxes"], expected, atol=1e-3)
    metric = DetectionMetric(plates_data.id2label)
    result = metric(EvalPrediction(predictions=per_image, label_ids=labels), compute_result=True)
    assert result["map"] == pytest.approx(1.0) and result["samples"] == len(labels)


def test_multi_scale_trains_each_batch_at_one_drawn_size_and_evaluates_at_the_processor_size(plates_data) -> None:
    task = get_task("object-detection")
    processor = transformers.RTDetrImageProcessor(size={"height": 96, "width": 96})
    args = DetectionDataArguments(train_dir="unused", augmentation="basic", multi_scale=[0.7, 1.0, 1.3])
    train_transform, eval_transform = task.transforms(processor, args, plates_data)
    train = plates_data.train.with_transform(train_transform)
    loader = torch.utils.data.DataLoader(train, batch_size=4, collate_fn=task.collator(processor, plates_data),
                                         generator=torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(4):
        for batch in loader:
            shapes = {tuple(batch["pixel_values"].shape[-2:])}
            assert shapes <= {(64, 64), (96, 96), (128, 128)}
            seen |= shapes
            for target in batch["labels"]:  # normalised boxes, inside the image
                assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()
    assert seen == {(64, 64), (96, 96), (128, 128)}, "every size is drawn, one per batch (a mixed batch pads)"
    evaluation = plates_data.validation.with_transform(eval_transform)
    assert {tuple(e["pixel_values"].shape[-2:]) for e in evaluation.__getitems__([0, 1, 2])} == {(96, 96)}

    # the box of a multi-scale batch is the VOC box: back to original pixels through the normalised cxcywh
    row = plates_data.train[0]
    x, y, w, h = row["objects"]["bbox"][0]
    only_resize = task.transforms(processor, DetectionDataArguments(train_dir="unused", augmentation="none",
                                                                    multi_scale=[1.3]), plates_data)[0]
    target = only_resize({k: [row[k]] for k in row})["labels"][0]
    cx, cy, bw, bh = target["boxes"][0].tolist()
    np.testing.assert_allclose([(cx - bw / 2) * row["width"], (cy - bh / 2) * row["height"], bw * row["width"],
                                bh * row["height"]], [x, y, w, h], atol=0.5)

    with pytest.raises(RecipeError, match="fixed height x width"):
        task.transforms(_processor(), args, plates_data)
    with pytest.raises(RecipeError, match=r"between 0\.25 and 4"):
        task.transforms(processor, DetectionDataArguments(train_dir="unused", multi_scale=[0.0]), plates_data)


def test_collate_without_pixel_mask_pads_anyway() -> None:
    examples = [{"pixel_values": torch.ones(3, 4, 6), "labels": {"class_labels": torch.tensor([0])}},
                {"pixel_values": torch.ones(3, 5, 3), "labels": {"class_labels": torch.tensor([], dtype=torch.long)}}]
    batch = collate_detection(examples, return_pixel_mask=False)
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (2, 3, 5, 6)
    assert batch["pixel_values"][1, :, :, 3:].abs().sum() == 0


# --------------------------------------------------------------------------- metric


def _random_detections(seed: int, images: int = 40, classes: int = 3):
    rng = np.random.default_rng(seed)
    per_image = []
    for _ in range(images):
        count = int(rng.integers(0, 6))
        corner = rng.uniform(0, 300, (count, 2))
        gt = np.column_stack([corner, corner + rng.uniform(5, 150, (count, 2))])
        gt_labels = rng.integers(0, classes, count)
        noise = rng.uniform(0, 300, (12, 2))
        boxes = np.concatenate([gt + rng.normal(0, 5, gt.shape), np.column_stack([noise, noise + 40])])
        per_image.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(rng.uniform(0, 1, len(boxes)), dtype=torch.float32),
            "labels": torch.tensor(np.concatenate([gt_labels, rng.integers(0, classes, 12)])),
            "gt_boxes": torch.tensor(gt, dtype=torch.float32),
            "gt_labels": torch.tensor(gt_labels),
            "orig_size": torch.tensor([400, 450]),
        })
    return per_image


def test_map_equals_pycocotools() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    per_image = _random_detections(seed=7)
    metric = DetectionMetric({0: "a", 1: "b", 2: "c"})
    for start in range(0, len(per_image), 16):  # streamed in batches, like the Trainer does
        chunk = per_image[start : start + 16]
        result = metric(EvalPrediction(predictions=chunk, label_ids=[{}] * len(chunk)),
                        compute_result=start + 16 >= len(per_image))
    assert result["samples"] == len(per_image)

    ground_truth, detections = coco_inputs(
        [(p["gt_boxes"].numpy().astype(np.float32), p["gt_labels"].numpy()) for p in per_image],
        [(p["boxes"].numpy().astype(np.float32), p["scores"].numpy(), p["labels"].numpy()) for p in per_image],
        num_classes=3,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = ground_truth
        coco_gt.createIndex()
        reference = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    expected = {name: float(v) for name, v in zip(METRIC_NAMES, reference.stats) if v > -1}
    assert {k: result[k] for k in expected} == pytest.approx(expected, abs=1e-12)
    precision = reference.eval["precision"]
    for k, name in enumerate("abc"):
        values = precision[:, :, k, 0, -1]
        assert result[f"ap_{name}"] == pytest.approx(float(values[values > -1].mean()), abs=1e-12)
    assert set(metric.details["per_class"]) == {"a", "b", "c"}
    assert len(metric.details["pr_curve"]["recall"]) == 101
    # State is reset after compute_result: the next evaluation starts from nothing.
    again = metric(EvalPrediction(predictions=per_image[:3], label_ids=[{}] * 3), compute_result=True)
    assert again["samples"] == 3


class _FixedDetections:
    """An image processor whose post-processing returns fixed detections (for what happens after it)."""

    def __init__(self, found: dict[str, torch.Tensor]) -> None:
        self.found = found

    def post_process_object_detection(self, outputs, threshold: float = 0.0, target_sizes=None):
        keep = self.found["scores"] >= threshold
        return [{key: value[keep] for key, value in self.found.items()}]


def test_box_nms_iou_drops_same_class_duplicates_only() -> None:
    found = {"boxes": torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30],
                                    [0, 0, 10, 10]], dtype=torch.float32),
             "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), "labels": torch.tensor([0, 0, 1, 0, 0])}
    outputs = (torch.zeros(1, 5, 2), torch.zeros(1, 5, 4))  # logits and pred_boxes, as the Trainer hands them
    sizes = torch.tensor([[40.0, 40.0]])
    [raw] = post_process(_FixedDetections(found), outputs, sizes)
    assert len(raw["scores"]) == 5
    [kept] = post_process(_FixedDetections(found), outputs, sizes, nms_iou=0.7)
    # the second box overlaps the first by IoU 0.81 (dropped), the third is of another class, the fourth apart,
    # the fifth repeats the first
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6]) and kept["labels"].tolist() == [0, 1, 0]
    [looser] = post_process(_FixedDetections(found), outputs, sizes, nms_iou=0.85)
    assert looser["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    [everything] = post_process(_FixedDetections(found), outputs, sizes, nms_iou=1.0)
    assert len(everything["scores"]) == 5

    # the demo applies the same suppression to pipeline() results
    config = AutoConfig.for_model("detr", id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    listed = [{"score": float(s), "label": "ab"[int(c)], "box": dict(zip(("xmin", "ymin", "xmax", "ymax"),
                                                                        map(int, b.tolist())))}
              for b, s, c in zip(found["boxes"], found["scores"], found["labels"])][::-1]
    assert [f["score"] for f in without_duplicates(listed, config)] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    config.box_nms_iou = 0.7
    assert [f["score"] for f in without_duplicates(listed, config)] == pytest.approx([0.9, 0.7, 0.6])


def test_box_nms_iou_is_checked(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"box_nms_iou: 1.5.*\(0, 1\]"):
        parse_recipe([QUICKSTART, "--box_nms_iou", "1.5"])
    classification = REPO / "configs" / "quickstart" / "classification.yaml"
    with pytest.raises(RecipeError, match=r"box_nms_iou.*image-classification"):
        parse_recipe([str(classification), "--box_nms_iou", "0.7"])


def test_task_forces_object_gathering() -> None:
    recipe = parse_recipe([QUICKSTART, "--train_dir", "x", "--output_dir", "y"])
    args = recipe.training
    assert args.eval_use_gather_object and args.batch_eval_metrics and not args.remove_unused_columns
    assert args.metric_for_best_model == "map"


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize(
    ("model_type", "overrides", "processor_name"),
    [("detr", TINY_DETR, "DetrImageProcessor"),
     ("conditional_detr", TINY_DETR, "ConditionalDetrImageProcessor"),
     ("yolos", TINY_YOLOS, "YolosImageProcessor")],
)
def test_architectures_train_step_and_evaluate(plates_data, model_type: str, overrides: dict, processor_name: str):
    torch.manual_seed(0)
    task = get_task("object-detection")
    processor = _processor(processor_name)
    config = AutoConfig.for_model(model_type, num_labels=1, id2label={0: "licence"}, label2id={"licence": 0},
                                  **overrides)
    model = AutoModelForObjectDetection.from_config(config)
    train_transform, eval_transform = task.transforms(processor, DetectionDataArguments(train_dir="x"), plates_data)
    collate = task.collator(processor, plates_data)
    batch = collate(plates_data.train.with_transform(train_transform).__getitems__([0, 1, 2]))
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    batch = collate(plates_data.validation.with_transform(eval_transform).__getitems__([0, 1]))
    with torch.no_grad():
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
    as_tuple = tuple(v for k, v in outputs.items() if k != "loss")  # what the Trainer hands over
    per_image = task.preprocess_logits_for_metrics(processor)(as_tuple, batch["labels"])
    assert len(per_image) == 2 and per_image[0]["boxes"].shape[-1] == 4
    result = task.metric(plates_data, processor)(EvalPrediction(per_image, batch["labels"]), compute_result=True)
    assert 0.0 <= result["map"] <= 1.0 and result["samples"] == 2


def test_cli_format_mismatch_is_a_clear_error(plates_dir: Path, tmp_path: Path, capsys) -> None:
    code = cli_main([QUICKSTART, "--train_dir", str(plates_dir), "--dataset_format", "coco",
                     "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "dataset_format: coco" in err and "--dataset_format voc" in err and "Traceback" not in err


# --------------------------------------------------------------------------- end to end


def _check_outputs(output_dir: Path, *, label: str = "licence") -> dict:
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "run_manifest.json",
                 "eval_results.json", "training_curves.png", "validation_predictions.png"):
        assert (output_dir / name).is_file(), f"{name} missing in {output_dir}"
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": label}
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert {"eval_map", "eval_map_50", "eval_map_75", "eval_mar_100", "eval_samples"} <= set(metrics)
    card = (output_dir / "README.md").read_text()
    assert "pipeline_tag: object-detection" in card
    for metric_type in ("type: map\n", "type: map_50\n", "type: map_75\n", "type: mar_100\n"):
        assert metric_type in card, f"model-index lacks {metric_type.strip()}"
    assert "Per-class AP (validation)" in card and "| licence |" in card
    manifest = json.loads((output_dir / "run_manifest.json").read_text())
    assert manifest["task"] == "object-detection"
    assert manifest["data_summary"]["train_statistics"]["boxes_per_class"][label] > 0
    return metrics


def _pipeline_finds_boxes(output_dir: Path, image) -> None:
    detector = transformers.pipeline("object-detection", model=str(output_dir))
    found = detector(image, threshold=0.0)
    assert found, "the pipeline returned no boxes"
    assert {"score", "label", "box"} <= set(found[0]) and set(found[0]["box"]) == {"xmin", "ymin", "xmax", "ymax"}


@pytest.mark.slow
def test_quickstart_end_to_end(plates_dir: Path, tmp_path: Path) -> None:
    output_dir = tmp_path / "quickstart"
    result = run_cli(QUICKSTART, "--train_dir", str(plates_dir), "--output_dir", str(output_dir),
                     "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
                     "--per_device_eval_batch_size", "2",  # 5 validation images: the last batch is partial
                     "--dataloader_num_workers", "0", "--dataloader_persistent_workers", "false",
                     env={"OMP_NUM_THREADS": "1"})
    assert_ok(result)
    assert "eval_map" in result.stdout
    _check_outputs(output_dir)
    assert (output_dir / "precision_recall.png").is_file()
    image, _ = draw_plates_image(128, np.random.default_rng(123))
    _pipeline_finds_boxes(output_dir, image)


@pytest.mark.slow
def test_detr_from_config_through_the_cli(plates_dir: Path, tmp_path: Path) -> None:
    """The second architecture through the real CLI: a tiny DETR instead of the quickstart's RT-DETR, with
    duplicate boxes suppressed (``box_nms_iou``) in the saved model's predictions."""
    from recipes.modes.predict import main as predict

    output_dir = tmp_path / "detr"
    result = run_cli(QUICKSTART, "--train_dir", str(plates_dir), "--output_dir", str(output_dir),
                     "--model_type", "detr", "--config_overrides", json.dumps(TINY_DETR),
                     "--image_processor_overrides", json.dumps({"size": SMALL_SIZE}),
                     "--num_train_epochs", "1", "--dataloader_num_workers", "0",
                     "--dataloader_persistent_workers", "false", "--augmentation", "strong",
                     "--box_nms_iou", "0.5", env={"OMP_NUM_THREADS": "1"})
    assert_ok(result)
    _check_outputs(output_dir)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "detr" and config["box_nms_iou"] == 0.5
    assert "Duplicate boxes" in (output_dir / "README.md").read_text()
    image = draw_plates_image(128, np.random.default_rng(5))[0]
    _pipeline_finds_boxes(output_dir, image)

    # predict keeps no two boxes of a class that overlap by more than 0.5; pipeline() (the model's own
    # post-processing) returns the 8 queries' boxes, near-copies of each other after one epoch.
    image.save(tmp_path / "plate.png")
    assert predict([str(output_dir), str(tmp_path / "plate.png"), "--output", str(tmp_path / "boxes.jsonl"),
                    "--threshold", "0", "--num_workers", "0"]) == 0
    row = json.loads((tmp_path / "boxes.jsonl").read_text().splitlines()[0])
    boxes = torch.tensor(row["boxes"])
    from torchvision.ops import box_iou

    overlaps = box_iou(boxes, boxes).fill_diagonal_(0)
    assert len(boxes) > 0 and (overlaps <= 0.5 + 1e-6).all(), overlaps
    raw = transformers.pipeline("object-detection", model=str(output_dir))(image, threshold=0.0)
    assert len(boxes) < len(raw) == TINY_DETR["num_queries"]


@pytest.mark.slow
@pytest.mark.real_data
def test_real_car_plates(tmp_path: Path) -> None:
    """The Kaggle car-plates subset (RGBA PNGs, several plates per image) through the real CLI."""
    root = shared_dataset("car-plates")
    output_dir = tmp_path / "car-plates"
    result = run_cli(QUICKSTART, "--train_dir", str(root), "--output_dir", str(output_dir), "--max_steps", "4",
                     "--eval_strategy", "steps", "--eval_steps", "4", "--save_strategy", "steps", "--save_steps", "4",
                     "--dataloader_num_workers", "0", "--dataloader_persistent_workers", "false",
                     env={"OMP_NUM_THREADS": "1"})
    assert_ok(result)
    metrics = _check_outputs(output_dir)
    manifest = json.loads((output_dir / "run_manifest.json").read_text())
    summary = manifest["data_summary"]
    assert summary["skipped_files"] == []
    assert summary["train_examples"] + summary["validation_examples"] == len(list((root / "annotations").glob("*.xml")))
    assert metrics["eval_samples"] == summary["validation_examples"]
    from PIL import Image

    _pipeline_finds_boxes(output_dir, Image.open(sorted((root / "images").glob("*.png"))[0]))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_evaluation_counts_each_image_once(tmp_path: Path) -> None:
    data = make_plates_dataset(tmp_path / "plates", n_images=33, seed=2, size=96)  # 7 validation images (odd)
    output_dir = tmp_path / "ddp"
    result = run_cli(QUICKSTART, "--train_dir", str(data), "--output_dir", str(output_dir), "--use_cpu", "true",
                     "--max_steps", "2",
                     "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2",
                     "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                     "--dataloader_num_workers", "0", "--dataloader_persistent_workers", "false",
                     launcher=TWO_CPU_PROCESSES, env={"OMP_NUM_THREADS": "1"})
    assert_ok(result)
    assert json.loads((output_dir / "run_manifest.json").read_text())["world_size"] == 2
    summary = json.loads((output_dir / "run_manifest.json").read_text())["data_summary"]
    validation = summary["validation_examples"]
    assert validation % 2 == 1
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    # RT-DETR has BatchNorm, so the incomplete last batch is dropped: 26 images / (2 processes x 4) = 3 full steps.
    assert metrics["epoch"] == pytest.approx(2 / 3), "2 of the epoch's 3 full steps (2 processes x 4 images)"
    evaluations = [h for h in json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
                   if "eval_samples" in h]
    assert evaluations and all(h["eval_samples"] == validation for h in evaluations)
    assert metrics["eval_samples"] == validation, "each validation image must be counted exactly once"
    model = AutoModelForObjectDetection.from_pretrained(output_dir)
    assert model.config.id2label == {0: "licence"}
