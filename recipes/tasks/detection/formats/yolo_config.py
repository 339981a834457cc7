"""A YOLO dataset's configuration: ``data.yaml`` (class names, split folders or image lists, keypoints) or a
``classes.txt`` / ``obj.names`` class list; whether a folder looks like a YOLO dataset."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recipes.config import RecipeError
from recipes.data.splits import canonical_split

logger = logging.getLogger("recipes")


YOLO_YAML_FILES = ("data.yaml", "data.yml")


YOLO_CLASS_FILES = ("classes.txt", "obj.names")


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
