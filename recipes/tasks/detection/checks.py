"""Object-detection checks: measure every image, clean every box, and summarise a split."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, Features, Value
from PIL import UnidentifiedImageError

from recipes.config import RecipeError
from recipes.data.check_cache import CheckCache, arrow_column, column_values
from recipes.decode.images import BadFile
from recipes.tasks.detection.formats.common import COCO_SIZE_RANGES, category_name, detection_features, upright_size

logger = logging.getLogger("recipes")
FORMAT_MODULES = tuple(f"recipes.tasks.detection.formats.{name}"
                       for name in ("common", "layout", "voc", "coco", "yolo", "yolo_config", "imagefolder"))
"""The modules whose source keys the checks' cache (the schema and the readers: a changed one is a new check)."""

# --------------------------------------------------------------------------- checks


def objects_as_lists(objects: Any) -> tuple[list[list[float]], list[Any]]:
    """``(boxes, categories)`` from HF ``objects`` stored as a dict of lists or a list of dicts."""
    if objects is None:
        return [], []
    if isinstance(objects, list):
        return [list(o["bbox"]) for o in objects], [o.get("category") for o in objects]
    categories = objects.get("category", objects.get("categories", []))
    return [list(b) for b in objects.get("bbox", [])], list(categories)


def clean_boxes(
    boxes: list[list[float]], categories: list[Any], width: int, height: int,
    source_names: list[str] | None, label2id: dict[str, int],
) -> tuple[list[list[float]], list[int], Counter]:
    """Clip xywh boxes to the image, drop zero-area/inverted ones and unknown classes; count each case."""
    counts: Counter = Counter()
    kept_boxes, kept_labels = [], []
    for box, category in zip(boxes, categories):
        label = label2id.get(category_name(category, source_names)) if category is not None else None
        if label is None:
            counts["unknown_class_boxes"] += 1
            continue
        x0, y0, w, h = (float(v) for v in box)
        x1, y1 = x0 + w, y0 + h
        if not (w > 0 and h > 0) or not np.all(np.isfinite([x0, y0, w, h])):
            counts["dropped_degenerate_boxes"] += 1
            continue
        cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            if cx1 <= cx0 or cy1 <= cy0:
                counts["dropped_outside_boxes"] += 1
                continue
            counts["clipped_boxes"] += 1
        kept_boxes.append([cx0, cy0, cx1 - cx0, cy1 - cy0])
        kept_labels.append(label)
    return kept_boxes, kept_labels, counts


@dataclass
class SplitChecks:
    """What :func:`check_split` found in one split."""

    skipped: list[BadFile] = field(default_factory=list)
    size_mismatches: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


CHECK_COUNTERS = ("clipped_boxes", "dropped_degenerate_boxes", "dropped_outside_boxes", "unknown_class_boxes")


def _check_batch(
    batch: dict[str, list], indices: list[int], *, source_names: list[str] | None, label2id: dict[str, int]
) -> dict[str, list]:
    """``Dataset.map`` function of :func:`check_split`: measure images, clean boxes, record problems."""
    out: dict[str, list] = {name: [] for name in ("image_id", "width", "height", "objects", "_problem", "_mismatch",
                                                    "_source", *(f"_{c}" for c in CHECK_COUNTERS))}
    sources = batch.get("source") or [None] * len(indices)
    image_ids = batch.get("image_id") or indices
    declared_w = batch.get("width") or [None] * len(indices)
    declared_h = batch.get("height") or [None] * len(indices)
    for i, (record, objects) in enumerate(zip(batch["image"], batch["objects"])):
        source = sources[i] or (record.get("path") if isinstance(record, dict) else None) or f"row {indices[i]}"
        problem, mismatch = "", ""
        try:
            width, height = upright_size(record)
        except (OSError, UnidentifiedImageError, KeyError, TypeError, ValueError) as err:
            width, height, problem = 1, 1, f"cannot read the image: {err}"
        if not problem and declared_w[i] and declared_h[i] and (declared_w[i], declared_h[i]) != (width, height):
            mismatch = f"annotation says {declared_w[i]}x{declared_h[i]}, image is {width}x{height} (image used)"
        boxes, categories = objects_as_lists(objects) if not problem else ([], [])
        kept, labels, counts = clean_boxes(boxes, categories, width, height, source_names, label2id)
        out["image_id"].append(int(image_ids[i]) if image_ids[i] is not None else int(indices[i]))
        out["width"].append(width)
        out["height"].append(height)
        out["objects"].append({"bbox": kept, "category": labels, "area": [b[2] * b[3] for b in kept]})
        out["_problem"].append(problem)
        out["_mismatch"].append(mismatch)
        out["_source"].append(str(source))
        for name in CHECK_COUNTERS:
            out[f"_{name}"].append(counts.get(name, 0))
    return out


