"""Semantic-segmentation metrics from a streaming confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recipes.tasks.base import StreamingMetric

# --------------------------------------------------------------------------- metrics


def confusion_counts(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts of (true, predicted) pixels; labels outside
    ``0..num_classes-1`` (``ignore_index``, padding) are left out."""
    labels = labels.reshape(-1).long()
    predictions = predictions.reshape(-1).to(labels.device).long().clamp_(0, num_classes - 1)
    valid = (labels >= 0) & (labels < num_classes)
    outside = num_classes * num_classes  # one extra bin for the ignored pixels, dropped below
    pairs = torch.where(valid, labels * num_classes + predictions, outside)
    return torch.bincount(pairs, minlength=outside + 1)[:outside].reshape(num_classes, num_classes)


def segmentation_scores(confusion: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """mIoU, mean (per-class) accuracy and overall pixel accuracy from a (true, predicted) confusion matrix.

    A class absent from both prediction and ground truth has no IoU and is left out of the mean (no
    NaN); mean accuracy averages the classes present in the ground truth.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    ground_truth, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    union = ground_truth + predicted - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        accuracy = np.where(ground_truth > 0, true_positive / ground_truth, np.nan)
    total = ground_truth.sum()
    scores = {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else 0.0,
        "overall_accuracy": float(true_positive.sum() / total) if total else 0.0,
    }
    return scores, {"iou": iou, "accuracy": accuracy, "pixels": ground_truth}


class SegmentationMetric(StreamingMetric):
    """mIoU, mean accuracy, overall accuracy and per-class IoU/accuracy from a streamed confusion matrix.

    Each gathered batch of class ids (see :func:`logits_to_class_ids`) adds its ``bincount`` to a
    ``C x C`` matrix; nothing else is kept, so memory is independent of the validation set size.
    """

    def __init__(self, id2label: dict[int, str]) -> None:
        self.id2label = id2label
        self.num_classes = len(id2label)
        self.reset()

    def update(self, predictions: Any, labels: Any) -> None:
        predictions = torch.as_tensor(predictions)
        labels = torch.as_tensor(labels, device=predictions.device)
        self.confusion += confusion_counts(predictions, labels, self.num_classes).cpu()
        self.samples += int(labels.shape[0])

    def compute(self) -> dict[str, float]:
        scores, per_class = segmentation_scores(self.confusion.numpy())
        names = [self.id2label[i] for i in range(self.num_classes)]
        self._details = {
            "per_class": {
                name: {
                    "iou": None if np.isnan(per_class["iou"][i]) else float(per_class["iou"][i]),
                    "accuracy": None if np.isnan(per_class["accuracy"][i]) else float(per_class["accuracy"][i]),
                    "pixels": int(per_class["pixels"][i]),
                }
                for i, name in enumerate(names)
            },
            "confusion_matrix": self.confusion.tolist(),
            "labels": names,
        }
        return {**scores, "samples": self.samples}

    def reset(self) -> None:
        self.confusion = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)
        self.samples = 0


