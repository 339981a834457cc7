"""Object detection from a stream: category names known up front, the box checks of the map-style path done per
training record as it is read; the evaluation splits (:func:`recipes.data.streaming.splits.stream_splits`) are
local folders or taken from the stream, and checked like map-style splits.

A streamed record has an image and HF-convention ``objects`` (``bbox`` in COCO ``xywh`` pixels, ``category``: ids
of the ``ClassLabel`` or names), the layout ``dataset_name`` datasets have. As in the map-style checks, boxes are
clipped to the image, and zero-area, outside and unknown-category boxes are dropped, all counted (the report's
``record_checks``); a record whose image cannot be read or whose ``objects`` are malformed is skipped and listed
(``strict``: the run stops there). webdataset shards hold ``KEY.jpg`` + ``KEY.json`` with the objects
(``image_column_name: jpg``, ``objects_column_name: json``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset, IterableDataset

from recipes.config import RecipeError
from recipes.data.check_cache import CheckCache
from recipes.data.streaming.progress import RECORD_COUNTS
from recipes.data.streaming.splits import stream_splits, training_stream
from recipes.tasks.base import TaskData
from recipes.tasks.detection.checks import clean_boxes, objects_as_lists
from recipes.tasks.detection.data import (
    DetectionDataArguments,
    canonical_columns,
    check_splits,
    classlabel_names,
    single_split,
)
from recipes.tasks.detection.formats.common import rows_to_dataset, upright_size
from recipes.tasks.detection.formats.layout import read_detection_folder

logger = logging.getLogger("recipes")


def stream_category_names(
    stream: IterableDataset, column: str, class_names: list[str] | None
) -> tuple[list[str], list[str] | None]:
    """``(class names, names of the records' category ids)``: the names the model learns are ``class_names`` when
    set (with a ``ClassLabel``, boxes of its other categories are dropped, as in the map-style path), else the
    ``ClassLabel``'s; integer categories without a ``ClassLabel`` are indices into ``class_names``."""
    source = classlabel_names((stream.features or {}).get(column))
    names = list(class_names or source or [])
    if not names:
        raise RecipeError(
            f"The stream's `{column}` column has no category names (its `category` is not a ClassLabel), and a "
            "stream cannot be scanned for them before training. Set --class_names with every category in "
            "label-id order (e.g. --class_names car plate), or store the categories as a ClassLabel feature."
        )
    return names, source or names


def _malformed(boxes: list[Any], categories: list[Any]) -> str | None:
    if len(boxes) != len(categories):
        return f"{len(boxes)} bbox(es) but {len(categories)} categories"
    for box in boxes:
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            return f"bbox {box!r} is not 4 numbers (COCO x, y, width, height)"
    for category in categories:
        if not isinstance(category, (int, str)) or isinstance(category, bool):
            return f"category {category!r} is neither a class id nor a name"
    return None


def check_stream_record(
    record: dict[str, Any], *, image_column: str, objects_column: str, source_names: list[str] | None,
    label2id: dict[str, int],
) -> str | None:
    """Why a streamed record is unusable, or None after rewriting it in place into the training schema
    (``image``, ``image_id``, cleaned ``objects`` with class ids), with what was fixed under ``RECORD_COUNTS``."""
    image = record.get(image_column)
    try:
        width, height = upright_size(image)
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as err:
        return f"cannot read the image: {err}"
    try:
        boxes, categories = objects_as_lists(record.get(objects_column))
    except (KeyError, TypeError, AttributeError) as err:
        return f"malformed `{objects_column}` (needs bbox and category lists): {err!r}"
    problem = _malformed(boxes, categories)
    if problem is not None:
        return f"malformed `{objects_column}`: {problem}"
    kept, labels, counts = clean_boxes(boxes, categories, width, height, source_names, label2id)
    declared = record.get("width"), record.get("height")
    if all(isinstance(v, int) and v > 0 for v in declared) and declared != (width, height):
        counts["size_mismatches"] += 1
    image_id = record.get("image_id")
    record["image"] = image
    record["image_id"] = int(image_id) if isinstance(image_id, int) and not isinstance(image_id, bool) else 0
    record["objects"] = {"bbox": kept, "category": labels, "area": [b[2] * b[3] for b in kept]}
    record[RECORD_COUNTS] = Counter({key: value for key, value in counts.items() if value})
    return None


def _folder_split(split: str, folder: Path, data_args: DetectionDataArguments,
                  problems: list[dict[str, str]]) -> Dataset:
    """A local evaluation folder (VOC, COCO or image folder + metadata.jsonl), as the map-style path reads it."""
    result = read_detection_folder(folder, data_args.dataset_format, data_args.class_names)
    for problem in result.problems:
        logger.warning("Skipping %s: %s", problem.path, problem.reason)
        problems.append({"split": split, "path": problem.path, "reason": problem.reason})
    rows = single_split(result, split, folder)
    if not rows:
        raise RecipeError(f"No usable images in {folder} (`{split}_dir`).")
    return rows_to_dataset(rows)


def load_streaming_detection(data_args: DetectionDataArguments, seed: int, cache_dir: str | None = None) -> TaskData:
    """Streamed training split (undecoded, checked per record as it is read) and checked map-style evaluation
    splits."""
    image_column, objects_column = data_args.image_column_name, data_args.objects_column_name
    streams, train_name = training_stream(
        data_args, {"image_column_name": image_column, "objects_column_name": objects_column}, cache_dir
    )
    names, source_names = stream_category_names(streams[train_name], objects_column, data_args.class_names)
    problems: list[dict[str, str]] = []
    splits = stream_splits(streams, train_name, data_args, file_columns=[image_column],
                           read_folder=partial(_folder_split, data_args=data_args, problems=problems))
    evaluation = {}
    for split, dataset in (("validation", splits.validation), ("test", splits.test)):
        if dataset is not None and objects_column in dataset.column_names:  # from the stream, not a local folder
            dataset = canonical_columns(dataset, image_column, objects_column)
        evaluation[split] = dataset
    summary = {**splits.summary, "class_names": names, "checks": {}}
    summary["skipped_files"] += problems
    cache = CheckCache.from_args(data_args, cache_dir)
    checked = check_splits(evaluation, names, source_names, data_args, summary, cache)
    summary["check_cache"] = cache.summary()
    return TaskData(train=splits.train, validation=checked["validation"], test=checked.get("test"),
                    id2label=dict(enumerate(names)), dataset_id=data_args.dataset_name, summary=summary)


def record_check(data_args: DetectionDataArguments, data: TaskData) -> Callable[[dict[str, Any]], str | None]:
    """The per-record check of the training stream ``data.train`` (see :func:`check_stream_record`)."""
    _, source_names = stream_category_names(data.train, data_args.objects_column_name, data_args.class_names)
    return partial(check_stream_record, image_column=data_args.image_column_name,
                   objects_column=data_args.objects_column_name, source_names=source_names,
                   label2id={name: i for i, name in data.id2label.items()})
