"""``vision-recipes export MODEL --output DIR``: ONNX export of a fine-tuned model (an output folder or a Hub id),
then a parity check against PyTorch on real images and an eager-vs-ONNX-Runtime throughput table.

DIR receives ``model.onnx`` (dynamic batch, and height/width where the model allows), ``config.json``,
``preprocessor_config.json`` and ``export_report.json`` (parity figures and the throughput table). Exit 0 when
parity holds, 1 when ONNX Runtime disagrees with PyTorch beyond the tolerances, 2 on bad input or a failed export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from recipes.artifacts.onnx_export import (
    DEFAULT_OPSET,
    EXPORTERS,
    ExportSpec,
    export_onnx,
    format_table,
    model_inputs,
    onnx_session,
    require_onnx_runtime,
    run_eager,
    run_onnx,
    throughput_row,
    time_call,
)
from recipes.config import RecipeError
from recipes.decode.images import IMAGE_EXTENSIONS, BadImageError, load_rgb
from recipes.modes.loading import FineTuned, load_fine_tuned, read_manifest
from recipes.tasks.parity import ParityAccumulator, Tolerances
from recipes.transforms import timm_data_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision-recipes export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Output folder of `vision-recipes train`, or a Hub model id")
    parser.add_argument("--output", required=True, help="Folder for model.onnx, the configs and export_report.json")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="Export format (ONNX only)")
    parser.add_argument("--images", nargs="+", default=None,
                        help="Images or folders for the parity check (default: the model's own validation images "
                             "from run_manifest.json, else synthetic sample images)")
    parser.add_argument("--num-images", type=int, default=8, help="Images in the parity check")
    parser.add_argument("--exporter", default="torchscript", choices=EXPORTERS,
                        help="torch.onnx exporter: torchscript (default: exports these models ~10x faster) or "
                             "dynamo (torch.export + onnxscript)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--static-size", action="store_true", help="Fix height/width to the example's (batch stays "
                        "dynamic); for models whose graph cannot take other sizes")
    parser.add_argument("--atol", type=float, default=Tolerances.atol, help="Max |PyTorch - ONNX| of logits/boxes")
    parser.add_argument("--min-agreement", type=float, default=Tolerances.min_agreement,
                        help="Min share of agreeing predictions (the task's rule: top-1 labels, matched "
                             "boxes, mask pixels...)")
    parser.add_argument("--threshold", type=float, default=Tolerances.threshold,
                        help="Score threshold of a post-processing that has one (boxes)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="Batch sizes of the benchmark")
    parser.add_argument("--repeats", type=int, default=20, help="Timed runs per benchmark cell (median reported)")
    parser.add_argument("--quick", action="store_true", help="Smoke-test speed: 2 timed runs, 1 warm-up")
    parser.add_argument("--no-benchmark", action="store_true", help="Skip the throughput table")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of PyTorch and ONNX Runtime alike (default: PyTorch's, one per core)")
    parser.add_argument("--no-cuda", action="store_true", help="Benchmark on CPU only even when a GPU is present")
    parser.add_argument("--revision", default="main", help="Hub revision of MODEL")
    parser.add_argument("--trust-remote-code", action="store_true")
    return parser


# --------------------------------------------------------------------------- parity images


def _expand(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            raise RecipeError(f"--images {raw}: no such file or folder.")
    if not files:
        raise RecipeError(f"--images {' '.join(paths)}: no image files ({', '.join(IMAGE_EXTENSIONS)}) there.")
    return files


def validation_images(fine: FineTuned, count: int) -> list[Image.Image]:
    """The first ``count`` images of the model's own validation split, rebuilt from its ``run_manifest.json``
    (the same data arguments and seed, so the same hold-out); empty when that is not possible."""
    recipe = read_manifest(fine.local_dir).get("recipe")
    if not recipe:
        return []
    data_class = fine.task.data_arguments_class
    known = {field.name for field in dataclasses.fields(data_class)}
    values = {key: value for key, value in recipe.items() if key in known}
    try:
        # the training source is read for its hold-out only: the validation rows stay the run's
        data_args = data_class(**{**values, "max_eval_samples": count, "check_images": False,
                                  "preprocessing_num_workers": None})
        data = fine.task.load_data(data_args, seed=int(recipe.get("seed", 42)), cache_dir=recipe.get("cache_dir"),
                                   with_train=False)
        column = data_args.image_column_name
        records = data.validation.select(range(min(count, len(data.validation))))[column]
        return [load_rgb(record) for record in records]
    except Exception as err:  # data moved, Hub offline...: fall back to other images, say why
        print(f"  (validation data of the run not available: {type(err).__name__}: {str(err)[:200]})")
        return []


def parity_images(fine: FineTuned, images: Sequence[str] | None, count: int) -> tuple[list[Image.Image], str]:
    """The images of the parity check and where they came from."""
    if images:
        files = _expand(images)[:count]
        return [load_rgb(path) for path in files], f"{len(files)} given image(s)"
    found = validation_images(fine, count)
    if found:
        return found, f"{len(found)} validation image(s) of the run"
    return fine.task.sample_images(count), f"{count} synthetic sample image(s) (pass --images for real ones)"


# --------------------------------------------------------------------------- steps


def processed(fine: FineTuned, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
    """The image processor's model inputs for ``images`` (CPU, float32)."""
    return model_inputs(fine.model, fine.image_processor(images=list(images), return_tensors="pt"))


