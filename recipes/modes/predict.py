"""``vision-recipes predict MODEL INPUTS... --output PATH``: run a fine-tuned model (output folder or Hub id) on
image files, video files (mp4, mov, mkv, avi, webm), folders (recursive) or globs, in batches, with the
preprocessing of ``pipeline()``.

Outputs (one format per task): classification JSON lines (``label``, ``score``, ``top_k``); detection JSON lines
of ``xyxy`` boxes or a COCO file (``--format coco``); segmentation a folder of class-id PNGs (``--format color``:
coloured with the model's palette) plus ``predictions.jsonl``. ``--visualize DIR`` also draws each prediction.
Video files: every ``--vid_stride``-th frame goes through the same preprocessing, batches and outputs as an image,
its records with ``frame`` (0-based number in the file) and ``time_s`` after ``file``; ``--visualize`` writes the
annotated video (same container and codec family, frame rate divided by the stride). Unreadable images are listed
and skipped. Exit code: 0; 2 when nothing could be read (or a bad argument); 3 when predictions were written but a
video could not be read to its end (broken or truncated: its frames before the break are kept, the message names
the file and the last frame read)."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from recipes.config import RecipeError
from recipes.decode.images import DEFAULT_MAX_IMAGE_PIXELS, IMAGE_EXTENSIONS, BadImageError, set_max_image_pixels
from recipes.decode.tensors import decode_to_tensor
from recipes.decode.video import (
    VIDEO_EXTENSIONS,
    BadVideoError,
    VideoInfo,
    VideoWriter,
    is_video,
    probe_video,
    read_frames,
)
from recipes.draw.render import class_palette
from recipes.tasks.base import FrameRef, PredictOptions

GLOB_CHARACTERS = set("*?[")
INPUT_EXTENSIONS = (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS)
EXIT_INCOMPLETE_VIDEO = 3
"""Exit code when predictions were written but a video stopped before its end (or could not be opened)."""


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Image and video files from files (taken as given), folders (every image or video file below, sorted) and
    glob patterns; the same file once. A path that is none of these stops with its name."""
    found: list[Path] = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        elif GLOB_CHARACTERS & set(spec):
            found += sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            raise RecipeError(f"Input {spec} does not exist: pass image or video files, folders or glob patterns.")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise RecipeError(f"No image or video files found in {', '.join(inputs)} (extensions: "
                          f"{', '.join(INPUT_EXTENSIONS)}).")
    return unique


class ImageFiles(torch.utils.data.Dataset):
    """Decodes one file per item into an upright RGB ``uint8`` tensor, or the reason it cannot."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, decode_to_tensor({"path": str(self.paths[index]), "bytes": None}), None
        except (BadImageError, OSError) as err:
            return index, None, str(err)


@dataclass(frozen=True)
class FrameKey:
    """Which frame of which input video an item of :class:`VideoFrames` is, and what decoding it took."""

    video: int
    frame: int
    time_s: float
    decode_s: float = 0.0
    decoded: int = 0


class VideoFrames(torch.utils.data.IterableDataset):
    """Every ``stride``-th frame of each video in turn as ``(FrameKey, (3, H, W) uint8 tensor, None)``; a video
    that stops early ends with ``(FrameKey of its last frame read, None, reason)``. Decoding is sequential, so one
    DataLoader worker reads all the videos (overlapping decoding and preprocessing with the model)."""

    def __init__(self, videos: list[tuple[int, VideoInfo]], stride: int) -> None:
        self.videos, self.stride = videos, stride

    def __iter__(self) -> Iterator[tuple[FrameKey, torch.Tensor | None, str | None]]:
        for position, info in self.videos:
            last = FrameKey(position, -1, 0.0)
            try:
                for frame in read_frames(info, self.stride):
                    last = FrameKey(position, frame.index, frame.time_s, frame.decode_s, frame.decoded)
                    yield last, frame.image, None
            except BadVideoError as err:
                yield FrameKey(position, last.frame, last.time_s), None, str(err)


@dataclass
class Batch:
    """The readable images of one loader batch as model inputs, plus the files that could not be read."""

    indices: list[Any]
    """Input positions (images) or :class:`FrameKey` (video frames)."""
    sizes: list[tuple[int, int]]
    inputs: dict[str, torch.Tensor]
    failed: list[tuple[Any, str]]
    images: list[torch.Tensor] | None = None


def collate_for_prediction(items: list[tuple[Any, torch.Tensor | None, str | None]], *, processor: Any,
                           keep_images: bool) -> Batch:
    """Run the model's image processor on the readable images (all of its steps, as ``pipeline()`` does),
    in the loader's worker."""
    good = [(i, image) for i, image, _ in items if image is not None]
    failed = [(i, reason or "unreadable") for i, image, reason in items if image is None]
    inputs: dict[str, torch.Tensor] = {}
    if good:
        encoded = processor(images=[image for _, image in good], return_tensors="pt")
        inputs = {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}
    return Batch(indices=[i for i, _ in good], sizes=[tuple(image.shape[-2:]) for _, image in good], inputs=inputs,
                 failed=failed, images=[image for _, image in good] if keep_images else None)


