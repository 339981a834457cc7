"""Helpers shared by the test modules (``from helpers import ...``): paths, the real data in ../shared, the CLI
runner, optional native libraries, and crafted images. Fixtures stay in ``conftest.py``."""

from __future__ import annotations

import ctypes.util
import glob
import importlib.util
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--config_file",
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


REAL_CHECKPOINTS = {
    "classification": "mobilenet_v1_0.25_224-keras-imagenet",
    "detection": "conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone",
    "segmentation": "deeplabv3_mobilenet_v2_0.35-keras-imagenet-backbone",
}
"""The real pretrained checkpoint (../shared/pretrained) each task's reuse tests fine-tune."""


def fine_tune_args(task: str) -> list[str]:
    """A short but real fine-tuning run of the task's real checkpoint on its real shared dataset."""
    checkpoint = str(shared_checkpoint(REAL_CHECKPOINTS[task]))
    small = [
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "8",
        "--dataloader_num_workers",
        "0",
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        "--report_to",
        "none",
        "--preprocessing_num_workers",
        "1",
        "--save_total_limit",
        "1",
    ]
    if task == "classification":
        food = shared_dataset("food101-mini")
        return [
            "configs/food101-mobilenet.yaml",
            "--model_name_or_path",
            checkpoint,
            "--train_dir",
            str(food / "train"),
            "--validation_dir",
            str(food / "test"),
            "--max_train_samples",
            "48",
            "--max_eval_samples",
            "24",
            *small,
        ]
    if task == "detection":
        return [
            "configs/plates-detr.yaml",
            "--model_name_or_path",
            checkpoint,
            "--train_dir",
            str(shared_dataset("car-plates")),
            "--image_processor_overrides",
            '{"size": {"shortest_edge": 256, "longest_edge": 384}}',
            "--max_train_samples",
            "16",
            "--max_eval_samples",
            "8",
            *small,
        ]
    return [
        "configs/camseq-segformer.yaml",
        "--model_name_or_path",
        checkpoint,
        "--train_dir",
        str(shared_dataset("camseq")),
        "--image_processor_overrides",
        '{"size": {"shortest_edge": 128}, "crop_size": {"height": 128, "width": 128}}',
        "--max_train_samples",
        "8",
        "--max_eval_samples",
        "4",
        *small,
    ]


def libturbojpeg3() -> str | None:
    """A libturbojpeg >= 3: the one named in the environment, the system's, or the one the ``turbojpeg`` wheel
    bundles (a test dependency, installed in CI)."""
    from recipes.decode.turbojpeg import LIBRARY_ENV, load_library

    candidates = [os.environ.get(LIBRARY_ENV), ctypes.util.find_library("turbojpeg")]
    spec = importlib.util.find_spec("turbojpeg")
    if spec is not None and spec.origin:
        candidates += sorted(glob.glob(str(Path(spec.origin).parent / "turbojpeg.libs" / "libturbojpeg*")))
    return next((path for path in candidates if path and load_library(path) is not None), None)


def turbojpeg_wheel_exists(platform: str = sys.platform, version: tuple[int, int] = sys.version_info[:2]) -> bool:
    """Whether the ``turbojpeg`` wheel (pyproject's dev extra) installs here: CPython 3.11 on Linux, its only one."""
    return platform == "linux" and tuple(version) == (3, 11)


def require_libturbojpeg3() -> str:
    """The path of a libturbojpeg >= 3 (:func:`libturbojpeg3`); skipped, with the reason, where there is none,
    except where the ``dev`` extra installs the ``turbojpeg`` wheel that bundles one (CI on Linux with Python 3.11,
    its only wheel), where its absence is a failure."""
    path = libturbojpeg3()
    if path is not None:
        return path
    if os.environ.get("CI") and turbojpeg_wheel_exists():
        pytest.fail("no libturbojpeg >= 3 found: CI installs the `turbojpeg` wheel (pip install -e '.[dev]').")
    pytest.skip(
        "no libturbojpeg >= 3 here: the `turbojpeg` wheel that bundles it exists for CPython 3.11 on Linux "
        "only (pip install turbojpeg there); or conda install libjpeg-turbo, or set "
        "VISION_RECIPES_LIBTURBOJPEG"
    )


# --------------------------------------------------------------------------- crafted images


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG of a few dozen bytes whose header claims ``width`` x ``height`` (greyscale, one zlib stream)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def jpeg_bomb(width: int = 65000, height: int = 65000) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def tiff_orientation_block(orientation: int, little_endian: bool) -> bytes:
    """A minimal EXIF block (one IFD0 entry: the orientation) in either byte order."""
    order = "<" if little_endian else ">"
    head = (b"II" if little_endian else b"MM") + struct.pack(order + "HI", 42, 8)
    ifd = struct.pack(order + "H", 1) + struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"Exif\x00\x00" + head + ifd + struct.pack(order + "I", 0)


def photo_jpeg(height: int, width: int, orientation: int = 1, little_endian: bool = False) -> bytes:
    """A smooth, asymmetric colour photo stand-in (so flips and rotations show) as JPEG bytes."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)], -1)
    buffer = io.BytesIO()
    exif = tiff_orientation_block(orientation, little_endian) if orientation > 1 else b""
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92, exif=exif)
    return buffer.getvalue()
