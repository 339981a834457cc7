"""A demo app for a fine-tuned model: one image in, the prediction drawn or listed out.

The prediction functions need only transformers; :func:`build_app` wraps them in a Gradio UI
(``pip install -e ".[demo]"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from transformers import AutoConfig, pipeline

from recipes.images import to_rgb

PIPELINE_TASKS = {
    "ForImageClassification": "image-classification",
    "ForObjectDetection": "object-detection",
    "ForSemanticSegmentation": "image-segmentation",
}


def detect_task(model: str) -> str:
    """The pipeline task of a fine-tuned model folder or Hub id, from its architecture name."""
    architectures = AutoConfig.from_pretrained(model).architectures or []
    for suffix, task in PIPELINE_TASKS.items():
        if any(name.endswith(suffix) for name in architectures):
            return task
    raise ValueError(f"{model} is not an image classification, detection or segmentation model ({architectures}).")


def palette_for(model: str, num_labels: int) -> np.ndarray:
    """Class colours: the dataset palette saved with the model (``palette.json``) when present, else a fixed one."""
    path = Path(model) / "palette.json"
    if path.is_file():
        colours = json.loads(path.read_text())
        return np.array([colours.get(str(i), [0, 0, 0]) for i in range(num_labels)], dtype=np.uint8)
    rng = np.random.default_rng(0)
    return rng.integers(40, 255, size=(num_labels, 3), dtype=np.uint8)


def make_predictor(model: str, threshold: float = 0.5) -> tuple[str, Callable[[Image.Image], Any]]:
    """``(task, predict)``: ``predict`` maps an image to a ``{label: score}`` dict (classification) or an
    annotated image (detection boxes, segmentation overlay)."""
    task = detect_task(model)
    pipe = pipeline(task, model=model)

    def classify(image: Image.Image) -> dict[str, float]:
        return {p["label"]: float(p["score"]) for p in pipe(to_rgb(image), top_k=5)}

    def detect(image: Image.Image) -> Image.Image:
        image = to_rgb(image).copy()
        draw = ImageDraw.Draw(image)
        for found in pipe(image, threshold=threshold):
            box = found["box"]
            draw.rectangle((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), outline=(255, 0, 0), width=3)
            draw.text((box["xmin"] + 3, box["ymin"] + 2), f"{found['label']} {found['score']:.2f}", fill=(255, 0, 0))
        return image

    def segment(image: Image.Image) -> Image.Image:
        image = to_rgb(image)
        config = pipe.model.config
        palette = palette_for(model, config.num_labels)
        overlay = np.asarray(image, dtype=np.float32).copy()
        for found in pipe(image):
            mask = np.asarray(found["mask"]) > 0
            colour = palette[config.label2id[found["label"]]]
            overlay[mask] = 0.5 * overlay[mask] + 0.5 * colour
        return Image.fromarray(overlay.astype(np.uint8))

    return task, {"image-classification": classify, "object-detection": detect, "image-segmentation": segment}[task]


def build_app(model: str, threshold: float = 0.5) -> Any:
    """A Gradio ``Interface`` around :func:`make_predictor` (``.launch()`` it)."""
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError('The demo needs Gradio: pip install -e ".[demo]"') from err
    task, predict = make_predictor(model, threshold)
    output = gr.Label(num_top_classes=5) if task == "image-classification" else gr.Image(type="pil")
    return gr.Interface(fn=predict, inputs=gr.Image(type="pil"), outputs=output, title=f"{model} ({task})",
                        flagging_mode="never")
