"""Object-detection data: Pascal VOC, COCO JSON, image folder + ``metadata.jsonl`` and Hub datasets in the
Hugging Face convention, all turned into one in-memory schema.

The schema (:func:`detection_features`)::

    image     Image(decode=False)   {"path", "bytes"} record, decoded by the transforms
    image_id  int64
    width     int32                 size of the decoded (upright) image: the image wins over annotations
    height    int32
    objects   {bbox: [[x, y, w, h]] (COCO, absolute pixels), category: [ClassLabel], area: [float]}

Readers only parse files and report the ones they cannot use (missing image, path outside the data
root, unparsable annotation); :func:`check_split` then measures every image and checks every box
(clipped at the edge, zero-area or inverted dropped, unknown classes dropped), whatever the source.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, List, Value

from recipes.config import RecipeError
from recipes.data import canonical_split
from recipes.images import IMAGE_EXTENSIONS, BadFile

logger = logging.getLogger("recipes")

FORMATS = ("voc", "coco", "imagefolder")
FORMAT_ALIASES = {"auto": "auto", "voc": "voc", "pascal_voc": "voc", "coco": "coco", "imagefolder": "imagefolder"}
LAYOUT_HELP = (
    "Supported layouts: Pascal VOC (images/ + annotations/*.xml as in the Kaggle car-plates set, or JPEGImages/ + "
    "Annotations/ [+ ImageSets/Main/train.txt, val.txt]), COCO (annotations/instances_*.json or *.json next to the "
    "images) and an image folder with a metadata.jsonl ({\"file_name\": ..., \"objects\": {\"bbox\": [[x, y, w, h]], "
    "\"category\": [...]}} per line)."
)
COCO_SIZE_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, float("inf"))}
EXIF_ORIENTATION = 0x0112


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


# --------------------------------------------------------------------------- layout detection


def _annotation_dir(folder: Path) -> Path | None:
    for name in ("Annotations", "annotations"):
        if (folder / name).is_dir():
            return folder / name
    return None


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


def _voc_files(folder: Path) -> list[Path]:
    where = _annotation_dir(folder) or folder
    return sorted(p for p in where.glob("*.xml") if p.is_file())


def detect_layout(folder: Path) -> str | None:
    """``imagefolder`` (metadata.jsonl), ``coco`` (annotation JSON) or ``voc`` (XML files); ``None`` if unknown."""
    if (folder / "metadata.jsonl").is_file():
        return "imagefolder"
    if _coco_files(folder):
        return "coco"
    if _voc_files(folder):
        return "voc"
    return None


def split_subfolders(folder: Path) -> dict[str, Path]:
    """``train/``, ``val/``, ``test/``… subfolders that each hold a detectable layout (e.g. imagefolder splits)."""
    found: dict[str, Path] = {}
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        split = canonical_split(child.name)
        if split and split not in found and detect_layout(child) is not None:
            found[split] = child
    return found if "train" in found else {}


def resolve_format(folder: Path, requested: str) -> str:
    """The layout of ``folder``: detected for ``auto``, else checked against what the folder holds."""
    wanted = FORMAT_ALIASES.get(str(requested).lower())
    if wanted is None:
        raise RecipeError(f"Unknown dataset_format `{requested}` for object detection: use auto, {', '.join(FORMATS)}.")
    detected = detect_layout(folder)
    if wanted == "auto":
        if detected is None:
            raise RecipeError(f"Could not recognise the layout of {folder}: no annotations found. {LAYOUT_HELP}")
        return detected
    present = {
        "voc": bool(_voc_files(folder)),
        "coco": bool(_coco_files(folder)),
        "imagefolder": (folder / "metadata.jsonl").is_file(),
    }
    if not present[wanted]:
        expected = {
            "voc": "Pascal VOC XML files (annotations/*.xml or Annotations/*.xml)",
            "coco": "a COCO annotation JSON (annotations/instances_*.json or *.json)",
            "imagefolder": "a metadata.jsonl file",
        }[wanted]
        hint = (
            f" It looks like a `{detected}` folder: use `--dataset_format {detected}` (or `auto`)."
            if detected
            else f" {LAYOUT_HELP}"
        )
        raise RecipeError(f"`dataset_format: {requested}` but {folder} has no {expected}.{hint}")
    return wanted


# --------------------------------------------------------------------------- readers


def read_detection_folder(
    folder: Path, requested_format: str = "auto", class_names: list[str] | None = None
) -> ReadResult:
    """Read one local folder (any supported layout) into rows per split."""
    layout = resolve_format(folder, requested_format)
    if layout == "voc":
        return read_voc(folder)
    if layout == "coco":
        return read_coco(folder)
    return read_imagefolder(folder, class_names)


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
    except ValueError:
        return None
    return value if value and value > 0 else None


def parse_voc_xml(path: Path) -> tuple[str | None, int | None, int | None, list[list[float]], list[str]]:
    """``(filename, width, height, boxes_xywh, names)`` of one VOC file; ``ValueError`` says what is wrong."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise ValueError(f"cannot parse XML: {err}") from err
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip() or None
    width, height = _int_or_none(root.findtext("size/width")), _int_or_none(root.findtext("size/height"))
    boxes, names = [], []
    for index, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise ValueError(f"<object> {index} has no <name> or no <bndbox>")
        try:
            x0, y0, x1, y1 = (float(box.findtext(tag) or "nan") for tag in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            raise ValueError(f"<object> {index} has a non-numeric <bndbox>: {err}") from err
        if not np.all(np.isfinite([x0, y0, x1, y1])):
            raise ValueError(f"<object> {index} has an incomplete <bndbox> (xmin, ymin, xmax, ymax needed)")
        boxes.append([x0, y0, x1 - x0, y1 - y0])
        names.append(name)
    return filename, width, height, boxes, names


def _voc_split_lists(folder: Path) -> dict[str, list[str]]:
    """``ImageSets/Main/{train,val,trainval,test}.txt`` → split → annotation ids."""
    main = folder / "ImageSets" / "Main"
    if not main.is_dir():
        return {}
    lists: dict[str, list[str]] = {}
    for stem in ("train", "val", "test", "trainval"):
        path = main / f"{stem}.txt"
        if path.is_file():
            split = canonical_split(stem)
            if split in lists:  # trainval only when there is no train.txt
                continue
            lists[split] = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lists


def read_voc(folder: Path) -> ReadResult:
    """Pascal VOC: ``annotations/*.xml`` + ``images/`` (Kaggle) or ``Annotations/`` + ``JPEGImages/`` (VOC)."""
    annotation_dir = _annotation_dir(folder) or folder
    image_dirs = [d for d in (folder / "JPEGImages", folder / "images", folder / "Images") if d.is_dir()]
    image_dirs += [annotation_dir, folder]
    result = ReadResult(splits={})
    split_lists = _voc_split_lists(folder)
    if split_lists:
        assignments = {split: [annotation_dir / f"{stem}.xml" for stem in ids] for split, ids in split_lists.items()}
    else:
        assignments = {"train": _voc_files(folder)}
    image_id = 0
    for split, paths in assignments.items():
        rows = result.splits.setdefault(split, [])
        for xml_path in paths:
            if not xml_path.is_file():
                result.problems.append(BadFile(str(xml_path), "listed in ImageSets/Main but the XML file is missing"))
                continue
            try:
                filename, width, height, boxes, names = parse_voc_xml(xml_path)
            except ValueError as err:
                result.problems.append(BadFile(str(xml_path), str(err)))
                continue
            image_path, reason = _locate_image(folder, filename or xml_path.stem, image_dirs, xml_path)
            if image_path is None:
                result.problems.append(BadFile(str(xml_path), reason or "image not found"))
                continue
            rows.append(_row(image_path, image_id, width, height, boxes, names, xml_path))
            image_id += 1
    return result


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
            if not name or not isinstance(image.get("id"), int):
                result.problems.append(BadFile(str(json_path), f"image entry without file_name or integer id: {image}"))
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
                if box is None:
                    result.counts["malformed_boxes_skipped"] += 1
                    continue
                boxes.append(box)
                category = ann.get("category_id")
                names.append(categories.get(category, str(category)))
            rows.append(_row(image_path, image["id"], _int_or_none(str(image.get("width"))),
                             _int_or_none(str(image.get("height"))), boxes, names, f"{json_path.name}:{name}"))
    result.declared_names = [declared[k] for k in sorted(declared)] or None
    return result


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
        except (TypeError, ValueError, IndexError) as err:
            result.problems.append(BadFile(where, f"bad category or image_id: {err}"))
            continue
        rows.append(_row(image_path, image_id, _int_or_none(str(entry.get("width"))),
                         _int_or_none(str(entry.get("height"))), boxes, names, where))
    return result


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


