"""COCO box metrics with ``faster-coco-eval``: inputs from per-image arrays, evaluation, per-class AP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

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


