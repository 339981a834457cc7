"""Object-detection data: Pascal VOC, COCO JSON, YOLO txt labels, image folder + ``metadata.jsonl`` and Hub datasets
in the Hugging Face convention, all turned into one in-memory schema.

The schema (:func:`detection_features`)::

    image     Image(decode=False)   {"path", "bytes"} record, decoded by the transforms
    image_id  int64
    width     int32                 size of the decoded (upright) image: the image wins over annotations
    height    int32
    objects   {bbox: [[x, y, w, h]] (COCO, absolute pixels), category: [ClassLabel], area: [float]}

Readers only parse files and report the ones they cannot use (missing image, path outside the data
root, unparsable annotation); :func:`check_split` then measures every image and checks every box
(clipped at the edge, zero-area or inverted dropped, unknown classes dropped), whatever the source. The YOLO
reader is the one that reads image headers itself: its boxes are fractions of the image size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from datasets import ClassLabel, Dataset, Features, Image, List, Value

from recipes.config import RecipeError
from recipes.data.splits import canonical_split
from recipes.decode.images import IMAGE_EXTENSIONS, BadFile, open_header
from recipes.decode.jpeg import oriented_size

logger = logging.getLogger("recipes")

FORMATS = ("voc", "coco", "imagefolder", "yolo")
FORMAT_ALIASES = {"auto": "auto", "voc": "voc", "pascal_voc": "voc", "coco": "coco", "imagefolder": "imagefolder",
                  "yolo": "yolo", "ultralytics": "yolo"}
LAYOUT_HELP = (
    "Supported layouts: Pascal VOC (images/ + annotations/*.xml as in the Kaggle car-plates set, or JPEGImages/ + "
    "Annotations/ [+ ImageSets/Main/train.txt, val.txt]), COCO (annotations/instances_*.json or *.json next to the "
    "images), an image folder with a metadata.jsonl ({\"file_name\": ..., \"objects\": {\"bbox\": [[x, y, w, h]], "
    "\"category\": [...]}} per line) and YOLO txt labels (images/ + labels/*.txt, or images/<split>/ + "
    "labels/<split>/, or <split>/images/ + <split>/labels/, with class names in data.yaml)."
)
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
    """``imagefolder`` (metadata.jsonl), ``coco`` (annotation JSON), ``voc`` (XML files) or ``yolo`` (``labels/``
    beside ``images/``, at the top or in split folders, or a data.yaml); ``None`` if unknown."""
    if (folder / "metadata.jsonl").is_file():
        return "imagefolder"
    if _coco_files(folder):
        return "coco"
    if _voc_files(folder):
        return "voc"
    if _looks_like_yolo(folder):
        return "yolo"
    return None


def split_subfolders(folder: Path) -> dict[str, Path]:
    """``train/``, ``val/``, ``test/``… subfolders that each hold a detectable layout (e.g. imagefolder splits).

    A YOLO folder reads its split folders itself (:func:`read_yolo`: they share the top folder's data.yaml)."""
    if detect_layout(folder) == "yolo":
        return {}
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
        "yolo": _looks_like_yolo(folder),
    }
    if not present[wanted]:
        expected = {
            "voc": "Pascal VOC XML files (annotations/*.xml or Annotations/*.xml)",
            "coco": "a COCO annotation JSON (annotations/instances_*.json or *.json)",
            "imagefolder": "a metadata.jsonl file",
            "yolo": "YOLO labels (images/ + labels/, images/<split>/ + labels/<split>/, <split>/images/ + "
            "<split>/labels/, or a data.yaml)",
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
    if layout == "yolo":
        return read_yolo(folder, class_names)
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
    except (ValueError, OverflowError):  # "inf" / "1e999" read as a float: no size declared
        return None
    return value if value and 0 < value <= INT32_MAX else None  # beyond int32: no size declared (not a crash)


INT32_MAX = 2**31 - 1
INT64_RANGE = (-(2**63), 2**63 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)


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


def _finite_box(box: list[float]) -> bool:
    """Every value finite and within float32 (the dataset's box type): ``1e300`` would become ``inf``."""
    return all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in box)


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


# --------------------------------------------------------------------------- YOLO txt labels

