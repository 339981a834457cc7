"""Draw one prediction on its image: top labels, boxes, a mask blend with a legend. The tasks' ``render``
(``vision-recipes predict --visualize``) and demo views use these.

Predictions are the dicts of :class:`recipes.tasks.base.PredictionSink` (``label``/``score``/``top_k``;
``boxes``/``labels``/``scores``; ``mask``/``shares``)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MASK_OPACITY = 0.5
TEXT = (255, 255, 255)
BACKDROP = (0, 0, 0, 170)


def class_palette(model_dir: str | Path | None, num_labels: int) -> np.ndarray:
    """``(num_labels, 3)`` ``uint8`` class colours: the dataset palette saved beside the model (``palette.json``,
    written by training on colour masks) when there is one, else matplotlib's tab10/tab20 colours."""
    from matplotlib import colormaps

    num_labels = max(num_labels, 1)
    name, size = ("tab10", 10) if num_labels <= 10 else ("tab20", 20)
    fallback = (np.array([colormaps[name](i % size)[:3] for i in range(num_labels)]) * 255).round()
    path = Path(model_dir) / "palette.json" if model_dir is not None else None
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        return np.array([saved.get(str(i), fallback[i]) for i in range(num_labels)], dtype=np.uint8)
    return fallback.astype(np.uint8)


def blend_mask(image: Image.Image, ids: np.ndarray, palette: np.ndarray, opacity: float = MASK_OPACITY) -> Image.Image:
    """``image`` blended with the class colour of each pixel of the class-id map ``ids``."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = np.asarray(palette, dtype=np.float32)[np.clip(ids, 0, len(palette) - 1)]
    return Image.fromarray(((1 - opacity) * base + opacity * colours).round().astype(np.uint8))


def mask_legend(ids: np.ndarray, palette: np.ndarray, id2label: dict[int, str]) -> list[tuple[str, tuple, float]]:
    """``(class name, colour, pixel share)`` of every class present in ``ids``, largest first."""
    present, counts = np.unique(ids, return_counts=True)
    return [(id2label.get(int(i), str(i)), _colour(palette, int(i)), count / ids.size)
            for i, count in sorted(zip(present, counts), key=lambda pair: -pair[1])]


def _font(image: Image.Image) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(12, round(min(image.size) / 28)))


def _label_box(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Any,
               fill: tuple[int, ...] = BACKDROP) -> None:
    """``text`` on a filled rectangle whose top-left corner is ``xy`` (kept inside the image)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 6, bottom - top + 6
    x = min(max(0.0, xy[0]), max(0.0, draw.im.size[0] - width))
    y = min(max(0.0, xy[1]), max(0.0, draw.im.size[1] - height))
    draw.rectangle((x, y, x + width, y + height), fill=fill)
    draw.text((x + 3 - left, y + 3 - top), text, fill=TEXT, font=font)


def _colour(palette: np.ndarray | None, index: int) -> tuple[int, int, int]:
    if palette is None or len(palette) == 0:
        palette = class_palette(None, index + 1)
    return tuple(int(v) for v in palette[index % len(palette)])  # type: ignore[return-value]


def draw_top_labels(image: Image.Image, prediction: dict[str, Any], rows: int = 3) -> Image.Image:
    """The top ``rows`` labels with their scores, top-left."""
    out = image.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw, font = ImageDraw.Draw(layer), _font(out)
    top = prediction.get("top_k") or [{"label": prediction["label"], "score": prediction["score"]}]
    text = "\n".join(f"{row['label']}  {row['score']:.2f}" for row in top[:rows])
    left, upper, right, lower = draw.multiline_textbbox((0, 0), text, font=font)
    draw.rectangle((0, 0, right - left + 10, lower - upper + 10), fill=BACKDROP)
    draw.multiline_text((5 - left, 5 - upper), text, fill=TEXT, font=font)
    return Image.alpha_composite(out, layer).convert("RGB")


def draw_boxes(image: Image.Image, prediction: dict[str, Any], palette: np.ndarray | None) -> Image.Image:
    """Each box in its class colour with ``label score`` above it."""
    out = image.convert("RGB")
    draw, font = ImageDraw.Draw(out), _font(out)
    width = max(2, round(min(out.size) / 150))
    ids = prediction.get("label_ids") or list(range(len(prediction["boxes"])))
    for box, label, score, index in zip(prediction["boxes"], prediction["labels"], prediction["scores"], ids):
        colour = _colour(palette, int(index))
        draw.rectangle(tuple(box), outline=colour, width=width)
        text = f"{label} {score:.2f}"
        height = draw.textbbox((0, 0), text, font=font)[3] + 6
        _label_box(draw, (box[0], box[1] - height), text, font, fill=colour)
    return out


def draw_mask(
    image: Image.Image, prediction: dict[str, Any], palette: np.ndarray, id2label: dict[int, str]
) -> Image.Image:
    """The class colours blended over the image, and a legend of the classes present (largest first)."""
    out = blend_mask(image, np.asarray(prediction["mask"]), palette)
    draw, font = ImageDraw.Draw(out), _font(out)
    label2id = {name: index for index, name in id2label.items()}
    shares = prediction.get("shares") or {}
    y = 4
    for name, share in list(shares.items())[:12]:
        text = f"{name} {100 * share:.0f}%" if share >= 0.01 else f"{name} {100 * share:.1f}%"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        size = bottom - top
        draw.rectangle((4, y, 4 + size + right - left + 12, y + size + 6), fill=(0, 0, 0))
        draw.rectangle((7, y + 3, 7 + size, y + 3 + size), fill=_colour(palette, label2id.get(name, 0)))
        draw.text((12 + size - left, y + 3 - top), text, fill=TEXT, font=font)
        y += size + 8
    return out


def legend_html(legend: list[tuple[str, tuple[int, int, int], float]]) -> str:
    """The legend of :func:`mask_legend` as HTML: one colour swatch, class name and pixel share per class."""
    items = "".join(
        f'<li style="list-style:none;margin:2px 0"><span style="display:inline-block;width:1em;height:1em;'
        f'vertical-align:middle;margin-right:.4em;border:1px solid #888;background:rgb{colour}"></span>'
        f"{html.escape(name)} <small>{share:.1%}</small></li>"
        for name, colour, share in legend
    )
    return f'<p style="margin:0"><b>Legend</b></p><ul class="legend" style="padding:0;margin:0">{items}</ul>'
