"""The documentation site builds without a warning, and its recipe-keys page is the generator's output."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from recipes.config import ModelArguments, RunArguments
from recipes.tasks import TASK_MODULES, get_task

REPO = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_recipe_keys", REPO / "docs" / "gen_recipe_keys.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_keys_page_is_up_to_date() -> None:
    generator = _generator()
    committed = (REPO / "docs" / "recipe-keys.md").read_text()
    assert committed == generator.render(), (
        f"docs/recipe-keys.md differs from the recipe dataclasses: run `{generator.COMMAND}` and commit the page"
    )


def test_recipe_keys_page_lists_every_key() -> None:
    page = _generator().render()
    classes = [RunArguments, ModelArguments] + [get_task(name).data_arguments_class for name in TASK_MODULES]
    missing = [f.name for cls in classes for f in dataclasses.fields(cls) if f"| `{f.name}` |" not in page]
    assert not missing, f"keys missing from the recipe-keys page: {missing}"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict` as CI runs it: a broken link or anchor, or a page left out of the nav, fails."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (site / "recipe-keys" / "index.html").is_file()
    assert (site / "benchmarks" / "index.html").is_file()
    assert not (site / "gen_recipe_keys.py").exists(), "the generator is not part of the site"
