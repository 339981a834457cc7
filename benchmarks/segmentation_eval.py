"""Benchmark segmentation evaluation: memory for N vs 4N images, and metric time, streaming vs baseline.

Two ways to evaluate a semantic-segmentation model through ``Trainer.evaluate``:

- ``streaming`` (this project): ``batch_eval_metrics=True``; per batch the logits are upsampled to the
  label size and reduced to class ids (``logits_to_class_ids``), gathered, and added to a confusion
  matrix (``SegmentationMetric``). Nothing is kept between batches.
- ``baseline`` (the Hugging Face semantic-segmentation example): the Trainer accumulates every logit and
  label of the validation set; ``compute_metrics`` then upsamples all logits to the label size, takes
  the arg-max and computes mIoU image by image (intersection / union areas, as ``evaluate``'s
  ``mean_iou`` does), at the end.

Each (method, number of images) pair runs in a fresh subprocess with the same tiny SegFormer (random
init, seeded) on synthetic street frames. Memory: the child reads its resident set size (``VmRSS``)
just before ``evaluate``, resets the kernel's peak counter (``echo 5 > /proc/self/clear_refs``) and
reads the peak (``VmHWM``) afterwards, so the figure is the real peak of the evaluation itself:
model, data, PyTorch and Python allocations alike (``tracemalloc`` would miss tensor memory). If the
peak cannot be reset, the lifetime peak (``ru_maxrss``) is reported instead, and said so. Metric time:
for streaming, the time spent in ``preprocess_logits_for_metrics`` + the metric calls; for the baseline,
the time of its ``compute_metrics`` (upsampling + arg-max + mIoU). Both methods must give the same mIoU.

    python -m benchmarks.segmentation_eval                 # N=64 and 4N=256 images at 128x128
    python -m benchmarks.segmentation_eval --images 32 --size 96 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS = ("streaming", "baseline")


# --------------------------------------------------------------------------- memory probes


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- the two methods


def baseline_mean_iou(predictions: Any, labels: Any, num_classes: int) -> dict[str, float]:
    """mIoU computed at the end over all accumulated predictions, image by image (``evaluate``-style)."""
    import numpy as np

    intersection, predicted_area, label_area = (np.zeros(num_classes, dtype=np.int64) for _ in range(3))
    for prediction, label in zip(predictions, labels):
        valid = (label >= 0) & (label < num_classes)
        prediction, label = prediction[valid], label[valid]
        intersection += np.bincount(prediction[prediction == label], minlength=num_classes)
        predicted_area += np.bincount(prediction, minlength=num_classes)
        label_area += np.bincount(label, minlength=num_classes)
    union = predicted_area + label_area - intersection
    present = union > 0
    return {"mean_iou": float((intersection[present] / union[present]).mean()) if present.any() else 0.0}


def _timed(function: Callable, spent: list[float]) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    return wrapper


def run_child(
    method: str, images: int, data_dir: Path, size: int, batch_size: int, model_path: str | None = None
) -> dict[str, Any]:
    """Evaluate ``images`` frames with ``method`` in this process; return the measurements."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSemanticSegmentation,
        SegformerImageProcessor,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    from recipes.config import ModelArguments
    from recipes.tasks.segmentation.data import SegmentationDataArguments
    from recipes.tasks.segmentation.task import SemanticSegmentation
    from recipes.tasks.segmentation.transforms import logits_to_class_ids

    hf_logging.set_verbosity_error()
    set_seed(0)
    task = SemanticSegmentation()
    data_args = SegmentationDataArguments(train_dir=str(data_dir), validation_dir=str(data_dir), max_train_samples=1,
                                          max_eval_samples=images, ignore_labels=["Void"], check_images=False)
    data = task.load_data(data_args, seed=0)
    model_args = ModelArguments(model_type="segformer", config_overrides={
        "hidden_sizes": [16, 32, 64, 96], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 2],
        "decoder_hidden_size": 32})
    if model_path:  # a trained model (e.g. the quickstart's) predicts more than one class
        model = AutoModelForSemanticSegmentation.from_pretrained(model_path).eval()
        if model.config.id2label != data.id2label:
            raise SystemExit(f"{model_path} was trained on other classes than the streets: {model.config.id2label}")
    else:
        model = task.build_model(model_args, data).model.eval()
    processor = SegformerImageProcessor(size={"height": size, "width": size})
    _, eval_transform = task.transforms(processor, data_args, data)
    num_classes = len(data.id2label)
    metric_seconds: list[float] = []
    metric = task.metric(data, processor)
    if method == "streaming":
        timed_metric = _timed(metric, metric_seconds)

        def compute_metrics(eval_pred: Any, compute_result: bool = True) -> dict[str, float]:
            return timed_metric(eval_pred, compute_result=compute_result)

        preprocess = _timed(logits_to_class_ids, metric_seconds)
    else:
        def compute_from_all_logits(eval_pred: Any) -> dict[str, float]:
            logits = torch.as_tensor(eval_pred.predictions)
            labels = np.asarray(eval_pred.label_ids)
            upsampled = torch.nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                                                        align_corners=False)
            return baseline_mean_iou(upsampled.argmax(dim=1).numpy(), labels, num_classes)

        compute_metrics, preprocess = _timed(compute_from_all_logits, metric_seconds), None
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(output_dir=output_dir, per_device_eval_batch_size=batch_size, report_to="none",
                                 dataloader_num_workers=0, batch_eval_metrics=method == "streaming",
                                 remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, eval_dataset=data.validation.with_transform(eval_transform),
                          data_collator=task.collator(processor, data), compute_metrics=compute_metrics,
                          preprocess_logits_for_metrics=preprocess)
        before_kib = _status_kib("VmRSS")
        peak_was_reset = _reset_peak_rss()
        started = time.perf_counter()
        metrics = trainer.evaluate()
        evaluate_seconds = time.perf_counter() - started
    peak_kib = _status_kib("VmHWM") if peak_was_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": method,
        "images": images,
        "mean_iou": metrics["eval_mean_iou"],
        "samples": metrics.get("eval_samples"),
        "rss_before_mib": (before_kib or 0) / 1024,
        "peak_rss_mib": (peak_kib or 0) / 1024,
        "eval_growth_mib": ((peak_kib or 0) - (before_kib or 0)) / 1024,
        "peak_measure": "VmHWM reset before evaluate" if peak_was_reset else "ru_maxrss (lifetime peak)",
        "metric_seconds": sum(metric_seconds),
        "evaluate_seconds": evaluate_seconds,
    }


