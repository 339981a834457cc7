"""Predict output of image classification: one JSON line per image with the top label and the top k."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recipes.tasks.base import FrameRef, PredictionSink, PredictOptions, record_head


def class_probabilities(logits: torch.Tensor, config: Any) -> torch.Tensor:
    """Scores as ``pipeline("image-classification")`` gives them: sigmoid for multi-label or single-logit heads,
    softmax otherwise."""
    logits = logits.float()
    if getattr(config, "problem_type", None) == "multi_label_classification" or logits.shape[-1] == 1:
        return logits.sigmoid()
    return logits.softmax(-1)


class ClassificationSink(PredictionSink):
    """``--output predictions.jsonl``: ``{"file", "label", "score", "top_k": [{"label", "score"}, ...]}`` (video
    frames: ``"frame"`` and ``"time_s"`` after ``"file"``)."""

    def __init__(self, config: Any, options: PredictOptions) -> None:
        self.format = self.chosen_format(options.format)
        self.config, self.top_k = config, max(1, options.top_k)
        self.path = options.output
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("w", encoding="utf-8")

    def decode(
        self, outputs: Any, sizes: list[tuple[int, int]], inputs: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        probabilities = class_probabilities(outputs.logits, self.config)
        scores, ids = probabilities.topk(min(self.top_k, probabilities.shape[-1]), dim=-1)
        predictions = []
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist()):
            top = [{"label": self.config.id2label[i], "score": round(s, 6)} for s, i in zip(row_scores, row_ids)]
            predictions.append({"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
        return predictions

    def add(self, file: str, size: tuple[int, int], prediction: dict[str, Any], frame: FrameRef | None = None) -> None:
        self.handle.write(json.dumps({**record_head(file, frame), **prediction}) + "\n")

    def close(self) -> list[Path]:
        self.handle.close()
        return [self.path]
