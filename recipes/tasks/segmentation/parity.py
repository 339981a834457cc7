"""``export`` parity of a segmenter: the post-processed masks of PyTorch and ONNX Runtime agree pixel by pixel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recipes.tasks.parity import ParityRule, as_model_output


class MaskParity(ParityRule):
    agreement_name = "mask_pixels_agree"

    def add(
        self,
        names: Sequence[str],
        eager: Sequence[np.ndarray],
        onnx: Sequence[np.ndarray],
        image_processor: Any,
        sizes: list[tuple[int, int]],
    ) -> None:
        masks = [
            image_processor.post_process_semantic_segmentation(as_model_output(names, arrays), target_sizes=sizes)
            for arrays in (eager, onnx)
        ]
        for reference, candidate in zip(*masks):
            self.agree += int((reference == candidate).sum())
            self.compared += reference.numel()
