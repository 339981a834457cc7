"""Where a streamed run reads from: a Hub dataset or local ``*.parquet`` / webdataset ``*.tar`` shards, checked
before any work (:func:`check_streaming_recipe`), with the stream's fingerprint and helpers to read it as written."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from pathlib import Path

from datasets import Dataset, Image, IterableDataset, IterableDatasetDict, Json, load_dataset
from transformers import TrainingArguments

from recipes.config import DataArguments, RecipeError
from recipes.data.sources import open_hub_dataset

logger = logging.getLogger("recipes")

SHARD_BUILDERS = {".parquet": "parquet", ".tar": "webdataset"}


def check_streaming_recipe(data_args: DataArguments, args: TrainingArguments, task: str, supported: bool) -> None:
    """Stop before any work when a streaming recipe cannot run."""
    if not data_args.streaming:
        return
    if not supported:
        raise RecipeError(
            f"streaming is not supported for the task {task}; run without `streaming` (the data is then "
            "downloaded and prepared first)."
        )
    if args.max_steps is None or args.max_steps <= 0:
        raise RecipeError(
            "streaming datasets have no length: set max_steps (optimizer steps; one pass over N examples takes "
            "about N / (per_device_train_batch_size x processes x gradient_accumulation_steps) steps)."
        )
    if data_args.shuffle_buffer_size < 0:
        raise RecipeError(f"shuffle_buffer_size must be 0 (no shuffling) or more, got {data_args.shuffle_buffer_size}.")
    if "[" in data_args.train_split:
        raise RecipeError(
            f"Split slicing (`{data_args.train_split}`) is not available with streaming: use max_train_samples."
        )


def shard_files(value: str | None, option: str) -> list[str] | None:
    """The ``*.parquet`` / ``*.tar`` files named by a glob, a file or a folder (searched recursively); None when
    ``value`` is unset or a folder without shards (an image folder, read the usual way)."""
    if not value:
        return None
    if any(char in value for char in "*?["):
        files = sorted(glob.glob(str(Path(value).expanduser()), recursive=True))
        if not files:
            raise RecipeError(f"`{option}` {value} matches no files.")
    else:
        path = Path(value).expanduser()
        if not path.exists():
            raise RecipeError(f"`{option}` points to {path}, which does not exist.")
        if path.is_dir():
            files = sorted(str(p) for suffix in SHARD_BUILDERS for p in path.rglob(f"*{suffix}"))
            if not files:
                return None
        else:
            files = [str(path)]
    kinds = {Path(f).suffix.lower() for f in files}
    if not kinds <= set(SHARD_BUILDERS) or len(kinds) != 1:
        raise RecipeError(
            f"`{option}`: streaming reads shards of one kind, *.parquet or webdataset *.tar; got {sorted(kinds)}."
        )
    return files


def load_streams(data_args: DataArguments, cache_dir: str | None = None) -> dict[str, IterableDataset]:
    """Streamed splits: every split of the Hub dataset ``dataset_name``, or the local shards of
    ``train_file``/``train_dir`` (and ``validation_…``/``test_…`` when they hold shards)."""
    if data_args.dataset_name:
        loaded = open_hub_dataset(data_args, cache_dir, "use --train_file 'shards/*.parquet' for local shards",
                                  streaming=True)
        streams = dict(loaded) if isinstance(loaded, IterableDatasetDict) else {"train": loaded}
        return {split: json_fields_as_written(stream) for split, stream in streams.items()}
    streams = {}
    for split in ("train", "validation", "test"):
        option = f"{split}_file" if getattr(data_args, f"{split}_file") else f"{split}_dir"
        files = shard_files(getattr(data_args, option), option)
        if files is None:
            if split == "train":
                raise RecipeError(
                    "streaming needs `dataset_name` (a Hub dataset) or local shards: --train_file 'data/*.parquet' "
                    "(or *.tar webdataset shards), or --train_dir with such files."
                )
            continue
        builder = SHARD_BUILDERS[Path(files[0]).suffix.lower()]
        try:
            streams[split] = json_fields_as_written(
                load_dataset(builder, data_files=files, split="train", streaming=True))
        except Exception as err:
            raise RecipeError(f"Cannot stream the {builder} shards of `{option}` ({files[0]}, …): {err}") from err
        logger.info("Streaming the %s split from %d %s shard(s)", split, len(files), builder)
    return streams


def stream_fingerprint(stream: IterableDataset) -> str | None:
    """What a streamed split reads, for the run fingerprint (an ``IterableDataset`` has no ``datasets``
    fingerprint): its shard list in order (Hub shards are named with the dataset's commit, so a new revision
    changes it) and, for local shards, each one's size and modification time (rewritten shards under the same
    names). The shard order decides which records a saved stream position skips. None when no shard list is
    found (a generator-built stream)."""
    files: list[str] = []
    pending = [stream._ex_iterable]
    while pending:
        iterable = pending.pop()
        kwargs = getattr(iterable, "kwargs", None)
        if isinstance(kwargs, dict):
            for value in kwargs.values():
                if isinstance(value, (list, tuple)):
                    files += [str(item) for item in value if isinstance(item, (str, os.PathLike))]
        inner = getattr(iterable, "ex_iterables", None) or [getattr(iterable, "ex_iterable", None)]
        pending += [child for child in inner if child is not None]
    if not files:
        return None
    digest = hashlib.sha256()
    for name in files:
        try:
            stat = os.stat(name)
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except (OSError, ValueError):  # a remote shard: its URL names the revision
            digest.update(f"{name}\n".encode())
    return digest.hexdigest()[:16]


def json_fields_as_written(stream: IterableDataset) -> IterableDataset:
    """A webdataset stream's ``*.json`` fields as :class:`datasets.Json`, kept as written: ``datasets`` would
    cast every record to the types it inferred from the first ones (float boxes truncated to integers, category
    names refused when the first records had ids)."""
    names, features = stream.column_names or [], stream.features or {}
    if not {"__key__", "__url__"} <= set(names):
        return stream
    for name in names:
        if name.rsplit(".", 1)[-1].lower() in ("json", "jsn") and not isinstance(features.get(name), Json):
            stream = stream.cast_column(name, Json())
    return stream


def undecoded_stream(stream: IterableDataset, column: str) -> IterableDataset:
    """Keep ``column`` as ``{"bytes", "path"}`` records so our transforms decode (and can report) each image."""
    feature = (stream.features or {}).get(column)
    if isinstance(feature, Image) and feature.decode:
        return stream.cast_column(column, Image(decode=False))
    return stream


def materialise(stream: IterableDataset, limit: int) -> Dataset:
    """The first ``limit`` records of a stream as a map-style dataset (validation/test sets)."""
    rows = list(stream.take(limit))
    if not rows:
        raise RecipeError("The stream is empty: no examples to evaluate on.")
    return Dataset.from_list(rows, features=stream.features)
