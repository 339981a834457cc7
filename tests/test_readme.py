"""The README's commands are real: CI runs command 2 verbatim, command 1's quickstart works, keys are documented."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.config import ModelArguments, RunArguments
from recipes.tasks import get_task, task_names

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def test_ci_runs_readme_command_2_verbatim() -> None:
    test_command = _bash_blocks()[2]
    assert "pytest" in test_command
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_readme_command_1_installs_and_runs_the_quickstart() -> None:
    command = _bash_blocks()[0]
    assert command.startswith("pip install torch==2.14.1 torchvision==0.29.1")
    assert command.endswith("python scripts/quickstart.py")


def test_every_recipe_key_is_documented() -> None:
    classes = [RunArguments, ModelArguments] + [get_task(name).data_arguments_class for name in task_names()]
    missing = [f.name for cls in classes for f in dataclasses.fields(cls) if f"`{f.name}`" not in README]
    assert not missing, f"undocumented recipe keys: {missing}"


def test_readme_mentions_every_config() -> None:
    for path in (REPO / "configs").glob("*.yaml"):
        assert f"configs/{path.name}" in README, path.name
    for path in (REPO / "configs" / "accelerate").glob("*.yaml"):
        if path.name != "cpu_2proc.yaml":
            assert f"configs/accelerate/{path.name}" in README, path.name


@pytest.mark.slow
def test_quickstart_script_runs_all_tasks(tmp_path: Path) -> None:
    """README command 1's last step, shortened to a few steps per task so the suite stays fast."""
    result = subprocess.run(
        [sys.executable, "scripts/quickstart.py", "--data-dir", str(tmp_path / "data"),
         "--output-dir", str(tmp_path / "out"), "--max_steps", "2", "--eval_strategy", "no",
         "--save_strategy", "no", "--load_best_model_at_end", "false", "--make_plots", "false"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    assert "Quickstart results" in result.stdout
    rows = json.loads((tmp_path / "out" / "quickstart_results.json").read_text())["rows"]
    assert [row["task"] for row in rows] == ["classification", "detection", "segmentation"]
    for row in rows:
        assert (Path(row["output_dir"]) / "model.safetensors").is_file()
        assert (Path(row["output_dir"]) / "README.md").is_file()
