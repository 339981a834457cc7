"""Split choice shared by all tasks: split names and their aliases, the train/validation/test pick, hold-outs."""

from __future__ import annotations

import logging

import numpy as np
from datasets import ClassLabel, Dataset
from datasets.arrow_dataset import stratified_shuffle_split_generate_indices

from recipes.config import DataArguments, RecipeError
from recipes.data.check_cache import arrow_column

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


def pick_splits(
    splits: dict[str, Dataset],
    data_args: DataArguments,
    seed: int,
    stratify_by: str | None = None,
    ordered_holdout: bool = False,
) -> tuple[Dataset, Dataset, Dataset | None]:
    """Choose train / validation / test from the available splits.

    Validation is ``validation_split`` if given, else the dataset's own validation split, else its
    test split, else a seeded ``train_val_split`` fraction of train (stratified by ``stratify_by``;
    the last rows when ``ordered_holdout`` — for video frames, where a random split leaks).
    """
    if data_args.train_split not in splits:
        raise RecipeError(f"Split `{data_args.train_split}` not found; available splits: {sorted(splits)}.")
    train = splits[data_args.train_split]

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
    else:
        train, validation = holdout_split(train, data_args.train_val_split, seed, stratify_by, ordered_holdout)
    test = splits[test_name] if test_name and test_name != val_name else None
    if data_args.max_train_samples is not None:
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
