"""Resume only the same run: a fingerprint of what shapes training, saved with every checkpoint and compared before
a rerun continues from one.

The fingerprint holds the resolved recipe's keys that change the trained model or its optimizer and schedule
(everything but :data:`IGNORED_RECIPE_KEYS`, and of ``TrainingArguments`` only :data:`TRAINING_KEYS`) plus the
``datasets`` fingerprints of the splits. Rerunning into an ``output_dir`` then either continues the interrupted run
it holds, stops with the keys that differ (a different run would silently inherit the old optimizer and learning
rate schedule), or says that the run there has finished (instead of training 0 steps and publishing it again).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import TrainerCallback, TrainingArguments

from recipes.config import Recipe, RecipeError

logger = logging.getLogger("recipes")

FINGERPRINT_FILE = "run_fingerprint.json"
FINGERPRINT_VERSION = 1

STATUS_FILE = "run_status.json"
"""How far the run in ``output_dir`` got (:func:`write_run_status`): ``training`` (written before training starts),
``trained`` (final model, trainer state, fingerprint and training metrics saved), ``finished`` (written after the
last output: metrics, plots, card, manifest, and the push when one was asked for and made)."""
TRAINING, TRAINED, FINISHED = "training", "trained", "finished"

IGNORED_RECIPE_KEYS = frozenset({
    # run: what happens around training
    "early_stopping_patience", "extra_metrics", "license", "card_tags", "auto_resume", "evaluate_only", "find_lr",
    "make_plots", "max_plot_images", "resume_from_hub", "push_checkpoints", "overwrite",
    "push_photos",
    # data: checks and speed (the data fingerprints catch a change of the data itself)
    "strict", "check_images", "preprocessing_num_workers", "max_image_pixels", "recheck_data",
    # model: where it is cached, how it is laid out in memory
    "cache_dir", "trust_remote_code", "channels_last",
})
"""Run, data and model keys that do not change what is trained (every other one of these groups does)."""

TRAINING_KEYS = (
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio", "num_train_epochs",
    "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "optim", "optim_args", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "label_smoothing_factor", "bf16", "fp16", "seed",
    "data_seed", "dataloader_drop_last", "train_sampling_strategy",
)
"""The ``TrainingArguments`` that shape training (output, logging, evaluation, saving, Hub, speed settings do not)."""


ADDED_KEYS = frozenset({"processes", "ema", "ema_decay", "ema_warmup"})
"""Fingerprint keys newer than its first version: a checkpoint saved without one is not refused for it."""


def training_fingerprint(recipe: Recipe, data: Any) -> dict[str, Any]:
    """What shapes this run: the training-relevant recipe keys and the ``_fingerprint`` of each data split."""
    resolved = json.loads(json.dumps(recipe.to_dict(), default=str))
    trainer_keys = {f.name for f in dataclasses.fields(TrainingArguments)}
    keys = {
        key: value for key, value in sorted(resolved.items())
        if (key in TRAINING_KEYS if key in trainer_keys else key not in IGNORED_RECIPE_KEYS)
    }
    # The process count shapes training: the global batch is per-device batch times processes (so the number of steps
    # per epoch and the learning-rate schedule), and a streamed run splits its shards and saves one stream position
    # per process. Resuming with another count would continue a different run.
    keys["processes"] = recipe.training.world_size
    splits = (("train", data.train), ("validation", data.validation), ("test", data.test))
    return {
        "version": FINGERPRINT_VERSION,
        "recipe": keys,
        "data": {split: _data_fingerprint(dataset) for split, dataset in splits if dataset is not None},
        "files": {split: signature for split, dataset in splits
                  if (signature := _files_fingerprint(dataset, recipe.data.image_column_name)) is not None},
    }


def _files_fingerprint(dataset: Any, image_column: str) -> str | None:
    """The contents of the local files a map-style split reads (its images, and masks stored as images): the size
    and modification time of each, as the data-check cache keys them (:func:`recipes.data.check_cache.file_signature`).
    A ``datasets`` fingerprint of a local folder covers only the file paths, so a photo replaced by another of the
    same name would otherwise resume as the same run. A stat per file (no read): a replacement keeping both size
    and modification time is not seen. None for streams and splits that hold their image bytes."""
    from datasets import Dataset, Image

    from recipes.data.check_cache import file_signature

    if not isinstance(dataset, Dataset):
        return None
    columns = [name for name, feature in (dataset.features or {}).items() if isinstance(feature, Image)]
    if image_column in dataset.column_names and image_column not in columns:
        columns.append(image_column)
    return file_signature(dataset, columns)[:16] if columns else None


def _data_fingerprint(dataset: Any) -> str | None:
    """A split's ``datasets`` fingerprint; for a streamed one (no such fingerprint), its shard list
    (:func:`recipes.data.streaming.stream_fingerprint`)."""
    from datasets import IterableDataset

    if isinstance(dataset, IterableDataset):
        from recipes.data.streaming.sources import stream_fingerprint

        return stream_fingerprint(dataset)
    return getattr(dataset, "_fingerprint", None)


def write_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it, renamed over it: a reader (or a rerun after a
    kill) sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.replace(partial, path)
    return path


def write_fingerprint(folder: str | Path, fingerprint: dict[str, Any]) -> Path:
    """``folder/run_fingerprint.json``, written atomically: in a checkpoint it is the last file written, the mark
    that the checkpoint is complete (:func:`checkpoint_problem`)."""
    return write_atomically(Path(folder) / FINGERPRINT_FILE, json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")


def read_fingerprint(folder: str | Path) -> dict[str, Any] | None:
    """The fingerprint saved in ``folder``; None for checkpoints of older runs (or an unreadable file)."""
    try:
        return json.loads((Path(folder) / FINGERPRINT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class FingerprintWriter(TrainerCallback):
    """Save the run's fingerprint in every checkpoint folder the Trainer writes: after the weights, optimizer,
    scheduler, RNG and ``trainer_state.json`` (the Trainer's order) and after the stream positions (callbacks
    added before this one), so it is the checkpoint's completion mark."""

    def __init__(self, fingerprint: dict[str, Any]) -> None:
        self.fingerprint = fingerprint

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Each process writes its own files (rng_state_<rank>.pth; optimizer shards under FSDP) after the main one
        # saved the weights: all of them are in the folder before it is marked complete and its push is staged
        # (the callbacks after this one).
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_fingerprint(folder, self.fingerprint)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old → new`` for each recipe key and data split that differs between two fingerprints."""
    lines = []
    old_keys, new_keys = old.get("recipe", {}), new.get("recipe", {})
    for key in sorted(old_keys.keys() | new_keys.keys()):
        if key in ADDED_KEYS and key not in old_keys:  # saved by a version before the key: not known, not a change
            continue
        if old_keys.get(key, "<absent>") != new_keys.get(key, "<absent>"):
            lines.append(f"{key}: {_show(old_keys, key)} → {_show(new_keys, key)}")
    old_files, new_files = old.get("files"), new.get("files")
    if old_files is not None and new_files is not None:  # fingerprints of older versions have no "files"
        for split in sorted(old_files.keys() | new_files.keys()):
            if old_files.get(split) != new_files.get(split):
                lines.append(f"files ({split} split, sizes and modification times of its images): "
                             f"{old_files.get(split, '<absent>')} → {new_files.get(split, '<absent>')} (images "
                             "replaced or edited)")
    old_data, new_data = old.get("data", {}), new.get("data", {})
    for split in sorted(old_data.keys() | new_data.keys()):
        if old_data.get(split) != new_data.get(split):
            lines.append(f"data ({split} split, datasets fingerprint): {old_data.get(split, '<absent>')} → "
                         f"{new_data.get(split, '<absent>')} (other files, or the same files at another path; "
                         "for a stream, other shards or another revision of them)")
    return lines


def _show(values: dict[str, Any], key: str) -> str:
    return json.dumps(values[key]) if key in values else "<absent>"


def check_checkpoint(checkpoint: str | Path, fingerprint: dict[str, Any], explicit: bool) -> None:
    """Compare the run with the checkpoint it is about to continue. A checkpoint found in ``output_dir`` of another
    run stops it (:class:`RecipeError`); one named by ``resume_from_checkpoint``/``resume_from_hub`` is the user's
    choice, so a difference is only warned about; one without a fingerprint (older runs) is resumed with a warning.
    An incomplete checkpoint named by the user stops the run with what is missing (:func:`checkpoint_problem`)."""
    problem = checkpoint_problem(checkpoint, fingerprinted=False) if explicit else None
    if problem is not None:
        raise RecipeError(
            f"Cannot resume from {checkpoint}: {problem}; it was probably cut while being saved. Fix: name an "
            "earlier checkpoint with --resume_from_checkpoint, or leave it out to continue from the last complete "
            "checkpoint in --output_dir."
        )
    saved = read_fingerprint(checkpoint)
    if saved is None:
        if not explicit:
            logger.warning("%s has no %s (saved by an older version): resuming it without checking that it is the "
                           "same run.", checkpoint, FINGERPRINT_FILE)
        return
    changed = differences(saved, fingerprint)
    if not changed:
        return
    listing = "\n".join(f"  {line}" for line in changed)
    if explicit:
        logger.warning("Resuming %s with settings that differ from the run that saved it (its optimizer, learning-"
                       "rate schedule and step count are restored as they were):\n%s", checkpoint, listing)
        return
    output_dir = Path(checkpoint).parent
    raise RecipeError(
        f"{output_dir} holds {Path(checkpoint).name} of a different run; resuming it would silently restore that "
        f"run's optimizer and learning-rate schedule. What differs (saved → now):\n{listing}\n"
        f"Fix: use a new --output_dir for this run, or --auto_resume false to start over in {output_dir}. "
        f"(To continue that checkpoint with the new settings anyway: --resume_from_checkpoint {checkpoint})"
    )


def write_run_status(output_dir: str | Path, status: str) -> Path:
    """``output_dir/run_status.json`` saying how far the run got (:data:`STATUS_FILE`), written atomically."""
    return write_atomically(Path(output_dir) / STATUS_FILE, json.dumps({"status": status}) + "\n")


def read_run_status(output_dir: str | Path) -> str | None:
    """The status in ``output_dir/run_status.json``; None when there is none (runs of older versions)."""
    try:
        return json.loads((Path(output_dir) / STATUS_FILE).read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def trained_run(output_dir: str | Path) -> bool:
    """Whether ``output_dir`` holds a run whose training completed (status ``trained``: the final model, trainer
    state and fingerprint are there and whole) but whose later steps did not all finish: a rerun skips training
    and redoes evaluation, outputs and push from the saved model."""
    return read_run_status(output_dir) == TRAINED and checkpoint_problem(output_dir) is None


def finished_run(recipe: Recipe, fingerprint: dict[str, Any]) -> str | None:
    """When ``output_dir`` holds a run that finished (status ``finished``, written after its last output; for runs
    of older versions, without a status: final model and ``trainer_state.json``) with this fingerprint: the
    message saying so and how to train again. A finished or trained run of other settings stops with the
    differences (:class:`RecipeError`); one still training, or trained with outputs missing, is not finished."""
    output_dir = Path(recipe.training.output_dir)
    status = read_run_status(output_dir)
    if status == TRAINING:
        return None
    state_file = output_dir / "trainer_state.json"
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if not state_file.is_file() or not any((output_dir / name).is_file() for name in weights):
        return None
    saved = read_fingerprint(output_dir)
    if saved is None:  # finished before the final fingerprint was written: its last checkpoint has one
        last = last_checkpoint(output_dir)
        saved = read_fingerprint(last) if last else None
    changed = differences(saved, fingerprint) if saved is not None else []
    if changed:
        listing = "\n".join(f"  {line}" for line in changed)
        last = last_checkpoint(output_dir)
        extend = f" (To continue its {Path(last).name} with the new settings: --resume_from_checkpoint {last})"
        raise RecipeError(
            f"{output_dir} holds a finished run with other settings. What differs (saved → now):\n{listing}\n"
            f"Fix: use a new --output_dir for this run, or --auto_resume false to start over in {output_dir} "
            f"(its model and checkpoints are overwritten).{extend if last else ''}"
        )
    if status == TRAINED:
        return None
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    step, max_steps = state.get("global_step", 0), state.get("max_steps", 0)
    stopped = "" if step >= max_steps else ", stopped early"
    return (
        f"{output_dir} holds a finished run (step {step} of {max_steps}{stopped}; model, metrics and card saved): "
        "nothing trained, nothing pushed. To train again use a new --output_dir, or --auto_resume false to start "
        f"over in {output_dir}; to publish this one: vision-recipes push {output_dir} --repo-id USER/NAME"
    )


def existing_metrics(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The metrics a finished run saved (``eval_results.json``, ``test_results.json``...), by split."""
    metrics = {}
    for split in ("train", "eval", "test"):
        path = Path(output_dir) / f"{split}_results.json"
        if path.is_file():
            metrics[split] = json.loads(path.read_text(encoding="utf-8"))
    return metrics


