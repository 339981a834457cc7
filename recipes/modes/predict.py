"""``vision-recipes predict MODEL INPUTS... --output PATH``: run a fine-tuned model (output folder or Hub id) on
image files, folders (recursive) or globs, in batches, with the preprocessing of ``pipeline()``.

Outputs (one format per task): classification JSON lines (``label``, ``score``, ``top_k``); detection JSON lines
of ``xyxy`` boxes or a COCO file (``--format coco``); segmentation a folder of class-id PNGs (``--format color``:
coloured with the model's palette) plus ``predictions.jsonl``. ``--visualize DIR`` also draws each prediction.
Unreadable files are listed and skipped; the exit code is 2 only when no image could be read."""

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
from dataclasses import dataclass
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
from recipes.render import class_palette
from recipes.tasks.base import PredictOptions

GLOB_CHARACTERS = set("*?[")


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Image files from files (taken as given), folders (every image file below, sorted) and glob patterns; the
    same file once. A path that is none of these stops with its name."""
    found: list[Path] = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        elif GLOB_CHARACTERS & set(spec):
            found += sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            raise RecipeError(f"Input {spec} does not exist: pass image files, folders or glob patterns.")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise RecipeError(f"No image files found in {', '.join(inputs)} (extensions: {', '.join(IMAGE_EXTENSIONS)}).")
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


@dataclass
class Batch:
    """The readable images of one loader batch as model inputs, plus the files that could not be read."""

    indices: list[int]
    sizes: list[tuple[int, int]]
    inputs: dict[str, torch.Tensor]
    failed: list[tuple[int, str]]
    images: list[torch.Tensor] | None = None


def collate_for_prediction(items: list[tuple[int, torch.Tensor | None, str | None]], *, processor: Any,
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
    parser.add_argument("inputs", nargs="+", help="Image files, folders (searched recursively) or glob patterns")
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
    parser.add_argument("--visualize", default=None, metavar="DIR", help="Also save each image with its prediction")
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
    """Wall time of the loop (decoding, preprocessing, model, post-processing, writing), model loading excluded."""
    written: list[Path]

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def predict(args: argparse.Namespace) -> Summary:
    """Load, infer batch by batch, write; report skipped files and throughput."""
    from recipes.modes.loading import load_fine_tuned

    if args.batch_size < 1:
        raise RecipeError(f"--batch_size must be at least 1, got {args.batch_size}.")
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
        if summary.images == 0:  # nothing readable: the previous outputs stay as they were
            for path in (staged, drawn):
                if path is not None and path.is_dir():
                    shutil.rmtree(path)
            staged.unlink(missing_ok=True)
            summary.written = []
    summary.written = [output / path.relative_to(staged) if path != staged else output for path in summary.written]
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{summary.images} images, {len(summary.skipped)} skipped, {summary.images_per_s:.1f} images/s "
          f"({loaded.task.name}, batch {args.batch_size}, {loaded.device}). Wrote "
          f"{', '.join(map(str, summary.written)) or 'nothing'}"
          + (f"; drawings in {args.visualize}" if args.visualize else ""), flush=True)
    return summary


PREDICT_FOLDER_FILES = re.compile(r"^(predictions\.jsonl|.+\.png)$")
"""What ``predict`` writes in a folder (segmentation masks, ``--visualize`` drawings): an existing folder is replaced
only when it holds nothing else."""


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
    """Infer batch by batch into the sink of ``options`` (and drawings into ``visualize``)."""
    config = loaded.config
    sink = loaded.task.prediction_sink(loaded.model, loaded.image_processor, options)
    if visualize is not None:
        visualize.mkdir(parents=True, exist_ok=True)
    id2label = {int(k): v for k, v in config.id2label.items()}

    batches = -(-len(paths) // args.batch_size)
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths), batch_size=args.batch_size, shuffle=False,
        num_workers=max(0, min(args.num_workers, batches - 1)),
        collate_fn=partial(collate_for_prediction, processor=loaded.image_processor,
                           keep_images=visualize is not None),
    )
    skipped: list[tuple[str, str]] = []
    done, started = 0, time.perf_counter()
    with tqdm(total=len(paths), desc="Predicting", unit="img") as progress, torch.inference_mode():
        for batch in loader:
            skipped += [(str(paths[i]), reason) for i, reason in batch.failed]
            if batch.indices:
                inputs = {key: value.to(loaded.device) for key, value in batch.inputs.items()}
                if "pixel_values" in inputs:
                    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
                predictions = sink.decode(float32_outputs(loaded.model(**inputs)), batch.sizes, inputs)
                for k, (index, size, prediction) in enumerate(zip(batch.indices, batch.sizes, predictions)):
                    sink.add(str(paths[index]), size, prediction)
                    if visualize is not None:
                        image = Image.fromarray(batch.images[k].permute(1, 2, 0).numpy())
                        drawn = loaded.task.render(image, prediction, palette=palette, id2label=id2label)
                        drawn.save(visualize / f"{index:06d}_{paths[index].stem}.png")
                done += len(batch.indices)
            progress.update(len(batch.indices) + len(batch.failed))
    elapsed = time.perf_counter() - started
    return Summary(images=done, skipped=skipped, seconds=elapsed, written=sink.close())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = predict(args)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary.images == 0:
        print(f"error: none of the {len(summary.skipped)} input image(s) could be read (listed above).",
              file=sys.stderr)
        return 2
    return 0
