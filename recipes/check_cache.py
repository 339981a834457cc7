"""The data-check cache: every pass over the data at start-up runs once per version of the data.

A pass (the image check, detection's image and box checks, segmentation's mask check and conversion,
classification's decode cache) is a ``Dataset.map`` whose output is written to an Arrow file named by a key:

* the pass and the source code of the modules that implement it (a changed check is a new check),
* the dataset's ``_fingerprint`` (which rows, in which order: it covers the file paths and labels of a local
  folder and the Arrow files of a Hub dataset, but not the contents of the image files a local dataset
  points to), the number of rows,
* the size and modification time (ns) of every local file the pass reads (image records without bytes and
  path columns), so an edited, replaced or deleted file invalidates the result,
* the pass's options (class names, palette, label mapping, ...), the pixel cap of the decoders
  (``max_image_pixels``) and the versions of ``datasets``, Pillow and NumPy.

A rerun, a resume and the other processes of a distributed run (which load the data after the main process,
inside ``main_process_first``) load the file instead of reading the images again; ``recheck_data`` recomputes
it. The files live in ``<HF_DATASETS_CACHE>/vision_recipes_checks`` (or ``<cache_dir>/vision_recipes_checks``).
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from importlib import metadata
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets.fingerprint import Hasher

from recipes.images import max_image_pixels

logger = logging.getLogger("recipes")

CACHE_FOLDER = "vision_recipes_checks"
MAX_DEFAULT_WORKERS = 8
MIN_ROWS_PER_WORKER = 256
"""With the default worker count, a process per this many rows at most (starting processes costs time)."""
SHARD_SUFFIX = re.compile(r"_\d{5}_of_\d{5}$")


def default_workers() -> int:
    """``min(8, CPUs this process may use)``: the default of ``preprocessing_num_workers``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus))


def local_rank() -> int:
    """This process's rank on its machine in a distributed launch (0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir>/vision_recipes_checks``, by default in the datasets cache (``HF_DATASETS_CACHE``)."""
    root = cache_dir or os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE
    return Path(root).expanduser() / CACHE_FOLDER


def arrow_column(dataset: Dataset, name: str) -> pa.ChunkedArray:
    """One column of ``dataset`` (its select/shuffle applied) as Arrow, without building a Python object per row
    (``dataset[name]`` iterates rows one by one: seconds for 20,000 rows)."""
    return dataset.with_format("arrow")[name]


def column_values(dataset: Dataset, name: str) -> list[Any]:
    """One column as a Python list, converted by Arrow in one go."""
    return arrow_column(dataset, name).to_pylist()


def _referenced_paths(dataset: Dataset, column: str) -> list[str | None]:
    """The local file each row of ``column`` reads: the path of an image record without bytes, or a path
    string; ``None`` where the row holds its bytes (covered by the fingerprint)."""
    values = dataset.data.column(column)
    if pa.types.is_struct(values.type):
        names = {values.type.field(i).name for i in range(values.type.num_fields)}
        if "path" not in names:
            return []
        paths = pc.struct_field(values, "path")
        if "bytes" in names:
            paths = pc.if_else(pc.is_valid(pc.struct_field(values, "bytes")), pa.scalar(None, pa.string()), paths)
    elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        paths = values
    else:
        return []
    if dataset._indices is not None:  # a select/shuffle/split of the underlying table
        paths = paths.take(dataset._indices.column(0))
    return paths.to_pylist()


def file_signature(dataset: Dataset, columns: Sequence[str]) -> str:
    """A hash of the size and modification time of every local file ``columns`` point to (missing: -1)."""
    hasher = hashlib.blake2b(digest_size=16)
    for column in columns:
        if column not in dataset.column_names:
            continue
        for path in _referenced_paths(dataset, column):
            if not path:
                hasher.update(b"\0-\n")
                continue
            try:
                stat = os.stat(path)
                entry = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
            except OSError:
                entry = f"{path}\0-1\n"
            hasher.update(entry.encode("utf-8", "surrogateescape"))
    return hasher.hexdigest()


def code_version(function: Callable, modules: Sequence[str] = ()) -> str:
    """A hash of the source of ``function``'s module and of ``modules``: editing a check invalidates its results."""
    names = ["recipes.images", *modules]
    while isinstance(function, partial):
        names += [getattr(value, "__module__", None) for value in function.keywords.values() if callable(value)]
        function = function.func
    names.insert(0, getattr(function, "__module__", None))
    hasher = hashlib.blake2b(digest_size=16)
    for name in dict.fromkeys(filter(None, names)):
        module = sys.modules.get(name)
        try:
            hasher.update(inspect.getsource(module).encode() if module is not None else name.encode())
        except (OSError, TypeError):  # no source (frozen/compiled): the module name and package version
            hasher.update(name.encode())
    return hasher.hexdigest()


@lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    found = {}
    for name in ("datasets", "pillow", "numpy", "vision-recipes"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass
class CheckCache:
    """Where the results of the data passes are cached, whether to recompute them, and what each pass did."""

    directory: Path = field(default_factory=default_cache_dir)
    recheck: bool = False
    """Recompute every pass (``recheck_data``); the other processes of a distributed run reuse the fresh result."""
    num_workers: int | None = None
    """Processes per pass (``preprocessing_num_workers``); ``None``: :func:`default_workers`, at most one per
    :data:`MIN_ROWS_PER_WORKER` rows."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """One entry per pass: check, split, rows, result (cached / computed / recomputed), seconds, file."""

    @classmethod
    def from_args(cls, data_args: Any, cache_dir: str | Path | None = None) -> CheckCache:
        """From a recipe's data arguments (``recheck_data``, ``preprocessing_num_workers``)."""
        recheck = bool(getattr(data_args, "recheck_data", False))
        if recheck and local_rank() != 0:  # the local main process just rechecked (main_process_first)
            recheck = False
        return cls(directory=default_cache_dir(cache_dir), recheck=recheck,
                   num_workers=getattr(data_args, "preprocessing_num_workers", None))

    def num_proc(self, rows: int) -> int | None:
        """Processes for a pass over ``rows`` rows (``None``: in this process)."""
        if self.num_workers is not None:
            workers = self.num_workers
        else:
            workers = min(default_workers(), max(1, rows // MIN_ROWS_PER_WORKER))
        workers = min(workers, rows)
        return workers if workers > 1 else None

    def key(
        self, dataset: Dataset, check: str, function: Callable, options: Any = None,
        file_columns: Sequence[str] = (), modules: Sequence[str] = (),
    ) -> str:
        """The cache key of ``check`` over ``dataset`` (see the module docstring for what it covers)."""
        parts = {
            "check": check,
            "code": code_version(function, modules),
            "fingerprint": dataset._fingerprint,
            "rows": len(dataset),
            "files": file_signature(dataset, file_columns),
            "function": Hasher.hash(function),  # with a partial's arguments (class names, label mapping, ...)
            "options": Hasher.hash(options),
            "versions": _library_versions(),
            "max_image_pixels": max_image_pixels(),  # what the image decoders accept
        }
        return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16).hexdigest()

    def map(
        self,
        dataset: Dataset,
        function: Callable,
        *,
        check: str,
        split: str,
        desc: str,
        options: Any = None,
        file_columns: Sequence[str] = (),
        modules: Sequence[str] = (),
        **map_kwargs: Any,
    ) -> Dataset:
        """``dataset.map(function, **map_kwargs)``, computed once per key and loaded from the cache after that."""
        key = self.key(dataset, check, function, options, file_columns, modules)
        path = self.directory / f"{check}-{key}.arrow"
        existing = [name for name in glob.glob(f"{glob.escape(str(path.with_suffix('')))}*.arrow")
                    if name == str(path) or SHARD_SUFFIX.search(Path(name).stem)]
        if existing and self.recheck:
            for name in existing:
                Path(name).unlink(missing_ok=True)
        cached = bool(existing) and not self.recheck
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = dataset.map(
            function,
            cache_file_name=str(path),
            load_from_cache_file=True,
            new_fingerprint=key,
            num_proc=None if cached else self.num_proc(len(dataset)),
            desc=desc,
            **map_kwargs,
        )
        seconds = round(time.perf_counter() - started, 3)
        outcome = "cached" if cached else ("recomputed" if self.recheck else "computed")
        self.events.append({"check": check, "split": split, "rows": len(dataset), "result": outcome,
                            "seconds": seconds, "file": str(path)})
        if cached:
            logger.info("Data check `%s` of the %s split (%d rows): cached result used, from %s "
                        "(--recheck_data to redo it).", check, split, len(dataset), path)
        else:
            logger.info("Data check `%s` of the %s split (%d rows): %s in %.1fs, cached at %s.", check, split,
                        len(dataset), outcome, seconds, path)
        return result

    def summary(self) -> dict[str, Any]:
        """The cache report for ``run_manifest.json``'s ``data_summary``."""
        return {"directory": str(self.directory), "recheck": self.recheck, "passes": list(self.events)}
