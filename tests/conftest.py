"""Shared fixtures: tiny on-disk datasets, the real datasets in ../shared, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import fake_hub  # noqa: F401  (fixture re-exported for every test module)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _shared(kind: str, name: str) -> Path:
    """``../shared/<kind>/<name>``; skipped outside CI when absent, an error in CI."""
    path = SHARED / kind / name
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must provide ../shared/{kind}/{name}.")
        pytest.skip(f"{path} not available (it is in CI: ../shared/{kind}/{name})")
    return path


def shared_dataset(name: str) -> Path:
    """A real dataset in ../shared/datasets."""
    return _shared("datasets", name)


def shared_checkpoint(name: str) -> Path:
    """A real pretrained checkpoint in ../shared/pretrained."""
    return _shared("pretrained", name)


# `accelerate launch --cpu` starts ONE process; the torchrun launcher plus the script's `--use_cpu true` starts two.
TWO_CPU_PROCESSES = [
    sys.executable, "-m", "accelerate.commands.launch", "--config_file",
    str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml"),
]


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: int = 600,
    cwd: Path = REPO,
    launcher: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``scripts/train.py`` (or ``launcher`` + script) the way a user does; fail with its output."""
    command = [*(launcher or [sys.executable]), str(REPO / "scripts" / "train.py"), *args]
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    result = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return result


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-8000:]}"
    )


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach the real Hub; datasets caches go to a temporary folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    cache = tmp_path_factory.getbasetemp() / "hf-datasets-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small learnable classification image folder (root/<class>/*.png)."""
    from recipes.sample_data.shapes import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, images_per_class=24, size=32, seed=0)
    return root
