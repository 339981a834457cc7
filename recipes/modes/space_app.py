"""A Gradio demo of a fine-tuned image model, written by ``vision-recipes space`` as the Space's ``app.py``.

It is self-contained: it needs transformers, torch, torchvision, gradio and pillow (numpy comes with them), never
the Vision Recipes package, and reads its settings from ``space_config.json`` beside it. The model is loaded by its
Hub id (or from the ``model/`` folder of the Space when it was bundled) through ``transformers.pipeline()``; the page
shows what ``vision-recipes demo`` shows: the top classes (classification), the boxes with label and score and a
score-threshold slider (detection; duplicates suppressed at the model's ``box_nms_iou``), the mask overlay and a
legend of the classes present (segmentation). The drawing and the suppression are the demo's
(``recipes.draw.render``, ``recipes.tasks.detection.demo``), copied here; ``tests/test_space.py`` checks they stay
equal.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from transformers import pipeline

HERE = Path(__file__).resolve().parent
SETTINGS_FILE = "space_config.json"
EXAMPLES_DIR = "examples"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
TOP_K = 5
MASK_OPACITY = 0.5
TEXT = (255, 255, 255)
BACKDROP = (0, 0, 0, 170)


# --- drawing: recipes.draw.render and the demo's legend, with the palette saved in space_config.json ------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB; transparency composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _font(image: Image.Image) -> Any:
    return ImageFont.load_default(size=max(12, round(min(image.size) / 28)))


def _colour(palette: np.ndarray, index: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in palette[index % len(palette)])  # type: ignore[return-value]


def _label_box(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Any, fill: tuple) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 6, bottom - top + 6
    x = min(max(0.0, xy[0]), max(0.0, draw.im.size[0] - width))
    y = min(max(0.0, xy[1]), max(0.0, draw.im.size[1] - height))
    draw.rectangle((x, y, x + width, y + height), fill=fill)
    draw.text((x + 3 - left, y + 3 - top), text, fill=TEXT, font=font)


def render_detection(image: Image.Image, prediction: dict[str, Any], palette: np.ndarray) -> Image.Image:
    """Each box in its class colour with ``label score`` above it."""
    out = image.convert("RGB")
    draw, font = ImageDraw.Draw(out), _font(out)
    width = max(2, round(min(out.size) / 150))
    for box, label, score, index in zip(prediction["boxes"], prediction["labels"], prediction["scores"],
                                        prediction["label_ids"]):
        colour = _colour(palette, int(index))
        draw.rectangle(tuple(box), outline=colour, width=width)
        text = f"{label} {score:.2f}"
        height = draw.textbbox((0, 0), text, font=font)[3] + 6
        _label_box(draw, (box[0], box[1] - height), text, font, fill=colour)
    return out


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


def legend_html(legend: list[tuple[str, tuple[int, int, int], float]]) -> str:
    """The legend as HTML: one colour swatch, class name and pixel share per class."""
    items = "".join(
        f'<li style="list-style:none;margin:2px 0"><span style="display:inline-block;width:1em;height:1em;'
        f'vertical-align:middle;margin-right:.4em;border:1px solid #888;background:rgb{colour}"></span>'
        f"{html.escape(name)} <small>{share:.1%}</small></li>"
        for name, colour, share in legend
    )
    return f'<p style="margin:0"><b>Legend</b></p><ul class="legend" style="padding:0;margin:0">{items}</ul>'


# --- prediction ------------------------------------------------------------------------------------------------


def without_duplicates(detections: list[dict[str, Any]], config: Any) -> list[dict[str, Any]]:
    """pipeline() results, best first, with the model's ``box_nms_iou`` applied as ``vision-recipes demo`` and
    ``predict`` apply it (a box is dropped when a better one of its class overlaps it by more than that IoU)."""
    detections = sorted(detections, key=lambda found: -found["score"])
    iou = getattr(config, "box_nms_iou", None)
    if iou is None or not detections:
        return detections
    from torchvision.ops import batched_nms

    corners = ("xmin", "ymin", "xmax", "ymax")
    boxes = torch.tensor([[found["box"][k] for k in corners] for found in detections], dtype=torch.float32)
    scores = torch.tensor([float(found["score"]) for found in detections])
    labels = torch.tensor([config.label2id.get(found["label"], 0) for found in detections])
    return [detections[i] for i in batched_nms(boxes, scores, labels, float(iou)).tolist()]


class Predictor:
    """The task's prediction through ``transformers.pipeline()``: ``classify(image)``, ``detect(image,
    threshold)`` or ``segment(image)``."""

    def __init__(self, settings: dict[str, Any], model: str) -> None:
        device = 0 if torch.cuda.is_available() else -1
        self.task = settings["task"]
        self.pipe = pipeline(self.task, model=model, device=device)
        self.config = self.pipe.model.config
        self.palette = np.asarray(settings["palette"], dtype=np.uint8)

    def classify(self, image: Image.Image) -> dict[str, float]:
        top_k = min(TOP_K, self.config.num_labels)
        return {found["label"]: float(found["score"]) for found in self.pipe(to_rgb(image), top_k=top_k)}

    def detect(self, image: Image.Image, threshold: float) -> tuple[Image.Image, list[list]]:
        image = to_rgb(image)
        detections = without_duplicates(self.pipe(image, threshold=threshold), self.config)
        corners = ("xmin", "ymin", "xmax", "ymax")
        rows = [[found["label"], round(float(found["score"]), 3), *(int(found["box"][k]) for k in corners)]
                for found in detections]
        label2id = self.config.label2id
        prediction = {"boxes": [[found["box"][k] for k in corners] for found in detections],
                      "labels": [found["label"] for found in detections],
                      "scores": [found["score"] for found in detections],
                      "label_ids": [label2id.get(found["label"], 0) for found in detections]}
        return render_detection(image, prediction, self.palette), rows

    def segment(self, image: Image.Image) -> tuple[Image.Image, str]:
        image = to_rgb(image)
        label_map = np.zeros((image.height, image.width), dtype=np.int64)
        for found in self.pipe(image, subtask="semantic"):
            label_map[np.asarray(found["mask"]) > 0] = self.config.label2id[found["label"]]
        legend = mask_legend(label_map, self.palette, self.config.id2label)
        return blend_mask(image, label_map, self.palette), legend_html(legend)


# --- the app -----------------------------------------------------------------------------------------------------


def load_settings(folder: Path = HERE) -> dict[str, Any]:
    return json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))


def build_app(settings: dict[str, Any], folder: Path = HERE) -> Any:
    """The Gradio ``Blocks`` app of the Space (``.launch()`` it)."""
    import gradio as gr

    model = str(folder / settings["model_path"]) if settings.get("model_path") else settings["model_id"]
    predictor = Predictor(settings, model)
    task, config = settings["task"], predictor.config
    with gr.Blocks(title=settings["title"]) as app:
        gr.Markdown(settings["description"])
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], elem_id="image")
                inputs = [image]
                if task == "object-detection":
                    inputs.append(gr.Slider(0.0, 1.0, value=settings["threshold"], step=0.05,
                                            label="Score threshold", elem_id="threshold"))
            with gr.Column():
                if task == "image-classification":
                    outputs = [gr.Label(num_top_classes=min(TOP_K, config.num_labels), label="Top classes",
                                        elem_id="prediction")]
                    predict = predictor.classify
                elif task == "object-detection":
                    outputs = [gr.Image(type="pil", label="Detections", format="png", elem_id="prediction"),
                               gr.Dataframe(headers=["label", "score", "xmin", "ymin", "xmax", "ymax"],
                                            label="Boxes", interactive=False, elem_id="boxes")]
                    predict = predictor.detect
                else:
                    outputs = [gr.Image(type="pil", label="Segmentation", format="png", elem_id="prediction"),
                               gr.HTML(label="Legend", elem_id="legend")]
                    predict = predictor.segment
        examples = sorted(str(path) for path in (folder / EXAMPLES_DIR).glob("*")
                          if path.suffix.lower() in IMAGE_EXTENSIONS)
        if examples:
            gr.Examples(examples=examples, inputs=image, label="Example images", elem_id="examples")

        def run(picture: Image.Image | None, *options: float) -> Any:
            if picture is None:
                return None if len(outputs) == 1 else (None,) * len(outputs)
            return predict(picture, *options)

        gr.on([image.change] + [control.release for control in inputs[1:]], run, inputs=inputs, outputs=outputs)
    return app


if __name__ == "__main__":  # a Space runs `python app.py`; the server address and port come from GRADIO_SERVER_*
    build_app(load_settings()).launch()
