"""What a run leaves behind: the LR range test's plot, the validation metrics of ``evaluate`` modules, plots,
examples, ``run_manifest.json``, the model card, the push, and the closing summary."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from recipes.artifacts.card import build_model_card
from recipes.artifacts.checkpoints import write_atomically
from recipes.artifacts.examples import save_examples
from recipes.artifacts.hub import PublishError, push_output_dir
from recipes.config import RecipeError
from recipes.draw import plots
from recipes.model.schedule import RangeTest
from recipes.tasks import RunContext, TaskData

logger = logging.getLogger("recipes")


def write_range_test(result: RangeTest, output_dir: Path) -> Path:
    """``lr_find.json`` and ``lr_find.png`` (loss against learning rate, suggestion marked); logs the suggestion."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "lr_find.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    path = plots.range_test(result.learning_rates, result.losses, result.suggested, output_dir / "lr_find.png")
    if result.suggested is None:
        logger.warning("LR range test: too few steps before the loss diverged; no suggestion (see %s).", path)
    else:
        print(
            f"LR range test: suggested learning_rate {result.suggested:.2e} (steepest descent; loss minimum at "
            f"{result.minimum:.2e}). Plot: {path}",
            flush=True,
        )
    return path


def log_data_summary(data: TaskData) -> None:
    counts = {k: v for k, v in data.summary.items() if k.endswith("_examples")}
    logger.info("Data: %s, %d classes", counts, len(data.id2label))
    skipped = data.summary.get("skipped_files") or []
    if skipped:
        logger.warning("%d file(s) skipped by the data checks (see run_manifest.json).", len(skipped))


def extra_metrics(metric_ids: list[str], details: dict[str, Any]) -> dict[str, float]:
    """Compute ``evaluate`` modules (Hub ids or local paths) on the validation predictions."""
    import evaluate

    if not details.get("references"):
        raise RecipeError("`extra_metrics` needs per-example predictions, which this task does not provide.")
    results: dict[str, float] = {}
    for metric_id in metric_ids:
        try:
            module = evaluate.load(metric_id)
        except Exception as err:
            raise RecipeError(
                f"Could not load evaluate metric `{metric_id}`: {err}. Hub metric ids need internet; "
                "a local metric script path works offline."
            ) from err
        computed = module.compute(predictions=details["predictions"], references=details["references"])
        for key, value in (computed or {}).items():
            if isinstance(value, (int, float)):
                results[f"eval_{key}"] = float(value)
    return results


def write_outputs(context: RunContext) -> None:
    """A training run's outputs: training curves and the task's plots, a few validation images for the demo, the
    manifest and the model card."""
    output_dir = context.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    if context.recipe.run.make_plots:
        curves = plots.training_curves(
            context.trainer.state.log_history, context.task.main_metric, output_dir / "training_curves.png"
        )
        if curves is not None:
            context.plots["training_curves"] = curves
    write_task_plots(context)
    # A few validation images for `vision-recipes demo` (held-out splits are known only here).
    save_examples(context.data.validation, output_dir, column=context.recipe.data.image_column_name)
    write_manifest(context)
    card = build_model_card(context)
    write_atomically(output_dir / "README.md", str(card))


def write_task_plots(context: RunContext) -> None:
    """The task's plots of the evaluated model (``make_plots``), added to ``context.plots``."""
    if not context.recipe.run.make_plots:
        return
    context.output_dir.mkdir(parents=True, exist_ok=True)
    if context.trainer.is_fsdp_enabled:  # prediction plots would run a sharded model on one rank only
        logger.info("FSDP run: prediction plots skipped; make them from the saved model if needed.")
    else:
        context.plots.update(context.task.make_plots(context, context.output_dir))


def write_manifest(context: RunContext) -> Path:
    """``run_manifest.json``: resolved recipe, versions, dataset fingerprints, data checks, metrics."""
    data = context.data
    fingerprints = {
        split: getattr(dataset, "_fingerprint", None)
        for split, dataset in (("train", data.train), ("validation", data.validation), ("test", data.test))
        if dataset is not None
    }
    manifest = {
        "task": context.task.name,
        "command": redact_command(sys.argv),
        "recipe": context.recipe.to_dict(),
        "recipe_file_keys": sorted(context.recipe.source),
        "versions": context.versions,
        "dataset_fingerprints": fingerprints,
        "data_summary": data.summary,
        "resumed_from": context.resumed_from,
        "world_size": context.recipe.training.world_size,
        "metrics": context.metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return write_atomically(context.output_dir / "run_manifest.json", json.dumps(manifest, indent=2, default=str))


SECRET_FLAGS = ("--hub_token", "--hub-token", "--token")


def redact_command(argv: list[str]) -> list[str]:
    """The command line with every token value replaced (flag values, ``hf_…`` strings, ``HF_TOKEN``)."""
    secrets = [os.environ.get("HF_TOKEN")]
    redacted, hide_next = [], False
    for arg in argv:
        flag, has_value, value = arg.partition("=")
        if hide_next or (has_value and flag in SECRET_FLAGS):
            secrets.append(value if has_value else arg)
            arg = f"{flag}=<redacted>" if has_value else "<redacted>"
        hide_next = arg in SECRET_FLAGS
        redacted.append("<redacted>" if arg.startswith("hf_") else arg)
    for secret in filter(None, secrets):
        redacted = [arg.replace(secret, "<redacted>") for arg in redacted]
    return redacted


def push(context: RunContext, token: str | None) -> None:
    args = context.recipe.training
    repo_id = args.hub_model_id or context.output_dir.name
    try:
        context.push_url = push_output_dir(
            context.output_dir,
            repo_id,
            token=token,
            private=args.hub_private_repo,
            include_photos=context.recipe.run.push_photos,
        )
        logger.info("Pushed to %s", context.push_url)
    except PublishError as err:
        context.push_error = str(err)
        logger.error("%s", err)


def print_summary(context: RunContext) -> None:
    """A short table at the end of the run: main metrics and where everything is."""
    task = context.task
    rows = [("task", task.name), ("output_dir", str(context.output_dir))]
    for split in ("eval", "test"):
        metrics = context.metrics.get(split, {})
        for key in (task.main_metric, *task.card_metrics):
            value = metrics.get(f"{split}_{key}")
            if value is not None and (f"{split}_{key}", f"{value:.4f}") not in rows:
                rows.append((f"{split}_{key}", f"{value:.4f}"))
    rows.append(("model card", str(context.output_dir / "README.md")))
    rows.append(("plots", ", ".join(p.name for p in context.plots.values()) or "-"))
    if context.resumed_from:
        rows.append(("resumed from", context.resumed_from))
    if context.push_url:
        rows.append(("pushed to", context.push_url))
    elif context.push_error:
        rows.append(("push", "FAILED (see message above)"))
    rows.append(("time", f"{time.time() - context.started:.0f}s"))
    width = max(len(k) for k, _ in rows)
    lines = ["", "=" * 60, "Vision Recipes run summary"]
    lines += [f"  {key.ljust(width)}  {value}" for key, value in rows]
    lines.append("=" * 60)
    print("\n".join(lines), flush=True)
