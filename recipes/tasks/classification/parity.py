"""``export`` parity of a classifier: the top-1 labels of PyTorch and ONNX Runtime agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recipes.tasks.parity import ParityRule


class TopLabelParity(ParityRule):
    agreement_name = "top1_agree"

    def add(
        self,
        names: Sequence[str],
        eager: Sequence[np.ndarray],
        onnx: Sequence[np.ndarray],
        image_processor: Any,
        sizes: list[tuple[int, int]],
    ) -> None:
        self.agree += int((eager[0].argmax(-1) == onnx[0].argmax(-1)).sum())
        self.compared += len(sizes)
