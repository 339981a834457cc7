"""Data loading shared by all tasks: Hub datasets, split selection, image checks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Image, load_dataset
from datasets.arrow_dataset import stratified_shuffle_split_generate_indices

from recipes.check_cache import CheckCache, arrow_column, column_values
from recipes.config import DataArguments, RecipeError
from recipes.images import BadFile, check_image_record, record_path

logger = logging.getLogger("recipes")

SPLIT_ALIASES = {
    "train": ("train", "training", "trainval"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}
"""Split names as datasets and folders spell them, in order of preference, under their canonical name."""


def canonical_split(name: str) -> str | None:
    """``train``, ``validation`` or ``test`` for a split or folder name such as ``val`` or ``Training``."""
    lowered = name.lower()
    return next((split for split, aliases in SPLIT_ALIASES.items() if lowered in aliases), None)


def load_hub_splits(data_args: DataArguments, cache_dir: str | None = None) -> dict[str, Dataset]:
    """Load a Hub dataset (``dataset_name``/``dataset_config_name``), honouring split slicing."""
    name, config = data_args.dataset_name, data_args.dataset_config_name
    try:
        loaded = load_dataset(name, config, cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types; the user needs the id and the fix
        raise RecipeError(
            f"Could not load dataset `{name}`{f' ({config})' if config else ''}: {err}. "
            "Check the id and your network/HF_TOKEN, or use --train_dir for a local folder."
        ) from err
    splits = dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}
    for key in ("train_split", "validation_split", "test_split"):
        spec = getattr(data_args, key)
        if spec and "[" in spec:  # slicing such as train[:5000]
            base = spec.split("[", 1)[0]
            try:
                splits[spec] = load_dataset(name, config, split=spec, cache_dir=cache_dir)
            except Exception as err:
                raise RecipeError(f"Cannot load split `{spec}` of `{name}`: {err}") from err
            logger.info("Using %s (%d rows) from split %s", spec, len(splits[spec]), base)
    return splits


def pick_splits(
    splits: dict[str, Dataset],
    data_args: DataArguments,
    seed: int,
    stratify_by: str | None = None,
    ordered_holdout: bool = False,
    with_train: bool = True,
) -> tuple[Dataset | None, Dataset, Dataset | None]:
    """Choose train / validation / test from the available splits.

    Validation is ``validation_split`` if given, else the dataset's own validation split, else its
    test split, else a seeded ``train_val_split`` fraction of train (stratified by ``stratify_by``;
    the last rows when ``ordered_holdout`` — for video frames, where a random split leaks).
    Without ``with_train`` (evaluation data only) train may be missing and is returned as ``None``.
    """
    train = splits.get(data_args.train_split)
    if train is None and (with_train or data_args.train_split != "train"):
        raise RecipeError(f"Split `{data_args.train_split}` not found; available splits: {sorted(splits)}.")

    def find(explicit: str | None, names: tuple[str, ...]) -> str | None:
        if explicit:
            if explicit not in splits:
                raise RecipeError(f"Split `{explicit}` not found; available splits: {sorted(splits)}.")
            return explicit
        return next((n for n in names if n in splits and n != data_args.train_split), None)

    val_name = find(data_args.validation_split, SPLIT_ALIASES["validation"])
    test_name = find(data_args.test_split, SPLIT_ALIASES["test"])
    if val_name is None and test_name is not None and not data_args.test_split:
        val_name, test_name = test_name, None  # the dataset's test split doubles as validation
    if val_name is not None:
        validation = splits[val_name]
    elif train is None:
        raise RecipeError(f"No evaluation split: the data has {sorted(splits) or 'no splits'}. Set --validation_dir "
                          "(a folder), --validation_file or --validation_split (a split of --dataset_name).")
    else:
        train, validation = holdout_split(train, data_args.train_val_split, seed, stratify_by, ordered_holdout)
    test = splits[test_name] if test_name and test_name != val_name else None
    if not with_train:
        train = None
    elif data_args.max_train_samples is not None:
        train = train.shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples is not None:
        validation = _truncate(validation, data_args.max_eval_samples, seed, ordered_holdout)
        if test is not None:
            test = _truncate(test, data_args.max_eval_samples, seed, ordered_holdout)
    return train, validation, test


def _truncate(dataset: Dataset, limit: int, seed: int, ordered: bool) -> Dataset:
    """At most ``limit`` rows: a seeded sample (folders are sorted by class), or the first rows in time order."""
    if len(dataset) <= limit:
        return dataset
    return dataset.select(range(limit)) if ordered else dataset.shuffle(seed=seed).select(range(limit))


def holdout_split(
    dataset: Dataset, fraction: float, seed: int, stratify_by: str | None = None, ordered: bool = False
) -> tuple[Dataset, Dataset]:
    """Split ``fraction`` of ``dataset`` off as validation (seeded; stratified when possible)."""
    if not 0 < fraction < 1:
        raise RecipeError(f"train_val_split must be between 0 and 1, got {fraction}.")
    if len(dataset) < 2:
        raise RecipeError(f"Need at least 2 training examples to hold out a validation split, got {len(dataset)}.")
    n_val = max(1, round(len(dataset) * fraction))
    if ordered:
        cut = len(dataset) - n_val
        return dataset.select(range(cut)), dataset.select(range(cut, len(dataset)))
    if stratify_by and isinstance(dataset.features.get(stratify_by), ClassLabel):
        labels = arrow_column(dataset, stratify_by).to_numpy()
        counts = np.unique(labels, return_counts=True)[1]
        num_classes = len(counts)
        if counts.min() >= 2 and n_val >= num_classes and len(dataset) - n_val >= num_classes:
            # datasets' own stratified split (same indices as train_test_split(stratify_by_column=...)), fed the
            # labels through Arrow: train_test_split reads them row by row (seconds for 20,000 rows).
            n_train = len(dataset) - n_val
            train_rows, val_rows = next(stratified_shuffle_split_generate_indices(
                labels, n_train, n_val, rng=np.random.default_rng(seed)))
            return dataset.select(train_rows), dataset.select(val_rows)
    parts = dataset.train_test_split(test_size=n_val, seed=seed)
    return parts["train"], parts["test"]


def undecoded(dataset: Dataset, column: str) -> Dataset:
    """Keep ``column`` as ``{"bytes", "path"}`` records so our transforms control decoding."""
    feature = dataset.features.get(column)
    if isinstance(feature, Image) and feature.decode:
        return dataset.cast_column(column, Image(decode=False))
    return dataset


def require_columns(dataset: Dataset, columns: dict[str, str], where: str) -> None:
    """Fail with the list of existing columns when a configured column is missing."""
    for option, column in columns.items():
        if column not in dataset.column_names:
            raise RecipeError(
                f"Column `{column}` (set by `{option}`) not found in {where}. "
                f"Available columns: {dataset.column_names}. Set `--{option}` to one of them."
            )


def check_image_batch(
    batch: dict[str, list], *, column: str, extra_check: Callable[[dict[str, Any]], str | None] | None = None
) -> dict[str, list]:
    """``Dataset.map`` function (batched) of :func:`drop_bad_images`: the reason each image is unusable, or ``""``."""
    reasons = []
    for i, record in enumerate(batch[column]):
        reason = check_image_record(record)
        if reason is None and extra_check is not None:
            reason = extra_check({key: values[i] for key, values in batch.items()})
        reasons.append(reason or "")
    return {"_problem": reasons}


def drop_bad_images(
    dataset: Dataset,
    column: str,
    split: str,
    strict: bool,
    num_proc: int | None = None,
    extra_check: Callable[[dict[str, Any]], str | None] | None = None,
    cache: CheckCache | None = None,
) -> tuple[Dataset, list[BadFile]]:
    """Decode every image once; drop (or, with ``strict``, stop on) unreadable files and report them.

    The result is cached by ``cache`` (see :mod:`recipes.check_cache`): a rerun decodes nothing.
    """
    if len(dataset) == 0:  # every row was dropped by an earlier check: nothing to decode
        return dataset, []
    cache = cache or CheckCache(num_workers=num_proc)
    checked = cache.map(
        dataset, partial(check_image_batch, column=column, extra_check=extra_check), check="images", split=split,
        desc=f"Checking {split} images", file_columns=[column], batched=True, batch_size=64,
        remove_columns=dataset.column_names,
    )
    problems = column_values(checked, "_problem")
    bad_rows = [i for i, reason in enumerate(problems) if reason]
    if not bad_rows:
        return dataset, []
    paths = dataset.select(bad_rows)[column]
    bad = [BadFile(path=record_path(rec), reason=problems[i]) for i, rec in zip(bad_rows, paths)]
    if strict:
        listing = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:20])
        raise RecipeError(
            f"{len(bad)} unusable image(s) in the {split} split (strict mode):\n{listing}\n"
            "Fix or remove these files, or run without `strict` to skip them."
        )
    for b in bad:
        logger.warning("Skipping %s: %s", b.path, b.reason)
    keep = sorted(set(range(len(dataset))) - set(bad_rows))
    return dataset.select(keep), bad


def local_path(value: str | None, option: str) -> Path | None:
    """Resolve a user-given folder/file path with a clear error when it does not exist."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise RecipeError(
            f"`{option}` points to {path}, which does not exist. Put the data there (a recipe's header says where to "
            f"download it) or pass --{option} with the folder that holds it."
        )
    return path
