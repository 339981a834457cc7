"""``export`` parity of a classifier: the top-1 labels of PyTorch and ONNX Runtime agree."""

from __future__ import annotations

from recipes.tasks.parity import ParityBatch, ParityRule


class TopLabelParity(ParityRule):
    agreement_name = "top1_agree"

    def add(self, batch: ParityBatch) -> None:
        self.agree += int((batch.eager[0].argmax(-1) == batch.onnx[0].argmax(-1)).sum())
        self.compared += len(batch.sizes)