def float32_outputs(outputs: Any) -> Any:
    """Half-precision outputs (``--dtype bf16/fp16``) in float32 before post-processing (box coordinates in
    bfloat16 would be off by pixels)."""
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
            outputs[key] = value.float()
    return outputs


def hub_palette(reference: str, num_labels: int, local_dir: Path | None) -> np.ndarray:
    """The model's ``palette.json`` (local folder, or downloaded from the Hub when it has one)."""
    if local_dir is None:
        try:
            from huggingface_hub import hf_hub_download

            local_dir = Path(hf_hub_download(reference, "palette.json")).parent
        except Exception:  # no palette in the repo, or offline: fixed colours
            local_dir = None
    return class_palette(local_dir, num_labels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision-recipes predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Output folder of `vision-recipes train`, or a Hub model id")
    parser.add_argument("inputs", nargs="+",
                        help=f"Image or video ({', '.join(VIDEO_EXTENSIONS)}) files, folders (searched recursively) "
                             "or glob patterns")
    parser.add_argument("--output", required=True,
                        help="JSONL/JSON file (classification, detection) or folder (segmentation masks)")
    parser.add_argument("--format", default=None,
                        help="classification: jsonl; detection: jsonl (default) or coco; segmentation: index "
                             "(default) or color")
    parser.add_argument("--top_k", type=int, default=5, help="Classification: labels listed per image")
    parser.add_argument("--threshold", type=float, default=0.5, help="Detection: lowest score kept")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader processes decoding and preprocessing images (0: in the main process)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default=None, help="float32 (default); bf16 or fp16 on a GPU")
    parser.add_argument("--visualize", default=None, metavar="DIR",
                        help="Also save each image with its prediction drawn (videos: the annotated video)")
    parser.add_argument("--vid_stride", type=int, default=1, metavar="N",
                        help="Videos: predict every N-th frame (frames 0, N, 2N...; default 1: all)")
    parser.add_argument("--revision", default="main", help="Hub model revision")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace an existing --output (once the new predictions are all written)")
    parser.add_argument("--max_image_pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="Images whose header claims more pixels are skipped and listed (default: Pillow's "
                             "limit, ~179 million)")
    return parser


@dataclass
class Summary:
    """What one predict run did."""

    images: int
    skipped: list[tuple[str, str]]
    seconds: float
    """Wall time of the image loop (decoding, preprocessing, model, post-processing, writing), model loading
    excluded."""
    written: list[Path]
    videos: int = 0
    frames: int = 0
    """Video frames predicted."""
    stopped: list[tuple[str, str]] = field(default_factory=list)
    """Videos that could not be read to their end: (file, why, with the last frame read)."""
    video_seconds: float = 0.0
    """Wall time of the video loop (end to end, as for images)."""
    decoded: int = 0
    decode_seconds: float = 0.0
    """Frames decoded (with the ones ``--vid_stride`` skips) and the time spent decoding them."""
    model_seconds: float = 0.0
    """Time in the model and post-processing for the video frames."""

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    @property
    def video_fps(self) -> dict[str, float]:
        """Frames per second: ``decode`` (frames decoded per second of decoding), ``model`` (frames predicted per
        second in the model and post-processing) and ``end_to_end`` (frames predicted per second of the loop)."""
        return {"decode": self.decoded / max(self.decode_seconds, 1e-9),
                "model": self.frames / max(self.model_seconds, 1e-9),
                "end_to_end": self.frames / max(self.video_seconds, 1e-9)}


def predict(args: argparse.Namespace) -> Summary:
    """Load, infer batch by batch, write; report skipped files and throughput."""
    from recipes.modes.loading import load_fine_tuned

    if args.batch_size < 1:
        raise RecipeError(f"--batch_size must be at least 1, got {args.batch_size}.")
    if args.vid_stride < 1:
        raise RecipeError(f"--vid_stride must be at least 1, got {args.vid_stride}.")
    if args.max_image_pixels < 1:
        raise RecipeError(f"--max_image_pixels must be at least 1, got {args.max_image_pixels}.")
    set_max_image_pixels(args.max_image_pixels)  # before the loader's workers start
    paths = expand_inputs(args.inputs)
    output = Path(args.output).expanduser()
    check_output(output, overwrite=args.overwrite)
    visualize = Path(args.visualize).expanduser() if args.visualize else None
    if visualize is not None:
        check_output(visualize, overwrite=args.overwrite)
    loaded = load_fine_tuned(args.model, device=args.device, dtype=args.dtype, revision=args.revision)
    config = loaded.config
    palette = hub_palette(args.model, config.num_labels, loaded.local_dir)
    with staged_output(output) as staged, contextlib.ExitStack() as drawings:
        drawn = drawings.enter_context(staged_output(visualize)) if visualize is not None else None
        options = PredictOptions(output=staged, format=args.format, top_k=args.top_k, threshold=args.threshold,
                                 palette=palette)
        summary = _predict(args, loaded, paths, options, palette, drawn)
        if summary.images + summary.frames == 0:  # nothing readable: the previous outputs stay as they were
            for path in (staged, drawn):
                if path is not None and path.is_dir():
                    shutil.rmtree(path)
            staged.unlink(missing_ok=True)
            summary.written = []
    summary.written = [output / path.relative_to(staged) if path != staged else output for path in summary.written]
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for _, reason in summary.stopped:
        print(f"video stopped: {reason}", file=sys.stderr)
    if summary.videos:
        fps = summary.video_fps
        stride = f" (--vid_stride {args.vid_stride})" if args.vid_stride > 1 else ""
        print(f"{summary.frames} frames of {summary.videos} video(s){stride}, {len(summary.stopped)} stopped early: "
              f"decode {fps['decode']:.1f} fps, model {fps['model']:.1f} fps, end-to-end {fps['end_to_end']:.1f} fps",
              flush=True)
    images = (f"{summary.images} images, {len(summary.skipped)} skipped, {summary.images_per_s:.1f} images/s "
              if summary.images or summary.skipped or not summary.videos else "")
    print(f"{images}({loaded.task.name}, batch {args.batch_size}, {loaded.device}). Wrote "
          f"{', '.join(map(str, summary.written)) or 'nothing'}"
          + (f"; drawings in {args.visualize}" if args.visualize else ""), flush=True)
    return summary


PREDICT_FOLDER_FILES = re.compile(r"^(predictions\.jsonl|.+\.(png|mp4|mov|mkv|avi|webm))$")
"""What ``predict`` writes in a folder (segmentation masks, ``--visualize`` drawings and videos): an existing folder
is replaced only when it holds nothing else."""


def check_output(output: Path, overwrite: bool) -> None:
    """An existing ``--output`` is replaced only with ``--overwrite``; a folder only when it holds nothing but what
    ``predict`` writes (``predictions.jsonl`` and PNG masks)."""
    if not output.exists() and not output.is_symlink():
        return
    if not overwrite:
        raise RecipeError(f"--output {output} exists. Fix: --overwrite to replace it (it is replaced only once the "
                          "new predictions are all written), or another --output.")
    if output.is_dir():
        others = sorted(path.name for path in output.iterdir()
                        if not (path.is_file() and PREDICT_FOLDER_FILES.match(path.name)))
        if others:
            raise RecipeError(f"--output {output} holds files predict did not write ({', '.join(others[:5])}): it is "
                              "not replaced, even with --overwrite. Fix: another --output.")


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """Where the sink writes (``.NAME.partial-PID/NAME`` beside ``output``), moved onto ``output`` only when the run
    completes: an interrupted or failed run leaves the previous output as it was (and no partial file under its
    name); a folder output is replaced whole, so no mask of an earlier run stays."""
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    staged = staging / output.name
    try:
        yield staged
        if staged.is_dir() and output.is_dir():
            aside = staging / ".replaced"
            os.rename(output, aside)
            os.rename(staged, output)
        elif staged.is_dir() != output.is_dir() and output.exists():
            kinds = ("folder", "file") if output.is_dir() else ("file", "folder")
            raise RecipeError(f"--output {output} is a {kinds[0]}; this task writes a {kinds[1]}. Fix: another "
                              "--output.")
        elif staged.exists():
            os.replace(staged, output)  # atomic for a file
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _predict(args: argparse.Namespace, loaded: Any, paths: list[Path], options: PredictOptions,
             palette: np.ndarray, visualize: Path | None) -> Summary:
    """Infer batch by batch into the sink of ``options`` (and drawings into ``visualize``): the images, then the
    frames of the videos."""
    sink = loaded.task.prediction_sink(loaded.model, loaded.image_processor, options)
    if visualize is not None:
        visualize.mkdir(parents=True, exist_ok=True)
    id2label = {int(k): v for k, v in loaded.config.id2label.items()}
    collate = partial(collate_for_prediction, processor=loaded.image_processor, keep_images=visualize is not None)

    def infer(batch: Batch) -> list[dict[str, Any]]:
        inputs = {key: value.to(loaded.device) for key, value in batch.inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
        return sink.decode(float32_outputs(loaded.model(**inputs)), batch.sizes, inputs)

    def draw(batch: Batch, k: int, prediction: dict[str, Any]) -> Image.Image:
        image = Image.fromarray(batch.images[k].permute(1, 2, 0).numpy())
        return loaded.task.render(image, prediction, palette=palette, id2label=id2label)

    summary = Summary(images=0, skipped=[], seconds=0.0, written=[])
    images = [position for position, path in enumerate(paths) if not is_video(path)]
    videos = [position for position, path in enumerate(paths) if is_video(path)]
    with torch.inference_mode():
        if images:
            _predict_images(args, [paths[i] for i in images], images, collate, infer, draw, sink, visualize, summary)
        if videos:
            _predict_videos(args, paths, videos, collate, infer, draw, sink, visualize, summary, loaded.device)
    summary.written = sink.close()
    return summary


def _predict_images(args: argparse.Namespace, files: list[Path], positions: list[int], collate: Any, infer: Any,
                    draw: Any, sink: Any, visualize: Path | None, summary: Summary) -> None:
    """The image files, a DataLoader of :class:`ImageFiles` (``positions``: their places among the inputs, which
    name the drawings)."""
    batches = -(-len(files) // args.batch_size)
    loader = torch.utils.data.DataLoader(ImageFiles(files), batch_size=args.batch_size, shuffle=False,
                                         num_workers=max(0, min(args.num_workers, batches - 1)), collate_fn=collate)
    started = time.perf_counter()
    with tqdm(total=len(files), desc="Predicting", unit="img") as progress:
        for batch in loader:
            summary.skipped += [(str(files[i]), reason) for i, reason in batch.failed]
            if batch.indices:
                predictions = infer(batch)
                for k, (index, size, prediction) in enumerate(zip(batch.indices, batch.sizes, predictions)):
                    sink.add(str(files[index]), size, prediction)
                    if visualize is not None:
                        draw(batch, k, prediction).save(visualize / f"{positions[index]:06d}_{files[index].stem}.png")
                summary.images += len(batch.indices)
            progress.update(len(batch.indices) + len(batch.failed))
    summary.seconds = time.perf_counter() - started


def _predict_videos(args: argparse.Namespace, paths: list[Path], videos: list[int], collate: Any, infer: Any,
                    draw: Any, sink: Any, visualize: Path | None, summary: Summary, device: torch.device) -> None:
    """The frames of the video files (``videos``: their places among the inputs), decoded by one DataLoader
    worker, batched like images; each video's annotated copy written as its frames come."""
    infos: dict[int, VideoInfo] = {}
    for position in videos:
        try:
            infos[position] = probe_video(paths[position])
        except BadVideoError as err:
            summary.stopped.append((str(paths[position]), str(err)))
    summary.videos = len(videos)
    if not infos:
        return
    stride = args.vid_stride
    loader = torch.utils.data.DataLoader(VideoFrames(list(infos.items()), stride), batch_size=args.batch_size,
                                         num_workers=min(1, args.num_workers), collate_fn=collate)
    expected = [info.frames for info in infos.values()]
    total = sum(-(-count // stride) for count in expected) if all(expected) else None
    writer: VideoWriter | None = None
    started = time.perf_counter()
    with tqdm(total=total, desc="Predicting video frames", unit="frame") as progress:
        for batch in loader:
            summary.stopped += [(str(paths[key.video]), reason) for key, reason in batch.failed]
            if not batch.indices:
                continue
            model_started = time.perf_counter()
            predictions = infer(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            summary.model_seconds += time.perf_counter() - model_started
            for k, (key, size, prediction) in enumerate(zip(batch.indices, batch.sizes, predictions)):
                path = paths[key.video]
                sink.add(str(path), size, prediction, FrameRef(key.frame, key.time_s))
                summary.decoded += key.decoded
                summary.decode_seconds += key.decode_s
                if visualize is not None:
                    if writer is None or writer.info.path != path:
                        if writer is not None:
                            writer.close()
                        writer = VideoWriter(visualize / f"{key.video:06d}_{path.name}", infos[key.video], stride)
                    writer.write(draw(batch, k, prediction))
            summary.frames += len(batch.indices)
            progress.update(len(batch.indices))
    if writer is not None:
        writer.close()
    summary.video_seconds = time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = predict(args)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary.images + summary.frames == 0:
        unread = len(summary.skipped) + len(summary.stopped)
        kind = "file(s)" if summary.videos else "image(s)"
        print(f"error: none of the {unread} input {kind} could be read (listed above).", file=sys.stderr)
        return 2
    if summary.stopped:
        print(f"error: {len(summary.stopped)} video(s) stopped before their end (listed above); the frames before "
              f"the break were predicted and written (exit code {EXIT_INCOMPLETE_VIDEO}).", file=sys.stderr)
        return EXIT_INCOMPLETE_VIDEO
    return 0
