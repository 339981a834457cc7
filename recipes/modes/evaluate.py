"""``vision-recipes evaluate MODEL --validation_dir DIR``: score a fine-tuned model (output folder or Hub id) on
data it never saw: the task's metrics, plots and ``evaluation.md``, in ``--output_dir`` (default
``MODEL/eval-<data>`` for a local model, ``outputs/eval-<model>-<data>`` for a Hub id).

The data keys are the recipe's (``--validation_dir``, ``--validation_file``, ``--dataset_name`` with
``--validation_split``, ``--dataset_format``, ``--max_eval_samples``...); labels are matched to the model's by
name. The run is :func:`recipes.lifecycle.evaluate_model` (the evaluation data alone, nothing of a training run
written) with the task read from the model's config and the model's own label keys (``class_names``,
``ignore_labels``, ``reduce_labels``... from its ``run_manifest.json``).
``--update_card`` writes the results into the model folder's ``README.md`` as a ``model-index`` entry."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipes.config import RecipeError
from recipes.modes.loading import read_manifest

SOURCE_KEYS = ("dataset_name", "dataset_config_name", "train_split", "validation_split", "test_split", "train_dir",
               "validation_dir", "test_dir", "train_file", "validation_file", "test_file", "max_train_samples",
               "max_eval_samples", "train_val_split", "augmentation", "preprocessing_num_workers", "dataset_format",
               "cache_decoded_images", "strict", "check_images")
"""Data keys that describe where the training data was, not how its labels read: never inherited."""
COLUMN_KEYS = ("image_column_name", "label_column_name")
NOT_REPORTED = ("_runtime", "_per_second", "_epoch", "_model_preparation_time")


def given_keys(argv: Sequence[str]) -> dict[str, str | None]:
    """``--key value`` / ``--key=value`` pairs of a command line (a flag without value maps to ``None``)."""
    found: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            key, has_value, value = arg[2:].partition("=")
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            found[key.replace("-", "_")] = value if has_value else (nxt if nxt and not nxt.startswith("--") else None)
    return found


def slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-") or "data"


def data_name(keys: dict[str, str | None]) -> tuple[str, str]:
    """``(name, type)`` of the evaluation data for folder names and the card: a Hub id, or the local folder/file
    as ``parent/name``."""
    if keys.get("dataset_name"):
        return str(keys["dataset_name"]), str(keys["dataset_name"])
    for key in ("validation_dir", "validation_file", "test_dir", "train_dir", "train_file"):
        if keys.get(key):
            path = Path(str(keys[key])).expanduser().resolve()
            # The name is also the card's dataset type: the Hub groups model-index results by type and split.
            return f"{path.parent.name}/{path.name}", f"{path.parent.name}/{path.name}"
    raise RecipeError("evaluate needs data: --validation_dir DIR, --validation_file FILE, or --dataset_name ID "
                      "(with --validation_split).")


def inherited_data_keys(model_dir: Path | None, data_class: type, local_data: bool) -> dict[str, Any]:
    """The data keys of the model's own training recipe (``run_manifest.json``) that say how labels read (class
    names, ignored labels, label reduction...), so the new data is read the same way."""
    recipe = read_manifest(model_dir).get("recipe") or {}
    names = {f.name for f in dataclasses.fields(data_class)} - set(SOURCE_KEYS)
    if local_data:
        names -= set(COLUMN_KEYS)
    return {key: recipe[key] for key in sorted(names) if key in recipe}


def training_summary(model_dir: Path | None) -> dict[str, Any]:
    """The ``train_*`` statistics of the model's training data (class counts, pixel shares)."""
    summary = read_manifest(model_dir).get("data_summary") or {}
    return {key: value for key, value in summary.items() if key.startswith("train")}


def evaluation_keys(model: str, task_name: str, output_dir: Path, inherited: dict[str, Any]) -> dict[str, Any]:
    """The recipe keys of the evaluation run (the command line still overrides them)."""
    return {"task": task_name, "model_name_or_path": model, "evaluate_only": True, "output_dir": str(output_dir),
            "report_to": "none", **inherited}


