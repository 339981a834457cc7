"""Data sources shared by all tasks: Hub datasets, local paths, required columns, the image check pass."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Image, load_dataset

from recipes.config import DataArguments, RecipeError
from recipes.data.check_cache import CheckCache, column_values
from recipes.decode.images import BadFile, check_image_record, record_path

logger = logging.getLogger("recipes")


def open_hub_dataset(data_args: DataArguments, cache_dir: str | None, local_fix: str, streaming: bool = False) -> Any:
    """``load_dataset`` of the recipe's ``dataset_name``/``dataset_config_name``; a failure names the id and the fix
    (``local_fix``: the local alternative)."""
    name, config = data_args.dataset_name, data_args.dataset_config_name
    try:
        return load_dataset(name, config, streaming=streaming, cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types; the user needs the id and the fix
        verb = "stream" if streaming else "load"
        raise RecipeError(
            f"Could not {verb} dataset `{name}`{f' ({config})' if config else ''}: {err}. "
            f"Check the id and your network/HF_TOKEN, or {local_fix}."
        ) from err


def load_hub_splits(data_args: DataArguments, cache_dir: str | None = None) -> dict[str, Dataset]:
    """Load a Hub dataset (``dataset_name``/``dataset_config_name``), honouring split slicing."""
    name, config = data_args.dataset_name, data_args.dataset_config_name
    loaded = open_hub_dataset(data_args, cache_dir, "use --train_dir for a local folder")
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

    The result is cached by ``cache`` (see :mod:`recipes.data.check_cache`): a rerun decodes nothing.
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
