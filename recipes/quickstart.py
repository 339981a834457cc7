"""The offline quickstart: generate small learnable datasets in the real on-disk layouts and train a
tiny model for each task from its ``configs/quickstart/*.yaml`` recipe (each task's :class:`Quickstart`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from recipes.parse import parse_recipe
from recipes.tasks import Quickstart, task_classes


def quickstart_tasks() -> dict[str, Quickstart]:
    """The quickstart of every registered task that has one, by short name, in registry order."""
    found = (task_class.quickstart for task_class in task_classes().values())
    return {quickstart.name: quickstart for quickstart in found if quickstart is not None}


def run_quickstart(
    tasks: Sequence[str], data_root: Path, output_root: Path, repo_root: Path, extra_args: Sequence[str] = ()
) -> list[dict[str, object]]:
    """Generate each task's sample data (once) and train it; return one result row per task."""
    from recipes.lifecycle import run

    rows = []
    known = quickstart_tasks()
    for name in tasks:
        task = known[name]
        data_dir = data_root / name
        if not data_dir.is_dir():
            print(f"[quickstart] writing sample {name} data to {data_dir}", flush=True)
            task.make_data(data_dir)
        started = time.perf_counter()
        recipe = parse_recipe([
            str(repo_root / task.recipe), "--train_dir", str(data_dir), "--output_dir", str(output_root / name),
            "--auto_resume", "false", *extra_args,
        ])
        context = run(recipe)
        rows.append({
            "task": name,
            "metric": task.metric,
            "value": context.metrics["eval"].get(f"eval_{task.metric}"),
            "chance": task.chance,
            "seconds": round(time.perf_counter() - started, 1),
            "output_dir": str(output_root / name),
        })
    return rows


def format_rows(rows: Sequence[dict[str, object]]) -> str:
    """The quickstart's closing table."""
    lines = [f"{'task':<15}{'metric':<12}{'value':>8}  {'time':>7}  chance level / output"]
    for row in rows:
        value = row["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{row['task']:<15}{row['metric']:<12}{shown:>8}  {row['seconds']:>6}s  "
                     f"{row['chance']} -> {row['output_dir']}")
    return "\n".join(lines)