_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE_FILE = "trainer_state.json"
SHARDED_WEIGHTS_INDEX = "model.safetensors.index.json"
OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model_fsdp.bin",
                 "pytorch_model_fsdp_0")
"""Weights the Trainer saves in other set-ups (``.bin``, FSDP): their presence is enough, they are not opened."""
INCOMPLETE_PREFIX = "incomplete-"
"""An incomplete ``checkpoint-N`` is moved aside to ``incomplete-checkpoint-N`` before training continues (out of the
Trainer's rotation and resume, which take every ``checkpoint-*``; the rerun saves ``checkpoint-N`` afresh)."""


RUN_SIGNS = frozenset({STATUS_FILE, FINGERPRINT_FILE, "run_manifest.json", "trainer_state.json", "lr_find.json",
                       "evaluation_recipe.yaml"})
"""Files only a vision-recipes run writes in its ``output_dir`` (with ``checkpoint-N`` folders and a model card
tagged ``vision-recipes``)."""


def foreign_contents(output_dir: str | Path) -> list[str]:
    """The entries of ``output_dir`` when it holds files but no sign of a vision-recipes run (:data:`RUN_SIGNS`),
    such as ``--output_dir .`` in a project folder: a run there would overwrite its ``README.md``,
    ``config.json``... Empty for a missing or empty folder and for one of this tool's runs."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    entries = sorted(path.name for path in folder.iterdir())
    ours = [name for name in entries if name in RUN_SIGNS or _CHECKPOINT_NAME.match(name)
            or name.startswith((INCOMPLETE_PREFIX, ".checkpoint-"))]
    if ours or not entries:
        return []
    try:
        if "vision-recipes" in (folder / "README.md").read_text(encoding="utf-8", errors="replace"):
            return []
    except OSError:
        pass
    return entries


def checkpoint_problem(folder: str | Path, fingerprinted: bool = True) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or None when it is: the one completeness rule of resuming.

    Complete means ``trainer_state.json`` parses (the Trainer writes it after the weights, optimizer, scheduler and
    RNG states), the weights are whole (``model.safetensors`` and every shard of a sharded one open with their
    header and size intact; ``.bin``/FSDP weights only need to exist) and, when ``fingerprinted`` (this version's
    runs, which write it), ``run_fingerprint.json`` — written last and atomically — is there."""
    folder = Path(folder)
    try:
        json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE_FILE}"
    except (OSError, ValueError) as err:
        return f"its {TRAINER_STATE_FILE} is unreadable ({str(err).splitlines()[0]})"
    weights = _weights_problem(folder)
    if weights is not None:
        return weights
    if fingerprinted and not (folder / FINGERPRINT_FILE).is_file():
        return f"it has no {FINGERPRINT_FILE} (written last, after the Trainer's files)"
    return None


