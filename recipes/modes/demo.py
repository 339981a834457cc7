"""``vision-recipes demo MODEL [--port 7860 --host 127.0.0.1 --share --threshold 0.5]``: try a fine-tuned model
(output folder or Hub id) in the browser. Upload an image and see what the task's view shows: the top classes,
the boxes with label and score (with a score threshold slider), or the mask overlay and a legend of the classes
present. The validation images the training run saved (``examples/``) are offered as examples.
Uploads are capped (``--max_file_size``, default 25 MB) and downscaled to ``--max_side`` pixels (default 2048)
before prediction; boxes are listed in the uploaded image's pixels.
Needs Gradio: ``pip install -e ".[demo]"``."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from transformers import pipeline

from recipes.config import RecipeError
from recipes.decode.images import IMAGE_EXTENSIONS, to_rgb
from recipes.examples import EXAMPLES_DIR
from recipes.modes.loading import FineTuned, load_fine_tuned
from recipes.render import class_palette

MAX_SIDE = 2048
"""Uploads are downscaled to this longer side before prediction: a mask pipeline allocates ~32 bytes per
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


# --- prediction ----------------------------------------------------------------------------------------------


def make_predictor(fine_tuned: FineTuned, max_side: int = MAX_SIDE) -> Callable[..., Any]:
    """The task's prediction function, ``predict(image, *controls)`` (the task's demo view: e.g. a score
    threshold); the preprocessing is the model's own image processor, through ``transformers.pipeline``, after
    uploads larger than ``max_side`` are downscaled (:func:`fit_for_demo`)."""
    task = fine_tuned.task
    pipe = pipeline(task.pipeline_tag, model=fine_tuned.model, image_processor=fine_tuned.image_processor,
                    device=fine_tuned.device)
    palette = class_palette(fine_tuned.local_dir, fine_tuned.config.num_labels)

    def predict(image: Image.Image, *controls: Any) -> Any:
        working, scale = fit_for_demo(image, max_side)
        return task.demo_predict(pipe, working, scale, palette, *controls)

    return predict


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
                inputs = [image, *fine_tuned.task.demo_controls(gr, threshold)]
            with gr.Column():
                outputs = fine_tuned.task.demo_outputs(gr, config)
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
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="Initial score threshold (0-1) of a task whose view has one")
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="Also create a temporary public gradio.live link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--max_file_size", default=MAX_FILE_SIZE,
                        help=f"Largest upload Gradio accepts (default {MAX_FILE_SIZE}; e.g. 10mb, 1gb)")
    parser.add_argument("--max_side", type=int, default=MAX_SIDE,
                        help=f"Uploads are downscaled to this longer side before prediction (default {MAX_SIDE}); "
                             "boxes are reported in the uploaded image's pixels")
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
