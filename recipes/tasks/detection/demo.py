"""How a detector shows itself: the demo's boxes and score-threshold slider, the quickstart's plates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from recipes.tasks.detection.metric import nms_iou_of, suppress_duplicates

CORNERS = ("xmin", "ymin", "xmax", "ymax")


def demo_controls(gr: Any, threshold: float) -> list[Any]:
    """A score-threshold slider."""
    return [gr.Slider(0.0, 1.0, value=threshold, step=0.05, label="Score threshold", elem_id="threshold")]


def demo_outputs(gr: Any) -> list[Any]:
    """The drawn boxes and their table."""
    return [
        gr.Image(type="pil", label="Detections", format="png", elem_id="prediction"),
        gr.Dataframe(headers=["label", "score", *CORNERS], label="Boxes", interactive=False, elem_id="boxes"),
    ]


def demo_predict(
    pipe: Any, image: Image.Image, scale: tuple[float, float], colours: np.ndarray, threshold: float
) -> tuple[Image.Image, list[list]]:
    """The annotated image (at the working scale) and one ``[label, score, xmin, ymin, xmax, ymax]`` row per
    detection, in the uploaded image's pixel coordinates (``scale``: upload / working pixels per axis)."""
    from recipes.draw.render import draw_boxes

    detections = without_duplicates(pipe(image, threshold=threshold), pipe.model.config)
    scales = {"xmin": scale[0], "ymin": scale[1], "xmax": scale[0], "ymax": scale[1]}
    rows = [
        [found["label"], round(float(found["score"]), 3), *(int(found["box"][k] * scales[k]) for k in CORNERS)]
        for found in detections
    ]
    label2id = pipe.model.config.label2id
    prediction = {
        "boxes": [[found["box"][k] for k in CORNERS] for found in detections],
        "labels": [found["label"] for found in detections],
        "scores": [found["score"] for found in detections],
        "label_ids": [label2id.get(found["label"], 0) for found in detections],
    }
    return draw_boxes(image, prediction, colours), rows


def without_duplicates(detections: list[dict[str, Any]], config: Any) -> list[dict[str, Any]]:
    """``pipeline("object-detection")`` results, best first, with the model's ``box_nms_iou`` applied (the
    suppression its evaluation and ``predict`` use; pipeline() leaves it out)."""
    detections = sorted(detections, key=lambda found: -found["score"])
    iou = nms_iou_of(config)
    if iou is None or not detections:
        return detections
    kept = suppress_duplicates({
        "boxes": torch.tensor([[found["box"][k] for k in CORNERS] for found in detections], dtype=torch.float32),
        "scores": torch.tensor([float(found["score"]) for found in detections]),
        "labels": torch.tensor([config.label2id.get(found["label"], 0) for found in detections]),
        "index": torch.arange(len(detections)),
    }, iou)
    return [detections[i] for i in kept["index"].tolist()]


def make_plates(root: Path) -> Path:
    from recipes.sample_data.plates import make_plates_dataset

    return make_plates_dataset(root, n_images=200, seed=0, size=160)


def plate_images(count: int) -> list[Image.Image]:
    from recipes.sample_data.plates import draw_plates_image

    rng = np.random.default_rng(0)
    return [draw_plates_image(320, rng)[0] for _ in range(count)]
