"""Fixtures and pytest hooks only (the helpers the test modules share are in ``helpers.py``): tiny on-disk
datasets, the real checkpoints fine-tuned once per session, the offline Hub, and the local Hub-API server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import assert_ok, fine_tune_args, run_cli
from hub_server import fake_hub  # noqa: F401  (fixture re-exported for every test module)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each worker its share of the cores: every test process (and the CLI runs it starts,
    which inherit ``OMP_NUM_THREADS``) would otherwise use all of them, and two workers' oversubscribed thread pools
    made runs about 3 times slower (two concurrent ``--find_lr`` runs: 106 s with torch's default threads, 36 s
    with one thread each, on 2 cores). An explicit ``OMP_NUM_THREADS`` is left alone."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        import torch

        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n 2 --dist loadgroup`` (pytest-xdist; the README's test command): the tests that use
    the session's fine-tuned checkpoints run in one worker, so the checkpoints are fine-tuned once; the tests
    that start several processes (accelerate's fixed rendezvous port) run one after another in one worker."""
    for item in items:
        if "fine_tuned" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("fine_tuned"))
        elif item.get_closest_marker("multiprocess"):
            item.add_marker(pytest.mark.xdist_group("processes"))


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


@pytest.fixture(scope="session")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory):
    """``fine_tuned("classification" | "detection" | "segmentation") -> output folder``: the task's real
    checkpoint fine-tuned briefly on its real dataset through the CLI, once per test session (reuse tests share
    it; treat the folder as read-only, copy it to change it)."""
    made: dict[str, Path] = {}

    def make(task: str) -> Path:
        if task not in made:
            out = tmp_path_factory.mktemp(f"fine-tuned-{task}") / "model"
            assert_ok(run_cli(*fine_tune_args(task), "--output_dir", str(out), timeout=900))
            made[task] = out
        return made[task]

    return make
