"""The data-check cache: every pass over the data at start-up runs once per version of the data.

A pass (the image check, detection's image and box checks, segmentation's mask check and conversion,
classification's decode cache) is a ``Dataset.map`` whose output is written to an Arrow file named by a key:

* the pass and the source code of the modules that implement it (a changed check is a new check),
* the dataset's ``_fingerprint`` (which rows, in which order: it covers the file paths and labels of a local
  folder and the Arrow files of a Hub dataset, but not the contents of the image files a local dataset
  points to), the number of rows,
* the size and modification time (ns) of every local file the pass reads (image records without bytes and
  path columns), so an edited, replaced or deleted file invalidates the result, and a sample of its content:
  a hash of the whole file when all the files together hold at most :data:`FULL_HASH_MAX_BYTES` (small
  datasets: any edit is seen), else of its first and last :data:`SAMPLE_BYTES` (two small reads per file, a
  fraction of a second per 10,000 files on a local disk: an edit that keeps the size, the modification time,
  the header and the end — rare, since re-encoding an image rewrites its end — goes unseen; ``recheck_data``
  redoes the checks then). Size + time alone missed same-size edits whose time was kept (``cp -p``, ``rsync
  -t``, archives) and mounts with coarse modification times,
* the pass's options (class names, palette, label mapping, ...), the pixel cap of the decoders
  (``max_image_pixels``) and the versions of the libraries that read the data (``datasets``, Pillow and its
  codec libraries, NumPy, torch, torchvision, simplejpeg, OpenCV...): another decoder may accept or refuse
  other files.

Each result lives in a *slot* (the pass, the split, the folder its files share, the pass's options): when a
result is computed, the older results of its slot (another version of the same data, code or libraries) are
deleted, so a changing dataset does not pile up cache files (a decode cache is H·W·3 bytes per image).

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

from recipes.decode.images import max_image_pixels

logger = logging.getLogger("recipes")

CACHE_FOLDER = "vision_recipes_checks"
MAX_DEFAULT_WORKERS = 8
MIN_ROWS_PER_WORKER = 256
"""With the default worker count, a process per this many rows at most (starting processes costs time)."""
SHARD_SUFFIX = re.compile(r"_\d{5}_of_\d{5}$")
SAMPLE_BYTES = 1024
"""Bytes hashed at each end of a file for the content part of the key (large datasets)."""
FULL_HASH_MAX_BYTES = 64 * 2**20
"""Up to this many bytes in all, the files are hashed whole (well under a second)."""
DECODER_PACKAGES = ("datasets", "pillow", "pillow-simd", "numpy", "torch", "torchvision", "simplejpeg",
                    "opencv-python", "opencv-python-headless", "pyarrow", "vision-recipes")


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
    values = arrow_column(dataset, column)  # the rows a select/shuffle/split kept, in their order
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
    return paths.to_pylist()


def _content_digest(path: str, size: int, whole: bool) -> str:
    """A hash of the whole file (``whole`` or a small file) or of its first and last :data:`SAMPLE_BYTES`."""
    hasher = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as file:
        if whole or size <= 2 * SAMPLE_BYTES:
            for block in iter(partial(file.read, 2**20), b""):
                hasher.update(block)
        else:
            hasher.update(file.read(SAMPLE_BYTES))
            file.seek(-SAMPLE_BYTES, os.SEEK_END)
            hasher.update(file.read(SAMPLE_BYTES))
    return hasher.hexdigest()


def local_paths(dataset: Dataset, columns: Sequence[str]) -> list[str | None]:
    """The local files ``columns`` point to, row by row (``None``: bytes in the row)."""
    return [path for column in columns if column in dataset.column_names
            for path in _referenced_paths(dataset, column)]


def file_signature(dataset: Dataset, columns: Sequence[str]) -> str:
    """A hash of the size, modification time and content sample of every local file ``columns`` point to
    (missing: -1); see the module docstring for the content sample."""
    paths = local_paths(dataset, columns)
    stats: list[os.stat_result | None] = []
    for path in paths:
        try:
            stats.append(os.stat(path) if path else None)
        except OSError:
            stats.append(None)
    whole = sum(stat.st_size for stat in stats if stat is not None) <= FULL_HASH_MAX_BYTES
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(b"whole\n" if whole else b"sampled\n")
    for path, stat in zip(paths, stats):
        if not path:
            hasher.update(b"\0-\n")
            continue
        try:
            if stat is None:
                raise OSError
            entry = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{_content_digest(path, stat.st_size, whole)}\n"
        except OSError:
            entry = f"{path}\0-1\n"
        hasher.update(entry.encode("utf-8", "surrogateescape"))
    return hasher.hexdigest()


def data_location(dataset: Dataset, columns: Sequence[str]) -> str:
    """Where the data of ``dataset`` lives, stable across edits of it: the folder its local files share, else
    the folder of its Arrow files (a Hub dataset's cache), else nothing (an in-memory dataset)."""
    paths = [path for path in local_paths(dataset, columns) if path]
    if not paths:
        paths = [entry.get("filename", "") for entry in dataset.cache_files]
    paths = [os.path.dirname(os.path.abspath(path)) for path in paths if path]
    if not paths:
        return ""
    try:
        return os.path.commonpath(paths)
    except ValueError:  # different drives
        return ""


def code_version(function: Callable, modules: Sequence[str] = ()) -> str:
    """A hash of the source of ``function``'s module and of ``modules``: editing a check invalidates its results."""
    names = ["recipes.decode.images", "recipes.decode.jpeg", *modules]
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
    """The versions of the packages (and Pillow's codec libraries) that decide how files are read."""
    found = {}
    for name in DECODER_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        from PIL import features

        for codec in ("jpg", "jpg_2000", "zlib", "libtiff"):
            found[f"pillow-{codec}"] = str(features.version_codec(codec))
        found["pillow-webp"] = str(features.version_module("webp"))
    except Exception:  # an old Pillow without the query: its version above still counts
        pass
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

    def slot(self, dataset: Dataset, check: str, split: str, function: Callable, options: Any = None,
             file_columns: Sequence[str] = ()) -> str:
        """What stays the same when the data, the code or the libraries change: the pass, the split, where the
        data lives and the pass's options. A new result replaces the older ones of its slot."""
        parts = {"check": check, "split": split, "location": data_location(dataset, file_columns),
                 "function": Hasher.hash(function), "options": Hasher.hash(options)}
        return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=6).hexdigest()

    def _results(self, stem: str) -> list[str]:
        """The Arrow files of the result ``stem`` (one, or one per worker shard)."""
        base = str(self.directory / stem)
        return [name for name in glob.glob(f"{glob.escape(base)}*.arrow")
                if name == f"{base}.arrow" or SHARD_SUFFIX.search(Path(name).stem)]

    def _remove_stale(self, check: str, slot: str, key: str) -> list[str]:
        """Delete the results of ``slot`` other than ``key`` (their Arrow files and shards); their paths."""
        removed = []
        for name in glob.glob(f"{glob.escape(str(self.directory / f'{check}-{slot}-'))}*.arrow"):
            if not Path(name).name.startswith(f"{check}-{slot}-{key}"):
                Path(name).unlink(missing_ok=True)
                removed.append(name)
        if removed:
            logger.info("Data check `%s`: removed %d cache file(s) of older versions of this data.", check,
                        len(removed))
        return removed

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
        slot = self.slot(dataset, check, split, function, options, file_columns)
        path = self.directory / f"{check}-{slot}-{key}.arrow"
        existing = self._results(path.stem)
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
        if not cached:
            self._remove_stale(check, slot, key)
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
