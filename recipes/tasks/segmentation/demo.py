"""How a segmenter shows itself: the demo's mask overlay and legend, the quickstart's street scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def demo_outputs(gr: Any) -> list[Any]:
    """The overlay and its legend (HTML)."""
    return [
        gr.Image(type="pil", label="Segmentation", format="png", elem_id="prediction"),
        gr.HTML(label="Legend", elem_id="legend"),
    ]


def demo_predict(pipe: Any, image: Image.Image, colours: np.ndarray) -> tuple[Image.Image, str]:
    """The mask overlay (at the working scale) and its legend (HTML; pixel shares do not depend on the scale)."""
    from recipes.draw.render import blend_mask, legend_html, mask_legend

    config = pipe.model.config
    label_map = np.zeros((image.height, image.width), dtype=np.int64)
    for found in pipe(image, subtask="semantic"):
        label_map[np.asarray(found["mask"]) > 0] = config.label2id[found["label"]]
    return blend_mask(image, label_map, colours), legend_html(mask_legend(label_map, colours, config.id2label))


def make_streets(root: Path) -> Path:
    from recipes.sample_data.streets import make_streets_dataset

    return make_streets_dataset(root, n_frames=60, seed=0)


def street_images(count: int) -> list[Image.Image]:
    from recipes.sample_data.streets import draw_street

    rng = np.random.default_rng(0)
    return [Image.fromarray(draw_street(120, 160, rng)[0]) for _ in range(count)]