def _weights_problem(folder: Path) -> str | None:
    shards = []
    if (folder / SHARDED_WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((folder / SHARDED_WEIGHTS_INDEX).read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            return f"its {SHARDED_WEIGHTS_INDEX} is unreadable ({str(err).splitlines()[0]})"
    elif (folder / "model.safetensors").exists():
        shards = ["model.safetensors"]
    elif any((folder / name).exists() for name in OTHER_WEIGHTS):
        return None
    else:
        return "it has no model weights (model.safetensors)"
    for shard in shards:
        try:
            with safe_open(str(folder / shard), framework="pt"):
                pass
        except (SafetensorError, OSError, ValueError) as err:
            return f"its {shard} is truncated or unreadable ({str(err).splitlines()[0]})"
    return None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest (highest N) first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(match.group(1)), path) for path in Path(output_dir).iterdir()
             if (match := _CHECKPOINT_NAME.match(path.name)) and path.is_dir()]
    return [path for _, path in sorted(found, reverse=True)]


def last_checkpoint(output_dir: str | Path, move_aside: bool = False) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir``, or None. Newer incomplete ones (a run killed while
    saving) are skipped with a warning naming each and why; ``move_aside`` (the main process, about to train)
    also renames them to ``incomplete-checkpoint-N``, so the rerun saves that step afresh.

    Checkpoints of versions before the fingerprint are complete without one when no checkpoint of the folder has
    one; once one does, the run writes them, and a checkpoint without it was cut before its end."""
    found = checkpoints(output_dir)
    fingerprinted = any((path / FINGERPRINT_FILE).is_file() for path in found)
    chosen, skipped = None, []
    for path in found:
        problem = checkpoint_problem(path, fingerprinted=fingerprinted)
        if problem is None:
            chosen = str(path)
            break
        skipped.append((path, problem))
    outcome = f"resuming from {Path(chosen).name}" if chosen else "no complete checkpoint is left: training starts over"
    for path, problem in skipped:
        where = ""
        if move_aside:
            aside = path.with_name(INCOMPLETE_PREFIX + path.name)
            shutil.rmtree(aside, ignore_errors=True)  # an earlier cut of the same step
            try:
                path.rename(aside)
                where = f"; moved aside to {aside.name} (delete it once you have looked)"
            except OSError as err:
                where = f"; could not move it aside ({err})"
        logger.warning("Skipping %s: an incomplete checkpoint (cut while being saved?): %s; %s%s.", path, problem,
                       outcome, where)
    return chosen
