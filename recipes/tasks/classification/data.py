"""Image-classification data: Hub datasets, image folders and CSV/JSONL listings, with class labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Image, load_dataset

from recipes.config import DataArguments, RecipeError
from recipes.data import (
    canonical_split,
    load_hub_splits,
    local_path,
    require_columns,
)

logger = logging.getLogger("recipes")



@dataclass
class ClassificationDataArguments(DataArguments):
    """Data keys of the image-classification task."""

    label_column_name: str = field(default="label", metadata={"help": "Column holding the class labels."})
    cache_decoded_images: bool = field(
        default=False,
        metadata={
            "help": "Decode each training image once into the datasets cache (raw RGB, lossless) so epochs "
            "skip JPEG decoding. Costs H*W*3 bytes of disk per image."
        },
    )


# --------------------------------------------------------------------------- data


def load_classification_splits(data_args: ClassificationDataArguments, cache_dir: str | None) -> dict[str, Dataset]:
    """Splits from a Hub id, an image folder (``root/<class>/*``) or CSV/JSONL listings."""
    if data_args.dataset_name:
        return load_hub_splits(data_args, cache_dir)
    if data_args.train_file:
        return _load_listing_files(data_args)
    train_dir = local_path(data_args.train_dir, "train_dir")
    if train_dir is not None and not train_dir.is_dir():
        raise RecipeError(f"`train_dir` must be a folder of class folders, got the file {train_dir}.")
    if train_dir is None:
        raise RecipeError(
            "No data: set `dataset_name` (Hub id), `train_dir` (image folder) or `train_file` (CSV/JSONL)."
        )
    subdirs = {p.name for p in train_dir.iterdir() if p.is_dir()}
    if "train" in subdirs and all(canonical_split(name) for name in subdirs):
        splits = _imagefolder(data_dir=str(train_dir))
    else:
        data_files = {"train": str(train_dir / "**")}
        for split, value in (("validation", data_args.validation_dir), ("test", data_args.test_dir)):
            folder = local_path(value, f"{split}_dir")
            if folder is not None:
                data_files[split] = str(folder / "**")
        splits = _imagefolder(data_files=data_files)
    return splits


def _imagefolder(**kwargs: Any) -> dict[str, Dataset]:
    where = kwargs.get("data_dir") or kwargs.get("data_files")
    try:
        loaded = load_dataset("imagefolder", **kwargs)
    except Exception as err:
        raise RecipeError(
            f"Could not read an image folder from {where}: {err}. Expected root/<class_name>/<image>.jpg "
            "(optionally inside train/, validation/ and test/ folders)."
        ) from err
    splits = dict(loaded)
    if "label" not in splits["train"].column_names:
        raise RecipeError(
            f"No class folders found in {where}: put each class's images in its own folder (root/<class>/img.jpg)."
        )
    return splits


def _load_listing_files(data_args: ClassificationDataArguments) -> dict[str, Dataset]:
    files = {
        split: local_path(value, f"{split}_file")
        for split, value in (
            ("train", data_args.train_file),
            ("validation", data_args.validation_file),
            ("test", data_args.test_file),
        )
        if value
    }
    splits = {}
    for split, path in files.items():
        builders = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
        builder = builders.get(path.suffix.lower())
        if builder is None:
            raise RecipeError(f"{path}: listing files must be .csv, .tsv, .json or .jsonl.")
        extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            dataset = load_dataset(builder, data_files=str(path), split="train", **extra)
        except Exception as err:
            raise RecipeError(f"Cannot read the listing {path}: {err}") from err
        column = data_args.image_column_name
        require_columns(dataset, {"image_column_name": column}, str(path))
        empty = [i + 2 for i, value in enumerate(dataset[column]) if not value]
        if empty:
            raise RecipeError(f"{path}: empty `{column}` on line(s) {empty[:10]}; every row needs an image path.")
        dataset = dataset.map(partial(_resolve_path, column=column, base=path.parent))
        splits[split] = dataset.cast_column(column, Image(decode=False))
    return splits


def _resolve_path(row: dict[str, Any], *, column: str, base: Path) -> dict[str, str]:
    """Make a listing's relative image path absolute (relative to the listing file)."""
    return {column: str(base / row[column])}


def ensure_class_labels(splits: dict[str, Dataset], column: str) -> dict[str, Dataset]:
    """Make ``column`` a ``ClassLabel`` in every split (string labels are encoded, names shared)."""
    train = splits["train"]
    feature = train.features[column]
    if isinstance(feature, ClassLabel):
        return splits
    values = set()
    for dataset in splits.values():
        values.update(dataset.unique(column))
    names = sorted(str(v) for v in values)
    if all(isinstance(v, (int, np.integer)) for v in values):
        names = [str(i) for i in range(int(max(values)) + 1)]
    class_label = ClassLabel(names=names)
    encoded = {}
    for split, dataset in splits.items():
        if isinstance(next(iter(values)), str):
            dataset = dataset.map(lambda row: {column: class_label.str2int(str(row[column]))})
        encoded[split] = dataset.cast_column(column, class_label)
    return encoded


