"""Throughput of ``vision-recipes predict`` against ``transformers.pipeline()`` on the same real images, per task.

    python -m benchmarks.predict_throughput                      # all tasks, CPU, batch 8
    python -m benchmarks.predict_throughput --quick --tasks classification --json figures.json

Models are the real checkpoints of ``../shared/pretrained`` saved with a head for the task (MobileNetV1-0.25 with
its ImageNet head; Conditional DETR-MobileNetV2 with one class, processor resized to 512-800; DeepLabV3-MobileNetV2
with 32 CamVid classes at 256²), images the real shared datasets. Timed: the prediction loop only (decoding,
preprocessing, model, post-processing, writing; model loading excluded), for ``predict`` (batched, DataLoader
workers) and for ``pipeline()`` one image at a time (its default) and with ``batch_size``. Ratios are
``predict`` / baseline, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PIPELINE_TASKS = {"classification": "image-classification", "detection": "object-detection",
                  "segmentation": "image-segmentation"}


def save_model(task: str, folder: Path) -> Path:
    """The task's real checkpoint with a head for ``task``, saved with its image processor."""
    from transformers import AutoImageProcessor

    from recipes.tasks import get_task

    names = {"classification": "mobilenet_v1_0.25_224-keras-imagenet",
             "detection": "conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone",
             "segmentation": "deeplabv3_mobilenet_v2_0.35-keras-imagenet-backbone"}
    checkpoint = SHARED / "pretrained" / names[task]
    model_class = get_task(task).auto_model_class
    kwargs: dict = {}
    if task == "detection":
        kwargs = {"id2label": {0: "licence"}, "label2id": {"licence": 0}, "ignore_mismatched_sizes": True}
    if task == "segmentation":
        labels = {i: f"class{i}" for i in range(32)}
        kwargs = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}, "ignore_mismatched_sizes": True}
    model_class.from_pretrained(checkpoint, **kwargs).save_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    if task == "segmentation":
        processor.size, processor.crop_size = {"shortest_edge": 256}, {"height": 256, "width": 256}
    processor.save_pretrained(folder)
    return folder


def images_for(task: str, count: int) -> list[Path]:
    if task == "classification":
        found = sorted((SHARED / "datasets" / "food101-mini" / "test").rglob("*.jpg"))
    elif task == "detection":
        found = sorted((SHARED / "datasets" / "car-plates" / "images").glob("*.png"))
    else:
        found = sorted(p for p in (SHARED / "datasets" / "camseq").glob("*.png") if not p.stem.endswith("_L"))
    return found[:count]


def time_pipeline(task: str, model: Path, images: list[Path], batch_size: int, threshold: float) -> float | None:
    """Images per second of ``pipeline()`` over ``images`` (after loading); ``None`` when it cannot batch them
    (detection processors give each image its own size, and ``pipeline()`` does not pad them)."""
    from transformers import pipeline

    pipe = pipeline(PIPELINE_TASKS[task], model=str(model), device="cpu")
    kwargs = {"threshold": threshold} if task == "detection" else {}
    started = time.perf_counter()
    try:
        results = pipe([str(p) for p in images], batch_size=batch_size, **kwargs)
    except RuntimeError as err:
        print(f"{task}: pipeline(batch_size={batch_size}) fails: {str(err).splitlines()[0]}", flush=True)
        return None
    assert len(results) == len(images)
    return len(images) / (time.perf_counter() - started)


def time_predict(model: Path, images: list[Path], output: Path, batch_size: int, workers: int,
                 threshold: float) -> float:
    from recipes.modes.predict import build_parser, predict

    args = build_parser().parse_args([str(model), *map(str, images), "--output", str(output), "--device", "cpu",
                                      "--batch_size", str(batch_size), "--num_workers", str(workers),
                                      "--threshold", str(threshold)])
    summary = predict(args)
    assert summary.images == len(images)
    return summary.images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(PIPELINE_TASKS), choices=list(PIPELINE_TASKS))
    parser.add_argument("--quick", action="store_true", help="Fewer images (a smoke run)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--json", default=None, help="Write the figures here")
    args = parser.parse_args()
    counts = {"classification": 16, "detection": 8, "segmentation": 8} if args.quick else \
        {"classification": 58, "detection": 32, "segmentation": 24}
    figures = {"threads": torch.get_num_threads(), "batch_size": args.batch_size, "num_workers": args.num_workers,
               "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            model = save_model(task, Path(tmp) / task)
            images = images_for(task, counts[task])
            output = Path(tmp) / (f"{task}-masks" if task == "segmentation" else f"{task}.jsonl")
            ours = time_predict(model, images, output, args.batch_size, args.num_workers, threshold=0.5)
            single = time_pipeline(task, model, images, 1, threshold=0.5)
            batched = time_pipeline(task, model, images, args.batch_size, threshold=0.5)
            figures["tasks"][task] = {"images": len(images), "images_per_s": {
                "predict": round(ours, 2), "pipeline_batch_1": round(single, 2),
                f"pipeline_batch_{args.batch_size}": None if batched is None else round(batched, 2)}}
            batched_text = "fails" if batched is None else f"{batched:.2f} img/s"
            ratio_text = "-" if batched is None else f"{ours / batched:.2f}x"
            print(f"{task:15s} {len(images):3d} images  predict {ours:.2f} img/s   pipeline(batch 1) {single:.2f} "
                  f"img/s   pipeline(batch {args.batch_size}) {batched_text}   ratio predict/pipeline: "
                  f"{ours / single:.2f}x, {ratio_text}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
