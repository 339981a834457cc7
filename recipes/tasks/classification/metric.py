"""Image-classification metrics (torchmetrics, streaming)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from recipes.tasks.base import StreamingMetric

# --------------------------------------------------------------------------- metrics


class ClassificationMetric(StreamingMetric):
    """Accuracy, top-5 accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix.

    Streams through torchmetrics state (a confusion matrix and counters), so memory does not
    grow with the evaluation set.
    """

    def __init__(self, id2label: dict[int, str]) -> None:
        self.id2label = id2label
        num_classes = len(id2label)
        metrics: dict[str, Any] = {
            "accuracy": MulticlassAccuracy(num_classes, average="micro", sync_on_compute=False),
            "f1_macro": MulticlassF1Score(num_classes, average="macro", sync_on_compute=False),
            "precision": MulticlassPrecision(num_classes, average=None, sync_on_compute=False),
            "recall": MulticlassRecall(num_classes, average=None, sync_on_compute=False),
            "f1": MulticlassF1Score(num_classes, average=None, sync_on_compute=False),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes, sync_on_compute=False),
        }
        if num_classes >= 5:
            metrics["top5_accuracy"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", sync_on_compute=False)
        self.collection = MetricCollection(metrics, compute_groups=False)
        self.num_samples = 0
        self.predictions: list[int] = []  # one int per example, for `evaluate` modules
        self.references: list[int] = []

    def update(self, predictions: Any, labels: Any) -> None:
        logits = torch.as_tensor(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)
        labels = torch.as_tensor(labels).long()
        self.collection.update(logits.float().cpu(), labels.cpu())
        self.num_samples += int(labels.numel())
        if self.keep_predictions:
            self.predictions.extend(logits.argmax(-1).tolist())
            self.references.extend(labels.tolist())

    def compute(self) -> dict[str, float]:
        values = self.collection.compute()
        names = [self.id2label[i] for i in range(len(self.id2label))]
        self._details = {
            "per_class": {
                name: {
                    "precision": float(values["precision"][i]),
                    "recall": float(values["recall"][i]),
                    "f1": float(values["f1"][i]),
                }
                for i, name in enumerate(names)
            },
            "confusion_matrix": values["confusion_matrix"].tolist(),
            "labels": names,
            "predictions": list(self.predictions),
            "references": list(self.references),
        }
        result = {"accuracy": float(values["accuracy"]), "f1_macro": float(values["f1_macro"])}
        if "top5_accuracy" in values:
            result["top5_accuracy"] = float(values["top5_accuracy"])
        result["samples"] = self.num_samples
        return result

    def reset(self) -> None:
        self.collection.reset()
        self.num_samples = 0
        self.predictions, self.references = [], []


