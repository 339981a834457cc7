"""The training loader of a streamed run and its collectives: every process ends a pass together as soon as one has
no batch left, one process's stop stops them all with its message, and each checkpoint stores the stream position."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import IterableDataset
from torch.utils.data import DataLoader
from transformers import TrainerCallback, TrainingArguments

from recipes.config import DataArguments, RecipeError
from recipes.data.streaming.examples import StreamingExamples, collate_stream
from recipes.data.streaming.progress import MAX_LISTED_BAD, STATE_DIR, STREAM_META, StreamProgress
from recipes.data.streaming.splits import per_process_stream

logger = logging.getLogger("recipes")


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
