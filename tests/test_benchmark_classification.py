"""Smoke test of ``benchmarks/classification_pipeline.py`` (a benchmark, so no speed is asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, assert_ok, shared_dataset

RATIO_LINE = r"{label}\s+ratio ours/naive: \d+\.\d+x default, \d+\.\d+x with decode cache"


@pytest.mark.real_data
@pytest.mark.slow
def test_quick_benchmark_prints_both_ratios_and_writes_json(tmp_path: Path) -> None:
    data_dir = shared_dataset("food101-mini")
    figures = tmp_path / "benchmark.json"
    command = [
        sys.executable,
        "-m", "benchmarks.classification_pipeline",
        "--quick",
        "--data-dir",
        str(data_dir),
        "--json",
        str(figures),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert_ok(result)
    assert re.search(RATIO_LINE.format(label=r"TRANSFORM\s+\(1 worker\)"), result.stdout), result.stdout
    assert re.search(RATIO_LINE.format(label=r"END-TO-END \(Trainer\)"), result.stdout), result.stdout
    assert "stage breakdown" in result.stdout

    report = json.loads(figures.read_text())
    transform, end_to_end = report["transform_throughput"]["workers_1"], report["end_to_end"]
    for variant in ("naive", "ours-before", "ours", "ours+cache"):
        assert transform["images_per_s"][variant] > 0
        assert report["stages_ms_per_image"][variant]["total"] > 0
        assert variant == "ours-before" or end_to_end["images_per_s"][variant] > 0
    assert set(transform["ratios"]) == {"ours-before", "ours", "ours+cache"}
    assert set(end_to_end["ratios"]) == {"ours", "ours+cache"}
    assert re.search(r"ratio ours/ours-before: \d+\.\d+x", result.stdout), result.stdout
    assert re.search(r"target >= 2\.5x train-transform throughput: .* \(default: \d of 2 rounds at or above it, "
                     r"per round \d+\.\d\d-\d+\.\d\dx\)", result.stdout), result.stdout
    assert transform["batch"] == {"shape": [32, 3, 224, 224], "dtype": "float32"}
    assert report["decode_cache"]["build_seconds"] > 0
