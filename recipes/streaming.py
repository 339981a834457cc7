"""Streamed training data: a ``datasets.IterableDataset`` read while training.

Sources are a Hub dataset or local ``*.parquet`` / webdataset ``*.tar`` shards. The stream is shuffled through a
seeded buffer (reshuffled every pass with ``set_epoch``) and split across processes with
``datasets.distributed.split_dataset_by_node``; every process then builds its own loader (no ``accelerate``
re-sharding or batch dispatching), and all processes end a pass together as soon as one of them runs out, so
distributed training never waits on a process that has no batch. Bad records (undecodable images, bad labels,
boxes or masks the task's record check refuses) are skipped and counted as they come (a ``strict`` run stops at
the first one, naming it; a record the ``datasets`` reader cannot parse stops every run); what a check fixes in a
good record (e.g. clipped boxes) is counted too. A streamed run's evaluation splits are map-style
(:func:`stream_splits`). Each checkpoint stores, per process and loader worker, how many records of the current
pass were consumed, so a resumed run continues where it stopped (re-reading, not decoding, the records before
that point).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, Image, IterableDataset, IterableDatasetDict, Json, load_dataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, get_worker_info
from transformers import TrainerCallback, TrainingArguments

from recipes.config import DataArguments, RecipeError
from recipes.data import SPLIT_ALIASES, local_path
from recipes.images import BadImageError, record_path

logger = logging.getLogger("recipes")

STREAM_META = "_stream"
"""Key of the per-example bookkeeping (position, bad record, example key) that travels beside the model inputs."""
RECORD_COUNTS = "_stream_counts"
"""Key under which a task's record check may leave named counts of what it fixed in a good record (e.g. clipped
boxes); they are summed over the run into the report's ``record_checks``."""
STATE_DIR = "stream_state"
"""Folder of each checkpoint with one ``rank<N>.json`` stream position per process."""
SHARD_BUILDERS = {".parquet": "parquet", ".tar": "webdataset"}
MAX_LISTED_BAD = 100


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


# --------------------------------------------------------------------------- sources


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
        name, config = data_args.dataset_name, data_args.dataset_config_name
        try:
            loaded = load_dataset(name, config, streaming=True, cache_dir=cache_dir)
        except Exception as err:  # datasets raises many types; the user needs the id and the fix
            raise RecipeError(
                f"Could not stream dataset `{name}`{f' ({config})' if config else ''}: {err}. Check the id and your "
                "network/HF_TOKEN, or use --train_file 'shards/*.parquet' for local shards."
            ) from err
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


# --------------------------------------------------------------------------- splits of a streamed run


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


# --------------------------------------------------------------------------- examples and batches


def example_key(record: Any) -> str:
    """A short identity of an image record (its path, else a hash of its bytes), for debug logs."""
    if isinstance(record, dict):
        if record.get("bytes"):
            return hashlib.sha1(record["bytes"]).hexdigest()[:16]
        return str(record.get("path"))
    return str(record)


READER_ERRORS = (ValueError, OSError, tarfile.TarError)
"""What the ``datasets`` reader raises on a record it cannot parse (invalid JSON or a truncated member in a
webdataset shard, a corrupt parquet file): the stream ends there, so the run stops (it cannot skip such a record)."""


def unreadable_stream(err: Exception, read: int, last_shard: str | None = None, read_ahead: int = 0) -> str:
    """Why a streamed run stops when the ``datasets`` reader fails, after ``read`` records (the last of them from
    ``last_shard``, when the records name theirs; a shuffle buffer of ``read_ahead`` records reads ahead of what
    comes out of it), and the fix."""
    if not last_shard:
        where = ""
    elif read_ahead:
        where = (f" (the last record received came from shard {last_shard}; the shuffle buffer reads up to "
                 f"{read_ahead} records ahead, so the unreadable one is in that shard or in one this process opened "
                 "after it)")
    else:
        where = (f" (the last record read came from shard {last_shard}: the unreadable one follows it there or opens "
                 "the next shard)")
    return (f"Reading the training stream failed after {read} record(s) of this process{where}: "
            f"{type(err).__name__}: {err}. `datasets` cannot skip a record it fails to parse (e.g. invalid JSON or a "
            "truncated file in a webdataset shard, a corrupt parquet file): fix or remove it in the shards.")