YOLO_YAML_FILES = ("data.yaml", "data.yml")
YOLO_CLASS_FILES = ("classes.txt", "obj.names")
YOLO_TOLERANCE = 1e-6
"""How far a label number may stray outside [0, 1] (exporters' rounding) before its line is reported."""


def _yolo_yaml(folder: Path) -> Path | None:
    return next((folder / name for name in YOLO_YAML_FILES if (folder / name).is_file()), None)


def _looks_like_yolo(folder: Path) -> bool:
    """A data.yaml, ``images/`` beside ``labels/``, or split folders that each hold both."""
    if _yolo_yaml(folder) is not None or ((folder / "images").is_dir() and (folder / "labels").is_dir()):
        return True
    return any(
        canonical_split(child.name) and (child / "images").is_dir() and (child / "labels").is_dir()
        for child in folder.iterdir()
        if child.is_dir()
    )


@dataclass
class YoloConfig:
    """What a YOLO folder declares: class names by id, the split paths of its data.yaml and keypoints per line."""

    root: Path
    """The data root: split paths and label paths are relative to it, and nothing is read outside it."""
    names: dict[int, str] | None = None
    names_source: str | None = None
    splits: dict[str, list[str]] = field(default_factory=dict)
    yaml_file: Path | None = None
    keypoint_numbers: int = 0
    """Numbers after the box on each line of a pose dataset (``kpt_shape: [17, 3]`` → 51); they are ignored."""


def _load_yolo_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"Cannot read the YOLO dataset file {path}: {err}") from err
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise RecipeError(
            f"{path} must be a YAML mapping (names: [...], train: images/train, val: images/val), "
            f"got a {type(content).__name__}."
        )
    return content


def yolo_names(content: dict[str, Any], path: Path) -> dict[int, str] | None:
    """Class names by id from a data.yaml: ``names`` as a list or an id → name mapping, or ``nc`` alone."""
    names, count = content.get("names"), content.get("nc")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise RecipeError(f"`nc: {count!r}` in {path} must be the number of classes (a non-negative integer).")
    if names is None:
        return {i: f"class_{i}" for i in range(count)} if count else None
    if isinstance(names, list):
        mapping = dict(enumerate(names))
    elif isinstance(names, dict):
        try:
            mapping = {int(key): value for key, value in names.items()}
        except (TypeError, ValueError) as err:
            raise RecipeError(
                f"`names` in {path} maps class ids to names ({{0: car, 1: person}}); a key is not an id: {err}"
            ) from err
        if any(key < 0 for key in mapping):
            raise RecipeError(f"`names` in {path} has a negative class id: {sorted(mapping)[:5]}.")
    else:
        raise RecipeError(
            f"`names` in {path} must be a list ([car, person]) or an id → name mapping ({{0: car, 1: person}}), "
            f"got a {type(names).__name__}."
        )
    if any(value is None or isinstance(value, dict | list) for value in mapping.values()):
        raise RecipeError(f"`names` in {path} must hold one name per class id, got {mapping}.")
    mapping = {key: str(value) for key, value in sorted(mapping.items())}
    if count is not None and count != len(mapping):
        raise RecipeError(f"{path} says `nc: {count}` but `names` has {len(mapping)} entries: make them agree.")
    repeated = sorted(name for name, n in Counter(mapping.values()).items() if n > 1)
    if repeated:
        raise RecipeError(f"`names` in {path} repeats {repeated}: each class id needs its own name.")
    return mapping


def _keypoint_numbers(content: dict[str, Any], path: Path) -> int:
    shape = content.get("kpt_shape")
    if shape is None:
        return 0
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise RecipeError(f"`kpt_shape: {shape!r}` in {path} must be [keypoints, 2 or 3].")
    return shape[0] * shape[1]


def _yaml_root(content: dict[str, Any], path: Path) -> Path:
    """The data.yaml's ``path:`` (relative to the yaml file) when it is a folder here, else the yaml's folder."""
    declared = content.get("path")
    if declared:
        candidate = Path(str(declared)).expanduser()
        candidate = Path(os.path.abspath(candidate if candidate.is_absolute() else path.parent / candidate))
        if candidate.is_dir():
            return candidate
        logger.info("%s: `path: %s` is not a folder here; split paths are read relative to %s.", path, declared,
                    path.parent)
    return path.parent


