"""`vision-recipes export`: ONNX export of the real fine-tuned checkpoints of the three tasks, checked against
PyTorch here (independently of the mode's own parity figures), the report's table, and the error paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import shared_dataset

from recipes.cli import main as cli_main
from recipes.decode.images import load_rgb
from recipes.modes.loading import load_fine_tuned
from recipes.onnx_export import Tolerances, _matched_boxes


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail('onnxruntime is missing: CI must install the export extra (pip install -e ".[export]").')
        pytest.skip('needs the export extra: pip install -e ".[export]"')
    return onnxruntime


def _real_images(task: str) -> list[Path]:
    """Two real images of different sizes from the task's shared dataset."""
    if task == "classification":
        root = shared_dataset("food101-mini") / "test"
        return sorted(root.rglob("*.jpg"))[:2]
    if task == "detection":
        return sorted((shared_dataset("car-plates") / "images").glob("*.png"))[:2]
    return sorted(p for p in shared_dataset("camseq").rglob("*.png") if not p.stem.endswith("_L"))[:2]


EXPORT_ARGS = ["--num-images", "4", "--quick", "--batch-sizes", "1", "2", "--threads", "1"]
"""Tiny: 4 parity images in one batch, 2 timed runs of batch 1 and 2 (the CLI's default table is batch 1 and 8)."""


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_export_runs_in_onnxruntime_with_dynamic_batch_and_parity(task: str, fine_tuned, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    ort = _onnxruntime()
    model_dir = fine_tuned(task)
    out = tmp_path / "onnx"
    code = cli_main(["export", str(model_dir), "--output", str(out), *EXPORT_ARGS])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-4000:]
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in printed.out
    for name in ("model.onnx", "config.json", "preprocessor_config.json", "export_report.json"):
        assert (out / name).is_file(), name

    # The ONNX file alone, with the processor saved beside it, against the PyTorch model: batch 1 and batch 2.
    from transformers import AutoImageProcessor

    fine = load_fine_tuned(str(model_dir), device="cpu")
    processor = AutoImageProcessor.from_pretrained(out)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    images = [load_rgb(path) for path in _real_images(task)]
    for batch in (images[:1], images):
        inputs = processor(images=batch, return_tensors="pt")
        feed = {node.name: inputs[node.name].numpy() for node in session.get_inputs()}
        onnx_logits = session.run(None, feed)[0]
        with torch.inference_mode():
            eager = fine.model(**{name: inputs[name] for name in feed})
        assert onnx_logits.shape == tuple(eager.logits.shape) and onnx_logits.shape[0] == len(batch)
        assert np.abs(onnx_logits - eager.logits.numpy()).max() < 1e-3

    report = json.loads((out / "export_report.json").read_text())
    parity = report["parity"]
    assert parity["passed"] and parity["images"] == 4, parity
    assert max(parity["max_abs_diff"].values()) < 1e-3
    agreement = {"classification": "top1_agree", "detection": "boxes_matched",
                 "segmentation": "mask_pixels_agree"}[task]
    assert parity[agreement] >= 0.99 and parity["compared"] > 0
    cells = {(row["runtime"], row["device"], row["batch"]) for row in report["throughput"]}
    assert {(runtime, "cpu", batch) for runtime in ("pytorch", "onnxruntime") for batch in (1, 2)} <= cells
    assert all(row["images_per_s"] > 0 and row["ms_per_batch"] > 0 for row in report["throughput"])


@pytest.mark.real_data
def test_failing_exporter_is_a_clear_error(fine_tuned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    _onnxruntime()

    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::made_up_op' to ONNX opset version 18 is not supported.")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    code = cli_main(["export", str(fine_tuned("classification")), "--output", str(tmp_path / "o"), *EXPORT_ARGS])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: MobileNetV1ForImageClassification could not be exported to ONNX" in err, err
    assert "aten::made_up_op" in err and "Try: --exporter dynamo" in err and "Traceback" not in err


@pytest.mark.real_data
def test_parity_failure_exits_non_zero_with_the_figures(fine_tuned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    _onnxruntime()
    import recipes.modes.export as export_mode

    real_run_onnx = export_mode.run_onnx
    monkeypatch.setattr(export_mode, "run_onnx", lambda session, inputs: [
        output + 0.05 for output in real_run_onnx(session, inputs)])
    out = tmp_path / "o"
    code = cli_main(["export", str(fine_tuned("classification")), "--output", str(out), "--num-images", "2",
                     "--no-benchmark"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: ONNX Runtime disagrees with PyTorch for MobileNetV1ForImageClassification" in err
    assert "max |eager - onnx| of logits is 0.05" in err
    assert json.loads((out / "export_report.json").read_text())["parity"]["passed"] is False


def test_box_matching_needs_same_label_and_position() -> None:
    reference = {"boxes": torch.tensor([[10.0, 10, 50, 30], [60, 60, 90, 80]]), "labels": torch.tensor([0, 0])}
    moved = {"boxes": torch.tensor([[60.0, 60.5, 90, 80], [10, 10, 50, 33]]), "labels": torch.tensor([0, 0])}
    relabelled = {"boxes": reference["boxes"].clone(), "labels": torch.tensor([1, 0])}
    assert _matched_boxes(reference, reference, Tolerances.box_pixels) == (2, 0.0)
    assert _matched_boxes(reference, moved, 1.0) == (1, 0.5)
    assert _matched_boxes(reference, relabelled, 1.0) == (1, 0.0)
