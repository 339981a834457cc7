"""Object detection: DETR on licence plates, or any ``AutoModelForObjectDetection``.

Data (Pascal VOC, COCO JSON, image folder + metadata.jsonl, Hub datasets) is read by
:mod:`recipes.formats.detection` into one schema with COCO ``xywh`` boxes in pixels. Boxes follow the
image through torchvision v2 augmentations (``tv_tensors.BoundingBoxes``); the model's image processor
then makes the model inputs (normalised ``cxcywh`` targets for DETR-like models); the collate function
pads each batch and returns a ``pixel_mask``. Evaluation streams: each batch is post-processed to
detections at the original image size before it is gathered across processes, and COCO mAP is
computed once at the end with ``faster-coco-eval``.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from transformers import AutoModelForObjectDetection

from recipes.config import DataArguments, RecipeError
from recipes.data import drop_bad_images, load_hub_splits, local_path, pick_splits, require_columns, undecoded
from recipes.formats.detection import (
    ReadResult,
    check_split,
    objects_as_lists,
    raise_strict,
    read_detection_folder,
    rows_to_dataset,
    sorted_names,
    split_statistics,
    split_subfolders,
)
from recipes.images import BadFile
from recipes.tasks.base import StreamingMetric, Task, TaskData
from recipes.transforms import decode_to_tensor

logger = logging.getLogger("recipes")

SCALE_JITTER = (0.75, 0.8125, 0.875, 0.9375, 1.0)
"""Training shortest-edge scales, as fractions of the image processor's ``shortest_edge``."""
PLOT_SCORE_THRESHOLD = 0.5
MAX_PER_CLASS_METRICS = 10
"""Up to this many classes, each class's AP is also logged as an ``eval_ap_<class>`` metric."""


@dataclass
class DetectionDataArguments(DataArguments):
    """Data keys of the object-detection task."""

    class_names: list[str] | None = field(
        default=None,
        metadata={"help": "Class names in label-id order; default: from the data. Boxes of other classes are dropped."},
    )
    objects_column_name: str = field(
        default="objects", metadata={"help": "Column of Hub datasets holding {bbox (COCO xywh), category}."}
    )
    dataset_format: str = field(
        default="auto",
        metadata={"help": "Layout of train_dir/validation_dir/test_dir: auto, voc, coco or imagefolder."},
    )


# --------------------------------------------------------------------------- data


