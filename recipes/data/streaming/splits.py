"""The splits of a streamed run: this process's shuffled part of the training stream, and the map-style evaluation
splits (local folders, Hub splits, or records held out from the head of the stream)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset, IterableDataset
from datasets.distributed import split_dataset_by_node

from recipes.config import DataArguments, RecipeError
from recipes.data.sources import local_path
from recipes.data.splits import SPLIT_ALIASES
from recipes.data.streaming.sources import (
    load_streams,
    materialise,
    undecoded_stream,
)

logger = logging.getLogger("recipes")


def per_process_stream(
    stream: IterableDataset, *, seed: int, buffer_size: int, rank: int, world_size: int, limit: int | None = None
) -> IterableDataset:
    """This process's part of the training stream: (at most ``limit`` records), shuffled with a seeded buffer,
    then split by node. The same seed on every process gives every process the same order to split, so each
    record goes to exactly one process."""
    if limit is not None:
        stream = stream.take(limit)
    if buffer_size > 0:
        stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    return stream


def training_stream(
    data_args: DataArguments, columns: dict[str, str], cache_dir: str | None = None
) -> tuple[dict[str, IterableDataset], str]:
    """The streamed splits (:func:`load_streams`) and the name of the training one, whose ``columns``
    (recipe option → column name) are checked to exist."""
    streams = load_streams(data_args, cache_dir)
    train_name = data_args.train_split if data_args.dataset_name else "train"
    if train_name not in streams:
        raise RecipeError(f"Split `{train_name}` not found; available splits: {sorted(streams)}.")
    names = streams[train_name].column_names
    for option, column in columns.items():
        if names is not None and column not in names:
            raise RecipeError(
                f"Column `{column}` (set by `{option}`) not found in the stream. Available columns: {names}. "
                f"Set `--{option}` to one of them."
            )
    return streams, train_name


@dataclass
class StreamSplits:
    """A streamed run's splits: the training stream (undecoded) and map-style evaluation splits, still to be
    checked by the task."""

    train: IterableDataset
    validation: Dataset
    test: Dataset | None
    summary: dict[str, Any]


def _evaluation_split(
    split: str, streams: dict[str, IterableDataset], data_args: DataArguments, train_name: str,
    read_folder: Callable[[str, Path], Dataset] | None, undecode: Callable[[IterableDataset], IterableDataset],
) -> Dataset | None:
    """A map-style evaluation split: a local folder (``<split>_dir`` without shards, read by ``read_folder``),
    else the stream's split (its first ``max_eval_samples`` records)."""
    folder = local_path(getattr(data_args, f"{split}_dir"), f"{split}_dir")
    if folder is not None and split not in streams:
        if read_folder is None:
            raise RecipeError(f"`{split}_dir` {folder}: this task reads streamed evaluation splits only; give "
                              f"*.parquet / *.tar shards there, or a `{split}` split of the Hub dataset.")
        return read_folder(split, folder)
    explicit = getattr(data_args, f"{split}_split")
    if data_args.dataset_name and explicit and explicit not in streams:
        raise RecipeError(f"Split `{explicit}` not found; available splits: {sorted(streams)}.")
    name = explicit or next((n for n in SPLIT_ALIASES[split] if n in streams and n != train_name), None)
    if name is None:
        return None
    if data_args.max_eval_samples is None:
        raise RecipeError(
            f"streaming: set max_eval_samples, the number of {split} examples read from the `{name}` stream "
            f"(or give a local folder with --{split}_dir)."
        )
    logger.info("Taking the first %d records of the streamed `%s` split for %s.", data_args.max_eval_samples, name,
                split)
    return materialise(undecode(streams[name]), data_args.max_eval_samples)


def stream_splits(
    streams: dict[str, IterableDataset], train_name: str, data_args: DataArguments, *,
    file_columns: Sequence[str], read_folder: Callable[[str, Path], Dataset] | None = None,
) -> StreamSplits:
    """The training stream and the evaluation splits of a streamed run: local folders (``read_folder``), the
    stream's validation/test splits (the test split doubles as validation when there is no validation split), or
    the first ``max_eval_samples`` training records held out. ``file_columns`` (image, mask…) stay undecoded."""

    def undecode(stream: IterableDataset) -> IterableDataset:
        for column in file_columns:
            stream = undecoded_stream(stream, column)
        return stream

    train = undecode(streams[train_name])
    split = partial(_evaluation_split, streams=streams, data_args=data_args, train_name=train_name,
                    read_folder=read_folder, undecode=undecode)
    validation = split("validation")
    if validation is None and not data_args.test_split:  # the dataset's test split doubles as validation
        validation, test = split("test"), None
    else:
        test = split("test")
    summary: dict[str, Any] = {"skipped_files": [], "streaming": True}
    if validation is None:
        if data_args.max_eval_samples is None:
            raise RecipeError(
                "streaming: the data has no validation split; set max_eval_samples to hold out the first records "
                "of the training stream, or give --validation_dir (a local folder) or a validation split."
            )
        validation = materialise(train, data_args.max_eval_samples)
        train = train.skip(data_args.max_eval_samples)
        summary["validation_held_out_from_stream"] = len(validation)
        logger.info("Held out the first %d records of the training stream as validation.", len(validation))
    return StreamSplits(train=train, validation=validation, test=test, summary=summary)
