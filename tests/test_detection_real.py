"""Detection on real plate photos: boxes survive augmentation, the image processor, padding, post-processing and
evaluation in the right frame; and a detector on the shared ImageNet backbone learns (overfits 16 photos) through
the CLI, with ``predict --format coco`` and ``pipeline()`` agreeing with the training evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml
from helpers import REPO, assert_ok, run_cli, shared_checkpoint, shared_dataset
from PIL import Image
from torchvision.transforms import v2

from recipes.tasks import get_task
from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data
from recipes.tasks.detection.metric import detections_at_original_size
from recipes.tasks.detection.transforms import (
    build_detection_augmentation,
    training_resize,
    transform_detection_batch,
)

RECIPE = str(REPO / "configs" / "plates-small.yaml")
PROCESSORS = {
    # DETR family: reads pixel_mask, boxes normalised to each unpadded image
    "conditional_detr": ("ConditionalDetrImageProcessor", {"size": {"shortest_edge": 320, "longest_edge": 512}}),
    # RT-DETR: no mask, a fixed square input (its default), and with aspect-preserving sizes (padding mixes sizes)
    "rt_detr_fixed": ("RTDetrImageProcessor", {"size": {"height": 320, "width": 320}}),
    "rt_detr_padded": ("RTDetrImageProcessor", {"size": {"shortest_edge": 320, "longest_edge": 512}}),
}


def _processor(kind: str):
    name, kwargs = PROCESSORS[kind]
    return getattr(transformers, name)(do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3, **kwargs)


def _link_photos(source: Path, target: Path, names: list[str]) -> Path:
    for kind in ("images", "annotations"):
        (target / kind).mkdir(parents=True, exist_ok=True)
    for name in names:
        (target / "images" / f"{name}.png").symlink_to(source / "images" / f"{name}.png")
        (target / "annotations" / f"{name}.xml").symlink_to(source / "annotations" / f"{name}.xml")
    return target


def _xml_boxes(path: Path) -> np.ndarray:
    """``xyxy`` boxes as written in a VOC file (read here independently of the project's reader)."""
    root = ET.parse(path).getroot()
    return np.array([[float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
                     for obj in root.iter("object")], dtype=np.float64).reshape(-1, 4)


@pytest.fixture(scope="module")
def plates16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 16 photos of ../shared/datasets/car-plates (by name), as a VOC folder of links."""
    source = shared_dataset("car-plates")
    names = sorted(p.stem for p in (source / "images").glob("*.png"))[:16]
    return _link_photos(source, tmp_path_factory.mktemp("plates16"), names)


@pytest.fixture(scope="module")
def plates8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 8 photos of ../shared/datasets/car-plates (by name)."""
    source = shared_dataset("car-plates")
    names = sorted(p.stem for p in (source / "images").glob("*.png"))[:8]
    return _link_photos(source, tmp_path_factory.mktemp("plates8"), names)


def _perfect_outputs(targets: list[dict]) -> transformers.utils.ModelOutput:
    """What a perfect detector outputs for ``targets``: each target box, in the frame the model was trained on."""
    queries = max(len(t["boxes"]) for t in targets) + 1
    logits = torch.full((len(targets), queries, 2), -10.0)
    logits[..., 1] = 10.0  # padding queries: class 1 (sigmoid heads) or "no object" (softmax heads)
    boxes = torch.full((len(targets), queries, 4), 0.5)
    for i, target in enumerate(targets):
        n = len(target["boxes"])
        boxes[i, :n] = torch.as_tensor(target["boxes"], dtype=torch.float32)
        logits[i, :n] = torch.tensor([10.0, -10.0])
    from transformers.utils import ModelOutput

    return ModelOutput(logits=logits, pred_boxes=boxes)


@pytest.mark.real_data
@pytest.mark.parametrize("kind", sorted(PROCESSORS))
def test_evaluation_batches_map_targets_and_predictions_back_to_the_voc_xml(kind: str, plates16: Path) -> None:
    data = load_detection_data(DetectionDataArguments(train_dir=str(plates16), validation_dir=str(plates16)), seed=0)
    processor = _processor(kind)
    transform = transform_detection_batch
    rows = data.validation.select(range(8))  # eight photos of several sizes: batches get padded
    sizes = {tuple(Image.open(r["image"]["path"]).size) for r in rows}
    assert len(sizes) > 2
    examples = rows.with_transform(lambda b: transform(b, image_processor=processor, augment=None,
                                                       processor_resizes=True))
    model_config = transformers.AutoConfig.for_model(kind.removesuffix("_fixed").removesuffix("_padded"))
    collate = get_task("object-detection").collator(processor, data, None, model_config)
    batch = collate([examples[i] for i in range(len(rows))])
    if kind == "rt_detr_padded":  # the canvas frame: boxes normalised to the padded batch
        assert any(tuple(t["size"].tolist()) != (ex["pixel_values"].shape[-2], ex["pixel_values"].shape[-1])
                   for t, ex in zip(batch["labels"], (examples[i] for i in range(len(rows)))))
    per_image = detections_at_original_size(_perfect_outputs(batch["labels"]), batch["labels"],
                                             image_processor=processor)
    for row, result in zip(rows, per_image):
        expected = _xml_boxes(plates16 / "annotations" / f"{Path(row['image']['path']).stem}.xml")
        np.testing.assert_allclose(np.sort(result["gt_boxes"], axis=0), np.sort(expected, axis=0), atol=0.01)
        found = result["boxes"][(result["labels"] == 0) & (result["scores"] > 0.5)]
        np.testing.assert_allclose(np.sort(found, axis=0), np.sort(expected, axis=0), atol=0.01)


def _white_box_dataset(source: Path, target: Path, names: list[str]) -> Path:
    """Black images the size of real photos, white where their VOC boxes are, with the same XML files."""
    for kind in ("images", "annotations"):
        (target / kind).mkdir(parents=True, exist_ok=True)
    for name in names:
        width, height = Image.open(source / "images" / f"{name}.png").size
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        for x0, y0, x1, y1 in _xml_boxes(source / "annotations" / f"{name}.xml").round().astype(int):
            pixels[y0:y1, x0:x1] = 255
        Image.fromarray(pixels).save(target / "images" / f"{name}.png")
        (target / "annotations" / f"{name}.xml").write_bytes((source / "annotations" / f"{name}.xml").read_bytes())
    return target


@pytest.mark.real_data
@pytest.mark.parametrize("kind", ["conditional_detr", "rt_detr_fixed"])
def test_training_augmentation_moves_each_box_with_its_pixels(kind: str, tmp_path: Path) -> None:
    source = shared_dataset("car-plates")
    one_plate = [p.stem for p in sorted((source / "annotations").glob("*.xml"))
                 if len(_xml_boxes(p)) == 1][:6]
    folder = _white_box_dataset(source, tmp_path / "boxes", one_plate)
    data = load_detection_data(DetectionDataArguments(train_dir=str(folder), validation_dir=str(folder)), seed=0)
    processor = _processor(kind)
    augment = build_detection_augmentation("strong", processor)
    # Photometric distortion changes no geometry; without it the white box stays the brightest thing in the image.
    augment = v2.Compose([t for t in augment.transforms if not isinstance(t, v2.RandomPhotometricDistort)])
    checked = 0
    for seed in range(4):
        torch.manual_seed(seed)
        out = transform_detection_batch(data.train[:], image_processor=processor, augment=augment,
                                        processor_resizes=training_resize(processor) is None)
        for pixels, target in zip(out["pixel_values"], out["labels"]):
            if len(target["boxes"]) == 0:  # the IoU crop may cut the plate out
                continue
            height, width = pixels.shape[-2:]
            bright = (pixels * 0.5 + 0.5).min(dim=0).values > 0.75
            ys, xs = torch.nonzero(bright, as_tuple=True)
            seen = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            cx, cy, w, h = torch.as_tensor(target["boxes"][0]).tolist()
            box = torch.tensor([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                (cy + h / 2) * height])
            assert torch.allclose(seen, box, atol=2.0), (seed, seen.tolist(), box.tolist())
            checked += 1
    assert checked >= 16


OVERFIT_MAP50 = 0.9
"""The issue's target. Measured 1.000 on these 8 photos after 200 steps (mAP75 0.75). With three feature levels
(strides 8/16/32) it was 0.871: the eighth photo, a close-up two-line plate whose box covers 45 % of it, was not
learned in 150, 200 or 300 steps; RT-DETR's anchors are 0.05 x 2^level of the image, so a fourth level (stride 64,
anchors of 0.4) is what such boxes need (see docs/detection-backbone.md)."""


@pytest.mark.real_data
@pytest.mark.slow
def test_a_detector_on_the_imagenet_backbone_overfits_real_photos_and_every_reader_agrees(
    plates8: Path, tmp_path: Path
) -> None:
    shared_checkpoint("conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone")
    output = tmp_path / "overfit"
    backbone = str(REPO.parent / "shared" / "pretrained" / "conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone")
    # The recipe's detector at 320x320 with full-width CSP blocks: 200 steps overfit the 8 photos (mAP50 1.000).
    # The recipe's own 416x320 and half-width blocks are sized for 2,100 steps on 134 photos: here 0.41 (0.87 with
    # half-width blocks at 320x320).
    config = {k: v for k, v in yaml.safe_load(Path(RECIPE).read_text())["config_overrides"].items()
              if k != "hidden_expansion"}
    assert_ok(run_cli(RECIPE, "--train_dir", str(plates8), "--validation_dir", str(plates8), "--output_dir",
                      str(output), "--backbone_name_or_path", backbone, "--augmentation", "none", "--ema", "false",
                      "--config_overrides", json.dumps(config),
                      "--image_processor_overrides", '{"size": {"height": 320, "width": 320}}',
                      "--max_steps", "200", "--per_device_train_batch_size", "4", "--warmup_steps", "20",
                      "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                      "--report_to", "none", "--make_plots", "false", timeout=1500))
    metrics = json.loads((output / "eval_results.json").read_text())
    assert metrics["eval_map_50"] >= OVERFIT_MAP50, metrics

    # predict --format coco, scored against the VOC XML by COCO evaluation: the training evaluation's figures.
    from faster_coco_eval import COCO, COCOeval_faster

    from recipes.modes.predict import main as predict

    photos = sorted((plates8 / "images").glob("*.png"))
    coco_path = tmp_path / "predictions.json"
    assert predict([str(output), *map(str, photos), "--output", str(coco_path), "--format", "coco",
                    "--threshold", "0"]) == 0
    document = json.loads(coco_path.read_text())
    by_file = {Path(image["file_name"]).name: image for image in document["images"]}
    truth = {"images": document["images"], "categories": document["categories"], "annotations": []}
    category = next(c["id"] for c in document["categories"] if c["name"] == "licence")
    for photo in photos:
        for x0, y0, x1, y1 in _xml_boxes(plates8 / "annotations" / f"{photo.stem}.xml"):
            truth["annotations"].append({"id": len(truth["annotations"]) + 1, "image_id": by_file[photo.name]["id"],
                                         "category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                         "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    ground_truth = COCO(truth)
    evaluator = COCOeval_faster(ground_truth, ground_truth.loadRes(document["annotations"]), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(metrics["eval_map"], abs=0.01)
    assert evaluator.stats[1] == pytest.approx(metrics["eval_map_50"], abs=0.01)

    # pipeline() on the saved model finds the plates the evaluation counts.
    detector = transformers.pipeline("object-detection", model=str(output))
    hits = 0
    for photo in photos:
        found = detector(str(photo), threshold=0.3)
        expected = _xml_boxes(plates8 / "annotations" / f"{photo.stem}.xml")
        boxes = np.array([[f["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for f in found]).reshape(-1, 4)
        hits += any(_iou(box, gt) >= 0.5 for box in boxes for gt in expected)
    assert hits >= 6, f"pipeline() found a plate in {hits} of {len(photos)} photos"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("model_type", ["rt_detr", "conditional_detr"])
def test_predict_maps_boxes_of_a_padded_batch_back_in_the_frame_of_each_architecture(model_type: str,
                                                                                      tmp_path: Path) -> None:
    from recipes.tasks.base import PredictOptions
    from recipes.tasks.detection.outputs import DetectionSink

    config = transformers.AutoConfig.for_model(model_type, id2label={0: "licence"}, label2id={"licence": 0})
    processor = _processor("rt_detr_padded" if model_type == "rt_detr" else "conditional_detr")
    sink = DetectionSink(config, processor, PredictOptions(output=tmp_path / "boxes.jsonl", threshold=0.5))
    # Two images: 400x300 (resized to 427x320, padded to 512 wide) and 200x320 (resized to 200x320).
    mask = torch.zeros(2, 320, 512, dtype=torch.int64)
    mask[0, :, :427] = 1
    mask[1, :, :200] = 1
    image_frame = torch.tensor([[0.5, 0.5, 0.2, 0.1], [0.25, 0.75, 0.1, 0.1]])  # cxcywh in each image
    scale = torch.tensor([[427 / 512, 1, 427 / 512, 1], [200 / 512, 1, 200 / 512, 1]])
    boxes = (image_frame * scale if model_type == "rt_detr" else image_frame)[:, None]  # what each model predicts
    logits = torch.full((2, 1, 1), 10.0)
    from transformers.utils import ModelOutput

    found = sink.decode(ModelOutput(logits=logits, pred_boxes=boxes), [(300, 400), (320, 200)],
                        {"pixel_mask": mask})
    sink.close()
    assert np.allclose(found[0]["boxes"][0], [160, 135, 240, 165], atol=0.05)
    assert np.allclose(found[1]["boxes"][0], [40, 224, 60, 256], atol=0.05)


@pytest.mark.real_data
@pytest.mark.slow
def test_convergence_benchmark_runs_our_recipe_and_the_torchvision_reference(tmp_path: Path) -> None:
    shared_dataset("car-plates")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.detection_convergence", "--quick", "--only", "small,fcos",
         "--plot", str(tmp_path / "curve.png"), "--json", str(tmp_path / "curves.json")],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    curves = {c["name"]: c for c in json.loads((tmp_path / "curves.json").read_text())["curves"]}
    assert set(curves) == {"plates-small", "torchvision FCOS"}
    for curve in curves.values():  # each trained its whole budget (0.25 minutes), then was scored
        assert curve["steps"] >= 1 and curve["minutes"][-1] >= 0.25 and all(0 <= v <= 1 for v in curve["map_50"])
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    assert "plates-small" in result.stdout and "torchvision FCOS" in result.stdout

    # detectors run as separate processes (one per core) are reported together by --merge
    document = json.loads((tmp_path / "curves.json").read_text())
    parts = []
    for index, curve in enumerate(document["curves"]):
        parts.append(tmp_path / f"part{index}.json")
        parts[-1].write_text(json.dumps({**document, "curves": [curve]}))
    merged = subprocess.run(
        [sys.executable, "-m", "benchmarks.detection_convergence", "--merge", *map(str, parts),
         "--plot", str(tmp_path / "merged.png"), "--json", str(tmp_path / "merged.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert merged.returncode == 0, merged.stderr[-4000:]
    assert json.loads((tmp_path / "merged.json").read_text())["curves"] == document["curves"]
    assert "plates-small" in merged.stdout and "torchvision FCOS" in merged.stdout
    assert (tmp_path / "merged.png").stat().st_size > 10_000
