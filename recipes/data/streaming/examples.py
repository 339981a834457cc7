"""Training examples of a stream: each record checked and transformed as it is read, carrying its position, or
turned into a bad-record marker; the reader's own failures become one clear stop."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from typing import Any

import torch
from datasets import IterableDataset
from torch.utils.data import get_worker_info

from recipes.data.streaming.progress import RECORD_COUNTS, STREAM_META
from recipes.decode.images import BadImageError, record_path


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
