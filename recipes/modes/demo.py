"""``vision-recipes demo MODEL [--port 7860 --host 127.0.0.1 --share --threshold 0.5]``: try a fine-tuned model
(output folder or Hub id) in the browser. Upload an image and see the top classes (classification), the boxes
with label and score (detection, with a score threshold slider) or the mask overlay and a legend of the classes
present (segmentation). The validation images the training run saved (``examples/``) are offered as examples.
Uploads are capped (``--max_file_size``, default 25 MB) and downscaled to ``--max_side`` pixels (default 2048)
before prediction; detection boxes are listed in the uploaded image's pixels.
Needs Gradio: ``pip install -e ".[demo]"``."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers import pipeline

from recipes.config import RecipeError
from recipes.decode.images import IMAGE_EXTENSIONS, to_rgb
from recipes.examples import EXAMPLES_DIR
from recipes.modes.loading import FineTuned, load_fine_tuned
from recipes.render import blend_mask, class_palette, mask_legend, render_detection

TOP_K = 5
MAX_SIDE = 2048
"""Uploads are downscaled to this longer side before prediction: a segmentation pipeline allocates ~32 bytes per
pixel (class logits upsampled to the image size), so a 50-megapixel photo would take GBs; the models themselves
see a few hundred pixels per side."""
MAX_FILE_SIZE = "25mb"
"""Gradio's upload limit (``launch(max_file_size=...)``): larger files are refused before they are read."""


def fit_for_demo(image: Image.Image, max_side: int = MAX_SIDE) -> tuple[Image.Image, tuple[float, float]]:
    """``image`` as RGB, downscaled so that its longer side is at most ``max_side`` (aspect kept), and the
    factors ``(original / working)`` per axis that bring working coordinates back to the original image."""
    image = to_rgb(image)
    width, height = image.size
    if max(width, height) <= max_side:
        return image, (1.0, 1.0)
    ratio = max_side / max(width, height)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0), (width / size[0], height / size[1])


# --- drawing (recipes.render; the legend as HTML) ------------------------------------------------------------


def legend_html(legend: list[tuple[str, tuple[int, int, int], float]]) -> str:
    """The legend as HTML: one colour swatch, class name and pixel share per class."""
    items = "".join(
        f'<li style="list-style:none;margin:2px 0"><span style="display:inline-block;width:1em;height:1em;'
        f'vertical-align:middle;margin-right:.4em;border:1px solid #888;background:rgb{colour}"></span>'
        f"{html.escape(name)} <small>{share:.1%}</small></li>"
        for name, colour, share in legend
    )
    return f'<p style="margin:0"><b>Legend</b></p><ul class="legend" style="padding:0;margin:0">{items}</ul>'


# --- prediction ----------------------------------------------------------------------------------------------


def classify(pipe: Any, image: Image.Image, max_side: int = MAX_SIDE) -> dict[str, float]:
    """``{label: score}`` of the top classes."""
    top_k = min(TOP_K, pipe.model.config.num_labels)
    return {found["label"]: float(found["score"]) for found in pipe(fit_for_demo(image, max_side)[0], top_k=top_k)}


