"""Time the detection task's COCO mAP (faster-coco-eval) against pycocotools' COCOeval on the same detections.

    python -m benchmarks.detection_map [--images 500] [--detections 100] [--classes 5] [--repeats 3]

Both evaluators get identical inputs (built by ``recipes.tasks.detection.coco_inputs``); the script asserts
that the 12 COCO statistics and the precision arrays are identical and prints the speed ratio (best of
``--repeats`` runs each). Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time

import numpy as np

from recipes.metrics.coco import METRIC_NAMES, coco_inputs, run_coco_eval


def synthetic_detections(images: int, detections: int, classes: int, seed: int = 0):
    """Per-image ground truth (0-12 boxes) and ``detections`` scored boxes: jittered matches plus clutter."""
    rng = np.random.default_rng(seed)
    ground_truths, predicted = [], []
    for _ in range(images):
        count = int(rng.integers(0, 13))
        corner = rng.uniform(0, 600, (count, 2))
        size = rng.uniform(4, 250, (count, 2))
        gt_boxes = np.column_stack([corner, corner + size])
        gt_labels = rng.integers(0, classes, count)
        ground_truths.append((gt_boxes, gt_labels))
        hits = min(count, detections)
        clutter = detections - hits
        corner_c = rng.uniform(0, 600, (clutter, 2))
        size_c = rng.uniform(4, 250, (clutter, 2))
        boxes = np.concatenate([gt_boxes[:hits] + rng.normal(0, 6, (hits, 4)),
                                np.column_stack([corner_c, corner_c + size_c])])
        scores = np.concatenate([rng.uniform(0.3, 1.0, hits), rng.uniform(0.0, 0.8, clutter)])
        labels = np.concatenate([np.where(rng.random(hits) < 0.9, gt_labels[:hits], rng.integers(0, classes, hits)),
                                 rng.integers(0, classes, clutter)])
        predicted.append((boxes, scores, labels))
    return ground_truths, predicted


def run_pycocotools(ground_truth: dict, detections: np.ndarray):
    """The reference: pycocotools COCO → loadRes → COCOeval evaluate/accumulate/summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = ground_truth
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def best_time(function, ground_truth: dict, detections: np.ndarray, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        gt, dt = copy.deepcopy(ground_truth), detections.copy()  # neither evaluator sees the other's edits
        start = time.perf_counter()
        result = function(gt, dt)
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    ground_truths, predicted = synthetic_detections(args.images, args.detections, args.classes, args.seed)
    ground_truth, detections = coco_inputs(ground_truths, predicted, args.classes)
    print(f"{args.images} images, {len(ground_truth['annotations'])} ground-truth boxes, "
          f"{len(detections)} detections, {args.classes} classes; best of {args.repeats} runs")

    fast_time, fast = best_time(run_coco_eval, ground_truth, detections, args.repeats)
    reference_time, reference = best_time(run_pycocotools, ground_truth, detections, args.repeats)

    fast_stats, reference_stats = np.asarray(fast.stats, dtype=np.float64), np.asarray(reference.stats)
    if not np.array_equal(fast_stats, reference_stats):
        print("MISMATCH:", dict(zip(METRIC_NAMES, fast_stats)), dict(zip(METRIC_NAMES, reference_stats)))
        return 1
    precision_gap = float(np.abs(np.asarray(fast.eval["precision"]) - reference.eval["precision"]).max())
    assert precision_gap < 1e-12, f"precision arrays differ by {precision_gap}"
    for name, value in zip(METRIC_NAMES, fast_stats):
        print(f"  {name:<11} {value:.6f}")
    print("identical COCO statistics (all 12) and precision arrays")
    print(f"recipes (faster-coco-eval): {fast_time:.3f}s   pycocotools COCOeval: {reference_time:.3f}s   "
          f"speed-up: {reference_time / fast_time:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
