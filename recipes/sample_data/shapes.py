"""A learnable image-folder classification set: coloured circles, squares and triangles on noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross")


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One ``size`` x ``size`` RGB image of ``kind`` at a random place, scale and colour."""
    background = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    colour = tuple(int(c) for c in rng.integers(140, 256, size=3))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
    elif kind == "cross":
        w = radius / 3
        draw.rectangle((cx - w, cy - radius, cx + w, cy + radius), fill=colour)
        draw.rectangle((cx - radius, cy - w, cx + radius, cy + w), fill=colour)
    else:
        raise ValueError(f"unknown shape {kind}")
    return image


def make_shapes_dataset(
    root: str | Path, images_per_class: int = 60, size: int = 48, seed: int = 0, classes: tuple[str, ...] = CLASSES
) -> Path:
    """Write ``root/<class>/<n>.png`` and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for kind in classes:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(images_per_class):
            draw_shape(kind, size, rng).save(folder / f"{kind}_{n:04d}.png")
    return root
