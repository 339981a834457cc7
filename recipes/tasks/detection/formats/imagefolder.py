"""An image folder with a ``metadata.jsonl`` (the Hugging Face ``imagefolder`` convention): one
``{"file_name": ..., "objects": {"bbox": [[x, y, w, h]], "category": [...]}}`` per line."""

from __future__ import annotations

import json
from pathlib import Path

from recipes.decode.images import BadFile
from recipes.tasks.detection.formats.common import (
    INT64_RANGE,
    ReadResult,
    _finite_box,
    _int_or_none,
    _locate_image,
    _row,
    category_name,
)


def read_imagefolder(folder: Path, class_names: list[str] | None = None) -> ReadResult:
    """An image folder with ``metadata.jsonl``: one ``{"file_name", "objects": {"bbox", "category"}}`` per line.

    ``category`` (or ``categories``) holds names or integer ids (ids index ``class_names`` when given).
    """
    metadata = folder / "metadata.jsonl"
    result = ReadResult(splits={"train": []})
    rows = result.splits["train"]
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{metadata}:{number}"
        try:
            entry = json.loads(line)
            name = entry["file_name"]
            objects = entry.get("objects") or {}
            if isinstance(objects, list):  # list of {"bbox", "category"} dicts
                objects = {"bbox": [o["bbox"] for o in objects], "category": [o.get("category") for o in objects]}
            boxes = [[float(v) for v in box] for box in objects.get("bbox", [])]
            categories = objects.get("category", objects.get("categories", []))
            if len(categories) != len(boxes) or any(len(b) != 4 for b in boxes):
                raise ValueError("`objects` needs as many categories as boxes, each box [x, y, width, height]")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            result.problems.append(BadFile(where, f"cannot parse metadata line: {err}"))
            continue
        image_path, reason = _locate_image(folder, str(name), [folder], metadata)
        if image_path is None:
            result.problems.append(BadFile(where, reason or "image not found"))
            continue
        try:
            names = [category_name(c, class_names) for c in categories]
            image_id = int(entry.get("image_id", len(rows)))
            if not INT64_RANGE[0] <= image_id <= INT64_RANGE[1]:
                raise ValueError(f"image_id {image_id} does not fit a 64-bit integer")
            if not all(_finite_box(box) for box in boxes):
                raise ValueError(f"a box value is not a finite 32-bit float: {boxes}")
        except (TypeError, ValueError, IndexError, OverflowError) as err:
            result.problems.append(BadFile(where, f"bad category, image_id or box: {err}"))
            continue
        rows.append(_row(image_path, image_id, _int_or_none(str(entry.get("width"))),
                         _int_or_none(str(entry.get("height"))), boxes, names, where))
    return result
