"""Predict output of semantic segmentation: one PNG of class ids per image plus a JSON-lines index."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from recipes.config import RecipeError
from recipes.tasks.base import FrameRef, PredictionSink, PredictOptions, record_head


def mask_image(class_ids: np.ndarray, palette: np.ndarray | None = None) -> Image.Image:
    """Class ids as a PNG-ready image: ``L`` (8-bit ids), ``I;16`` beyond 256 classes, or ``P`` with ``palette``
    (pixel values are still the class ids, shown in the class colours)."""
    if class_ids.max(initial=0) > 255:
        if palette is not None:
            raise RecipeError("--format color needs at most 256 classes; use --format index.")
        return Image.fromarray(class_ids.astype(np.uint16), mode="I;16")
    image = Image.fromarray(class_ids.astype(np.uint8), mode="L")
    if palette is None:
        return image
    image = image.convert("P")
    image.putpalette(np.asarray(palette, dtype=np.uint8)[:256].reshape(-1).tolist())
    return image


class SegmentationSink(PredictionSink):
    """``--output DIR``: ``DIR/<image name>.png`` (``--format index``: grey-level class ids; ``--format color``:
    a palette PNG, class ids coloured with the model's ``palette.json``) and ``DIR/predictions.jsonl`` with
    ``{"file", "mask", "width", "height", "shares": {label: fraction of pixels}}`` per image (a video frame:
    ``"frame"`` and ``"time_s"`` after ``"file"``, its mask ``<video name>_<frame:06d>.png``)."""

    formats = ("index", "color")

    def __init__(self, config: Any, image_processor: Any, options: PredictOptions) -> None:
        self.format = self.chosen_format(options.format)
        self.id2label = {int(k): v for k, v in config.id2label.items()}
        self.image_processor = image_processor
        self.folder = options.output
        if self.folder.suffix.lower() in (".json", ".jsonl", ".png") or self.folder.is_file():
            raise RecipeError(f"--output {self.folder}: segmentation writes a folder of PNG masks; pass a folder.")
        self.palette = options.palette if self.format == "color" else None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = self.folder / "predictions.jsonl"
        self.handle = self.index.open("w", encoding="utf-8")
        self.used: set[str] = set()

    def decode(
        self, outputs: Any, sizes: list[tuple[int, int]], inputs: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        logits = outputs.logits.float()
        maps = self.image_processor.post_process_semantic_segmentation(
            type(outputs)(logits=logits), target_sizes=[tuple(size) for size in sizes]
        )
        predictions = []
        for class_map in maps:
            ids = class_map.to(torch.int32).cpu().numpy()
            counts = np.bincount(ids.reshape(-1), minlength=len(self.id2label))
            shares = {self.id2label.get(i, str(i)): round(float(c) / ids.size, 6)
                      for i, c in enumerate(counts) if c}
            predictions.append({"mask": ids, "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1]))})
        return predictions

    def _mask_name(self, file: str, frame: FrameRef | None = None) -> str:
        stem = re.sub(r"[^\w.-]+", "_", Path(file).stem) or "image"
        if frame is not None:
            stem = f"{stem}_{frame.frame:06d}"
        name, n = f"{stem}.png", 1
        while name in self.used:
            name, n = f"{stem}_{n}.png", n + 1
        self.used.add(name)
        return name

    def add(self, file: str, size: tuple[int, int], prediction: dict[str, Any], frame: FrameRef | None = None) -> None:
        name = self._mask_name(file, frame)
        mask_image(prediction["mask"], self.palette).save(self.folder / name)
        height, width = size
        line = {**record_head(file, frame), "mask": name, "width": width, "height": height,
                "shares": prediction["shares"]}
        self.handle.write(json.dumps(line) + "\n")

    def close(self) -> list[Path]:
        self.handle.close()
        return [self.index, self.folder]
