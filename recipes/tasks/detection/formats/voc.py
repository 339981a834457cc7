"""Pascal VOC: ``images/`` + ``annotations/*.xml`` (the Kaggle car-plates layout) or ``JPEGImages/`` + ``Annotations/``
[+ ``ImageSets/Main/<split>.txt``]."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from recipes.data.splits import canonical_split
from recipes.decode.images import BadFile
from recipes.tasks.detection.formats.common import ReadResult, _int_or_none, _locate_image, _row


def _annotation_dir(folder: Path) -> Path | None:
    for name in ("Annotations", "annotations"):
        if (folder / name).is_dir():
            return folder / name
    return None


def _voc_files(folder: Path) -> list[Path]:
    where = _annotation_dir(folder) or folder
    return sorted(p for p in where.glob("*.xml") if p.is_file())


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