def _class_file_names(folder: Path) -> tuple[dict[int, str], Path] | None:
    """Names from ``classes.txt`` / ``obj.names`` (one per line: Label Studio, labelImg, Darknet)."""
    for where in (folder, folder / "labels", folder.parent):
        for name in YOLO_CLASS_FILES:
            path = where / name
            if path.is_file():
                lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
                return dict(enumerate(line for line in lines if line)), path
    return None


def yolo_config(folder: Path, class_names: list[str] | None = None) -> YoloConfig:
    """Read what ``folder`` declares: its data.yaml (names, split paths, ``kpt_shape``), or its parent's (names
    only: ``folder`` is then one split), else ``classes.txt``/``obj.names``, else ``class_names``."""
    config = YoloConfig(root=folder)
    own = _yolo_yaml(folder)
    path = own or _yolo_yaml(folder.parent)
    if path is not None:
        content = _load_yolo_yaml(path)
        config.yaml_file, config.keypoint_numbers = path, _keypoint_numbers(content, path)
        config.names = yolo_names(content, path)
        config.names_source = path.name if config.names is not None else None
        if path == own:
            config.root = _yaml_root(content, path)
            for key, value in content.items():
                split = canonical_split(str(key))
                entries = value if isinstance(value, list) else [value]
                entries = [str(entry) for entry in entries if entry]
                if split and entries and split not in config.splits:
                    config.splits[split] = entries
    if config.names is None:
        found = _class_file_names(folder)
        if found is not None:
            config.names, config.names_source = found[0], found[1].name
    if config.names is None and class_names:
        config.names, config.names_source = dict(enumerate(class_names)), "`class_names`"
    return config


def yolo_label_path(image: Path, root: Path) -> Path:
    """The label file of ``image``: its path under ``root`` with the last ``images`` folder read as ``labels``
    and the suffix ``.txt`` (Ultralytics' rule); next to the image when its path has no ``images`` folder."""
    parts = list(image.relative_to(root).parts) if _inside(root, image) else []
    folders = parts[:-1]
    if "images" in folders:
        folders[len(folders) - 1 - folders[::-1].index("images")] = "labels"
        return root.joinpath(*folders, parts[-1]).with_suffix(".txt")
    return image.with_suffix(".txt")


def _images_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


@dataclass
class YoloBox:
    """One label line: its number, class id and normalised ``[x, y, width, height]`` (top-left corner)."""

    line: int
    class_id: int
    box: list[float]
    polygon: bool = False
    outside: bool = False
    """A number of the box or polygon lies outside [0, 1] (kept: the common checks clip it or drop it)."""


