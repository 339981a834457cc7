"""How a detector shows itself: the demo's boxes and score-threshold slider, the quickstart's plates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

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

    detections = sorted(pipe(image, threshold=threshold), key=lambda found: -found["score"])
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


def make_plates(root: Path) -> Path:
    from recipes.sample_data.plates import make_plates_dataset

    return make_plates_dataset(root, n_images=200, seed=0, size=160)


def plate_images(count: int) -> list[Image.Image]:
    from recipes.sample_data.plates import draw_plates_image

    rng = np.random.default_rng(0)
    return [draw_plates_image(320, rng)[0] for _ in range(count)]
