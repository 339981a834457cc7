"""Shared fixtures: tiny on-disk datasets, the real datasets in ../shared, and a CLI runner."""

from __future__ import annotations

import ctypes.util
import glob
import importlib.util
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


REAL_CHECKPOINTS = {
    "classification": "mobilenet_v1_0.25_224-keras-imagenet",
    "detection": "conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone",
    "segmentation": "deeplabv3_mobilenet_v2_0.35-keras-imagenet-backbone",
}
"""The real pretrained checkpoint (../shared/pretrained) each task's reuse tests fine-tune."""


def _fine_tune_args(task: str) -> list[str]:
    """A short but real fine-tuning run of the task's real checkpoint on its real shared dataset."""
    checkpoint = str(shared_checkpoint(REAL_CHECKPOINTS[task]))
    small = ["--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
             "--dataloader_num_workers", "0", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
             "--preprocessing_num_workers", "1", "--save_total_limit", "1"]
    if task == "classification":
        food = shared_dataset("food101-mini")
        return ["configs/food101-mobilenet.yaml", "--model_name_or_path", checkpoint, "--train_dir",
                str(food / "train"), "--validation_dir", str(food / "test"), "--max_train_samples", "48",
                "--max_eval_samples", "24", *small]
    if task == "detection":
        return ["configs/plates-detr.yaml", "--model_name_or_path", checkpoint, "--train_dir",
                str(shared_dataset("car-plates")), "--image_processor_overrides",
                '{"size": {"shortest_edge": 256, "longest_edge": 384}}', "--max_train_samples", "16",
                "--max_eval_samples", "8", *small]
    return ["configs/camseq-segformer.yaml", "--model_name_or_path", checkpoint, "--train_dir",
            str(shared_dataset("camseq")), "--image_processor_overrides",
            '{"size": {"shortest_edge": 128}, "crop_size": {"height": 128, "width": 128}}',
            "--max_train_samples", "8", "--max_eval_samples", "4", *small]


@pytest.fixture(scope="session")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory):
    """``fine_tuned("classification" | "detection" | "segmentation") -> output folder``: the task's real
    checkpoint fine-tuned briefly on its real dataset through the CLI, once per test session (reuse tests share
    it; treat the folder as read-only, copy it to change it)."""
    made: dict[str, Path] = {}

    def make(task: str) -> Path:
        if task not in made:
            out = tmp_path_factory.mktemp(f"fine-tuned-{task}") / "model"
            assert_ok(run_cli(*_fine_tune_args(task), "--output_dir", str(out), timeout=900))
            made[task] = out
        return made[task]

    return make


def libturbojpeg3() -> str | None:
    """A libturbojpeg >= 3: the one named in the environment, the system's, or the one the ``turbojpeg`` wheel
    bundles (a test dependency, installed in CI)."""
    from recipes.decode.turbojpeg import LIBRARY_ENV, load_library

    candidates = [os.environ.get(LIBRARY_ENV), ctypes.util.find_library("turbojpeg")]
    spec = importlib.util.find_spec("turbojpeg")
    if spec is not None and spec.origin:
        candidates += sorted(glob.glob(str(Path(spec.origin).parent / "turbojpeg.libs" / "libturbojpeg*")))
    return next((path for path in candidates if path and load_library(path) is not None), None)
