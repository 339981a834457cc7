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

import io
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
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from recipes.config import RecipeError
from recipes.images import IMAGE_EXTENSIONS, BadFile

logger = logging.getLogger("recipes")

FORMATS = ("voc", "coco", "imagefolder")
FORMAT_ALIASES = {"auto": "auto", "voc": "voc", "pascal_voc": "voc", "coco": "coco", "imagefolder": "imagefolder"}
SPLIT_NAMES = {
    "train": "train", "training": "train", "trainval": "train",
    "val": "validation", "valid": "validation", "validation": "validation", "dev": "validation",
    "test": "test", "testing": "test",
}
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
        split = SPLIT_NAMES.get(child.name.lower())
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
            split = SPLIT_NAMES[stem]
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
            names = [_category_name(c, class_names) for c in categories]
            image_id = int(entry.get("image_id", len(rows)))
        except (TypeError, ValueError, IndexError) as err:
            result.problems.append(BadFile(where, f"bad category or image_id: {err}"))
            continue
        rows.append(_row(image_path, image_id, _int_or_none(str(entry.get("width"))),
                         _int_or_none(str(entry.get("height"))), boxes, names, where))
    return result


def _category_name(value: Any, names: list[str] | None) -> str:
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


# --------------------------------------------------------------------------- checks


def upright_size(record: Any) -> tuple[int, int]:
    """``(width, height)`` of an image record after EXIF orientation, reading the header only."""
    source = io.BytesIO(record["bytes"]) if record.get("bytes") else record["path"]
    with PILImage.open(source) as image:
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width
    return int(width), int(height)


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
        label = label2id.get(_category_name(category, source_names)) if category is not None else None
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
) -> tuple[Dataset, SplitChecks]:
    """Measure every image and check every box of one split; return it in the common schema.

    ``dataset`` has an ``image`` column and HF-convention ``objects`` (optional ``image_id``, ``width``,
    ``height`` and ``source`` columns); integer categories are names' indices in ``source_names``.
    """
    from functools import partial

    label2id = {name: i for i, name in enumerate(class_names)}
    helper = {f"_{c}": Value("int32") for c in CHECK_COUNTERS}
    features = Features({**detection_features(class_names), "_problem": Value("string"),
                         "_mismatch": Value("string"), "_source": Value("string"), **helper})
    checked = dataset.map(
        partial(_check_batch, source_names=source_names, label2id=label2id),
        batched=True,
        batch_size=64,
        with_indices=True,
        remove_columns=[c for c in dataset.column_names if c != "image"],
        features=features,
        num_proc=num_proc,
        desc=f"Checking {split} annotations",
        load_from_cache_file=False,
    )
    report = SplitChecks()
    for name in CHECK_COUNTERS:
        report.counts[name] = int(np.sum(checked[f"_{name}"])) if len(checked) else 0
    problems, mismatches, sources = checked["_problem"], checked["_mismatch"], checked["_source"]
    bad_rows = [i for i, reason in enumerate(problems) if reason]
    report.skipped = [BadFile(sources[i], problems[i]) for i in bad_rows]
    report.size_mismatches = [f"{sources[i]}: {m}" for i, m in enumerate(mismatches) if m and i not in set(bad_rows)]
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
    objects = dataset["objects"]
    per_image = np.array([len(o["category"]) for o in objects], dtype=np.int64)
    labels = np.array([c for o in objects for c in o["category"]], dtype=np.int64)
    boxes = np.array([b for o in objects for b in o["bbox"]], dtype=np.float64).reshape(-1, 4)
    widths = np.asarray(dataset["width"], dtype=np.float64)
    heights = np.asarray(dataset["height"], dtype=np.float64)
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
