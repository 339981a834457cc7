"""A task is one package plus one registration: the toy image-regression task of ``tests/toy_regression`` (nothing of
it in ``recipes/``), registered as a ``vision_recipes.tasks`` entry point, trains, predicts, evaluates and exports
through the CLI like the built-in tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recipes.cli import main as cli_main
from recipes.config import RecipeError
from recipes.tasks import ENTRY_POINT_GROUP, get_task, task_names

TINY_RESNET = [
    "--model_type",
    "resnet",
    "--config_overrides",
    '{"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}',
    "--image_processor_overrides",
    '{"size": {"shortest_edge": 32}}',
]
CPU = ["--use_cpu", "true", "--dataloader_num_workers", "0", "--report_to", "none"]


@pytest.fixture
def toy_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type:
    """The toy task installed the way a plugin package is: an entry point of an installed distribution."""
    assert "image-regression" not in task_names()
    with pytest.raises(RecipeError, match="Unknown task `image-regression`"):
        get_task("image-regression")
    site = tmp_path / "site"
    dist = site / "toy_vision_task-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-vision-task\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nimage-regression = toy_regression.task:ImageRegression\n"
    )
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the package toy_regression
    monkeypatch.syspath_prepend(str(site))
    from toy_regression.task import ImageRegression

    return ImageRegression


def _targets(folder: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    return {row["file_name"]: row["target"] for row in rows}


@pytest.mark.slow
def test_a_task_from_one_package_trains_predicts_evaluates_and_exports(
    toy_task: type, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from toy_regression.task import make_brightness_dataset

    assert isinstance(get_task("regression"), toy_task) and task_names()[-1] == "image-regression"
    train_dir = make_brightness_dataset(tmp_path / "data" / "train", count=48, seed=0)
    val_dir = make_brightness_dataset(tmp_path / "data" / "validation", count=12, seed=1)
    model = tmp_path / "model"

    # train: the task named by the recipe, found in the registry through its entry point
    assert (
        cli_main(
            [
                "train",
                "--task",
                "image-regression",
                "--train_dir",
                str(train_dir),
                "--validation_dir",
                str(val_dir),
                *TINY_RESNET,
                "--output_dir",
                str(model),
                "--num_train_epochs",
                "3",
                "--per_device_train_batch_size",
                "8",
                "--learning_rate",
                "0.01",
                *CPU,
            ]
        )
        == 0
    )
    capsys.readouterr()
    results = json.loads((model / "all_results.json").read_text())
    assert np.isfinite(results["eval_mae"]) and results["train_samples"] == 48
    card = (model / "README.md").read_text()
    assert "Image Regression" in card and "## Errors" in card
    assert json.loads((model / "config.json").read_text())["problem_type"] == "regression"

    # predict: the saved model's task recognised from its config (a regression head, not a classifier)
    predictions = tmp_path / "predictions.jsonl"
    assert (
        cli_main(
            ["predict", str(model), str(val_dir), "--output", str(predictions), "--num_workers", "0", "--device", "cpu"]
        )
        == 0
    )
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    targets = _targets(val_dir)
    assert len(rows) == len(targets)
    mae = float(np.mean([abs(row["value"] - targets[Path(row["file"]).name]) for row in rows]))

    # evaluate: the validation folder alone; its MAE is the predictions' against the targets
    report = tmp_path / "eval"
    assert cli_main(["evaluate", str(model), "--validation_dir", str(val_dir), "--output_dir", str(report), *CPU]) == 0
    metrics = json.loads((report / "eval_results.json").read_text())
    assert metrics["eval_samples"] == len(targets)
    assert metrics["eval_mae"] == pytest.approx(mae, abs=1e-4)
    assert f"| Mean absolute error | {metrics['eval_mae']:.4f} |" in (report / "evaluation.md").read_text()
    assert not (report / "README.md").exists() and not (report / "training_curves.png").exists()

    # export: ONNX Runtime against PyTorch on the run's own validation images, the default parity rule
    pytest.importorskip("onnxruntime", reason='needs the export extra: pip install -e ".[export]"')
    onnx_dir = tmp_path / "onnx"
    code = cli_main(
        ["export", str(model), "--output", str(onnx_dir), "--num-images", "4", "--no-benchmark", "--threads", "1"]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    assert "validation image(s) of the run" in printed.out
    parity = json.loads((onnx_dir / "export_report.json").read_text())["parity"]
    assert parity["passed"] and parity["outputs_close"] == 1.0 and parity["compared"] == 4
