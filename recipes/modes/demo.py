"""``vision-recipes demo MODEL [--port 7860 --host 127.0.0.1 --share --threshold 0.5]``: try a fine-tuned model
(output folder or Hub id) in the browser. Upload an image and see what the task's view shows: the top classes,
the boxes with label and score (with a score threshold slider), or the mask overlay and a legend of the classes
present. The validation images the training run saved (``examples/``) are offered as examples.
Detection and segmentation also take a video (mp4, mov, mkv, avi, webm) and give it back annotated (H.264 MP4, at
most ``--max_video_frames`` frames: longer videos are subsampled evenly).
Uploads are capped (``--max_file_size``, default 25 MB) and downscaled to ``--max_side`` pixels (default 2048)
before prediction; boxes are listed in the uploaded image's pixels.
Needs Gradio: ``pip install -e ".[demo]"``."""

from __future__ import annotations

import argparse
import dataclasses
import html
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from transformers import pipeline

from recipes.artifacts.examples import EXAMPLES_DIR
from recipes.config import RecipeError
from recipes.decode.images import IMAGE_EXTENSIONS, to_rgb
from recipes.decode.video import BadVideoError, VideoWriter, probe_video, read_frames
from recipes.draw.render import class_palette
from recipes.modes.loading import FineTuned, load_fine_tuned

MAX_SIDE = 2048
"""Uploads are downscaled to this longer side before prediction: a mask pipeline allocates ~32 bytes per
pixel (class logits upsampled to the image size), so a 50-megapixel photo would take GBs; the models themselves
see a few hundred pixels per side."""
MAX_VIDEO_FRAMES = 300
"""Frames annotated per uploaded video at most (10 s at 30 fps); a longer video is subsampled evenly."""
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


@dataclasses.dataclass
class AnnotatedVideo:
    """What :func:`annotate_video` wrote: the video, its frames, the stride, and why it stopped early (if so)."""

    path: Path | None
    frames: int
    stride: int
    fps: float
    stopped: str | None = None

    def describe(self) -> str:
        every = f", 1 frame in {self.stride}" if self.stride > 1 else ""
        text = f"{self.frames} frames annotated{every}, {self.fps:.1f} frames/s"
        return text + (f". Stopped early: {self.stopped}" if self.stopped else "")


def annotate_video(predict_frame: Callable[[Image.Image], Image.Image], video: str | Path, out_dir: Path,
                   max_frames: int = MAX_VIDEO_FRAMES) -> AnnotatedVideo:
    """Each frame of ``video`` (every ``stride``-th one when it has more than ``max_frames``) drawn by
    ``predict_frame`` (the demo's image prediction), written to ``out_dir`` as H.264 MP4 at the input's frame rate
    divided by the stride. A video that breaks keeps its frames before the break (``stopped`` says where);
    one that cannot be opened raises :class:`~recipes.decode.video.BadVideoError`."""
    import time

    info = probe_video(Path(video))
    out_dir.mkdir(parents=True, exist_ok=True)
    stride = max(1, -(-(info.frames or 0) // max_frames))
    writer = VideoWriter(out_dir / f"{Path(video).stem}-annotated.mp4", dataclasses.replace(info, codec="h264"), stride)
    frames, stopped, started = 0, None, time.perf_counter()
    try:
        for frame in read_frames(info, stride):
            if frames >= max_frames:
                break
            writer.write(predict_frame(Image.fromarray(frame.image.permute(1, 2, 0).numpy())))
            frames += 1
    except BadVideoError as err:
        stopped = str(err)
    path = writer.close()
    return AnnotatedVideo(path, frames, stride, frames / max(time.perf_counter() - started, 1e-9), stopped)


def example_images(model_dir: Path | None) -> list[str]:
    """The validation images the training run saved beside the model (``examples/``); none for Hub ids."""
    folder = model_dir / EXAMPLES_DIR if model_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    return [str(path) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_EXTENSIONS]


# --- the app -------------------------------------------------------------------------------------------------


def build_app(fine_tuned: FineTuned, threshold: float = 0.5, max_side: int = MAX_SIDE,
              max_video_frames: int = MAX_VIDEO_FRAMES) -> Any:
    """A Gradio ``Blocks`` app for ``fine_tuned`` (``.launch()`` it); predictions run on each upload (detection and
    segmentation: images and videos)."""
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
        if fine_tuned.task.demo_video:
            _video_row(gr, predict, inputs[1:], max_video_frames)
    return app


def _video_row(gr: Any, predict: Callable[..., Any], options: list[Any], max_frames: int) -> None:
    """A video upload and its annotated copy (frames drawn as the image output is, the current options)."""
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Video", sources=["upload"], elem_id="video")
        with gr.Column():
            annotated = gr.Video(label="Annotated video", elem_id="video_prediction", interactive=False)
            described = gr.Markdown(elem_id="video_info")

    def run_video(path: str | None, *values: Any) -> tuple[str | None, str]:
        if path is None:
            return None, ""
        out_dir = Path(tempfile.mkdtemp(prefix="vision-recipes-demo-"))
        try:
            done = annotate_video(lambda image: predict(image, *values)[0], path, out_dir, max_frames)
        except BadVideoError as err:
            raise gr.Error(str(err)) from err
        if done.stopped:
            gr.Warning(done.stopped)
        return (str(done.path) if done.path else None), done.describe()

    video.change(run_video, inputs=[video, *options], outputs=[annotated, described])


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
    parser.add_argument("--max_video_frames", type=int, default=MAX_VIDEO_FRAMES,
                        help=f"Frames annotated per uploaded video at most (default {MAX_VIDEO_FRAMES}); longer videos "
                             "are subsampled evenly")
    parser.add_argument("--max_side", type=int, default=MAX_SIDE,
                        help=f"Uploads are downscaled to this longer side before prediction (default {MAX_SIDE}); "
                             "boxes are reported in the uploaded image's pixels")
    args = parser.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold {args.threshold}: choose a score between 0 and 1")
    if args.max_side < 32:
        parser.error(f"--max_side {args.max_side}: choose at least 32 pixels")
    if args.max_video_frames < 1:
        parser.error(f"--max_video_frames {args.max_video_frames}: choose at least 1")
    try:
        app = build_app(load_fine_tuned(args.model, device=args.device), threshold=args.threshold,
                        max_side=args.max_side, max_video_frames=args.max_video_frames)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=args.max_file_size)
    return 0
