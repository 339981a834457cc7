"""YOLO txt labels: ``images/`` + ``labels/*.txt``, ``images/<split>/`` + ``labels/<split>/`` or ``<split>/images/`` +
``<split>/labels/`` (configuration: :mod:`recipes.tasks.detection.formats.yolo_config`). Its boxes are fractions of
the image size, so this reader reads each image's header itself."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recipes.data.splits import canonical_split
from recipes.decode.images import IMAGE_EXTENSIONS, BadFile
from recipes.tasks.detection.formats.common import ReadResult, _inside, _row, upright_size
from recipes.tasks.detection.formats.yolo_config import YOLO_CLASS_FILES, YoloConfig, yolo_config

logger = logging.getLogger("recipes")


YOLO_TOLERANCE = 1e-6
"""How far a label number may stray outside [0, 1] (exporters' rounding) before its line is reported."""


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
