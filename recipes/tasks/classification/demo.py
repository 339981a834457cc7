"""How a classifier shows itself: the demo's top classes, the quickstart's shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

TOP_K = 5


def demo_outputs(gr: Any, config: Any) -> list[Any]:
    """The top classes as a Gradio ``Label``."""
    return [gr.Label(num_top_classes=min(TOP_K, config.num_labels), label="Top classes", elem_id="prediction")]


def demo_predict(pipe: Any, image: Image.Image) -> dict[str, float]:
    """``{label: score}`` of the top classes."""
    top_k = min(TOP_K, pipe.model.config.num_labels)
    return {found["label"]: float(found["score"]) for found in pipe(image, top_k=top_k)}


def make_shapes(root: Path) -> Path:
    from recipes.sample_data.shapes import make_shapes_dataset

    return make_shapes_dataset(root, images_per_class=60, size=32, seed=0)


def shape_images(count: int) -> list[Image.Image]:
    """Synthetic shapes (the quickstart's classes, in turn)."""
    import numpy as np

    from recipes.sample_data.shapes import CLASSES, draw_shape

    rng = np.random.default_rng(0)
    return [draw_shape(CLASSES[i % len(CLASSES)], 224, rng) for i in range(count)]
