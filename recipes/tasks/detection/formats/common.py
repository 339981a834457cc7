"""What every detection layout shares: the one schema rows are converted to, the readers' result, image lookup inside
the data root, row building, number checks, class names, and the upright size of an image."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, List, Value

from recipes.decode.images import IMAGE_EXTENSIONS, BadFile, open_header
from recipes.decode.jpeg import oriented_size

logger = logging.getLogger("recipes")


COCO_SIZE_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, float("inf"))}


def detection_features(class_names: list[str]) -> Features:
    """The one schema every detection split is converted to."""
    return Features(
        {
            "image": Image(decode=False),
            "image_id": Value("int64"),
            "width": Value("int32"),
            "height": Value("int32"),
            "objects": {
                "bbox": List(List(Value("float32"), length=4)),
                "category": List(ClassLabel(names=list(class_names))),
                "area": List(Value("float32")),
            },
        }
    )


RAW_FEATURES = Features(
    {
        "image": Image(decode=False),
        "image_id": Value("int64"),
        "width": Value("int32"),
        "height": Value("int32"),
        "objects": {"bbox": List(List(Value("float32"), length=4)), "category": List(Value("string"))},
        "source": Value("string"),
    }
)
"""Rows as the local readers produce them: declared sizes (may be missing), category names, the annotation file."""


@dataclass
class ReadResult:
    """What a reader found in one folder: rows per split, the files it could not use, and counters."""

    splits: dict[str, list[dict[str, Any]]]
    problems: list[BadFile] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    declared_names: list[str] | None = None
    """Class names in the order the format declares them (COCO ``categories``), if it does."""


def _inside(root: Path, candidate: Path) -> bool:
    """``candidate`` lies under ``root`` as written (``..`` resolved, symbolic links not followed, so
    datasets stored as links — DVC, git-annex, HF local dirs — stay usable)."""
    return Path(os.path.normpath(os.path.abspath(candidate))).is_relative_to(os.path.normpath(os.path.abspath(root)))


def _locate_image(
    root: Path, name: str, search_dirs: Iterable[Path], source: Path
) -> tuple[Path | None, str | None]:
    """Find image ``name`` in ``search_dirs``; ``(None, reason)`` when it is missing or outside ``root``."""
    relative = Path(name)
    outside = None
    for directory in search_dirs:
        candidate = directory / relative
        if not _inside(root, candidate):
            outside = candidate
            continue
        if candidate.is_file():
            return candidate.resolve(), None
        if not relative.suffix:
            for extension in IMAGE_EXTENSIONS:
                with_suffix = candidate.with_name(candidate.name + extension)
                if with_suffix.is_file():
                    return with_suffix.resolve(), None
    if outside is not None:
        return None, f"image path `{name}` points outside the data root {root}"
    where = ", ".join(str(d) for d in search_dirs)
    return None, f"image `{name}` named in {source.name} was not found (looked in {where})"


def _row(image_path: Path, image_id: int, width: int | None, height: int | None, boxes: list[list[float]],
         categories: list[str], source: Path | str) -> dict[str, Any]:
    return {
        "image": {"path": str(image_path), "bytes": None},
        "image_id": image_id,
        "width": width,
        "height": height,
        "objects": {"bbox": boxes, "category": categories},
        "source": str(source),
    }


def _int_or_none(text: str | None) -> int | None:
    try:
        value = int(float(text)) if text is not None else None
    except (ValueError, OverflowError):  # "inf" / "1e999" read as a float: no size declared
        return None
    return value if value and 0 < value <= INT32_MAX else None  # beyond int32: no size declared (not a crash)


INT32_MAX = 2**31 - 1


INT64_RANGE = (-(2**63), 2**63 - 1)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite_box(box: list[float]) -> bool:
    """Every value finite and within float32 (the dataset's box type): ``1e300`` would become ``inf``."""
    return all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in box)


def category_name(value: Any, names: list[str] | None) -> str:
    if isinstance(value, str):
        return value
    index = int(value)
    return names[index] if names and 0 <= index < len(names) else str(index)


def rows_to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """Reader rows as a ``Dataset`` (declared sizes, category names), ready for :func:`check_split`."""
    return Dataset.from_list(rows, features=RAW_FEATURES)


def sorted_names(names: Iterable[str]) -> list[str]:
    """Class names found in the data, numerically when they are all integers (``"2" < "10"``)."""
    unique = set(names)
    if unique and all(n.isdigit() for n in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def upright_size(record: Any) -> tuple[int, int]:
    """``(width, height)`` of an image record after EXIF orientation, reading the header only (an image over the
    pixel cap raises :class:`recipes.decode.images.ImageTooLargeError`, a ``ValueError`` naming the file)."""
    with open_header(record) as image:
        width, height = oriented_size(image)
    return int(width), int(height)
