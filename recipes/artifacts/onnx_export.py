"""ONNX export of a fine-tuned model with ``torch.onnx.export``, its ONNX Runtime session, parity figures against
PyTorch eager on the same processor outputs (:mod:`recipes.tasks.parity`: the shared figures; each task's rule),
and an eager-vs-ONNX-Runtime throughput table.

``optimum``/``optimum-onnx`` would be the ecosystem's higher-level exporter, but its releases pin
``transformers<4.58`` (checked with ``pip install --dry-run optimum-onnx``, November 2026), so the exporter here is
PyTorch's own: the dynamo exporter (``torch.export`` + ``onnxscript``) by default, the TorchScript one on request.
"""

from __future__ import annotations

import inspect
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.config import RecipeError

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18


class ExportError(RecipeError):
    """The exporter could not turn the model into ONNX; the message names the architecture and what to try."""


def require_onnx_runtime() -> Any:
    """``onnxruntime`` (and ``onnx``), or a :class:`RecipeError` with the ``pip install`` to run."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as err:
        raise RecipeError(
            f"ONNX export needs onnxruntime, onnx and onnxscript ({err.name} is missing): "
            "pip install -e \".[export]\" (or pip install onnxruntime onnx onnxscript)."
        ) from err
    return onnxruntime


# --------------------------------------------------------------------------- graph signature


class OnnxWrapper(torch.nn.Module):
    """``pixel_values`` (and ``pixel_mask``) → a tuple of the task's output tensors, the graph's signature."""

    def __init__(self, model: torch.nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = tuple(output_names)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        kwargs = {"pixel_mask": pixel_mask} if pixel_mask is not None else {}
        outputs = self.model(pixel_values=pixel_values, return_dict=True, **kwargs)
        return tuple(getattr(outputs, name) for name in self.output_names)


def model_inputs(model: torch.nn.Module, processed: Any) -> dict[str, torch.Tensor]:
    """The processor outputs the graph takes: ``pixel_values``, plus ``pixel_mask`` when the processor pads and
    the model reads it (DETR family: padded pixels are masked out of attention)."""
    inputs = {"pixel_values": processed["pixel_values"]}
    accepts_mask = "pixel_mask" in inspect.signature(model.forward).parameters
    if accepts_mask and "pixel_mask" in processed:
        inputs["pixel_mask"] = processed["pixel_mask"]
    return inputs


@dataclass
class ExportSpec:
    """How the graph is exported."""

    exporter: str = "dynamo"
    opset: int = DEFAULT_OPSET
    dynamic_size: bool = True
    """Height and width dynamic too (batch is always dynamic)."""


def _dynamic_axes(input_names: Sequence[str], dynamic_size: bool) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name in input_names:
        spatial = (2, 3) if name == "pixel_values" else (1, 2)
        axes[name] = {0: "batch", **({spatial[0]: "height", spatial[1]: "width"} if dynamic_size else {})}
    return axes


def export_onnx(
    model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path, names: Sequence[str], spec: ExportSpec
) -> Path:
    """Export ``model`` (eval mode, CPU, float32) to ``path`` with dynamic batch (and height/width)."""
    wrapper = OnnxWrapper(model, names).eval()
    input_names = list(example)
    args = tuple(example[name] for name in input_names)
    architecture = type(model).__name__
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if spec.exporter == "dynamo":
                dim = torch.export.Dim.DYNAMIC
                shapes = {name: {axis: dim for axis in axes}
                          for name, axes in _dynamic_axes(input_names, spec.dynamic_size).items()}
                if "pixel_mask" not in shapes:
                    shapes["pixel_mask"] = None
                program = torch.onnx.export(wrapper, args, dynamo=True, input_names=input_names,
                                            output_names=list(names), dynamic_shapes=shapes, opset_version=spec.opset,
                                            verbose=False)
                program.save(str(path), external_data=False)
            elif spec.exporter == "torchscript":
                torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=input_names,
                                  output_names=list(names), dynamic_axes=_dynamic_axes(input_names, spec.dynamic_size),
                                  opset_version=min(spec.opset, 20))
            else:
                raise RecipeError(f"--exporter {spec.exporter!r}: choose one of {', '.join(EXPORTERS)}.")
    except RecipeError:
        raise
    except Exception as err:  # the exporters raise many types (torch._dynamo, onnxscript, TorchScript errors)
        other = next(name for name in EXPORTERS if name != spec.exporter)
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0][:400]
        raise ExportError(
            f"{architecture} could not be exported to ONNX with the {spec.exporter} exporter of torch.onnx "
            f"(torch {torch.__version__}, opset {spec.opset}): {type(err).__name__}: {cause}\n"
            f"Try: --exporter {other}; --static-size (fixed height/width); another --opset (17-20); or a newer "
            "torch/onnxscript. If the architecture uses an operator ONNX lacks, export is not possible for it yet."
        ) from err
    return path


# --------------------------------------------------------------------------- running both


def onnx_session(path: Path, provider: str = "CPUExecutionProvider", threads: int | None = None) -> Any:
    """An ONNX Runtime session on ``provider`` with ``threads`` intra-op threads (default: torch's count)."""
    ort = require_onnx_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=[provider])


def run_onnx(session: Any, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    feed = {node.name: _as_numpy(inputs[node.name], node.type) for node in session.get_inputs()}
    return session.run(None, feed)


def _as_numpy(tensor: torch.Tensor, onnx_type: str) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    return array.astype(np.int64) if onnx_type == "tensor(int64)" else array


def run_eager(model: torch.nn.Module, inputs: dict[str, torch.Tensor], names: Sequence[str]) -> list[np.ndarray]:
    device = next(model.parameters()).device
    with torch.inference_mode():
        outputs = OnnxWrapper(model, names)(**{key: value.to(device) for key, value in inputs.items()})
    return [output.float().cpu().numpy() for output in outputs]


# --------------------------------------------------------------------------- throughput


def time_call(call: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None] | None = None) -> float:
    """Median milliseconds of ``call`` over ``repeats`` timed runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def throughput_row(runtime: str, device: str, batch: int, ms: float) -> dict[str, Any]:
    return {"runtime": runtime, "device": device, "batch": batch, "ms_per_batch": round(ms, 3),
            "images_per_s": round(batch * 1000 / ms, 2)}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The throughput rows as an aligned text table, with ONNX Runtime's speed-up over eager per setting."""
    eager = {(row["device"], row["batch"]): row["ms_per_batch"] for row in rows if row["runtime"] == "pytorch"}
    lines = [f"{'runtime':<14}{'device':<8}{'batch':>6}{'ms/batch':>12}{'images/s':>11}{'vs eager':>10}"]
    for row in rows:
        base = eager.get((row["device"], row["batch"]))
        ratio = f"{base / row['ms_per_batch']:.2f}x" if base and row["runtime"] != "pytorch" else ""
        lines.append(f"{row['runtime']:<14}{row['device']:<8}{row['batch']:>6}{row['ms_per_batch']:>12.2f}"
                     f"{row['images_per_s']:>11.1f}{ratio:>10}")
    return "\n".join(lines)