def check_parity(fine: FineTuned, session: Any, images: list[Image.Image], names: tuple[str, ...],
                 tolerances: Tolerances, batch_size: int = 4) -> ParityAccumulator:
    parity = ParityAccumulator(rule=fine.task.parity_rule(tolerances), names=names)
    for start in tqdm(range(0, len(images), batch_size), desc="parity", unit="batch"):
        batch = images[start:start + batch_size]
        inputs = processed(fine, batch)
        sizes = [image.size[::-1] for image in batch]
        parity.add(run_eager(fine.model, inputs, names), run_onnx(session, inputs), fine.image_processor, sizes)
    return parity


def _eager_call(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        model(**inputs)


def benchmark(fine: FineTuned, model_path: Path, images: list[Image.Image], names: tuple[str, ...],
              batch_sizes: Sequence[int], repeats: int, warmup: int, cuda: bool) -> list[dict[str, Any]]:
    """PyTorch eager vs ONNX Runtime, per device and batch size (inputs prepared once, outside the timing)."""
    ort = require_onnx_runtime()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    rows: list[dict[str, Any]] = []
    for device in devices:
        provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        session = onnx_session(model_path, provider) if provider in ort.get_available_providers() else None
        if session is None:
            print(f"  onnxruntime has no {provider} here (pip install onnxruntime-gpu): ONNX Runtime on {device} "
                  "skipped")
        model = fine.model.to(device)
        sync = torch.cuda.synchronize if device == "cuda" else None
        for batch in batch_sizes:
            inputs = processed(fine, [images[i % len(images)] for i in range(batch)])
            on_device = {key: value.to(device) for key, value in inputs.items()}

            ms = time_call(partial(_eager_call, model, on_device), repeats, warmup, sync)
            rows.append(throughput_row("pytorch", device, batch, ms))
            if session is not None:
                feed = {key: value.numpy() for key, value in inputs.items()}
                rows.append(throughput_row("onnxruntime", device, batch,
                                           time_call(partial(session.run, None, feed), repeats, warmup)))
        fine.model.to("cpu")
    return rows


def run_export(args: argparse.Namespace) -> int:
    ort = require_onnx_runtime()
    if args.threads:
        torch.set_num_threads(args.threads)
    output = Path(args.output).expanduser()
    print(f"[1/4] Loading {args.model}")
    fine = load_fine_tuned(args.model, device="cpu", revision=args.revision, trust_remote_code=args.trust_remote_code)
    architecture = type(fine.model).__name__
    images, source = parity_images(fine, args.images, args.num_images)
    names = fine.task.onnx_outputs
    output.mkdir(parents=True, exist_ok=True)
    model_path = output / "model.onnx"
    spec = ExportSpec(exporter=args.exporter, opset=args.opset, dynamic_size=not args.static_size)

    print(f"[2/4] Exporting {architecture} ({fine.task.name}) to {model_path} with the {spec.exporter} exporter "
          f"(opset {spec.opset}, dynamic batch{'' if args.static_size else ', height and width'})")
    start = time.perf_counter()
    export_onnx(fine.model, processed(fine, images[:2]), model_path, names, spec)
    export_seconds = time.perf_counter() - start
    fine.model.config.save_pretrained(output)
    if timm_data_config(fine.image_processor) is None:  # a timm checkpoint's processor is config.json's pretrained_cfg
        fine.image_processor.save_pretrained(output)
    processor_file = "preprocessor_config.json" if timm_data_config(fine.image_processor) is None else (
        "the image processor in config.json (timm's pretrained_cfg)")
    session = onnx_session(model_path)
    print(f"  exported in {export_seconds:.1f} s ({model_path.stat().st_size / 2**20:.1f} MiB), "
          f"inputs {[(node.name, node.shape) for node in session.get_inputs()]}")

    print(f"[3/4] Parity PyTorch vs ONNX Runtime on {source}")
    tolerances = Tolerances(atol=args.atol, min_agreement=args.min_agreement, threshold=args.threshold)
    parity = check_parity(fine, session, images, names, tolerances)
    parity_report = parity.report()
    print("  " + json.dumps({key: parity_report[key] for key in parity_report if key != "tolerances"}))

    rows: list[dict[str, Any]] = []
    if not args.no_benchmark:
        repeats, warmup = (2, 1) if args.quick else (args.repeats, max(2, args.repeats // 5))
        cuda = torch.cuda.is_available() and not args.no_cuda
        print(f"[4/4] Throughput: PyTorch eager vs ONNX Runtime, batch {args.batch_sizes}, "
              f"{'CPU and CUDA' if cuda else 'CPU'}, median of {repeats} runs, {torch.get_num_threads()} threads")
        rows = benchmark(fine, model_path, images, names, args.batch_sizes, repeats, warmup, cuda)
        print(format_table(rows))

    report = {
        "model": args.model, "architecture": architecture, "task": fine.task.name, "onnx": str(model_path),
        "exporter": spec.exporter, "opset": spec.opset, "dynamic_axes": ["batch"] + ([] if args.static_size
                                                                                    else ["height", "width"]),
        "export_seconds": round(export_seconds, 2), "images": source, "parity": parity_report, "throughput": rows,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
    }
    (output / "export_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"Wrote {model_path}, config.json, {processor_file} and export_report.json to {output}")
    failures = parity.failures()
    if failures:
        print(f"error: ONNX Runtime disagrees with PyTorch for {architecture}: {'; '.join(failures)}. "
              "The ONNX file is kept for inspection; try --exporter dynamo or another --opset, or loosen --atol / "
              "--min-agreement if the differences are acceptable.", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Export, check parity, benchmark; clear errors (exit 2), no traceback."""
    args = build_parser().parse_args(argv)
    try:
        return run_export(args)
    except (RecipeError, BadImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
