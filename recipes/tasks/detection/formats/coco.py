"""COCO JSON: ``annotations/instances_*.json`` or ``*.json`` next to the images."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from recipes.decode.images import BadFile
from recipes.tasks.detection.formats.common import (
    INT32_MAX,
    INT64_RANGE,
    ReadResult,
    _finite_box,
    _int_or_none,
    _locate_image,
    _row,
)


def _looks_like_coco(path: Path) -> bool:
    """``instances_*.json``, or a JSON whose first 64 kB mention ``"images"`` or ``"annotations"``."""
    if path.name.startswith("instances_"):
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return b'"images"' in head or b'"annotations"' in head


def _coco_files(folder: Path) -> list[Path]:
    candidates: list[Path] = []
    for where in (folder / "annotations", folder / "Annotations", folder):
        if where.is_dir():
            candidates += sorted(p for p in where.glob("*.json") if p.is_file() and _looks_like_coco(p))
    return list(dict.fromkeys(candidates))


def _coco_image_problem(image: dict[str, Any]) -> str | None:
    """What makes one COCO ``images`` entry unusable before its file is looked for (``None``: nothing).

    JSON numbers have no range: ``Infinity``, ``1e300`` or an id of ``2**70`` parse, then cannot be stored in the
    dataset's ``int64`` id / ``int32`` size columns (the ``OverflowError`` of an unchecked reader)."""
    image_id = image.get("id")
    if not image.get("file_name") or not isinstance(image_id, int) or isinstance(image_id, bool):
        return "image entry without file_name or integer id"
    if not INT64_RANGE[0] <= image_id <= INT64_RANGE[1]:
        return f"image id {image_id} does not fit a 64-bit integer: renumber the images"
    for key in ("width", "height"):
        value = image.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
            math.isfinite(value) and value <= INT32_MAX
        ):
            return f"`{key}: {value}` is not a pixel count: write the image's real {key} (or leave it out)"
    return None


def _entry_text(entry: dict[str, Any], limit: int = 200) -> str:
    """One JSON entry as printed in a problem report (shortened)."""
    text = str(entry)
    return text if len(text) <= limit else text[:limit] + "…"


def _coco_split(path: Path, how_many: int) -> str:
    stem = path.stem.lower().removeprefix("instances_")
    for token, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        if token in stem:
            return split
    return "train" if how_many == 1 else stem


def read_coco(folder: Path) -> ReadResult:
    """COCO: ``instances_<split>.json`` (in ``annotations/`` or next to the images) + the images."""
    files = _coco_files(folder)
    result = ReadResult(splits={})
    declared: dict[int, str] = {}
    for json_path in files:
        try:
            content = json.loads(json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            result.problems.append(BadFile(str(json_path), f"cannot parse JSON: {err}"))
            continue
        if not isinstance(content, dict) or not isinstance(content.get("images"), list) or not isinstance(
            content.get("annotations"), list
        ):
            reason = "not a COCO detection file (needs `images` and `annotations`)"
            result.problems.append(BadFile(str(json_path), reason))
            continue
        try:
            categories = {int(c["id"]): str(c.get("name", c["id"])) for c in content.get("categories") or []}
        except (KeyError, TypeError, ValueError) as err:
            result.problems.append(BadFile(str(json_path), f"malformed `categories` (each needs an integer id): {err}"))
            continue
        declared.update(categories)
        split = _coco_split(json_path, len(files))
        stem = json_path.stem.removeprefix("instances_")
        image_dirs = [d for d in (folder / stem, folder / "images" / stem, folder / "images") if d.is_dir()]
        image_dirs += [json_path.parent, folder]
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in content["annotations"]:
            if ann.get("iscrowd"):
                result.counts["crowd_boxes_skipped"] += 1
                continue
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        known_ids = {img.get("id") for img in content["images"]}
        result.counts["boxes_of_unknown_images"] += sum(len(v) for k, v in by_image.items() if k not in known_ids)
        rows = result.splits.setdefault(split, [])
        for image in content["images"]:
            name = image.get("file_name")
            problem = _coco_image_problem(image)
            if problem:
                where = f"{json_path} ({name})" if name else str(json_path)
                result.problems.append(BadFile(where, f"{problem}: {_entry_text(image)}"))
                continue
            image_path, reason = _locate_image(folder, name, image_dirs, json_path)
            if image_path is None:
                result.problems.append(BadFile(f"{json_path} ({name})", reason or "image not found"))
                continue
            boxes, names = [], []
            for ann in by_image.get(image["id"], []):
                bbox = ann.get("bbox")
                try:
                    box = [float(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else None
                except (TypeError, ValueError):
                    box = None
                if box is None or not _finite_box(box):
                    result.counts["malformed_boxes_skipped"] += 1
                    continue
                boxes.append(box)
                category = ann.get("category_id")
                names.append(categories.get(category, str(category)))
            rows.append(_row(image_path, image["id"], _int_or_none(str(image.get("width"))),
                             _int_or_none(str(image.get("height"))), boxes, names, f"{json_path.name}:{name}"))
    result.declared_names = [declared[k] for k in sorted(declared)] or None
    return result