def _records_or_error(stream: IterableDataset):
    """The records of ``stream``, then the reader's error (one of ``READER_ERRORS``) if it fails."""
    try:
        yield from stream
    except READER_ERRORS as err:
        yield err


class StreamingExamples(torch.utils.data.IterableDataset):
    """Transformed training examples of one process's stream. Each carries its position (loader worker, index in
    that worker's part of the pass); a record that fails ``check`` or the transform becomes a bad-record marker
    instead, counted by :class:`StreamLoader`."""

    def __init__(
        self,
        stream: IterableDataset,
        transform: Callable[[dict[str, list]], dict[str, list]],
        image_column: str,
        check: Callable[[dict[str, Any]], str | None] | None = None,
        keep_keys: bool = False,
        read_ahead: int = 0,
    ) -> None:
        self.stream = stream
        self.transform = transform
        self.image_column = image_column
        self.check = check
        self.keep_keys = keep_keys
        self.read_ahead = read_ahead
        """Records the stream's shuffle buffer reads ahead (named in the error of an unreadable record)."""
        self.resume: dict[int, int] = {}
        """Records to pass over, per loader worker, at the start of the next pass (a resumed run)."""

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        start, last_shard = self.resume.get(worker, 0), None
        for index, record in enumerate(_records_or_error(self.stream)):
            if isinstance(record, Exception):  # the main process raises it (no loader-worker traceback added)
                fatal = unreadable_stream(record, index, last_shard, self.read_ahead)
                yield {STREAM_META: {"position": (worker, index), "fatal": fatal}}
                continue
            last_shard = record.get("__url__", last_shard)  # webdataset records name their shard
            if index >= start:
                yield self.example(record, worker, index)

    def example(self, record: dict[str, Any], worker: int, index: int) -> dict[str, Any]:
        meta: dict[str, Any] = {"position": (worker, index)}
        image = record.get(self.image_column)
        if self.keep_keys:
            meta["key"] = example_key(image)
        reason = self.check(record) if self.check is not None else None
        counts = record.pop(RECORD_COUNTS, None)
        if reason is None:
            try:
                transformed = self.transform({key: [value] for key, value in record.items()})
            except (BadImageError, OSError, ValueError, RuntimeError) as err:
                reason = str(err)
        if reason is not None:
            meta["bad"] = {"path": record_path(image, fallback=f"record {index} (worker {worker})"), "reason": reason}
            if record.get("__url__"):  # a webdataset shard
                meta["bad"]["shard"] = str(record["__url__"])
            return {STREAM_META: meta}
        if counts:
            meta["counts"] = dict(counts)
        example = {key: values[0] for key, values in transformed.items()}
        example[STREAM_META] = meta
        return example


def collate_stream(examples: list[dict[str, Any]], *, collate: Callable[[list[dict]], dict]) -> dict[str, Any]:
    """The task's collate on the good examples of a batch, with every example's bookkeeping beside it."""
    metas = [example.pop(STREAM_META) for example in examples]
    good = [example for example in examples if example]
    batch = collate(good) if good else {}
    batch[STREAM_META] = metas
    return batch