def check_split(
    dataset: Dataset,
    class_names: list[str],
    split: str,
    *,
    source_names: list[str] | None = None,
    strict: bool = False,
    num_proc: int | None = None,
    cache: CheckCache | None = None,
) -> tuple[Dataset, SplitChecks]:
    """Measure every image and check every box of one split; return it in the common schema.

    ``dataset`` has an ``image`` column and HF-convention ``objects`` (optional ``image_id``, ``width``,
    ``height`` and ``source`` columns); integer categories are names' indices in ``source_names``. The pass is
    cached by ``cache`` (see :mod:`recipes.data.check_cache`).
    """
    from functools import partial

    label2id = {name: i for i, name in enumerate(class_names)}
    helper = {f"_{c}": Value("int32") for c in CHECK_COUNTERS}
    features = Features({**detection_features(class_names), "_problem": Value("string"),
                         "_mismatch": Value("string"), "_source": Value("string"), **helper})
    cache = cache or CheckCache(num_workers=num_proc)
    checked = cache.map(
        dataset,
        partial(_check_batch, source_names=source_names, label2id=label2id),
        check="boxes",
        split=split,
        desc=f"Checking {split} annotations",
        file_columns=["image"],
        modules=FORMAT_MODULES,
        batched=True,
        batch_size=64,
        with_indices=True,
        remove_columns=[c for c in dataset.column_names if c != "image"],
        features=features,
    )
    report = SplitChecks()
    for name in CHECK_COUNTERS:
        report.counts[name] = int(np.sum(arrow_column(checked, f"_{name}").to_numpy())) if len(checked) else 0
    problems, mismatches, sources = (column_values(checked, f"_{name}") for name in ("problem", "mismatch", "source"))
    bad_rows = [i for i, reason in enumerate(problems) if reason]
    report.skipped = [BadFile(sources[i], problems[i]) for i in bad_rows]
    unusable = set(bad_rows)
    report.size_mismatches = [f"{sources[i]}: {m}" for i, m in enumerate(mismatches) if m and i not in unusable]
    if report.skipped and strict:
        raise_strict(report.skipped, split)
    if bad_rows:
        keep = sorted(set(range(len(checked))) - set(bad_rows))
        checked = checked.select(keep)
    return checked.remove_columns([c for c in checked.column_names if c.startswith("_")]), report


def raise_strict(bad: list[BadFile], split: str) -> None:
    """Stop the run (``strict``) with the list of unusable files."""
    listing = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    raise RecipeError(
        f"{len(bad)} unusable annotation/image file(s) in the {split} data (strict mode):\n{listing}{more}\n"
        "Fix or remove these files, or run without `strict` to skip and report them."
    )


# --------------------------------------------------------------------------- statistics


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "min": round(float(values.min()), 2),
        "median": round(float(np.median(values)), 2),
        "mean": round(float(values.mean()), 2),
        "max": round(float(values.max()), 2),
    }


def split_statistics(dataset: Dataset, class_names: list[str]) -> dict[str, Any]:
    """Counts per class, boxes per image and box sizes of one checked split."""
    objects = arrow_column(dataset, "objects")  # Arrow all the way: no Python object per box
    categories = pc.struct_field(objects, "category")
    per_image = pc.list_value_length(categories).to_numpy(zero_copy_only=False).astype(np.int64)
    labels = pc.list_flatten(categories).to_numpy(zero_copy_only=False).astype(np.int64)
    boxes = pc.list_flatten(pc.list_flatten(pc.struct_field(objects, "bbox")))
    boxes = boxes.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 4)
    widths = arrow_column(dataset, "width").to_numpy(zero_copy_only=False).astype(np.float64)
    heights = arrow_column(dataset, "height").to_numpy(zero_copy_only=False).astype(np.float64)
    image_area = np.repeat(widths * heights, per_image)
    areas = boxes[:, 2] * boxes[:, 3]
    counts = np.bincount(labels, minlength=len(class_names)) if labels.size else np.zeros(len(class_names), int)
    histogram = Counter(min(int(n), 5) for n in per_image)
    return {
        "images": len(dataset),
        "negatives": int((per_image == 0).sum()),
        "boxes": int(per_image.sum()),
        "boxes_per_class": {name: int(counts[i]) for i, name in enumerate(class_names)},
        "boxes_per_image": {
            **_stats(per_image.astype(np.float64)),
            "histogram": {("5+" if k == 5 else str(k)): int(v) for k, v in sorted(histogram.items())},
        },
        "box_width_px": _stats(boxes[:, 2]),
        "box_height_px": _stats(boxes[:, 3]),
        "box_area_fraction": _stats(areas / np.maximum(image_area, 1.0)) if areas.size else {},
        "boxes_by_coco_size": {
            name: int(((areas >= low) & (areas < high)).sum()) for name, (low, high) in COCO_SIZE_RANGES.items()
        },
        "image_width_px": _stats(widths),
        "image_height_px": _stats(heights),
    }
