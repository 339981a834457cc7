"""Predict output of object detection: boxes per image as JSON lines, or one COCO file that can be scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recipes.tasks.base import FrameRef, PredictionSink, PredictOptions, record_head
from recipes.tasks.detection.metric import nms_iou_of, post_process
from recipes.tasks.detection.transforms import boxes_in_canvas_frame


class DetectionSink(PredictionSink):
    """``--format jsonl``: ``{"file", "width", "height", "boxes": [[x0, y0, x1, y1], ...], "labels", "scores"}``
    per image (``xyxy`` pixels of the original image, scores ≥ ``--threshold``; video frames: ``"frame"`` and
    ``"time_s"`` after ``"file"``, and in the COCO ``images``).

    ``--format coco``: one JSON file with ``images`` (``id``, ``file_name``, ``width``, ``height``),
    ``categories`` (``id`` = model label id + 1, ``name``) and ``annotations``, a COCO *results* list
    (``image_id``, ``category_id``, ``bbox`` ``xywh``, ``score``): ``coco.loadRes(data["annotations"])`` scores it
    once the image and category ids are matched to the ground truth (by file name and class name)."""

    formats = ("jsonl", "coco")

    def __init__(self, config: Any, image_processor: Any, options: PredictOptions) -> None:
        self.format = self.chosen_format(options.format)
        self.id2label = {int(k): v for k, v in config.id2label.items()}
        self.canvas_frame = boxes_in_canvas_frame(getattr(config, "model_type", None))
        self.image_processor, self.threshold = image_processor, options.threshold
        self.nms_iou = nms_iou_of(config)
        self.path = options.output
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("w", encoding="utf-8") if self.format == "jsonl" else None
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def decode(
        self, outputs: Any, sizes: list[tuple[int, int]], inputs: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        target_sizes = torch.tensor(sizes, dtype=torch.float32, device=outputs.logits.device)
        mask = (inputs or {}).get("pixel_mask")
        if self.canvas_frame and mask is not None:  # boxes relative to the padded canvas: scale by canvas / image
            rows, columns = mask.any(dim=2).sum(dim=1), mask.any(dim=1).sum(dim=1)
            canvas = torch.tensor(mask.shape[-2:], dtype=torch.float32, device=mask.device)
            target_sizes = target_sizes * (canvas / torch.stack([rows, columns], dim=1).float()).to(target_sizes)
        predictions = []
        for result in post_process(self.image_processor, outputs, target_sizes, threshold=self.threshold,
                                   nms_iou=self.nms_iou):
            order = result["scores"].float().argsort(descending=True)
            boxes = result["boxes"].float()[order].cpu().tolist()
            ids = result["labels"][order].cpu().tolist()
            predictions.append({
                "boxes": [[round(v, 2) for v in box] for box in boxes],
                "labels": [self.id2label.get(int(i), str(i)) for i in ids],
                "label_ids": [int(i) for i in ids],
                "scores": [round(s, 6) for s in result["scores"].float()[order].cpu().tolist()],
            })
        return predictions

    def add(self, file: str, size: tuple[int, int], prediction: dict[str, Any], frame: FrameRef | None = None) -> None:
        height, width = size
        head = record_head(file, frame)
        if self.handle is not None:
            self.handle.write(json.dumps({**head, "width": width, "height": height, **prediction}) + "\n")
            return
        image_id = len(self.images) + 1
        head = {"file_name": head.pop("file"), **head}
        self.images.append({"id": image_id, **head, "width": width, "height": height})
        for box, label, score in zip(prediction["boxes"], prediction["label_ids"], prediction["scores"]):
            x0, y0, x1, y1 = box
            self.annotations.append({"image_id": image_id, "category_id": label + 1,
                                     "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)], "score": score})

    def close(self) -> list[Path]:
        if self.handle is not None:
            self.handle.close()
        else:
            categories = [{"id": i + 1, "name": name} for i, name in sorted(self.id2label.items())]
            document = {"info": {"description": "vision-recipes predict"}, "images": self.images,
                        "categories": categories, "annotations": self.annotations}
            self.path.write_text(json.dumps(document), encoding="utf-8")
        return [self.path]
