"""What a process has consumed of the training stream (positions per loader worker, counts, bad records), saved in
every checkpoint so that a resumed run continues where it stopped."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.config import RecipeError

logger = logging.getLogger("recipes")

STREAM_META = "_stream"
"""Key of the per-example bookkeeping (position, bad record, example key) that travels beside the model inputs."""
RECORD_COUNTS = "_stream_counts"
"""Key under which a task's record check may leave named counts of what it fixed in a good record (e.g. clipped
boxes); they are summed over the run into the report's ``record_checks``."""
STATE_DIR = "stream_state"
"""Folder of each checkpoint with one ``rank<N>.json`` stream position per process."""
MAX_LISTED_BAD = 100


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