def detect(pipe: Any, colours: np.ndarray, image: Image.Image, threshold: float,
           max_side: int = MAX_SIDE) -> tuple[Image.Image, list[list]]:
    """The annotated image (at most ``max_side`` pixels on its longer side) and one ``[label, score, xmin, ymin,
    xmax, ymax]`` row per detection, in the uploaded image's pixel coordinates."""
    image, (scale_x, scale_y) = fit_for_demo(image, max_side)
    detections = sorted(pipe(image, threshold=threshold), key=lambda found: -found["score"])
    scales = {"xmin": scale_x, "ymin": scale_y, "xmax": scale_x, "ymax": scale_y}
    rows = [[found["label"], round(float(found["score"]), 3), *(int(found["box"][k] * scales[k]) for k in
             ("xmin", "ymin", "xmax", "ymax"))] for found in detections]
    label2id = pipe.model.config.label2id
    prediction = {"boxes": [[found["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for found in detections],
                  "labels": [found["label"] for found in detections],
                  "scores": [found["score"] for found in detections],
                  "label_ids": [label2id.get(found["label"], 0) for found in detections]}
    return render_detection(image, prediction, colours), rows


def segment(pipe: Any, colours: np.ndarray, image: Image.Image, max_side: int = MAX_SIDE) -> tuple[Image.Image, str]:
    """The mask overlay (at most ``max_side`` pixels on its longer side) and its legend (HTML; pixel shares do not
    depend on the scale)."""
    image = fit_for_demo(image, max_side)[0]
    config = pipe.model.config
    label_map = np.zeros((image.height, image.width), dtype=np.int64)
    for found in pipe(image, subtask="semantic"):
        label_map[np.asarray(found["mask"]) > 0] = config.label2id[found["label"]]
    return blend_mask(image, label_map, colours), legend_html(mask_legend(label_map, colours, config.id2label))


def make_predictor(fine_tuned: FineTuned, max_side: int = MAX_SIDE) -> Callable[..., Any]:
    """The task's prediction function: ``classify(image)``, ``detect(image, threshold)`` or ``segment(image)``;
    the preprocessing is the model's own image processor, through ``transformers.pipeline``, after uploads larger
    than ``max_side`` are downscaled (:func:`fit_for_demo`)."""
    pipe = pipeline(fine_tuned.task.pipeline_tag, model=fine_tuned.model, image_processor=fine_tuned.image_processor,
                    device=fine_tuned.device)
    config = fine_tuned.config
    if fine_tuned.task.pipeline_tag == "image-classification":
        return partial(classify, pipe, max_side=max_side)
    colours = class_palette(fine_tuned.local_dir, config.num_labels)
    if fine_tuned.task.pipeline_tag == "object-detection":
        return partial(detect, pipe, colours, max_side=max_side)
    return partial(segment, pipe, colours, max_side=max_side)


def example_images(model_dir: Path | None) -> list[str]:
    """The validation images the training run saved beside the model (``examples/``); none for Hub ids."""
    folder = model_dir / EXAMPLES_DIR if model_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    return [str(path) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_EXTENSIONS]


# --- the app -------------------------------------------------------------------------------------------------


def build_app(fine_tuned: FineTuned, threshold: float = 0.5, max_side: int = MAX_SIDE) -> Any:
    """A Gradio ``Blocks`` app for ``fine_tuned`` (``.launch()`` it); predictions run on each upload."""
    try:
        import gradio as gr
    except ImportError as err:
        raise RecipeError('The demo needs Gradio: pip install -e ".[demo]"') from err
    tag, config = fine_tuned.task.pipeline_tag, fine_tuned.config
    predict = make_predictor(fine_tuned, max_side)
    name = fine_tuned.local_dir.name if fine_tuned.local_dir is not None else fine_tuned.reference
    with gr.Blocks(title=f"{name} — Vision Recipes demo") as app:
        architecture = type(fine_tuned.model).__name__
        gr.Markdown(f"## {html.escape(name)}\n{tag} · {config.num_labels} classes · `{architecture}`")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], elem_id="image")
                inputs = [image]
                if tag == "object-detection":
                    inputs.append(gr.Slider(0.0, 1.0, value=threshold, step=0.05, label="Score threshold",
                                            elem_id="threshold"))
            with gr.Column():
                if tag == "image-classification":
                    top_k = min(TOP_K, config.num_labels)
                    outputs = [gr.Label(num_top_classes=top_k, label="Top classes", elem_id="prediction")]
                elif tag == "object-detection":
                    outputs = [gr.Image(type="pil", label="Detections", format="png", elem_id="prediction"),
                               gr.Dataframe(headers=["label", "score", "xmin", "ymin", "xmax", "ymax"],
                                            label="Boxes", interactive=False, elem_id="boxes")]
                else:
                    outputs = [gr.Image(type="pil", label="Segmentation", format="png", elem_id="prediction"),
                               gr.HTML(label="Legend", elem_id="legend")]
        examples = example_images(fine_tuned.local_dir)
        if examples:
            gr.Examples(examples=examples, inputs=image, label="Validation images", elem_id="examples")

        def run(picture: Image.Image | None, *options: float) -> Any:
            if picture is None:
                return None if len(outputs) == 1 else (None,) * len(outputs)
            return predict(picture, *options)

        triggers = [image.change] + [control.release for control in inputs[1:]]
        gr.on(triggers, run, inputs=inputs, outputs=outputs)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vision-recipes demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Output folder of `vision-recipes train` or a Hub model id")
    parser.add_argument("--threshold", type=float, default=0.5, help="Initial detection score threshold (0-1)")
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="Also create a temporary public gradio.live link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--max_file_size", default=MAX_FILE_SIZE,
                        help=f"Largest upload Gradio accepts (default {MAX_FILE_SIZE}; e.g. 10mb, 1gb)")
    parser.add_argument("--max_side", type=int, default=MAX_SIDE,
                        help=f"Uploads are downscaled to this longer side before prediction (default {MAX_SIDE}); "
                             "detection boxes are reported in the uploaded image's pixels")
    args = parser.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold {args.threshold}: choose a score between 0 and 1")
    if args.max_side < 32:
        parser.error(f"--max_side {args.max_side}: choose at least 32 pixels")
    try:
        app = build_app(load_fine_tuned(args.model, device=args.device), threshold=args.threshold,
                        max_side=args.max_side)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=args.max_file_size)
    return 0