def write_report(context: Any, path: Path, model: str, data: str) -> Path:
    """``evaluation.md``: data, metrics (the card's first, display names), the task's sections and plots."""
    task, metrics = context.task, context.metrics.get("eval", {})
    summary = context.data.summary
    skipped = [s for s in summary.get("skipped_files") or [] if s.get("split") == "validation"]
    lines = [f"# Evaluation of `{model}`", "",
             f"Task: {task.name}. Data: `{data}` ({summary.get('validation_examples', '?')} images"
             + (f", {len(skipped)} unreadable skipped" if skipped else "")
             + "). Labels matched to the model's by name.", "", "| Metric | Value |", "|---|---|"]
    shown = set()
    for key, display in task.card_metrics.items():
        if f"eval_{key}" in metrics:
            lines.append(f"| {display} | {metrics[f'eval_{key}']:.4f} |")
            shown.add(f"eval_{key}")
    for key, value in sorted(metrics.items()):
        if key in shown or key == "epoch" or not isinstance(value, (int, float)) or key.endswith(NOT_REPORTED):
            continue
        lines.append(f"| {key.removeprefix('eval_')} | {value if isinstance(value, int) else f'{value:.4f}'} |")
    for title, markdown in task.card_sections(context):
        lines += ["", f"## {title}", "", markdown]
    if context.plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({p.name})" for name, p in context.plots.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def update_model_card(model_dir: Path, context: Any, data: str, data_type: str, split: str) -> Path:
    """Add (or replace, same dataset + split + metric) this evaluation's ``model-index`` results in
    ``model_dir/README.md``; other entries and the card's text stay."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    path = model_dir / "README.md"
    if path.is_file():
        card = ModelCard.load(path)
    else:
        card = ModelCard(f"---\n{ModelCardData(library_name='transformers').to_yaml()}\n---\n\n# {model_dir.name}\n")
    task, metrics = context.task, context.metrics.get("eval", {})
    new = [
        EvalResult(task_type=task.pipeline_tag, task_name=task.card_task_name(),
                   dataset_type=data_type, dataset_name=data, dataset_split=split, metric_type=key,
                   metric_name=display, metric_value=round(float(metrics[f"eval_{key}"]), 4))
        for key, display in task.card_metrics.items() if f"eval_{key}" in metrics
    ]
    def same(result: EvalResult) -> tuple:
        return result.dataset_type, result.dataset_name, result.dataset_config, result.dataset_split, result.metric_type

    replaced = {same(r) for r in new}
    kept = [r for r in (card.data.eval_results or []) if same(r) not in replaced]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or model_dir.name
    card.save(path)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vision-recipes evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other --key value is a recipe key (data keys, --per_device_eval_batch_size, --use_cpu...).")
    parser.add_argument("model", help="Output folder of `vision-recipes train`, or a Hub model id")
    parser.add_argument("--output_dir", default=None, help="Where metrics, plots and evaluation.md go")
    parser.add_argument("--update_card", action="store_true",
                        help="Write the results into MODEL/README.md (model-index), keeping other entries")
    return parser


def evaluate(model: str, output_dir: str | None, update_card: bool, rest: list[str]) -> Path:
    """Run the evaluation; return the report's path."""
    from transformers import AutoConfig

    from recipes.lifecycle import evaluate_model
    from recipes.parse import parse_recipe
    from recipes.tasks import task_for_config

    local = Path(model).expanduser()
    model_dir = local if local.is_dir() else None
    if local.exists() and not (local / "config.json").is_file():
        raise RecipeError(f"{local} has no config.json: pass the output folder of `vision-recipes train`.")
    try:
        task = task_for_config(AutoConfig.from_pretrained(model), where=model)
    except OSError as err:
        raise RecipeError(f"Could not load the model `{model}`: no such folder, and the Hub did not serve it "
                          f"({err}).") from err
    if update_card and model_dir is None:
        raise RecipeError("--update_card edits a local model folder's README.md; download the model or run it on "
                          "the folder you push from.")
    keys = given_keys(rest)
    for reserved in ("model_name_or_path", "task", "evaluate_only", "config"):
        if reserved in keys:
            raise RecipeError(f"--{reserved} is set by `evaluate` (the model is its first argument).")
    data, data_type = data_name(keys)
    if output_dir is None:
        target = model_dir if model_dir is not None else Path("outputs")
        output_dir = str(target / (f"eval-{slug(data)}" if model_dir is not None else
                                   f"eval-{slug(model)}-{slug(data)}"))
    out = Path(output_dir)
    if model_dir is not None and out.resolve() == model_dir.resolve():
        raise RecipeError("--output_dir is the model folder: the evaluation would overwrite the model's card and "
                          "results. Use a subfolder (the default is MODEL/eval-<data>).")
    local_data = not keys.get("dataset_name")
    inherited = inherited_data_keys(model_dir, task.data_arguments_class, local_data)
    out.mkdir(parents=True, exist_ok=True)
    recipe = parse_recipe(rest, source=evaluation_keys(model, task.name, out, inherited),
                          source_name="the evaluation's recipe (the model's label keys)")
    context = evaluate_model(recipe)
    if not context.trainer.is_world_process_zero():
        return out / "evaluation.md"
    # Train statistics in the report (the task's sections) are the model's own training data's.
    context.data.summary = {**context.data.summary, **training_summary(model_dir)}
    report = write_report(context, out / "evaluation.md", model, data)
    print(f"Evaluation report: {report}", flush=True)
    if update_card:
        split = keys.get("validation_split") or "validation"
        card = update_model_card(model_dir, context, data, data_type, str(split))
        print(f"Model card updated: {card}", flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from recipes.decode.images import BadImageError
    from recipes.training import release_process_group

    args, rest = build_parser().parse_known_args(argv)
    try:
        evaluate(args.model, args.output_dir, args.update_card, rest)
    except (RecipeError, BadImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    release_process_group()
    return 0
