"""Object-detection evaluation: post-processing at the original image size and streaming COCO metrics."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recipes.config import RecipeError
from recipes.metrics.coco import METRIC_NAMES, coco_inputs, per_class_results, precision_recall_curves, run_coco_eval
from recipes.tasks.base import StreamingMetric

MAX_PER_CLASS_METRICS = 10
"""Up to this many classes, each class's AP is also logged as an ``eval_ap_<class>`` metric."""

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


def nms_iou_of(model_config: Any) -> float | None:
    """The IoU above which a detector's duplicate boxes are suppressed: its config's ``box_nms_iou`` (set by the
    recipe key of that name and saved with the model), or None (the model's own post-processing only)."""
    value = getattr(model_config, "box_nms_iou", None)
    return None if value is None else float(value)


def suppress_duplicates(result: dict[str, torch.Tensor], iou: float) -> dict[str, torch.Tensor]:
    """Class-wise non-maximum suppression of one image's ``boxes``/``scores``/``labels`` (kept in score order):
    a box is dropped when a higher-scoring box of the same class overlaps it by more than ``iou``."""
    from torchvision.ops import batched_nms

    scores = result["scores"]
    keep = batched_nms(result["boxes"].float(), scores.float(), result["labels"], iou)
    return {key: value[keep] if isinstance(value, torch.Tensor) and value.shape[:1] == scores.shape[:1] else value
            for key, value in result.items()}


def post_process(
    image_processor: Any, outputs: Any, target_sizes: torch.Tensor, threshold: float = 0.0,
    nms_iou: float | None = None,
) -> list[dict[str, torch.Tensor]]:
    """The image processor's ``post_process_object_detection``: ``xyxy`` boxes at ``target_sizes``; with ``nms_iou``,
    then :func:`suppress_duplicates` (see :func:`nms_iou_of`)."""
    detections = detection_outputs(outputs)
    kwargs: dict[str, Any] = {"threshold": threshold, "target_sizes": target_sizes}
    parameters = inspect.signature(image_processor.post_process_object_detection).parameters
    if "top_k" in parameters:  # sigmoid heads pick the top-k (query, class) pairs
        queries, classes = detections.logits.shape[-2:]
        kwargs["top_k"] = min(100, queries * classes)
    results = image_processor.post_process_object_detection(detections, **kwargs)
    return results if nms_iou is None else [suppress_duplicates(result, nms_iou) for result in results]


def detections_at_original_size(
    outputs: Any, labels: list[dict[str, torch.Tensor]], *, image_processor: Any, nms_iou: float | None = None
) -> list[dict[str, torch.Tensor]]:
    """``preprocess_logits_for_metrics``: one small dict of numpy arrays per image, made before gathering.

    Each holds the detections (``boxes`` xyxy in original-image pixels, ``scores``, ``labels``), the ground
    truth converted back to original-image ``xyxy`` pixels (``gt_boxes``, ``gt_labels``) and ``orig_size``.
    A list (not a tuple) so ``gather_object`` concatenates the processes' images and the last batch's padding
    is cut per image; numpy (not tensors) so accelerate always gathers it as objects, never as tensors.
    """
    orig_sizes = torch.stack([torch.as_tensor(t["orig_size"]).reshape(2) for t in labels]).to(torch.float32)
    results = post_process(image_processor, outputs, orig_sizes.to(detection_outputs(outputs).logits.device),
                           nms_iou=nms_iou)
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


