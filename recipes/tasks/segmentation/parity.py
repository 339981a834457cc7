"""``export`` parity of a segmenter: the post-processed masks of PyTorch and ONNX Runtime agree pixel by pixel."""

from __future__ import annotations

from recipes.tasks.parity import ParityBatch, ParityRule, as_model_output


class MaskParity(ParityRule):
    agreement_name = "mask_pixels_agree"

    def add(self, batch: ParityBatch) -> None:
        masks = [
            batch.image_processor.post_process_semantic_segmentation(
                as_model_output(batch.names, arrays), target_sizes=batch.sizes
            )
            for arrays in (batch.eager, batch.onnx)
        ]
        for reference, candidate in zip(*masks):
            self.agree += int((reference == candidate).sum())
            self.compared += reference.numel()
