"""Object-detection data: load (local folders or the Hub), split and check into :class:`TaskData`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset

from recipes.config import DataArguments, RecipeError
from recipes.data.check_cache import CheckCache
from recipes.data.sources import drop_bad_images, load_hub_splits, local_path, require_columns, undecoded
from recipes.data.splits import pick_splits
from recipes.decode.images import BadFile
from recipes.tasks.base import TaskData
from recipes.tasks.detection.checks import check_split, objects_as_lists, raise_strict, split_statistics
from recipes.tasks.detection.formats.common import ReadResult, rows_to_dataset, sorted_names
from recipes.tasks.detection.formats.layout import read_detection_folder, split_subfolders

logger = logging.getLogger("recipes")


@dataclass
class DetectionDataArguments(DataArguments):
    """Data keys of the object-detection task."""

    class_names: list[str] | None = field(
        default=None,
        metadata={"help": "Class names in label-id order; default: from the data. Boxes of other classes are dropped."},
    )
    objects_column_name: str = field(
        default="objects", metadata={"help": "Column of Hub datasets holding {bbox (COCO xywh), category}."}
    )
    dataset_format: str = field(
        default="auto",
        metadata={"help": "Layout of train_dir/validation_dir/test_dir: auto, voc, coco, imagefolder or yolo."},
    )
    multi_scale: list[float] | None = field(
        default=None,
        metadata={"help": "Multi-scale training for an image processor of fixed height x width (RT-DETR, D-FINE): "
                  "each training batch is resized to one size drawn from these fractions of it (rounded to "
                  "multiples of 32), e.g. [0.8, 0.9, 1.0, 1.1, 1.2]; evaluation stays at the processor's size."},
    )


# --------------------------------------------------------------------------- data


@dataclass
class LoadedSplits:
    """Splits before the box checks, with what the readers reported."""

    splits: dict[str, Dataset]
    class_names: list[str]
    source_names: list[str] | None = None
    problems: list[dict[str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def classlabel_names(feature: Any) -> list[str] | None:
    """Names of the ``ClassLabel`` nested in an ``objects`` feature (dict of lists or list of dicts)."""
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(feature, dict):
        for key in ("category", "categories"):
            if key in feature:
                return classlabel_names(feature[key])
        return None
    inner = getattr(feature, "feature", None)
    return classlabel_names(inner) if inner is not None else None


def _found_names(datasets: Sequence[Dataset]) -> list[str]:
    """Class names used in ``objects.category`` (strings, or integers named by their value)."""
    names: set[str] = set()
    for dataset in datasets:
        for objects in dataset["objects"]:
            _, categories = objects_as_lists(objects)
            names.update(c if isinstance(c, str) else str(int(c)) for c in categories if c is not None)
    return sorted_names(names)


def canonical_columns(dataset: Dataset, image_column: str, objects_column: str) -> Dataset:
    """A Hub split with its image and objects columns named ``image`` and ``objects`` (image undecoded)."""
    for column, canonical in ((image_column, "image"), (objects_column, "objects")):
        if column != canonical:
            if canonical in dataset.column_names:
                dataset = dataset.remove_columns(canonical)
            dataset = dataset.rename_column(column, canonical)
    return undecoded(dataset, "image")


def _load_hub(data_args: DetectionDataArguments, cache_dir: str | None) -> LoadedSplits:
    splits = load_hub_splits(data_args, cache_dir)
    image_column, objects_column = data_args.image_column_name, data_args.objects_column_name
    prepared = {}
    for split, dataset in splits.items():
        require_columns(
            dataset,
            {"image_column_name": image_column, "objects_column_name": objects_column},
            f"the {split} split of {data_args.dataset_name}",
        )
        prepared[split] = canonical_columns(dataset, image_column, objects_column)
    source_names = classlabel_names(next(iter(prepared.values())).features["objects"])
    class_names = data_args.class_names or source_names or _found_names(list(prepared.values()))
    return LoadedSplits(prepared, class_names, source_names=source_names)


def single_split(result: ReadResult, wanted: str, folder: Path) -> list[dict[str, Any]]:
    if wanted in result.splits:
        return result.splits[wanted]
    if len(result.splits) == 1:
        return next(iter(result.splits.values()))
    raise RecipeError(
        f"{folder} holds several splits ({', '.join(result.splits)}); point `{wanted}_dir` at a folder with one split."
    )


def _load_local(data_args: DetectionDataArguments, with_train: bool = True) -> LoadedSplits:
    train_dir = local_path(data_args.train_dir, "train_dir")
    if train_dir is None and (with_train or not (data_args.validation_dir or data_args.test_dir)):
        raise RecipeError(
            "No data: set `dataset_name` (a Hub detection dataset) or `train_dir` (a Pascal VOC, COCO, YOLO or "
            "image-folder + metadata.jsonl folder)."
        )
    if train_dir is not None and not train_dir.is_dir():
        raise RecipeError(f"`train_dir` must be a folder, got the file {train_dir}.")
    results: list[tuple[str, ReadResult]] = []
    rows: dict[str, list[dict[str, Any]]] = {}
    subfolders = split_subfolders(train_dir) if train_dir is not None else {}
    if train_dir is None:
        pass  # evaluation data only: the folders below
    elif subfolders:
        for split, folder in subfolders.items():
            result = read_detection_folder(folder, data_args.dataset_format, data_args.class_names)
            rows[split] = single_split(result, split, folder)
            results.append((f"{split} ({folder.name}/)", result))
    else:
        result = read_detection_folder(train_dir, data_args.dataset_format, data_args.class_names)
        rows.update(result.splits)
        results.append(("train_dir", result))
    for split, value in (("validation", data_args.validation_dir), ("test", data_args.test_dir)):
        folder = local_path(value, f"{split}_dir")
        if folder is not None:
            result = read_detection_folder(folder, data_args.dataset_format, data_args.class_names)
            rows[split] = single_split(result, split, folder)
            results.append((f"{split}_dir", result))
    problems = [{"split": where, "path": p.path, "reason": p.reason} for where, r in results for p in r.problems]
    if problems and data_args.strict:
        raise_strict([BadFile(p["path"], p["reason"]) for p in problems], "local")
    for problem in problems:
        logger.warning("Skipping %s: %s", problem["path"], problem["reason"])
    counts: Counter = Counter()
    for _, result in results:
        counts.update(result.counts)
    declared = next((r.declared_names for _, r in results if r.declared_names), None)
    found = sorted_names(c for split_rows in rows.values() for row in split_rows for c in row["objects"]["category"])
    class_names = data_args.class_names or (
        declared + [n for n in found if n not in declared] if declared else found
    )
    if not any(rows.values()):
        where = train_dir or data_args.validation_dir or data_args.test_dir
        raise RecipeError(
            f"No usable images in {where}: every annotation file was skipped "
            f"({len(problems)} problem(s), see the warnings above)."
        )
    splits = {split: rows_to_dataset(split_rows) for split, split_rows in rows.items() if split_rows}
    return LoadedSplits(splits, class_names, problems=problems, counts=counts)


def check_splits(
    splits: dict[str, Dataset | None], class_names: list[str], source_names: list[str] | None,
    data_args: DetectionDataArguments, summary: dict[str, Any], cache: CheckCache,
) -> dict[str, Dataset]:
    """Box and image checks of each split (:func:`check_split`), reported into ``summary``; the usable splits."""
    checked: dict[str, Dataset] = {}
    for split, dataset in splits.items():
        if dataset is None:
            continue
        dataset, report = check_split(
            dataset, class_names, split, source_names=source_names, strict=data_args.strict,
            cache=cache,
        )
        for bad_file in report.skipped:
            logger.warning("Skipping %s: %s", bad_file.path, bad_file.reason)
        skipped = [{"split": split, "path": b.path, "reason": b.reason} for b in report.skipped]
        if data_args.check_images:  # full decode; drop_bad_images logs what it skips
            dataset, bad = drop_bad_images(dataset, "image", split, data_args.strict, cache=cache)
            skipped += [{"split": split, "path": b.path, "reason": b.reason} for b in bad]
        for mismatch in report.size_mismatches[:10]:
            logger.warning("Size mismatch in %s", mismatch)
        if len(report.size_mismatches) > 10:
            logger.warning("... %d more size mismatches (see run_manifest.json)", len(report.size_mismatches) - 10)
        fixes = {k: v for k, v in report.counts.items() if v}
        if fixes:
            logger.warning("Box checks on the %s split: %s", split, fixes)
        summary["skipped_files"] += skipped
        summary["checks"][split] = {**dict(report.counts), "size_mismatches": report.size_mismatches}
        if len(dataset) == 0:
            raise RecipeError(f"The {split} split has no usable images left after the data checks.")
        if split == "train" and report.counts.get("unknown_class_boxes") and not any(
            len(objects["bbox"]) for objects in dataset["objects"]
        ):
            raise RecipeError(
                f"None of the training boxes belongs to `class_names` {class_names}: all "
                f"{report.counts['unknown_class_boxes']} were dropped. Set `class_names` to the data's classes "
                "(e.g. --class_names car person) or remove it to take them from the data."
            )
        checked[split] = dataset
    for split, dataset in checked.items():
        summary[f"{split}_examples"] = len(dataset)
        summary[f"{split}_statistics"] = split_statistics(dataset, class_names)
    return checked


def load_detection_data(
    data_args: DetectionDataArguments, seed: int, cache_dir: str | None = None, with_train: bool = True
) -> TaskData:
    """Read, split and check detection data into :class:`TaskData` (summary included; without ``with_train`` the
    evaluation splits only)."""
    loaded = _load_hub(data_args, cache_dir) if data_args.dataset_name else _load_local(data_args, with_train)
    if not loaded.class_names:
        raise RecipeError("The data has no labelled boxes and no `class_names` were given: nothing to learn.")
    train, validation, test = pick_splits(loaded.splits, data_args, seed, with_train=with_train)
    summary: dict[str, Any] = {
        "class_names": loaded.class_names,
        "skipped_files": list(loaded.problems),
        "reader_counts": dict(loaded.counts),
        "checks": {},
    }
    cache = CheckCache.from_args(data_args, cache_dir)
    checked = check_splits({"train": train, "validation": validation, "test": test}, loaded.class_names,
                           loaded.source_names, data_args, summary, cache)
    summary["check_cache"] = cache.summary()
    return TaskData(
        train=checked.get("train"),
        validation=checked["validation"],
        test=checked.get("test"),
        id2label=dict(enumerate(loaded.class_names)),
        dataset_id=data_args.dataset_name,
        summary=summary,
    )




def translate_categories(batch: dict[str, list], *, mapping: dict[int, int]) -> dict[str, list]:
    """``Dataset.map`` function (batched): every box's category id through ``mapping``."""
    return {"objects": [{**objects, "category": [mapping[int(c)] for c in objects["category"]]}
                        for objects in batch["objects"]]}
