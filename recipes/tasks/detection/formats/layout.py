"""Which layout a detection folder has (``format: auto`` detects it; the names and aliases a recipe may give), its
split subfolders, and the one entry point that reads a folder with the right reader."""

from __future__ import annotations

from pathlib import Path

from recipes.config import RecipeError
from recipes.data.splits import canonical_split
from recipes.tasks.detection.formats.coco import _coco_files, read_coco
from recipes.tasks.detection.formats.common import ReadResult
from recipes.tasks.detection.formats.imagefolder import read_imagefolder
from recipes.tasks.detection.formats.voc import _voc_files, read_voc
from recipes.tasks.detection.formats.yolo import read_yolo
from recipes.tasks.detection.formats.yolo_config import _looks_like_yolo

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
