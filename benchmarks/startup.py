"""Start-up time of a training run, first run against second run, for N and 10·N images: what caching the data
checks (``recipes/data/check_cache.py``) buys, and that a second start-up does not grow with the data.

    python -m benchmarks.startup            # N = 2,000 and 20,000 synthetic JPEGs (256x256)
    python -m benchmarks.startup --quick    # N = 200 and 2,000
    python -m benchmarks.startup --n 500 --json startup.json

For each size it writes N synthetic JPEGs into a class-folder dataset and runs the real CLI
(``scripts/train.py configs/quickstart/classification.yaml``: a tiny ResNet, one training step) twice with a
fresh datasets cache: the first run checks every image (the baseline: what every run did before the cache),
the second one reuses the result. It reports, per run, the data loading and checking time (the run's own
"Data loaded and checked in" log line), the time from launch until the data is ready, and the time from launch
to the first training step (the Trainer's first logged loss). With ``--recheck`` a third run at size N passes
``--recheck_data`` (it must cost as much as the first).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("apple", "bread", "cheese", "donut")
DATA_LINE = re.compile(r"Data loaded and checked in (\d+(?:\.\d+)?)s")
STEP_LINE = re.compile(r"'loss'")
RUN_ARGS = ["--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end",
            "false", "--make_plots", "false", "--logging_steps", "1", "--logging_first_step", "true",
            "--disable_tqdm", "true", "--use_cpu", "true", "--report_to", "none", "--auto_resume", "false",
            "--max_eval_samples", "16", "--dataloader_num_workers", "0"]


def jpeg_variants(count: int, size: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct photo-like JPEGs (smooth random colour fields with some texture)."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    return blobs


def write_dataset(root: Path, images: int, blobs: list[bytes]) -> Path:
    """``root/<class>/NNNNNN.jpg``, ``images`` files over the classes (bytes cycled through ``blobs``)."""
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(images):
        (root / CLASSES[i % len(CLASSES)] / f"{i:06d}.jpg").write_bytes(blobs[i % len(blobs)])
    return root


def timed_run(data_dir: Path, output_dir: Path, env: dict[str, str], extra: list[str]) -> dict[str, float]:
    """Launch the CLI; time (from launch) the data-ready and first-step log lines; stop after the first step."""
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "configs/quickstart/classification.yaml",
               "--train_dir", str(data_dir), "--output_dir", str(output_dir), *RUN_ARGS, *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    found: dict[str, float] = {}
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        now = time.perf_counter() - started
        match = DATA_LINE.search(line)
        if match and "data_ready_s" not in found:
            found["data_checks_s"] = float(match.group(1))
            found["data_ready_s"] = now
        if STEP_LINE.search(line) and "first_step_s" not in found:
            found["first_step_s"] = now
            process.terminate()  # the rest of the run (evaluation, saving) is not start-up
            break
    process.wait(timeout=60)
    if "first_step_s" not in found or "data_ready_s" not in found:
        raise SystemExit(f"The run did not reach its first step (exit {process.returncode}):\n{''.join(lines[-40:])}")
    found["cached"] = any("cached result used" in line for line in lines)
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 200 (smoke test)")
    parser.add_argument("--n", type=int, help="images of the small dataset (default 2000, --quick 200)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--recheck", action="store_true", help="also time a --recheck_data run at size N")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    n = options.n or (200 if options.quick else 2000)
    blobs = jpeg_variants(64, options.size)
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        env = {**os.environ, "HF_DATASETS_CACHE": str(scratch_dir / "hf-datasets"), "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        for label, images in (("N", n), ("10N", 10 * n)):
            started = time.perf_counter()
            data_dir = write_dataset(scratch_dir / f"data-{label}", images, blobs)
            print(f"{label}: wrote {images} JPEGs ({options.size}x{options.size}) in "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
            runs = {}
            for run in ("first", "second"):
                runs[run] = timed_run(data_dir, scratch_dir / f"out-{label}-{run}", env, [])
                print(f"  {run} run: {runs[run]}", flush=True)
            if options.recheck and label == "N":
                runs["recheck"] = timed_run(data_dir, scratch_dir / f"out-{label}-recheck", env, ["--recheck_data"])
                print(f"  --recheck_data run: {runs['recheck']}", flush=True)
            results[label] = {"images": images, **runs}
    print(f"\nStart-up of a 1-step run (tiny ResNet, {options.size}px JPEGs, {os.cpu_count()} CPUs), seconds:")
    print(f"  {'data':<5} {'images':>7} {'run':<8} {'data checks':>12} {'data ready':>11} {'first step':>11}")
    for label, result in results.items():
        for run in ("first", "second", "recheck"):
            if run in result:
                figures = result[run]
                print(f"  {label:<5} {result['images']:>7} {run:<8} {figures['data_checks_s']:>12.2f} "
                      f"{figures['data_ready_s']:>11.2f} {figures['first_step_s']:>11.2f}")
    ratios = {}
    for label in results:
        first, second = results[label]["first"], results[label]["second"]
        ratios[f"second/first data checks ({label})"] = second["data_checks_s"] / first["data_checks_s"]
        ratios[f"second/first time to first step ({label})"] = second["first_step_s"] / first["first_step_s"]
    small, large = results["N"]["second"], results["10N"]["second"]
    ratios["10N/N second-run data checks"] = large["data_checks_s"] / max(small["data_checks_s"], 1e-3)
    ratios["10N/N second-run time to first step"] = large["first_step_s"] / small["first_step_s"]
    ratios["10N/N first-run data checks"] = results["10N"]["first"]["data_checks_s"] / results["N"]["first"][
        "data_checks_s"]
    print("Ratios:")
    for name, value in ratios.items():
        print(f"  {name:<42} {value:6.2f}x")
    if options.json:
        options.json.write_text(json.dumps({"n": n, "size": options.size, "results": results,
                                            "ratios": {k: round(v, 3) for k, v in ratios.items()}}, indent=2))


if __name__ == "__main__":
    main()