class LabelLineError(ValueError):
    """A label line that cannot be used; ``line`` is its number (from 1)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line


def parse_yolo_label(path: Path, keypoint_numbers: int = 0) -> list[YoloBox]:
    """The boxes of one YOLO label file: ``class cx cy w h`` lines (normalised), segmentation polygons
    ``class x1 y1 x2 y2 x3 y3 …`` read as their bounding box, or with ``keypoint_numbers`` pose lines (box +
    keypoints, which are ignored). Raises :class:`LabelLineError` naming the first line it cannot use."""
    boxes = []
    for number, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        tokens = text.split()
        if not tokens:
            continue
        try:
            values = [float(token) for token in tokens]
        except ValueError as err:
            raise LabelLineError(number, f"cannot parse `{text.strip()[:80]}`: {err}") from err
        if not np.all(np.isfinite(values)):
            raise LabelLineError(number, f"non-finite number in `{text.strip()[:80]}`")
        if values[0] < 0 or values[0] != int(values[0]):
            raise LabelLineError(number, f"class id `{tokens[0]}` is not a non-negative integer")
        numbers, polygon = values[1:], False
        if keypoint_numbers:
            if len(numbers) != 4 + keypoint_numbers:
                raise LabelLineError(number, f"expected {5 + keypoint_numbers} numbers (class, cx, cy, w, h and "
                                             f"{keypoint_numbers} keypoint numbers for `kpt_shape`), "
                                             f"found {len(tokens)}")
            numbers = numbers[:4]
        elif len(numbers) >= 6 and len(numbers) % 2 == 0:
            polygon = True
        elif len(numbers) != 4:
            hint = " (class, box and a confidence: a prediction file?)" if len(tokens) == 6 else ""
            raise LabelLineError(number, f"expected 5 numbers (class cx cy w h) or a polygon (class x1 y1 x2 y2 "
                                         f"x3 y3 ...), found {len(tokens)}{hint}")
        if polygon:
            xs, ys = numbers[0::2], numbers[1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        else:
            cx, cy, w, h = numbers[:4]
            box = [cx - w / 2, cy - h / 2, w, h]
        outside = any(v < -YOLO_TOLERANCE or v > 1 + YOLO_TOLERANCE for v in numbers)
        boxes.append(YoloBox(number, int(values[0]), box, polygon, outside))
    return boxes


def _yaml_target(config: YoloConfig, entry: str) -> tuple[Path | None, str | None]:
    """A data.yaml split entry as a path under the root; ``../x`` falls back to ``x`` (Roboflow's exports)."""
    candidates = [config.root / entry] + ([config.root / entry[3:]] if entry.startswith("../") else [])
    for candidate in candidates:
        if _inside(config.root, candidate) and candidate.exists():
            return Path(os.path.abspath(candidate)), None
    if any(candidate.exists() for candidate in candidates):
        return None, f"split path `{entry}` points outside the data root {config.root}"
    return None, f"split path `{entry}` was not found under {config.root}"


def _image_list(path: Path, root: Path, problems: list[BadFile]) -> list[Path]:
    """An Ultralytics image list (one path per line, relative to the list file)."""
    images: list[Path] = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problems.append(BadFile(str(path), f"cannot read the image list: {err}"))
        return images
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry:
            continue
        candidate = Path(os.path.abspath(path.parent / entry.removeprefix("./")))
        if not _inside(root, candidate):
            problems.append(BadFile(f"{path}:{number}", f"image path `{entry}` points outside the data root {root}"))
        elif not candidate.is_file():
            problems.append(BadFile(f"{path}:{number}", f"image `{entry}` was not found"))
        else:
            images.append(candidate)
    return images


def _yolo_sources(config: YoloConfig, problems: list[BadFile]) -> dict[str, tuple[list[Path], list[Path]]]:
    """Per split: its images and the image folders whose ``labels`` twins are checked for orphan labels."""
    sources: dict[str, tuple[list[Path], list[Path]]] = {}
    if config.splits:
        for split, entries in config.splits.items():
            images, folders = [], []
            for entry in entries:
                target, reason = _yaml_target(config, entry)
                if target is None:
                    problems.append(BadFile(str(config.yaml_file), f"`{split}`: {reason}"))
                elif target.is_dir():
                    images += _images_under(target)
                    folders.append(target)
                elif target.suffix.lower() == ".txt":
                    images += _image_list(target, config.root, problems)
                else:
                    problems.append(BadFile(str(config.yaml_file),
                                            f"`{split}: {entry}` is neither a folder nor a .txt list of images"))
            sources[split] = (images, folders)
        return sources
    root = config.root
    if (root / "images").is_dir():
        found = {}
        for child in sorted(p for p in (root / "images").iterdir() if p.is_dir()):
            split = canonical_split(child.name)
            if split and split not in found:
                found[split] = child
        folders = found or {"train": root / "images"}
    else:
        folders = {}
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            split = canonical_split(child.name)
            if split and split not in folders and (child / "images").is_dir():
                folders[split] = child / "images"
    return {split: (_images_under(folder), [folder]) for split, folder in folders.items()}


def _orphan_labels(folders: list[Path], root: Path, used: set[Path]) -> list[BadFile]:
    """Label files in the ``labels`` twins of ``folders`` that no image of the split uses."""
    orphans = []
    for folder in folders:
        labels = yolo_label_path(folder / "x", root).parent
        if labels == folder or not labels.is_dir():
            continue  # labels beside the images: other .txt files may live there
        for label in sorted(labels.rglob("*.txt")):
            if label not in used and label.name not in YOLO_CLASS_FILES:
                orphans.append(BadFile(str(label), f"label file without an image: no {label.stem}.<image extension> "
                                                   f"in {folder / label.parent.relative_to(labels)}"))
    return orphans


def _yolo_entries(label: Path, config: YoloConfig) -> list[YoloBox]:
    """:func:`parse_yolo_label`, with class ids checked against the names (:class:`LabelLineError` otherwise)."""
    entries = parse_yolo_label(label, config.keypoint_numbers)
    names = config.names
    unknown = next((entry for entry in entries if names is not None and entry.class_id not in names), None)
    if unknown is not None and names is not None:
        known = ", ".join(f"{k}: {v}" for k, v in list(names.items())[:10]) + (", ..." if len(names) > 10 else "")
        raise LabelLineError(unknown.line, f"class id {unknown.class_id} is not in the names of "
                                           f"{config.names_source} ({known})")
    return entries


def read_yolo(folder: Path, class_names: list[str] | None = None) -> ReadResult:
    """YOLO txt labels (Ultralytics, Roboflow, CVAT, Label Studio exports): ``images/`` + ``labels/*.txt``, split
    folders (``images/train`` + ``labels/train`` or ``train/images`` + ``train/labels``) or the split paths of a
    data.yaml; class names from data.yaml ``names`` (list or id → name), ``classes.txt`` or ``class_names``.

    Each label line becomes a box in absolute pixels of the upright image (its size read from the header). A line
    that does not parse or names a class id outside ``names`` makes the image's label file a problem (named with
    its line, the image skipped); a label file without an image is a problem too; an image without a label file is
    a negative. Numbers outside [0, 1] are logged by line and kept: :func:`check_split` clips or drops the box.
    """

    config = yolo_config(Path(os.path.abspath(folder)), class_names)
    result = ReadResult(splits={})
    if config.names is not None and config.names_source != "`class_names`":
        result.declared_names = list(config.names.values())
    if config.names is None:
        logger.warning("%s: no class names (data.yaml `names`, classes.txt or `class_names`): classes are named by "
                       "their ids.", folder)
    outside: list[str] = []
    image_id = 0
    for split, (images, folders) in _yolo_sources(config, result.problems).items():
        rows = result.splits.setdefault(split, [])
        used: set[Path] = set()
        for image in images:
            label = yolo_label_path(image, config.root)
            entries: list[YoloBox] = []
            if label.is_file():
                used.add(label)
                try:
                    entries = _yolo_entries(label, config)
                except LabelLineError as err:
                    result.problems.append(BadFile(f"{label}:{err.line}", str(err)))
                    continue
                except (OSError, UnicodeDecodeError) as err:
                    result.problems.append(BadFile(str(label), f"cannot read the label file: {err}"))
                    continue
            else:
                result.counts["yolo_images_without_label_file"] += 1
            try:
                width, height = upright_size({"path": str(image), "bytes": None})
            except (OSError, KeyError, TypeError, ValueError) as err:
                # no boxes: check_split reports the unreadable image (by the same reading) and skips it
                logger.debug("Cannot read the header of %s: %s", image, err)
                width, height, entries = None, None, []
            boxes, names = [], []
            for entry in entries:
                x, y, w, h = entry.box
                boxes.append([x * width, y * height, w * width, h * height])
                names.append(config.names[entry.class_id] if config.names is not None else str(entry.class_id))
                if entry.polygon:
                    result.counts["yolo_polygons_as_boxes"] += 1
                if entry.outside:
                    outside.append(f"{label}:{entry.line}")
            source = label if label in used else image
            rows.append(_row(image.resolve(), image_id, width, height, boxes, names, source))
            image_id += 1
        result.problems += _orphan_labels(folders, config.root, used)
        if images and not used:
            logger.warning("None of the %d %s images of %s has a label file (%s for %s): all are negatives.",
                           len(images), split, folder, yolo_label_path(images[0], config.root), images[0].name)
    if outside:
        result.counts["yolo_lines_outside_0_1"] += len(outside)
        listing = ", ".join(outside[:10]) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
        logger.warning("YOLO label lines with numbers outside [0, 1] (not normalised? their boxes are clipped to the "
                       "image or dropped by the box checks): %s", listing)
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


def upright_size(record: Any) -> tuple[int, int]:
    """``(width, height)`` of an image record after EXIF orientation, reading the header only (an image over the
    pixel cap raises :class:`recipes.decode.images.ImageTooLargeError`, a ``ValueError`` naming the file)."""
    with open_header(record) as image:
        width, height = oriented_size(image)
    return int(width), int(height)
