"""Parse a recipe: ``[CONFIG.yaml | --config CONFIG.yaml] [--key value ...]`` into a :class:`Recipe`.

Precedence: task defaults < YAML < command line. Unknown keys stop the run with the closest known key;
the task named by the recipe supplies its data-argument class and training defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from recipes.config import ModelArguments, Recipe, RecipeError, RunArguments, load_yaml
from recipes.tasks import get_task


def _split_config_argument(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Find the recipe path: ``--config X``, ``--config=X`` or a first positional ``*.yaml``."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise RecipeError("`--config` needs a path to a YAML recipe.")
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    return None, argv


def _field_names(classes: Sequence[type]) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}


def _unknown_key_error(key: str, known: set[str], where: str) -> RecipeError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return RecipeError(f"Unknown key `{key}` in {where}.{hint}")


def _cli_task(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--task" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--task="):
            return arg.split("=", 1)[1]
    return None


PIP_NAMES = {"wandb": "wandb", "tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow",
             "comet_ml": "comet_ml", "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive"}


def _check_reporting_integrations(training: TrainingArguments) -> None:
    """Fail before any work when ``report_to`` names a logger that is not installed."""
    from transformers.integrations import get_available_reporting_integrations

    wanted = [name for name in (training.report_to or []) if name not in ("none", "all")]
    missing = [name for name in wanted if name not in get_available_reporting_integrations()]
    if missing:
        install = " ".join(PIP_NAMES.get(name, name) for name in missing)
        raise RecipeError(
            f"report_to {missing} is not installed: pip install {install} (or set --report_to none)."
        )


LOCAL_SOURCES = ("train_dir", "train_file")


def _command_line_data_source_wins(namespace: dict[str, Any], argv: Sequence[str]) -> None:
    """``--train_dir``/``--train_file`` on the command line replace the recipe's Hub dataset, and
    ``--dataset_name`` replaces its local folder, so any recipe runs on any data."""
    given = {arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    log = logging.getLogger("recipes")
    if given & set(LOCAL_SOURCES) and "dataset_name" not in given and namespace.get("dataset_name"):
        log.info("Using the local data from the command line instead of the recipe's `%s`.", namespace["dataset_name"])
        namespace["dataset_name"] = namespace["dataset_config_name"] = None
        # The recipe's split names belong to its Hub dataset; a local folder uses its own (or a hold-out).
        for key, default in (("train_split", "train"), ("validation_split", None), ("test_split", None)):
            if key not in given:
                namespace[key] = default
    if "dataset_name" in given and not given & set(LOCAL_SOURCES):
        for key in (*LOCAL_SOURCES, "validation_dir", "test_dir", "validation_file", "test_file"):
            if key in namespace:
                namespace[key] = None


def _without_evaluation(namespace: dict[str, Any]) -> None:
    """``eval_strategy: no`` leaves nothing to stop early on or to pick a best checkpoint by: turn both off, saying
    so (instead of transformers' bare assertion or value error)."""
    if str(namespace.get("eval_strategy")).lower() not in ("no", "intervalstrategy.no"):
        return
    log = logging.getLogger("recipes")
    if namespace.get("early_stopping_patience"):
        log.warning("early_stopping_patience needs evaluations; eval_strategy is `no`, so early stopping is off.")
        namespace["early_stopping_patience"] = None
    if namespace.get("load_best_model_at_end"):
        log.warning("load_best_model_at_end needs evaluations; eval_strategy is `no`, so the last model is kept.")
        namespace["load_best_model_at_end"] = False


def _pin_memory_only_for_an_accelerator(namespace: dict[str, Any]) -> None:
    """``dataloader_pin_memory`` (the Trainer's default: on) only where batches go to an accelerator: on a CPU run
    torch's loaders warn at every evaluation that pinning needs one, and pinned pages would only cost memory."""
    if not namespace.get("dataloader_pin_memory"):
        return
    if namespace.get("use_cpu") or not accelerator_available():
        namespace["dataloader_pin_memory"] = False


def accelerator_available() -> bool:
    """Whether torch sees an accelerator it pins memory for (CUDA, ROCm, XPU; not MPS, where it cannot)."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None:
        return torch.cuda.is_available()
    return bool(accelerator.is_available()) and accelerator.current_accelerator().type != "mps"  # mps: no pinning


def parse_recipe(argv: Sequence[str] | None = None) -> Recipe:
    """Parse ``[CONFIG.yaml | --config CONFIG.yaml] [--key value ...]`` into a :class:`Recipe`.

    Precedence: task defaults < YAML < command line. Unknown keys stop with a clear message.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, rest = _split_config_argument(argv)
    source = load_yaml(config_path) if config_path else {}
    task_name = _cli_task(rest) or source.get("task") or RunArguments.task
    task = get_task(task_name)

    classes = (RunArguments, task.data_arguments_class, ModelArguments, TrainingArguments)
    known = _field_names(classes)
    for key in source:
        if key not in known:
            raise _unknown_key_error(key, known, str(config_path))

    defaults = {**task.training_defaults(), **source}
    parser = HfArgumentParser(classes)
    parser.allow_abbrev = False  # a misspelled flag must fail, not match a longer one

    def fail(message: str) -> None:  # argparse would print its whole usage and exit
        match = re.search(r"argument --([\w-]+)", message)
        key = match.group(1).replace("-", "_") if match else None
        where = config_path if key in source and f"--{key}" not in " ".join(rest) else "the command line"
        raise RecipeError(f"Invalid value for `{key}` in {where}: {message}" if key else f"{message} ({where})")

    parser.error = fail  # type: ignore[method-assign]
    parser.set_defaults(**defaults)
    parsed, unknown = parser.parse_known_args(rest)
    flags = [a for a in unknown if a.startswith("--")]
    if unknown:
        if flags:
            raise _unknown_key_error(flags[0].lstrip("-").split("=")[0], known, "the command line")
        raise RecipeError(f"Unexpected command-line value(s): {' '.join(unknown)}")

    namespace = vars(parsed)
    _command_line_data_source_wins(namespace, rest)
    for key, value in task.forced_training_arguments().items():
        current = namespace.get(key)
        if key in source and source[key] != value:
            logging.getLogger("recipes").warning("`%s: %s` is not supported by this task; using %s.", key,
                                                 source[key], value)
        if isinstance(value, dict) and isinstance(current, dict):
            value = {**current, **value}
        namespace[key] = value
    _without_evaluation(namespace)
    _pin_memory_only_for_an_accelerator(namespace)
    built = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {k: v for k, v in namespace.items() if k in names}
        try:
            built.append(cls(**kwargs))
        except RecipeError:
            raise
        except (ValueError, TypeError) as err:
            raise RecipeError(f"Invalid recipe{f' {config_path}' if config_path else ''}: {err}") from err
    run, data, model, training = built
    _check_reporting_integrations(training)
    run.task = task.name
    return Recipe(run=run, data=data, model=model, training=training, source=source)
