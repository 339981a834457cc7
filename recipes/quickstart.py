"""The offline quickstart: generate small learnable datasets in the real on-disk layouts and train a
tiny model for each task from its ``configs/quickstart/*.yaml`` recipe."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recipes.parse import parse_recipe


@dataclass(frozen=True)
class QuickstartTask:
    """One quickstart entry: its recipe, its sample-data writer and the metric to report."""

    name: str
    recipe: str
    make_data: Callable[[Path], Path]
    metric: str
    chance: str


def _shapes(root: Path) -> Path:
    from recipes.sample_data.shapes import make_shapes_dataset

    return make_shapes_dataset(root, images_per_class=60, size=32, seed=0)


def _plates(root: Path) -> Path:
    from recipes.sample_data.plates import make_plates_dataset

    return make_plates_dataset(root, n_images=200, seed=0, size=160)


def _streets(root: Path) -> Path:
    from recipes.sample_data.streets import make_streets_dataset

    return make_streets_dataset(root, n_frames=60, seed=0)


QUICKSTART_TASKS = {
    "classification": QuickstartTask("classification", "configs/quickstart/classification.yaml", _shapes,
                                     "accuracy", "0.25 (4 balanced classes)"),
    "detection": QuickstartTask("detection", "configs/quickstart/detection.yaml", _plates, "map",
                                "0 (random boxes)"),
    "segmentation": QuickstartTask("segmentation", "configs/quickstart/segmentation.yaml", _streets, "mean_iou",
                                   "about 1/number of classes"),
}


def run_quickstart(
    tasks: Sequence[str], data_root: Path, output_root: Path, repo_root: Path, extra_args: Sequence[str] = ()
) -> list[dict[str, object]]:
    """Generate each task's sample data (once) and train it; return one result row per task."""
    from recipes.lifecycle import run

    rows = []
    for name in tasks:
        task = QUICKSTART_TASKS[name]
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
