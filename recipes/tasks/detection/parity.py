"""``export`` parity of a detector: the post-processed boxes of PyTorch and ONNX Runtime match (same label, every
corner within ``box_pixels``)."""

from __future__ import annotations

from typing import Any

import torch

from recipes.tasks.parity import ParityBatch, ParityRule, Tolerances, as_model_output


class BoxParity(ParityRule):
    """Boxes above the threshold must match; an image with none there (a briefly trained detector) compares its
    ``fallback_top_k`` best-scoring boxes instead, so that the check is never empty."""

    agreement_name = "boxes_matched"

    def __init__(self, tolerances: Tolerances) -> None:
        super().__init__(tolerances)
        self.max_box_pixels = 0.0
        self.eager_boxes = 0
        self.fallback_images = 0

    def add(self, batch: ParityBatch) -> None:
        tol = self.tolerances
        post = [
            batch.image_processor.post_process_object_detection(
                as_model_output(batch.names, arrays), threshold=0.0, target_sizes=batch.sizes
            )
            for arrays in (batch.eager, batch.onnx)
        ]
        for reference, candidate in zip(*post):
            keep = reference["scores"] >= tol.threshold
            self.eager_boxes += int(keep.sum())
            if keep.any():
                reference = {key: value[keep] for key, value in reference.items()}
                candidate = {key: value[candidate["scores"] >= tol.threshold] for key, value in candidate.items()}
            else:
                self.fallback_images += 1
                reference, candidate = (top_boxes(found, tol.fallback_top_k) for found in (reference, candidate))
            matched, worst = matched_boxes(reference, candidate, tol.box_pixels)
            self.agree += matched
            self.compared += max(len(reference["boxes"]), len(candidate["boxes"]))
            self.max_box_pixels = max(self.max_box_pixels, worst)

    def extras(self) -> dict[str, Any]:
        return {
            "eager_boxes_above_threshold": self.eager_boxes,
            "max_box_corner_diff_pixels": round(self.max_box_pixels, 4),
            "images_compared_on_top_k": self.fallback_images,
        }


def top_boxes(found: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    order = found["scores"].argsort(descending=True)[:k]
    return {key: value[order] for key, value in found.items()}


def matched_boxes(
    reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor], box_pixels: float
) -> tuple[int, float]:
    """Boxes of ``reference`` with a same-label box of ``candidate`` within ``box_pixels`` at every corner
    (greedy, one-to-one), and the largest corner difference among the matched."""
    used: set[int] = set()
    matched, worst = 0, 0.0
    for box, label in zip(reference["boxes"], reference["labels"]):
        best, best_diff = None, float("inf")
        for index, (other, other_label) in enumerate(zip(candidate["boxes"], candidate["labels"])):
            if index in used or int(other_label) != int(label):
                continue
            diff = float((box - other).abs().max())
            if diff < best_diff:
                best, best_diff = index, diff
        if best is not None and best_diff <= box_pixels:
            used.add(best)
            matched += 1
            worst = max(worst, best_diff)
    return matched, worst
