"""A learnable synthetic licence-plate set in the Kaggle "car-plate-detection" layout.

``images/CarsN.png`` (some saved as RGBA, like the real set) and ``annotations/CarsN.xml``
(Pascal VOC, label ``licence``): light plates with dark glyph strokes on a textured street
background, 1-3 plates per image, plus a few images without any plate (negatives).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LABEL = "licence"
NEGATIVE_FRACTION = 0.1
RGBA_FRACTION = 0.3


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A noisy vertical gradient with a few dark 'car body' rectangles."""
    top, bottom = rng.integers(40, 150, size=3), rng.integers(20, 110, size=3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = top[None, None, :] * (1 - ramp) + bottom[None, None, :] * ramp
    pixels = np.broadcast_to(pixels, (height, width, 3)) + rng.normal(0, 12, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(-0.2, 0.9) * width, rng.uniform(0.0, 0.9) * height
        x1, y1 = x0 + rng.uniform(0.2, 0.7) * width, y0 + rng.uniform(0.1, 0.5) * height
        colour = tuple(int(c) for c in rng.integers(10, 120, size=3))
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image


def _free_place(
    width: int,
    height: int,
    plate_w: int,
    plate_h: int,
    taken: list[tuple[int, int, int, int]],
    rng: np.random.Generator,
) -> tuple[int, int, int, int] | None:
    """A plate position that does not overlap the plates already drawn (``None`` if there is no room)."""
    for _ in range(30):
        x0 = int(rng.integers(0, max(1, width - plate_w)))
        y0 = int(rng.integers(0, max(1, height - plate_h)))
        box = (x0, y0, x0 + plate_w, y0 + plate_h)
        if all(box[2] + 4 < t[0] or t[2] + 4 < box[0] or box[3] + 4 < t[1] or t[3] + 4 < box[1] for t in taken):
            return box
    return None


def _draw_plate(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """A light plate with a dark border and 5-8 dark glyph-like strokes."""
    x0, y0, x1, y1 = box
    face = tuple(int(c) for c in rng.integers(200, 256, size=3))
    draw.rectangle(box, fill=face, outline=(20, 20, 20), width=max(1, (y1 - y0) // 10))
    glyphs = int(rng.integers(5, 9))
    pad_x, pad_y = (x1 - x0) * 0.08, (y1 - y0) * 0.22
    step = (x1 - x0 - 2 * pad_x) / glyphs
    stroke = max(1, int(step * 0.22))
    for g in range(glyphs):
        gx0 = x0 + pad_x + g * step + step * 0.15
        gx1 = gx0 + step * 0.6
        top, bottom = y0 + pad_y, y1 - pad_y
        kind = int(rng.integers(0, 4))
        if kind == 0:  # vertical bar
            draw.line(((gx0 + gx1) / 2, top, (gx0 + gx1) / 2, bottom), fill=(15, 15, 15), width=stroke)
        elif kind == 1:  # box-like glyph
            draw.rectangle((gx0, top, gx1, bottom), outline=(15, 15, 15), width=stroke)
        elif kind == 2:  # diagonal
            draw.line((gx0, bottom, gx1, top), fill=(15, 15, 15), width=stroke)
        else:  # two horizontal strokes and a vertical one
            draw.line((gx0, top, gx1, top), fill=(15, 15, 15), width=stroke)
            draw.line((gx0, bottom, gx1, bottom), fill=(15, 15, 15), width=stroke)
            draw.line((gx0, top, gx0, bottom), fill=(15, 15, 15), width=stroke)


def voc_xml(filename: str, width: int, height: int, boxes: list[tuple[int, int, int, int]], label: str = LABEL) -> str:
    """A Pascal VOC annotation in the Kaggle set's style (leading blank line, no ``<path>``)."""
    objects = "".join(
        f"""
    <object>
        <name>{label}</name>
        <pose>Unspecified</pose>
        <truncated>0</truncated>
        <occluded>0</occluded>
        <difficult>0</difficult>
        <bndbox>
            <xmin>{x0}</xmin>
            <ymin>{y0}</ymin>
            <xmax>{x1}</xmax>
            <ymax>{y1}</ymax>
        </bndbox>
    </object>"""
        for x0, y0, x1, y1 in boxes
    )
    return f"""
<annotation>
    <folder>images</folder>
    <filename>{filename}</filename>
    <size>
        <width>{width}</width>
        <height>{height}</height>
        <depth>3</depth>
    </size>
    <segmented>0</segmented>{objects}
</annotation>"""


def draw_plates_image(size: int, rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """One street-like image whose longest side is ``size`` with 0-3 plates, and the plate boxes (xyxy)."""
    width = size
    height = round(size * rng.uniform(0.56, 0.8))
    image = _background(width, height, rng)
    draw = ImageDraw.Draw(image)
    count = 0 if rng.random() < NEGATIVE_FRACTION else int(rng.choice([1, 1, 2, 3]))
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(count):
        plate_w = int(width * rng.uniform(0.18, 0.38))
        plate_h = max(6, int(plate_w / rng.uniform(2.8, 4.2)))
        box = _free_place(width, height, plate_w, plate_h, boxes, rng)
        if box is None:
            continue
        _draw_plate(draw, box, rng)
        boxes.append(box)
    return image, boxes


def make_plates_dataset(root: str | Path, n_images: int = 120, seed: int = 0, size: int = 160) -> Path:
    """Write ``root/images/CarsN.png`` and ``root/annotations/CarsN.xml`` (Kaggle layout); return ``root``."""
    root = Path(root)
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in range(n_images):
        image, boxes = draw_plates_image(size, rng)
        filename = f"Cars{n}.png"
        if rng.random() < RGBA_FRACTION:
            image = image.convert("RGBA")
        image.save(images / filename)
        (annotations / f"Cars{n}.xml").write_text(voc_xml(filename, image.width, image.height, boxes), encoding="utf-8")
    return root