# --------------------------------------------------------------------------- parent


def _spawn(
    method: str, images: int, data_dir: Path, size: int, batch_size: int, model: str | None
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", method, "--images", str(images), "--size", str(size),
               "--batch-size", str(batch_size), "--data-dir", str(data_dir), *(["--model", model] if model else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{method} with {images} images failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="N: the small run; the large one has 4N images")
    parser.add_argument("--size", type=int, default=128, help="model input (and label) size, square")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", type=Path, help="street frames (default: generated in a temp folder)")
    parser.add_argument("--model", help="a trained street model, e.g. outputs/quickstart/segmentation "
                        "(default: a tiny SegFormer, random init)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.images, args.data_dir, args.size, args.batch_size, args.model)))
        return 0

    from recipes.sample_data.streets import make_streets_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or make_streets_dataset(Path(tmp) / "streets", n_frames=4 * args.images, seed=0,
                                                         size=(args.size, args.size + args.size // 4))
        rows = [_spawn(method, n, data_dir, args.size, args.batch_size, args.model)
                for n in (args.images, 4 * args.images) for method in METHODS]
    by_key = {(row["method"], row["images"]): row for row in rows}
    print(f"\nEvaluation of a tiny SegFormer at {args.size}x{args.size}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU(s); memory: {rows[0]['peak_measure']}")
    print(f"{'method':<10} {'images':>6} {'RSS before':>11} {'peak RSS':>10} {'eval growth':>12} "
          f"{'metric time':>12} {'evaluate':>9}  mIoU")
    for row in rows:
        print(f"{row['method']:<10} {row['images']:>6} {row['rss_before_mib']:>8.0f} MiB "
              f"{row['peak_rss_mib']:>6.0f} MiB "
              f"{row['eval_growth_mib']:>8.1f} MiB {row['metric_seconds']:>10.3f} s {row['evaluate_seconds']:>7.2f} s"
              f"  {row['mean_iou']:.6f}")
    for n in (args.images, 4 * args.images):
        streaming, baseline = by_key["streaming", n], by_key["baseline", n]
        assert abs(streaming["mean_iou"] - baseline["mean_iou"]) < 1e-9, (streaming, baseline)
        assert streaming["samples"] == n, streaming
    small, large = args.images, 4 * args.images
    ratios = {
        "streaming_peak_growth_4N_over_N": by_key["streaming", large]["eval_growth_mib"]
        / max(by_key["streaming", small]["eval_growth_mib"], 1e-9),
        "baseline_peak_growth_4N_over_N": by_key["baseline", large]["eval_growth_mib"]
        / max(by_key["baseline", small]["eval_growth_mib"], 1e-9),
        "baseline_over_streaming_peak_growth_at_4N": by_key["baseline", large]["eval_growth_mib"]
        / max(by_key["streaming", large]["eval_growth_mib"], 1e-9),
        "baseline_over_streaming_metric_time_at_N": by_key["baseline", small]["metric_seconds"]
        / max(by_key["streaming", small]["metric_seconds"], 1e-9),
        "baseline_over_streaming_metric_time_at_4N": by_key["baseline", large]["metric_seconds"]
        / max(by_key["streaming", large]["metric_seconds"], 1e-9),
    }
    print("\nSame mIoU for both methods at N and 4N (asserted); every image counted once (eval_samples).")
    for name, value in ratios.items():
        print(f"  {name}: {value:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratios": ratios, "size": args.size,
                                         "batch_size": args.batch_size}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