@dataclass
class LoadedSplits:
    """Splits before the box checks, with what the readers reported."""

    splits: dict[str, Dataset]
    class_names: list[str]
    source_names: list[str] | None = None
    problems: list[dict[str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def _classlabel_names(feature: Any) -> list[str] | None:
    """Names of the ``ClassLabel`` nested in an ``objects`` feature (dict of lists or list of dicts)."""
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(feature, dict):
        for key in ("category", "categories"):
            if key in feature:
                return _classlabel_names(feature[key])
        return None
    inner = getattr(feature, "feature", None)
    return _classlabel_names(inner) if inner is not None else None


def _found_names(datasets: Sequence[Dataset]) -> list[str]:
    """Class names used in ``objects.category`` (strings, or integers named by their value)."""
    names: set[str] = set()
    for dataset in datasets:
        for objects in dataset["objects"]:
            _, categories = objects_as_lists(objects)
            names.update(c if isinstance(c, str) else str(int(c)) for c in categories if c is not None)
    return sorted_names(names)


def _load_hub(data_args: DetectionDataArguments, cache_dir: str | None) -> LoadedSplits:
    splits = load_hub_splits(data_args, cache_dir)
    image_column, objects_column = data_args.image_column_name, data_args.objects_column_name
    prepared = {}
    for split, dataset in splits.items():
        require_columns(
            dataset,
            {"image_column_name": image_column, "objects_column_name": objects_column},
            f"the {split} split of {data_args.dataset_name}",
        )
        for column, canonical in ((image_column, "image"), (objects_column, "objects")):
            if column != canonical:
                if canonical in dataset.column_names:
                    dataset = dataset.remove_columns(canonical)
                dataset = dataset.rename_column(column, canonical)
        prepared[split] = undecoded(dataset, "image")
    source_names = _classlabel_names(next(iter(prepared.values())).features["objects"])
    class_names = data_args.class_names or source_names or _found_names(list(prepared.values()))
    return LoadedSplits(prepared, class_names, source_names=source_names)


def _single_split(result: ReadResult, wanted: str, folder: Path) -> list[dict[str, Any]]:
    if wanted in result.splits:
        return result.splits[wanted]
    if len(result.splits) == 1:
        return next(iter(result.splits.values()))
    raise RecipeError(
        f"{folder} holds several splits ({', '.join(result.splits)}); point `{wanted}_dir` at a folder with one split."
    )


def _load_local(data_args: DetectionDataArguments) -> LoadedSplits:
    train_dir = local_path(data_args.train_dir, "train_dir")
    if train_dir is None:
        raise RecipeError(
            "No data: set `dataset_name` (a Hub detection dataset) or `train_dir` (a Pascal VOC, COCO or "
            "image-folder + metadata.jsonl folder)."
        )
    if not train_dir.is_dir():
        raise RecipeError(f"`train_dir` must be a folder, got the file {train_dir}.")
    results: list[tuple[str, ReadResult]] = []
    rows: dict[str, list[dict[str, Any]]] = {}
    subfolders = split_subfolders(train_dir)
    if subfolders:
        for split, folder in subfolders.items():
            result = read_detection_folder(folder, data_args.dataset_format, data_args.class_names)
            rows[split] = _single_split(result, split, folder)
            results.append((f"{split} ({folder.name}/)", result))
    else:
        result = read_detection_folder(train_dir, data_args.dataset_format, data_args.class_names)
        rows.update(result.splits)
        results.append(("train_dir", result))
    for split, value in (("validation", data_args.validation_dir), ("test", data_args.test_dir)):
        folder = local_path(value, f"{split}_dir")
        if folder is not None:
            result = read_detection_folder(folder, data_args.dataset_format, data_args.class_names)
            rows[split] = _single_split(result, split, folder)
            results.append((f"{split}_dir", result))
    problems = [{"split": where, "path": p.path, "reason": p.reason} for where, r in results for p in r.problems]
    if problems and data_args.strict:
        raise_strict([BadFile(p["path"], p["reason"]) for p in problems], "local")
    for problem in problems:
        logger.warning("Skipping %s: %s", problem["path"], problem["reason"])
    counts: Counter = Counter()
    for _, result in results:
        counts.update(result.counts)
    declared = next((r.declared_names for _, r in results if r.declared_names), None)
    found = sorted_names(c for split_rows in rows.values() for row in split_rows for c in row["objects"]["category"])
    class_names = data_args.class_names or (
        declared + [n for n in found if n not in declared] if declared else found
    )
    if not any(rows.values()):
        raise RecipeError(
            f"No usable images in {train_dir}: every annotation file was skipped "
            f"({len(problems)} problem(s), see the warnings above)."
        )
    splits = {split: rows_to_dataset(split_rows) for split, split_rows in rows.items() if split_rows}
    return LoadedSplits(splits, class_names, problems=problems, counts=counts)


def load_detection_data(data_args: DetectionDataArguments, seed: int, cache_dir: str | None = None) -> TaskData:
    """Read, split and check detection data into :class:`TaskData` (summary included)."""
    loaded = _load_hub(data_args, cache_dir) if data_args.dataset_name else _load_local(data_args)
    if not loaded.class_names:
        raise RecipeError("The data has no labelled boxes and no `class_names` were given: nothing to learn.")
    train, validation, test = pick_splits(loaded.splits, data_args, seed)
    summary: dict[str, Any] = {
        "class_names": loaded.class_names,
        "skipped_files": list(loaded.problems),
        "reader_counts": dict(loaded.counts),
        "checks": {},
    }
    checked: dict[str, Dataset] = {}
    for split, dataset in (("train", train), ("validation", validation), ("test", test)):
        if dataset is None:
            continue
        dataset, report = check_split(
            dataset, loaded.class_names, split, source_names=loaded.source_names, strict=data_args.strict,
            num_proc=data_args.preprocessing_num_workers,
        )
        for bad_file in report.skipped:
            logger.warning("Skipping %s: %s", bad_file.path, bad_file.reason)
        skipped = [{"split": split, "path": b.path, "reason": b.reason} for b in report.skipped]
        if data_args.check_images:  # full decode; drop_bad_images logs what it skips
            dataset, bad = drop_bad_images(dataset, "image", split, data_args.strict,
                                           data_args.preprocessing_num_workers)
            skipped += [{"split": split, "path": b.path, "reason": b.reason} for b in bad]
        for mismatch in report.size_mismatches[:10]:
            logger.warning("Size mismatch in %s", mismatch)
        if len(report.size_mismatches) > 10:
            logger.warning("... %d more size mismatches (see run_manifest.json)", len(report.size_mismatches) - 10)
        fixes = {k: v for k, v in report.counts.items() if v}
        if fixes:
            logger.warning("Box checks on the %s split: %s", split, fixes)
        summary["skipped_files"] += skipped
        summary["checks"][split] = {**dict(report.counts), "size_mismatches": report.size_mismatches}
        if len(dataset) == 0:
            raise RecipeError(f"The {split} split has no usable images left after the data checks.")
        if split == "train" and report.counts.get("unknown_class_boxes") and not any(
            len(objects["bbox"]) for objects in dataset["objects"]
        ):
            raise RecipeError(
                f"None of the training boxes belongs to `class_names` {loaded.class_names}: all "
                f"{report.counts['unknown_class_boxes']} were dropped. Set `class_names` to the data's classes "
                "(e.g. --class_names car person) or remove it to take them from the data."
            )
        checked[split] = dataset
    for split, dataset in checked.items():
        summary[f"{split}_examples"] = len(dataset)
        summary[f"{split}_statistics"] = split_statistics(dataset, loaded.class_names)
    return TaskData(
        train=checked["train"],
        validation=checked["validation"],
        test=checked.get("test"),
        id2label=dict(enumerate(loaded.class_names)),
        dataset_id=data_args.dataset_name,
        summary=summary,
    )


# --------------------------------------------------------------------------- transforms


def training_resize(image_processor: Any) -> v2.Transform | None:
    """The processor's resize as a v2 transform with scale jitter (``None`` when it cannot be mirrored)."""
    size = getattr(image_processor, "size", None)
    size = size if isinstance(size, dict) else (dict(size.__dict__) if hasattr(size, "__dict__") else {})
    if size.get("shortest_edge") and size.get("longest_edge"):
        shortest, longest = int(size["shortest_edge"]), int(size["longest_edge"])
        return v2.RandomShortestSize([round(shortest * f) for f in SCALE_JITTER], max_size=longest, antialias=True)
    if size.get("height") and size.get("width"):
        return v2.Resize((int(size["height"]), int(size["width"])), antialias=True)
    return None


def build_detection_augmentation(preset: str, image_processor: Any) -> v2.Compose | None:
    """Named presets on ``uint8`` images with ``tv_tensors.BoundingBoxes`` (``None`` for ``none``).

    ``basic``: photometric distortion, zoom-out, horizontal flip and multi-scale resizing (scale jitter);
    ``strong``: ``basic`` plus a random IoU crop. Degenerate boxes are removed at the end.
    """
    if preset == "none":
        return None
    if preset not in ("basic", "strong"):
        raise RecipeError(f"Unknown augmentation preset `{preset}` for object-detection: use none, basic or strong.")
    mean = tuple(round(255 * m) for m in (getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)))
    steps: list[v2.Transform] = [
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: mean, "others": 0}, side_range=(1.0, 2.0), p=0.3),
    ]
    if preset == "strong":
        steps.append(v2.RandomIoUCrop())
    steps.append(v2.RandomHorizontalFlip(p=0.5))
    resize = training_resize(image_processor)
    if resize is not None:
        steps.append(resize)
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps)