def _distributed() -> bool:
    """Whether this process is one of several in a process group."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def _all_processes(flag: bool, stop: bool, device: torch.device) -> tuple[bool, bool]:
    """(``flag`` on every process, ``stop`` on any process): one tiny all-reduce per batch (plain values outside
    distributed runs)."""
    if not _distributed():
        return flag, stop
    value = torch.tensor([int(not flag), int(stop)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
    missing, stops = value.tolist()  # one device-to-host copy
    return not missing, bool(stops)


def _stop_everywhere(error: Exception | None, rank: int) -> Exception:
    """The error every process stops with when one process's stream stops the run (``error``: this process's, if
    it is the one; raised as is there): the first stopping process's message, gathered so that every process's
    log names it (on many machines the others' output is elsewhere), instead of the others failing in their next
    collective."""
    if not _distributed():
        return error
    messages: list[str | None] = [None] * torch.distributed.get_world_size()
    own = error if error is None or isinstance(error, RecipeError) else f"{type(error).__name__}: {error}"
    torch.distributed.all_gather_object(messages, None if own is None else str(own))
    if error is not None:
        return error
    first = next(index for index, message in enumerate(messages) if message is not None)
    return RecipeError(f"Process {first} stopped the run, so process {rank} stops too. Process {first}: "
                       f"{messages[first]}")


def strict_error(meta: dict[str, Any], rank: int, epoch: int) -> RecipeError:
    """The error that stops a ``strict`` run at a bad streamed record, naming it (and its shard) and the fix."""
    bad, (worker, index) = meta["bad"], meta["position"]
    shard = f" in shard {bad['shard']}" if bad.get("shard") else ""
    return RecipeError(
        f"Bad streamed training record {bad['path']}{shard} (record {index} of process {rank}, loader worker "
        f"{worker}, pass {epoch}; strict mode): {bad['reason']}. Fix or remove it from the data, or run with "
        "`--strict false` to skip bad records and count them (listed in run_manifest.json)."
    )


@dataclass
class StreamProgress:
    """What this process has consumed of the stream: position in the current pass, counts, bad records."""

    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    stream_epoch: int = 0
    positions: dict[int, int] = field(default_factory=dict)
    exhausted: bool = False
    examples_seen: int = 0
    passes_completed: int = 0
    dropped_at_pass_end: int = 0
    bad_records: int = 0
    bad: list[dict[str, Any]] = field(default_factory=list)
    record_checks: dict[str, int] = field(default_factory=dict)
    """What the task's record check fixed in the good records trained on (e.g. ``clipped_boxes``)."""
    key_log: Path | None = None
    strict: bool = False
    """Stop on the first bad record (:func:`strict_error`) instead of skipping and counting it."""

    def begin_pass(self, epoch: int) -> None:
        self.stream_epoch, self.positions, self.exhausted = epoch, {}, False

    def stop_reason(self, metas: list[dict[str, Any]]) -> RecipeError | None:
        """Why the run stops at a batch with these examples: an unreadable stream, or a bad record in a ``strict``
        run; ``None`` to go on."""
        for meta in metas:
            if "fatal" in meta:
                return RecipeError(meta["fatal"])
            if "bad" in meta and self.strict:
                return strict_error(meta, self.rank, self.stream_epoch)
        return None

    def consumed(self, metas: list[dict[str, Any]], trained: bool) -> None:
        """Record a batch's examples: trained on, or (``trained`` false) dropped at the end of a pass; raises
        :meth:`stop_reason`."""
        error = self.stop_reason(metas)
        if error is not None:
            raise error
        keys = []
        for meta in metas:
            worker, index = meta["position"]
            self.positions[worker] = max(self.positions.get(worker, 0), index + 1)
            if "bad" in meta:
                self.bad_records += 1
                if len(self.bad) < MAX_LISTED_BAD:
                    self.bad.append({"rank": self.rank, "pass": self.stream_epoch, **meta["bad"]})
                logger.warning("Skipping a bad streamed record: %s: %s", meta["bad"]["path"], meta["bad"]["reason"])
            elif trained:
                self.examples_seen += 1
                keys.append(meta.get("key"))
                for name, count in meta.get("counts", {}).items():
                    self.record_checks[name] = self.record_checks.get(name, 0) + int(count)
            else:
                self.dropped_at_pass_end += 1
        if self.key_log is not None and keys:
            with self.key_log.open("a", encoding="utf-8") as log:
                log.writelines(f"{self.stream_epoch}\t{key}\n" for key in keys)

    def state(self) -> dict[str, Any]:
        """The position to resume from (the next pass when this one is finished) and the counts so far."""
        done = self.exhausted
        return {
            "epoch": self.stream_epoch + 1 if done else self.stream_epoch,
            "positions": {} if done else {str(k): v for k, v in self.positions.items()},
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "examples_seen": self.examples_seen,
            "passes_completed": self.passes_completed,
            "dropped_at_pass_end": self.dropped_at_pass_end,
            "bad_records": self.bad_records,
            "bad": self.bad,
            "record_checks": dict(self.record_checks),
        }


class StreamLoader:
    """The Trainer's training loader for a stream: a ``DataLoader`` over this process's
    :class:`StreamingExamples`, ending each pass on every process as soon as one process has no batch left.

    The Trainer numbers passes from 0 again after a resume; ``epoch_offset`` maps them to the stream's passes.
    ``drop_last`` drops incomplete batches here rather than in the ``DataLoader`` (build it without), so that
    their records are still accounted for: bad ones counted (or stopping a ``strict`` run), good ones counted as
    dropped."""

    def __init__(self, dataloader: DataLoader, examples: StreamingExamples, progress: StreamProgress,
                 device: torch.device, drop_last: bool = False) -> None:
        self.dataloader = dataloader
        self.drop_last = drop_last
        self.examples = examples
        self.progress = progress
        self.device = device
        self.epoch_offset = 0
        self.resume_epoch: int | None = None
        self.resume_positions: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        stream_epoch = self.epoch_offset + epoch
        self.progress.begin_pass(stream_epoch)
        self.examples.set_epoch(stream_epoch)
        resuming = stream_epoch == self.resume_epoch
        self.examples.resume = dict(self.resume_positions) if resuming else {}
        if resuming:
            self.progress.positions = dict(self.resume_positions)

    def __iter__(self):
        iterator = iter(self.dataloader)
        while True:
            try:
                batch, metas = self._next_batch(iterator)
                error = self.progress.stop_reason(metas)
            except Exception as err:  # a stop in a batch dropped as incomplete or of bad records only, a loader
                batch, metas, error = None, [], err  # worker that failed…: the other processes stop with this one
            everyone_has_batch, stopped = _all_processes(batch is not None, error is not None, self.device)
            if stopped:  # every process stops together (no process left waiting in a collective)
                raise _stop_everywhere(error, self.progress.rank)
            if not everyone_has_batch:
                if batch is not None:
                    self.progress.consumed(metas, trained=False)
                self.progress.exhausted = True
                self.progress.passes_completed += 1
                return
            self.progress.consumed(metas, trained=True)
            yield batch

    def _next_batch(self, iterator) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        for batch in iterator:
            metas = batch.pop(STREAM_META)
            if self.drop_last and len(metas) < (self.dataloader.batch_size or 0):  # a loader worker's last batch
                self.progress.consumed(metas, trained=False)
                continue
            if batch:
                return batch, metas
            self.progress.consumed(metas, trained=True)  # a batch of bad records only
        return None, []

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`StreamProgress.state` of this process."""
        progress = self.progress
        layout = (state.get("world_size"), state.get("num_workers"))
        same_layout = layout == (progress.world_size, progress.num_workers)
        self.epoch_offset = self.resume_epoch = int(state["epoch"])
        if same_layout:
            self.resume_positions = {int(k): int(v) for k, v in state.get("positions", {}).items()}
        else:
            logger.warning(
                "The checkpoint's stream position was saved with %s processes x %s loader workers, this run has "
                "%s x %s: pass %d restarts from its beginning (some examples of it are seen twice).",
                state.get("world_size"), state.get("num_workers"), progress.world_size, progress.num_workers,
                self.resume_epoch,
            )
        for key in ("examples_seen", "passes_completed", "dropped_at_pass_end", "bad_records"):
            setattr(progress, key, int(state.get(key, 0)))
        progress.bad = list(state.get("bad", []))
        progress.record_checks = {str(k): int(v) for k, v in state.get("record_checks", {}).items()}
        skipped = sum(self.resume_positions.values())
        logger.info("Resuming the stream at pass %d, after %d record(s) of it on this process (re-read, not decoded).",
                    self.resume_epoch, skipped)


class StreamStateCallback(TrainerCallback):
    """Writes this process's stream position into every checkpoint (``stream_state/rank<N>.json``)."""

    def __init__(self, progress: StreamProgress) -> None:
        self.progress = progress

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{self.progress.rank}.json").write_text(json.dumps(self.progress.state(), indent=1))
        # Every process's position is in the folder before the main process marks the checkpoint complete and
        # stages its push (the callbacks after this one).
        if torch.distributed.is_available() and torch.distributed.is_initialized() and args.world_size > 1:
            torch.distributed.barrier()


@dataclass
class StreamTraining:
    """Everything a streamed training run needs: the examples, their progress, the loader and its callback."""

    examples: StreamingExamples
    progress: StreamProgress
    loader: StreamLoader | None = None

    @classmethod
    def build(
        cls, stream: IterableDataset, transform: Callable, check: Callable | None, data_args: DataArguments,
        args: TrainingArguments, key_log_dir: str | None = None,
    ) -> StreamTraining:
        part = per_process_stream(
            stream, seed=args.seed, buffer_size=data_args.shuffle_buffer_size, rank=args.process_index,
            world_size=args.world_size, limit=data_args.max_train_samples,
        )
        key_log = None
        if key_log_dir:
            Path(key_log_dir).mkdir(parents=True, exist_ok=True)
            key_log = Path(key_log_dir) / f"rank{args.process_index}.tsv"
        examples = StreamingExamples(part, transform, data_args.image_column_name, check, keep_keys=bool(key_log),
                                     read_ahead=data_args.shuffle_buffer_size)
        progress = StreamProgress(rank=args.process_index, world_size=args.world_size,
                                  num_workers=args.dataloader_num_workers, key_log=key_log, strict=data_args.strict)
        logger.info("Streaming training data: process %d of %d, shuffle buffer %d, %s.", args.process_index,
                    args.world_size, data_args.shuffle_buffer_size,
                    f"{stream.n_shards} shard(s)" if hasattr(stream, "n_shards") else "")
        return cls(examples=examples, progress=progress)

    def make_loader(self, trainer: Any, drop_last: bool) -> StreamLoader:
        """The training loader (``RecipeTrainer.train_loader``), built once and reused across passes."""
        if self.loader is None:
            args = trainer.args
            workers = args.dataloader_num_workers
            dataloader = DataLoader(
                self.examples,
                batch_size=args.train_batch_size,
                collate_fn=partial(collate_stream, collate=trainer.data_collator),
                num_workers=workers,
                pin_memory=args.dataloader_pin_memory,
                prefetch_factor=args.dataloader_prefetch_factor if workers else None,
            )  # incomplete batches are dropped by the StreamLoader, which accounts for their records
            self.loader = StreamLoader(dataloader, self.examples, self.progress, args.device, drop_last=drop_last)
        return self.loader

    def restore(self, checkpoint: str | None, trainer: Any) -> None:
        """Continue from the stream position saved in ``checkpoint`` (nothing saved: from the start, warned)."""
        if not checkpoint:
            return
        path = Path(checkpoint) / STATE_DIR / f"rank{self.progress.rank}.json"
        loader = self.make_loader(trainer, trainer.drop_incomplete_batch or trainer.args.dataloader_drop_last)
        if not path.is_file():
            logger.warning("%s has no stream position (%s): the stream starts from its beginning.", checkpoint, path)
            return
        loader.restore(json.loads(path.read_text()))

    def summary(self) -> dict[str, Any]:
        """Counts of every process together (a collective call: every process must make it)."""
        states = [self.progress.state()]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, self.progress.state())
        total = {key: sum(s[key] for s in states) for key in ("examples_seen", "dropped_at_pass_end", "bad_records")}
        bad = [record for s in states for record in s["bad"]][:MAX_LISTED_BAD]
        checks: dict[str, int] = {}
        for s in states:
            for name, count in s.get("record_checks", {}).items():
                checks[name] = checks.get(name, 0) + count
        return {
            **total,
            "passes_completed": min(s["passes_completed"] for s in states),
            "examples_seen_per_process": [s["examples_seen"] for s in states],
            "skipped_records": bad,
            "record_checks": checks,
        }
