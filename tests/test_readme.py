"""The README's and the docs' commands are real: CI runs the test command verbatim, the quickstart works, every
training command parses, every config is documented. Commands are found by their marker (``<!-- command: NAME -->``
on the line before a bash block), not by their position."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.modes import export, predict
from recipes.parse import parse_recipe

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- command: ([\w-]+) -->\n(```bash\n(.*?)```)?", flags=re.S)


def marked_commands(path: Path) -> dict[str, str]:
    """``{name: bash block}`` for every ``<!-- command: name -->`` marker of a Markdown file."""
    commands: dict[str, str] = {}
    for match in MARKER.finditer(path.read_text()):
        name = match.group(1)
        assert match.group(2), f"{path.name}: the marker `command: {name}` is not followed by a ```bash block"
        assert name not in commands, f"{path.name}: two `command: {name}` markers"
        commands[name] = match.group(3).strip()
    return commands


def bash_lines(path: Path) -> list[str]:
    """The command lines of every bash block of a Markdown file (comments left out)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and line[0] != "#"]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = marked_commands(README)["test"]
    assert "pytest" in test_command
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_readme_quickstart_command_installs_and_runs_the_quickstart() -> None:
    command = marked_commands(README)["quickstart"]
    assert command.startswith("pip install torch==2.14.1 torchvision==0.29.1")
    assert command.endswith("python scripts/quickstart.py")


def test_every_marker_names_one_bash_block() -> None:
    names = {path.name: marked_commands(path) for path in PAGES}
    assert {"quickstart", "test", "train-tasks", "modes"} <= set(names["README.md"])
    assert all(command for commands in names.values() for command in commands.values())


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_training_commands_parse(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``scripts/train.py`` command of the page names a recipe that exists and keys that parse (GPU recipes
    are parsed with ``--use_cpu true --bf16 false`` added, since TrainingArguments refuses bf16 without a GPU)."""
    monkeypatch.chdir(REPO)
    commands = [line for line in bash_lines(path) if "scripts/train.py" in line]
    for line in commands:
        argv = shlex.split(line.split("#")[0])
        recipe_argv = argv[next(i for i, arg in enumerate(argv) if arg.endswith("scripts/train.py")) + 1 :]
        assert (REPO / recipe_argv[0]).is_file(), f"{path.name}: {line}"
        recipe = parse_recipe([*recipe_argv, "--use_cpu", "true", "--bf16", "false"])
        assert recipe.run.task, line


MODE_PARSERS = {"predict": predict.build_parser, "export": export.build_parser}
MODE_COMMAND = re.compile(r"(?:vision-recipes (predict|export)|scripts/(predict|export)\.py) (.*)")


def test_predict_and_export_commands_parse() -> None:
    """Every `predict` and `export` command of the README and the docs uses options the mode has."""
    seen = set()
    for path in PAGES:
        for line in bash_lines(path):
            for part in line.split("&&"):
                match = MODE_COMMAND.search(part.split("#")[0])
                if match:
                    mode = match.group(1) or match.group(2)
                    MODE_PARSERS[mode]().parse_args(shlex.split(match.group(3)))
                    seen.add(mode)
    assert seen == set(MODE_PARSERS)


def test_docs_mention_every_config() -> None:
    text = "\n".join(path.read_text() for path in PAGES)
    for path in (REPO / "configs").glob("*.yaml"):
        assert f"configs/{path.name}" in text, path.name
    for path in (REPO / "configs" / "accelerate").iterdir():
        if path.name != "cpu_2proc.yaml":  # the tests' two-process CPU config
            assert f"configs/accelerate/{path.name}" in text, path.name


@pytest.mark.parametrize("name", ["README.md", "ARCHITECTURE.md"])
def test_relative_links_resolve(name: str) -> None:
    """Links from the top-level files into the repository (docs/ pages, files) point to files that exist."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / name).read_text())
    missing = [target for target in targets if "://" not in target and not (REPO / target).exists()]
    assert not missing, f"{name} links to missing files: {missing}"


@pytest.mark.slow
def test_quickstart_script_runs_all_tasks(tmp_path: Path) -> None:
    """README command `quickstart`'s last step, shortened to a few steps per task so the suite stays fast."""
    result = subprocess.run(
        [
            sys.executable,
            "scripts/quickstart.py",
            "--data-dir",
            str(tmp_path / "data"),
            "--output-dir",
            str(tmp_path / "out"),
            "--max_steps",
            "2",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
            "--make_plots",
            "false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    assert "Quickstart results" in result.stdout
    rows = json.loads((tmp_path / "out" / "quickstart_results.json").read_text())["rows"]
    assert [row["task"] for row in rows] == ["classification", "detection", "segmentation"]
    for row in rows:
        assert (Path(row["output_dir"]) / "model.safetensors").is_file()
        assert (Path(row["output_dir"]) / "README.md").is_file()
