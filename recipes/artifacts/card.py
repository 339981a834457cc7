"""Model cards built with ``huggingface_hub.ModelCard`` / ``ModelCardData`` (no network call)."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from recipes.model.ema import EmaSettings
from recipes.tasks.base import RunContext

HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "seed",
    "bf16", "fp16",
)


def build_model_card(context: RunContext) -> ModelCard:
    """The README.md of the output folder: YAML metadata with a model-index of the real results,
    then description, usage, data, hyper-parameters, results, plots and framework versions."""
    recipe, task = context.recipe, context.task
    model_id = recipe.training.hub_model_id or Path(recipe.training.output_dir).name
    dataset_name = recipe.data.dataset_name or "local dataset"
    metrics = context.metrics.get("eval", {})
    eval_results = [
        EvalResult(
            task_type=task.pipeline_tag,
            task_name=task.card_task_name(),
            dataset_type=recipe.data.dataset_name or "imagefolder",
            dataset_name=dataset_name,
            dataset_config=recipe.data.dataset_config_name,
            dataset_split=recipe.data.validation_split or "validation",
            metric_type=key,
            metric_name=display,
            metric_value=round(float(metrics[f"eval_{key}"]), 4),
        )
        for key, display in task.card_metrics.items()
        if f"eval_{key}" in metrics
    ]
    base_model = hub_id(recipe.model.model_name_or_path)
    data = ModelCardData(
        language=None,
        license=recipe.run.license,
        library_name="transformers",
        pipeline_tag=task.pipeline_tag,
        tags=["vision", task.pipeline_tag, "vision-recipes", *recipe.run.card_tags],
        base_model=base_model,
        datasets=[recipe.data.dataset_name] if recipe.data.dataset_name else None,
        metrics=list(task.card_metrics) or None,
        model_name=model_id,
        eval_results=eval_results or None,
    )
    # Without a Hub id the snippet loads the output folder itself.
    output_dir = Path(recipe.training.output_dir)
    usage_id = recipe.training.hub_model_id or (output_dir.name if output_dir.is_absolute() else str(output_dir))
    body = "\n\n".join(_sections(context, model_id, usage_id, base_model))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_id(name: str | None) -> str | None:
    """``name`` when it is a Hub repository id, ``None`` for a local folder (never written into a card)."""
    if not name or Path(name).expanduser().exists() or not HUB_ID.match(name) or name.startswith("."):
        return None
    return name


def _sections(context: RunContext, model_id: str, usage_id: str, base_model: str | None) -> list[str]:
    recipe, task, summary = context.recipe, context.task, context.data.summary
    if base_model:
        origin = f"a fine-tuned version of [{base_model}](https://huggingface.co/{base_model})"
    elif recipe.model.model_name_or_path:
        origin = f"a fine-tuned version of a local checkpoint (`{Path(recipe.model.model_name_or_path).name}`)"
    else:
        origin = f"a `{recipe.model.model_type}` model trained from scratch (random initialisation from a config)"
    dataset = (
        f"[{recipe.data.dataset_name}](https://huggingface.co/datasets/{recipe.data.dataset_name})"
        if recipe.data.dataset_name
        else "a local dataset"
    )
    labels = ", ".join(context.data.id2label.values())
    out = [
        f"# {model_id}",
        f"This model is {origin}, trained for **{task.pipeline_tag}** on {dataset} with "
        "Vision Recipes (`transformers.Trainer`).\n\n"
        f"Labels ({len(context.data.id2label)}): {labels}",
        "## How to use\n\n```python\n" + task.usage_snippet(usage_id) + "\n```",
        "## Training data\n\n" + _data_table(summary),
        "## Training hyper-parameters\n\n" + _hyperparameter_table(recipe),
        "## Results\n\n" + _results_table(context),
    ]
    for title, markdown in task.card_sections(context):
        out.append(f"## {title}\n\n{markdown}")
    if context.plots:
        images = "\n\n".join(f"![{name}]({path.name})" for name, path in context.plots.items())
        out.append("## Plots\n\n" + images)
    versions = "\n".join(f"- {name} {version}" for name, version in context.versions.items())
    out.append("## Framework versions\n\n" + versions)
    return out


def _data_table(summary: dict[str, Any]) -> str:
    rows = ["| Split | Examples |", "|---|---|"]
    for split in ("train", "validation", "test"):
        if f"{split}_examples" in summary:
            rows.append(f"| {split} | {summary[f'{split}_examples']} |")
    stream = summary.get("streaming")
    if isinstance(stream, dict):  # streamed training data: what training read
        rows.insert(2, f"| train (streamed) | {stream['examples_seen']} examples trained on |")
    skipped = summary.get("skipped_files") or []
    note = f"\n\n{len(skipped)} unreadable file(s) were skipped (listed in `run_manifest.json`)." if skipped else ""
    if isinstance(stream, dict) and stream.get("bad_records"):
        note += f"\n\n{stream['bad_records']} bad streamed record(s) were skipped (listed in `run_manifest.json`)."
    if isinstance(stream, dict) and stream.get("record_checks"):
        checks = sorted(stream["record_checks"].items())
        fixed = ", ".join(f"{name.replace('_', ' ')}: {count}" for name, count in checks)
        note += f"\n\nFixed in the streamed training records as they were read: {fixed}."
    return "\n".join(rows) + note


def _hyperparameter_table(recipe: Any) -> str:
    args = recipe.training
    rows = ["| Hyper-parameter | Value |", "|---|---|"]
    for name in HYPERPARAMETERS:
        rows.append(f"| {name} | {_shown(getattr(args, name, None))} |")
    rows.append(f"| augmentation | {recipe.data.augmentation} |")
    for name in ("backbone_learning_rate", "layer_decay", "head_warmup_epochs", "batchnorm_momentum",
                 "freeze_batchnorm"):
        value = getattr(recipe.model, name)
        if value not in (None, False, 0, 0.0):
            rows.append(f"| {name} | {value} |")
    if recipe.model.ema:
        settings = EmaSettings(decay=recipe.model.ema_decay, warmup=recipe.model.ema_warmup)
        rows.append(f"| EMA of the weights (this model; its evaluations) | {settings.describe()} |")
    return "\n".join(rows)


def _shown(value: Any) -> Any:
    """A hyper-parameter as a recipe writes it: an enum (``SchedulerType.COSINE``) by its value (``cosine``)."""
    return value.value if isinstance(value, Enum) else value


NOT_METRICS = ("_runtime", "_per_second", "_epoch")
"""Keys of the Trainer's evaluation results that are not metrics (the timing, the epoch it ran at)."""


