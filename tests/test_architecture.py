"""The floors of ARCHITECTURE.md hold: ``lint-imports`` checks the layers contract of ``pyproject.toml``
(``[tool.importlinter]``) on this checkout, and a contract the code breaks fails with the offending import named."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with ``config``, run by this interpreter on this checkout's ``recipes`` package."""
    if importlib.util.find_spec("importlinter") is None:
        message = "import-linter is not installed: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI installs the dev extra).")
        pytest.skip(message)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_floors_contract_is_kept() -> None:
    result = lint_imports(REPO / "pyproject.toml")
    assert result.returncode == 0, f"lint-imports found an import across the floors:\n{result.stdout}{result.stderr}"
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", result.stdout), result.stdout


def test_a_broken_floor_is_reported(tmp_path: Path) -> None:
    """The check can fail: with the decode floor put above the data floor, data's import of decode is refused."""
    config = tmp_path / "contract.toml"
    config.write_text('[tool.importlinter]\nroot_package = "recipes"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "decode over data"\ntype = "layers"\ncontainers = ["recipes"]\n'
                      'layers = ["decode", "data"]\n')
    result = lint_imports(config)
    assert result.returncode != 0
    assert "recipes.data is not allowed to import recipes.decode" in result.stdout, result.stdout
