"""Image classification from a stream: class names known up front, label checks for the streamed training records;
the evaluation splits (:func:`recipes.data.streaming.splits.stream_splits`) are image folders or taken from the
stream."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, IterableDataset

from recipes.config import RecipeError
from recipes.data.sources import drop_bad_images, undecoded
from recipes.data.streaming.splits import stream_splits, training_stream
from recipes.tasks.base import TaskData
from recipes.tasks.classification.data import ClassificationDataArguments, class_folder_splits

logger = logging.getLogger("recipes")


def stream_class_names(stream: IterableDataset, column: str, class_names: list[str]) -> list[str]:
    """The class names of a streamed split: its ``ClassLabel`` feature's, else ``class_names``."""
    features = stream.features or {}
    if stream.column_names is not None and column not in stream.column_names:
        raise RecipeError(
            f"Column `{column}` (set by `label_column_name`) not found in the stream. Available columns: "
            f"{stream.column_names}. Set `--label_column_name` to one of them."
        )
    feature = features.get(column)
    if isinstance(feature, ClassLabel):
        if class_names and list(class_names) != list(feature.names):
            raise RecipeError(
                f"`class_names` {class_names} differ from the stream's ClassLabel names {feature.names}; "
                "leave `class_names` unset to use the dataset's."
            )
        return list(feature.names)
    if class_names:
        return list(class_names)
    raise RecipeError(
        f"The stream's label column `{column}` has no class names (feature: {feature or 'unknown'}), and a stream "
        "cannot be scanned for them before training. Set --class_names with every class in label-id order "
        "(e.g. --class_names cat dog), or store the labels as a ClassLabel feature."
    )


def check_stream_label(record: dict[str, Any], *, column: str, index: dict[str, int]) -> str | None:
    """A streamed record's label as a class id (names are converted in place), or why it is unusable."""
    value = record.get(column)
    if isinstance(value, str) and value in index:
        record[column] = index[value]
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(index):
        return None
    return f"label {value!r} is not one of the {len(index)} classes (ids 0..{len(index) - 1} or their names)"


def encode_labels(dataset: Dataset, column: str, names: list[str], where: str) -> Dataset:
    """``column`` as a ``ClassLabel`` of ``names`` (by name when the split names its classes otherwise)."""
    index = {name: i for i, name in enumerate(names)}
    feature = dataset.features.get(column)
    if isinstance(feature, ClassLabel) and list(feature.names) == names:
        return dataset
    own = feature.names if isinstance(feature, ClassLabel) else None
    values = dataset.unique(column)
    as_names = [own[v] if own is not None else v for v in values]
    unknown = sorted({str(v) for v in as_names if (str(v) not in index if isinstance(v, str) else
                                                   not 0 <= int(v) < len(names))})
    if unknown:
        raise RecipeError(f"{where} has labels that are not training classes: {unknown[:10]} (classes: {names}).")

    def convert(batch: dict[str, list]) -> dict[str, list]:
        labels = [own[v] if own is not None else v for v in batch[column]]
        return {column: [index[v] if isinstance(v, str) else int(v) for v in labels]}

    features = dataset.features.copy()
    features[column] = ClassLabel(names=names)
    return dataset.map(convert, batched=True, features=features, desc=f"Encoding the {where} labels")


def load_streaming_classification(data_args: ClassificationDataArguments, seed: int,
                                  cache_dir: str | None = None) -> TaskData:
    """Streamed training split (an ``IterableDataset``, undecoded) and map-style evaluation splits."""
    image_column, label_column = data_args.image_column_name, data_args.label_column_name
    streams, train_name = training_stream(data_args, {"image_column_name": image_column}, cache_dir)
    names = stream_class_names(streams[train_name], label_column, data_args.class_names)
    splits = stream_splits(
        streams, train_name, data_args, file_columns=[image_column],
        read_folder=lambda split, folder: class_folder_splits(
            {split: folder}, image_column, label_column, strict=data_args.strict)[split],
    )
    summary = splits.summary
    checked = {}
    for split, dataset in (("validation", splits.validation), ("test", splits.test)):
        if dataset is None:
            continue
        dataset = encode_labels(undecoded(dataset, image_column), label_column, names, f"{split} split")
        if data_args.check_images:
            dataset, bad = drop_bad_images(dataset, image_column, split, data_args.strict,
                                           data_args.preprocessing_num_workers)
            summary["skipped_files"] += [{"split": split, "path": b.path, "reason": b.reason} for b in bad]
        counts = np.bincount(np.asarray(dataset[label_column], dtype=np.int64), minlength=len(names))
        summary[f"{split}_examples"] = len(dataset)
        summary[f"{split}_per_class"] = {names[i]: int(c) for i, c in enumerate(counts)}
        checked[split] = dataset
    return TaskData(train=splits.train, validation=checked["validation"], test=checked.get("test"),
                    id2label=dict(enumerate(names)), dataset_id=data_args.dataset_name, summary=summary)


def label_check(
    data_args: ClassificationDataArguments, id2label: dict[int, str]
) -> Callable[[dict[str, Any]], str | None]:
    """The per-record check of streamed training records (see :func:`check_stream_label`)."""
    index = {name: i for i, name in id2label.items()}
    return partial(check_stream_label, column=data_args.label_column_name, index=index)