def _results_table(context: RunContext) -> str:
    rows = ["| Split | Metric | Value |", "|---|---|---|"]
    for split in ("eval", "test"):
        for key, value in sorted(context.metrics.get(split, {}).items()):
            if isinstance(value, (int, float)) and not key.endswith(NOT_METRICS):
                name = "validation" if split == "eval" else "test"
                rows.append(f"| {name} | {key.removeprefix(split + '_')} | {value:.4f} |")
    return "\n".join(rows)


DEMO_SECTION = "## Demo"


def link_space(card_text: str, space_id: str) -> str:
    """``card_text`` with the Space ``space_id`` listed in its ``## Demo`` section (added before the first other
    section when missing); unchanged when the Space is already linked. Written by ``vision-recipes space``."""
    line = f"- [{space_id}](https://huggingface.co/spaces/{space_id}): try the model in the browser (Gradio Space)"
    if f"(https://huggingface.co/spaces/{space_id})" in card_text:
        return card_text
    lines = card_text.splitlines()
    if DEMO_SECTION in lines:
        at = lines.index(DEMO_SECTION) + 1
        while at < len(lines) and not lines[at].startswith("## "):
            at += 1
        while at > 0 and not lines[at - 1].strip():
            at -= 1
        lines.insert(at, line)
    else:
        body = 0
        if lines and lines[0].strip() == "---":  # after the metadata block
            body = next((i + 1 for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        at = next((i for i in range(body, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[at:at] = [DEMO_SECTION, "", line, ""]
    return "\n".join(lines) + "\n"