def augment_sample(
    augment: v2.Transform, image: torch.Tensor, boxes_xywh: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``augment`` to one image and its boxes together; boxes come back as ``xywh``."""
    height, width = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(boxes_xywh, format="XYWH", canvas_size=(height, width))
    out = augment({"image": tv_tensors.Image(image), "boxes": boxes, "labels": labels})
    moved = v2.functional.convert_bounding_box_format(out["boxes"], new_format=tv_tensors.BoundingBoxFormat.XYWH)
    return out["image"].as_subclass(torch.Tensor), moved.as_subclass(torch.Tensor), out["labels"]


def coco_annotation(image_id: int, boxes_xywh: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """One image's boxes as the COCO-detection annotation image processors take."""
    return {
        "image_id": int(image_id),
        "annotations": [
            {"bbox": [float(v) for v in box], "category_id": int(label), "area": float(box[2] * box[3]), "iscrowd": 0}
            for box, label in zip(boxes_xywh.tolist(), labels.tolist())
        ],
    }


def transform_detection_batch(
    batch: dict[str, list], *, image_processor: Any, augment: v2.Transform | None, processor_resizes: bool
) -> dict[str, list]:
    """``with_transform`` function: decode, augment image + boxes, then let the image processor make inputs.

    Each image is processed on its own (no padding here): the collate function pads the batch.
    """
    pixel_values, targets = [], []
    for record, image_id, objects in zip(batch["image"], batch["image_id"], batch["objects"]):
        image = decode_to_tensor(record)
        boxes = torch.tensor(objects["bbox"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(objects["category"], dtype=torch.int64)
        if augment is not None:
            image, boxes, labels = augment_sample(augment, image, boxes, labels)
        encoded = image_processor(
            images=image,
            annotations=coco_annotation(image_id, boxes, labels),
            return_tensors="pt",
            do_resize=processor_resizes,
            do_pad=False,
        )
        pixel_values.append(encoded["pixel_values"][0])
        targets.append(dict(encoded["labels"][0]))
    return {"pixel_values": pixel_values, "labels": targets}


class DetectionTarget(TypedDict, total=False):
    """One image's target as DETR-like models take it (boxes: normalised ``cxcywh``)."""

    class_labels: torch.Tensor
    boxes: torch.Tensor
    image_id: torch.Tensor
    area: torch.Tensor
    iscrowd: torch.Tensor
    orig_size: torch.Tensor
    size: torch.Tensor


class DetectionBatch(TypedDict, total=False):
    """Model inputs of one batch."""

    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor
    labels: list[DetectionTarget]


def collate_detection(examples: list[dict[str, Any]], *, return_pixel_mask: bool) -> DetectionBatch:
    """Pad the images of a batch to a common size (bottom/right) and mark the real pixels in ``pixel_mask``.

    Target boxes stay normalised to each image (not to the padded canvas), as in DETR, so detections
    scale back to the original image with its own size.
    """
    heights = [e["pixel_values"].shape[-2] for e in examples]
    widths = [e["pixel_values"].shape[-1] for e in examples]
    channels = examples[0]["pixel_values"].shape[0]
    pixels = torch.zeros((len(examples), channels, max(heights), max(widths)), dtype=examples[0]["pixel_values"].dtype)
    mask = torch.zeros((len(examples), max(heights), max(widths)), dtype=torch.int64)
    for i, (example, height, width) in enumerate(zip(examples, heights, widths)):
        pixels[i, :, :height, :width] = example["pixel_values"]
        mask[i, :height, :width] = 1
    batch: DetectionBatch = {"pixel_values": pixels, "labels": [e["labels"] for e in examples]}
    if return_pixel_mask:
        batch["pixel_mask"] = mask
    return batch


# --------------------------------------------------------------------------- post-processing


@dataclass
class DetectionOutputs:
    """The two outputs post-processing reads, whatever the model's output class."""

    logits: torch.Tensor
    pred_boxes: torch.Tensor


def detection_outputs(outputs: Any) -> DetectionOutputs:
    """``logits`` and ``pred_boxes`` from a model output, or from the tuple the Trainer passes to
    ``preprocess_logits_for_metrics`` (loss removed, ``None`` fields dropped: the first two tensors)."""
    if hasattr(outputs, "logits") and hasattr(outputs, "pred_boxes"):
        return DetectionOutputs(outputs.logits, outputs.pred_boxes)
    tensors = [value for value in outputs if isinstance(value, torch.Tensor)]
    if len(tensors) < 2 or tensors[1].shape[-1] != 4 or tensors[0].shape[:2] != tensors[1].shape[:2]:
        raise RecipeError(
            "This model's outputs do not start with `logits` and `pred_boxes` (batch, queries, 4); "
            "object-detection evaluation needs a DETR-style detection head."
        )
    return DetectionOutputs(tensors[0], tensors[1])


def post_process(
    image_processor: Any, outputs: Any, target_sizes: torch.Tensor, threshold: float = 0.0
) -> list[dict[str, torch.Tensor]]:
    """The image processor's ``post_process_object_detection``: ``xyxy`` boxes at ``target_sizes``."""
    detections = detection_outputs(outputs)
    kwargs: dict[str, Any] = {"threshold": threshold, "target_sizes": target_sizes}
    parameters = inspect.signature(image_processor.post_process_object_detection).parameters
    if "top_k" in parameters:  # sigmoid heads pick the top-k (query, class) pairs
        queries, classes = detections.logits.shape[-2:]
        kwargs["top_k"] = min(100, queries * classes)
    return image_processor.post_process_object_detection(detections, **kwargs)


def detections_at_original_size(
    outputs: Any, labels: list[dict[str, torch.Tensor]], *, image_processor: Any
) -> list[dict[str, torch.Tensor]]:
    """``preprocess_logits_for_metrics``: one small dict of numpy arrays per image, made before gathering.

    Each holds the detections (``boxes`` xyxy in original-image pixels, ``scores``, ``labels``), the ground
    truth converted back to original-image ``xyxy`` pixels (``gt_boxes``, ``gt_labels``) and ``orig_size``.
    A list (not a tuple) so ``gather_object`` concatenates the processes' images and the last batch's padding
    is cut per image; numpy (not tensors) so accelerate always gathers it as objects, never as tensors.
    """
    orig_sizes = torch.stack([torch.as_tensor(t["orig_size"]).reshape(2) for t in labels]).to(torch.float32)
    results = post_process(image_processor, outputs, orig_sizes.to(detection_outputs(outputs).logits.device))
    per_image = []
    for result, target, orig_size in zip(results, labels, orig_sizes):
        height, width = orig_size.tolist()
        cx, cy, w, h = torch.as_tensor(target["boxes"]).float().cpu().unbind(-1)
        gt = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
        per_image.append(
            {
                "boxes": _array(result["boxes"], np.float32).reshape(-1, 4),
                "scores": _array(result["scores"], np.float32),
                "labels": _array(result["labels"], np.int64),
                "gt_boxes": _array(gt, np.float32).reshape(-1, 4),
                "gt_labels": _array(target["class_labels"], np.int64),
                "orig_size": _array(orig_size, np.int64),
            }
        )
    return per_image


# --------------------------------------------------------------------------- COCO evaluation


METRIC_NAMES = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
"""``COCOeval.stats`` in order."""


def coco_inputs(
    ground_truths: Sequence[tuple[np.ndarray, np.ndarray]],
    detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """COCO ground truth (dict) and detections (``N x 7`` array: image, x, y, w, h, score, class) from
    per-image ``(boxes_xyxy, labels)`` and ``(boxes_xyxy, scores, labels)``. Image ids and category ids
    start at 1; box ``area`` is ``w·h`` (what the small/medium/large ranges use)."""
    images, annotations, rows = [], [], []
    for index, (boxes, labels) in enumerate(ground_truths):
        image: dict[str, Any] = {"id": index + 1}
        if image_sizes is not None:
            image["height"], image["width"] = (int(v) for v in image_sizes[index])
        images.append(image)
        for box, label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels).reshape(-1)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": int(label) + 1,
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
    for index, (boxes, scores, labels) in enumerate(detections):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes):
            rows.append(np.column_stack([np.full(len(boxes), index + 1), boxes[:, 0], boxes[:, 1],
                                         boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                                         np.asarray(scores, dtype=np.float64), np.asarray(labels) + 1]))
    ground_truth = {"images": images, "annotations": annotations,
                    "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)]}
    return ground_truth, (np.concatenate(rows) if rows else np.zeros((0, 7)))


def run_coco_eval(ground_truth: dict[str, Any], detections: np.ndarray) -> Any:
    """``faster-coco-eval``'s COCOeval (C++ matching and accumulation), evaluated and summarised."""
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = lambda *args, **kwargs: None  # noqa: E731
    coco_gt = COCO(ground_truth, print_function=quiet)
    # What `loadRes` does for boxes, without the polygon it builds per detection (unused for bbox IoU).
    images, categories = (detections[:, k].astype(np.int64).tolist() for k in (0, 6))
    x, y, w, h, scores = (detections[:, k].tolist() for k in range(1, 6))
    areas = (detections[:, 3] * detections[:, 4]).tolist()
    coco_dt = COCO(print_function=quiet)
    coco_dt.dataset = {
        "images": list(ground_truth["images"]),
        "categories": list(ground_truth["categories"]),
        "annotations": [
            {"id": i, "image_id": im, "category_id": c, "bbox": [bx, by, bw, bh], "score": sc, "area": ar,
             "iscrowd": 0}
            for i, im, c, bx, by, bw, bh, sc, ar in zip(
                range(1, len(detections) + 1), images, categories, x, y, w, h, scores, areas
            )
        ],
    }
    coco_dt.createIndex()
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def per_class_results(evaluator: Any, class_names: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """AP, AP50 and AP75 of each class (``None`` for a class without ground truth) from ``eval["precision"]``."""
    precision = np.asarray(evaluator.eval["precision"])  # [iou, recall, class, area, max dets]
    iou_thresholds = np.asarray(evaluator.params.iouThrs)
    at = {"ap": slice(None), "ap50": int(np.argmin(np.abs(iou_thresholds - 0.5))),
          "ap75": int(np.argmin(np.abs(iou_thresholds - 0.75)))}
    results: dict[str, dict[str, float | None]] = {}
    for k, name in enumerate(class_names):
        row: dict[str, float | None] = {}
        for key, index in at.items():
            values = precision[index, :, k, 0, -1]
            valid = values[values > -1]
            row[key] = float(valid.mean()) if valid.size else None
        results[name] = row
    return results


def precision_recall_curves(evaluator: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Interpolated precision at COCO's 101 recall points, per class, at IoU 0.5 (all areas, 100 dets)."""
    precision = np.asarray(evaluator.eval["precision"])
    iou50 = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - 0.5)))
    curves = {name: precision[iou50, :, k, 0, -1].tolist() for k, name in enumerate(class_names)
              if (precision[iou50, :, k, 0, -1] > -1).any()}
    return {"recall": np.asarray(evaluator.params.recThrs).tolist(), "precision_iou50": curves}


def _array(value: Any, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class DetectionMetric(StreamingMetric):
    """COCO mAP@[.5:.95], mAP50, mAP75, small/medium/large, mAR@1/10/100 and per-class AP.

    Each gathered batch holds one small dict per image (see :func:`detections_at_original_size`): its
    detections and ground truth at the original size are kept as compact arrays until ``compute``,
    where ``faster-coco-eval`` runs once. Area-range metrics without ground truth of that size (COCO
    reports -1) are left out.
    """

    def __init__(self, id2label: dict[int, str]) -> None:
        self.class_names = [id2label[i] for i in range(len(id2label))]
        self.reset()

    def reset(self) -> None:
        self.ground_truths: list[tuple[np.ndarray, np.ndarray]] = []
        self.detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.image_sizes: list[tuple[int, int]] = []

    def update(self, predictions: Any, labels: Any) -> None:
        if not isinstance(predictions, list) or (predictions and not isinstance(predictions[0], dict)):
            raise RecipeError(
                "DetectionMetric expects one dict per image from `preprocess_logits_for_metrics` "
                "(ObjectDetection.preprocess_logits_for_metrics)."
            )
        for image in predictions:
            self.ground_truths.append((_array(image["gt_boxes"], np.float32), _array(image["gt_labels"], np.int32)))
            self.detections.append((_array(image["boxes"], np.float32), _array(image["scores"], np.float32),
                                    _array(image["labels"], np.int32)))
            height, width = (int(v) for v in _array(image["orig_size"], np.int64).reshape(2))
            self.image_sizes.append((height, width))

    def compute(self) -> dict[str, float]:
        ground_truth, detections = coco_inputs(self.ground_truths, self.detections, len(self.class_names),
                                               self.image_sizes)
        samples = len(self.ground_truths)
        if not ground_truth["annotations"] or len(detections) == 0:
            self._details = {"per_class": {}, "pr_curve": {}}
            result = {name: 0.0 for name in ("map", "map_50", "map_75", "mar_1", "mar_10", "mar_100")}
            return {**result, "samples": samples}
        evaluator = run_coco_eval(ground_truth, detections)
        stats = np.asarray(evaluator.stats, dtype=np.float64)
        result = {name: float(value) for name, value in zip(METRIC_NAMES, stats) if value > -1}
        per_class = per_class_results(evaluator, self.class_names)
        gt_counts = np.bincount(np.concatenate([g[1] for g in self.ground_truths]).astype(np.int64),
                                minlength=len(self.class_names))
        for k, name in enumerate(self.class_names):
            per_class[name]["gt_boxes"] = int(gt_counts[k])
            if per_class[name]["ap"] is not None and len(self.class_names) <= MAX_PER_CLASS_METRICS:
                result[f"ap_{name}"] = per_class[name]["ap"]
        self._details = {"per_class": per_class, "pr_curve": precision_recall_curves(evaluator, self.class_names)}
        result["samples"] = samples
        return result


# --------------------------------------------------------------------------- plots and card


def _draw_boxes(image: np.ndarray, boxes: np.ndarray, captions: list[str], colour: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 200))
    for box, caption in zip(boxes, captions):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if caption:
            left, top, right, bottom = draw.textbbox((x0, y0), caption)
            y = max(0.0, y0 - (bottom - top) - 2)
            draw.rectangle((x0, y, x0 + right - left + 2, y + bottom - top + 2), fill=colour)
            draw.text((x0 + 1, y), caption, fill=(0, 0, 0))
    return np.asarray(canvas)


def prediction_grid(context: Any, path: Path, limit: int = 8) -> Path | None:
    """Validation images: ground truth (green) beside predictions (red, label and score ≥ 0.5; when no box
    reaches 0.5, the 3 best-scoring ones, so an under-trained model still shows what it finds)."""
    from recipes import plots

    dataset, raw = context.eval_dataset, context.data.validation
    if dataset is None or len(dataset) == 0:
        return None
    trainer, processor = context.trainer, context.image_processor
    model = trainer.model.eval()
    device = next(model.parameters()).device
    count = min(limit, len(dataset))
    batch = trainer.data_collator([dataset[i] for i in range(count)])
    inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        outputs = model(**inputs)
    sizes = torch.stack([t["orig_size"] for t in batch["labels"]]).to(device)
    results = post_process(processor, outputs, sizes, threshold=0.0)
    names = context.data.id2label
    images, titles = [], []
    for i, result in enumerate(results):
        row = raw[i]
        pixels = decode_to_tensor(row["image"]).permute(1, 2, 0).numpy()
        gt_xywh = np.asarray(row["objects"]["bbox"], dtype=np.float64).reshape(-1, 4)
        gt = np.column_stack([gt_xywh[:, :2], gt_xywh[:, :2] + gt_xywh[:, 2:]])
        images.append(_draw_boxes(pixels, gt, [names[c] for c in row["objects"]["category"]], (40, 200, 40)))
        titles.append(f"ground truth: {len(gt)} box(es)")
        scores = result["scores"].cpu()
        keep = torch.nonzero(scores >= PLOT_SCORE_THRESHOLD).flatten()
        title = f"predicted (score ≥ {PLOT_SCORE_THRESHOLD}): {len(keep)}"
        if len(keep) == 0:
            keep = torch.argsort(scores, descending=True)[:3]
            title = f"no score ≥ {PLOT_SCORE_THRESHOLD}: best {len(keep)}"
        boxes = result["boxes"].cpu()[keep].numpy()
        captions = [f"{names[int(c)]} {s:.2f}" for c, s in zip(result["labels"][keep].tolist(), scores[keep].tolist())]
        images.append(_draw_boxes(pixels, boxes, captions, (230, 60, 60)))
        titles.append(title)
    return plots.image_grid(images, titles, path, columns=4, suptitle="Validation: ground truth | predictions")


def precision_recall_plot(details: dict[str, Any], path: Path) -> Path | None:
    """Precision-recall curves at IoU 0.5, one per class (COCO interpolation)."""
    from recipes import plots  # noqa: F401  (selects the Agg backend)

    curve = details.get("pr_curve") or {}
    if not curve.get("precision_iou50"):
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    per_class = details.get("per_class", {})
    for name, precision in list(curve["precision_iou50"].items())[:20]:
        ap50 = per_class.get(name, {}).get("ap50")
        label = f"{name} (AP50 {ap50:.3f})" if ap50 is not None else name
        ax.plot(curve["recall"], np.clip(precision, 0, 1), label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
    ax.legend(fontsize=8, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stat(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    return "-" if value is None else f"{value:g}"


def data_checks_markdown(summary: dict[str, Any]) -> str:
    """Boxes per class, boxes per image and box sizes per split, and what the checks fixed."""
    lines = ["| Split | Images | Negatives | Boxes | Boxes/image (mean, max) | Box width px (median) | "
             "Box height px (median) | small / medium / large |", "|---|---|---|---|---|---|---|---|"]
    per_class_rows = []
    for split in ("train", "validation", "test"):
        stats = summary.get(f"{split}_statistics")
        if not stats:
            continue
        sizes = stats["boxes_by_coco_size"]
        lines.append(
            f"| {split} | {stats['images']} | {stats['negatives']} | {stats['boxes']} | "
            f"{_stat(stats['boxes_per_image'], 'mean')}, {_stat(stats['boxes_per_image'], 'max')} | "
            f"{_stat(stats['box_width_px'], 'median')} | {_stat(stats['box_height_px'], 'median')} | "
            f"{sizes['small']} / {sizes['medium']} / {sizes['large']} |"
        )
        per_class_rows.append((split, stats["boxes_per_class"]))
    if per_class_rows:
        names = list(per_class_rows[0][1])[:50]
        lines += ["", "| Class | " + " | ".join(s for s, _ in per_class_rows) + " |",
                  "|---|" + "---|" * len(per_class_rows)]
        lines += [f"| {n} | " + " | ".join(str(c.get(n, 0)) for _, c in per_class_rows) + " |" for n in names]
    fixes = []
    for split, checks in summary.get("checks", {}).items():
        counts = {k: v for k, v in checks.items() if k != "size_mismatches" and v}
        mismatches = len(checks.get("size_mismatches", []))
        if counts or mismatches:
            described = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())
            if mismatches:
                described += f"{', ' if described else ''}annotation/image size mismatches: {mismatches}"
            fixes.append(f"- {split}: {described}")
    if fixes:
        lines += ["", "Data checks (details in `run_manifest.json`):", *fixes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- task


class ObjectDetection(Task):
    """Fine-tune any ``AutoModelForObjectDetection`` (DETR, Conditional/Deformable DETR, YOLOS, RT-DETR…)."""

    name = "object-detection"
    pipeline_tag = "object-detection"
    data_arguments_class = DetectionDataArguments
    auto_model_class = AutoModelForObjectDetection
    main_metric = "map"
    card_metrics = {
        "map": "mAP@[.5:.95]",
        "map_50": "mAP@.50",
        "map_75": "mAP@.75",
        "map_small": "mAP (small)",
        "map_medium": "mAP (medium)",
        "map_large": "mAP (large)",
        "mar_1": "mAR@1",
        "mar_10": "mAR@10",
        "mar_100": "mAR@100",
    }

    def forced_training_arguments(self) -> dict[str, Any]:
        # Labels are lists of per-image dicts and predictions one dict per image: gather them as objects.
        return {**super().forced_training_arguments(), "eval_use_gather_object": True}

    def load_data(self, data_args: DetectionDataArguments, seed: int, cache_dir: str | None = None) -> TaskData:
        return load_detection_data(data_args, seed, cache_dir)

    def transforms(self, image_processor: Any, data_args: DetectionDataArguments, data: TaskData):
        augment = build_detection_augmentation(data_args.augmentation, image_processor)
        train_resizes_itself = augment is not None and training_resize(image_processor) is not None
        return (
            partial(transform_detection_batch, image_processor=image_processor, augment=augment,
                    processor_resizes=not train_resizes_itself),
            partial(transform_detection_batch, image_processor=image_processor, augment=None, processor_resizes=True),
        )

    def collator(self, image_processor: Any, data: TaskData) -> Callable[[list[dict[str, Any]]], DetectionBatch]:
        return partial(collate_detection,
                       return_pixel_mask="pixel_mask" in getattr(image_processor, "model_input_names", ()))

    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        return DetectionMetric(data.id2label)

    def preprocess_logits_for_metrics(self, image_processor: Any) -> Callable:
        return partial(detections_at_original_size, image_processor=image_processor)

    def make_plots(self, context: Any, output_dir: Path) -> dict[str, Path]:
        written = {}
        grid = prediction_grid(context, output_dir / "validation_predictions.png",
                               limit=max(1, min(8, context.recipe.run.max_plot_images)))
        if grid is not None:
            written["validation_predictions"] = grid
        curve = precision_recall_plot(context.eval_details, output_dir / "precision_recall.png")
        if curve is not None:
            written["precision_recall"] = curve
        return written

    def card_sections(self, context: Any) -> list[tuple[str, str]]:
        sections = []
        per_class = context.eval_details.get("per_class")
        if per_class:
            rows = ["| Class | AP@[.5:.95] | AP@.50 | AP@.75 | Ground-truth boxes |", "|---|---|---|---|---|"]
            for name, values in per_class.items():
                cells = ["-" if values.get(k) is None else f"{values[k]:.4f}" for k in ("ap", "ap50", "ap75")]
                rows.append(f"| {name} | {' | '.join(cells)} | {values.get('gt_boxes', 0)} |")
            sections.append(("Per-class AP (validation)", "\n".join(rows)))
        if context.data is not None and context.data.summary.get("train_statistics"):
            sections.append(("Data checks", data_checks_markdown(context.data.summary)))
        return sections

    def usage_snippet(self, model_id: str) -> str:
        return (
            "from transformers import pipeline\n\n"
            f'detector = pipeline("object-detection", model="{model_id}")\n'
            'for found in detector("path/to/image.jpg", threshold=0.5):\n'
            '    print(found["label"], round(found["score"], 3), found["box"])  # box: xmin, ymin, xmax, ymax'
        )
