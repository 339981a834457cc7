"""Parity of an exported model: PyTorch eager against ONNX Runtime on the same processor outputs.

The figures every task shares (largest absolute difference per output) live in :class:`ParityAccumulator`; what
"agreeing" means after post-processing (top-1 labels, matched boxes, mask pixels...) is the task's
:class:`ParityRule` (:meth:`recipes.tasks.base.Task.parity_rule`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass
class Tolerances:
    atol: float = 1e-3
    """Largest accepted |eager - ONNX| over the graph's outputs (logits, normalised boxes...)."""
    min_agreement: float = 0.99
    """Smallest accepted share of agreeing predictions (the task's rule: top-1 labels, boxes, mask pixels...)."""
    box_pixels: float = 1.0
    """Largest accepted corner difference (pixels) of a matched box after post-processing."""
    threshold: float = 0.5
    """Score threshold of a post-processing that has one."""
    fallback_top_k: int = 5
    """Boxes compared on an image without any box above the threshold (its best-scoring ones)."""


def as_model_output(names: Sequence[str], arrays: Sequence[np.ndarray]) -> SimpleNamespace:
    """Arrays → the attribute object the image processor's ``post_process_*`` methods read."""
    return SimpleNamespace(**{name: torch.from_numpy(np.asarray(array)) for name, array in zip(names, arrays)})


@dataclass
class ParityBatch:
    """One batch compared: the graph's output ``names``, PyTorch's and ONNX Runtime's arrays of them, the image
    processor (its post-processing) and each image's original ``(height, width)``."""

    names: Sequence[str]
    eager: Sequence[np.ndarray]
    onnx: Sequence[np.ndarray]
    image_processor: Any
    sizes: list[tuple[int, int]]


class ParityRule:
    """One task's agreement figure: ``agree`` out of ``compared`` predictions (after post-processing)."""

    agreement_name: ClassVar[str] = "outputs_close"

    def __init__(self, tolerances: Tolerances) -> None:
        self.tolerances = tolerances
        self.agree = 0
        self.compared = 0

    def add(self, batch: ParityBatch) -> None:
        """Count one batch (``batch.sizes``: each original ``(height, width)``)."""
        raise NotImplementedError

    def extras(self) -> dict[str, Any]:
        """More figures for the report."""
        return {}


class OutputsClose(ParityRule):
    """The default rule: an image agrees when every output of it is within ``atol``."""

    def add(self, batch: ParityBatch) -> None:
        close = np.ones(len(batch.sizes), dtype=bool)
        for a, b in zip(batch.eager, batch.onnx):
            close &= np.abs(a - b).reshape(len(batch.sizes), -1).max(axis=1) <= self.tolerances.atol
        self.agree += int(close.sum())
        self.compared += len(batch.sizes)


@dataclass
class ParityAccumulator:
    """Running parity figures over batches: the largest difference per output and the task's agreement."""

    rule: ParityRule
    names: tuple[str, ...]
    max_abs: dict[str, float] = field(default_factory=dict)
    images: int = 0

    @property
    def tolerances(self) -> Tolerances:
        return self.rule.tolerances

    def add(
        self,
        eager: Sequence[np.ndarray],
        onnx: Sequence[np.ndarray],
        image_processor: Any,
        sizes: list[tuple[int, int]],
    ) -> None:
        self.images += len(sizes)
        for name, a, b in zip(self.names, eager, onnx):
            self.max_abs[name] = max(float(np.abs(a - b).max()), self.max_abs.get(name, 0.0))
        self.rule.add(ParityBatch(self.names, eager, onnx, image_processor, sizes))

    @property
    def agreement(self) -> float:
        return self.rule.agree / self.rule.compared if self.rule.compared else 1.0

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "images": self.images,
            "max_abs_diff": self.max_abs,
            self.rule.agreement_name: round(self.agreement, 6),
            "compared": self.rule.compared,
            "tolerances": vars(self.tolerances),
            **self.rule.extras(),
        }
        report["passed"] = not self.failures()
        return report

    def failures(self) -> list[str]:
        tol = self.tolerances
        problems = [
            f"max |eager - onnx| of {name} is {value:.3g} > {tol.atol:g}"
            for name, value in self.max_abs.items()
            if value > tol.atol
        ]
        if self.agreement < tol.min_agreement:
            problems.append(
                f"{self.rule.agreement_name} is {self.agreement:.4f} < {tol.min_agreement:g} "
                f"({self.rule.agree}/{self.rule.compared})"
            )
        return problems
