"""ONNX export of a fine-tuned model with ``torch.onnx.export``, its ONNX Runtime session, parity figures against
PyTorch eager on the same processor outputs, and an eager-vs-ONNX-Runtime throughput table.

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
from types import SimpleNamespace
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


def output_names(task_name: str) -> tuple[str, ...]:
    """The model outputs a task's post-processing needs (the graph keeps only these)."""
    return ("logits", "pred_boxes") if task_name == "object-detection" else ("logits",)


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


def as_model_output(names: Sequence[str], arrays: Sequence[np.ndarray]) -> SimpleNamespace:
    """Arrays → the attribute object the image processor's ``post_process_*`` methods read."""
    return SimpleNamespace(**{name: torch.from_numpy(np.asarray(array)) for name, array in zip(names, arrays)})


# --------------------------------------------------------------------------- parity


@dataclass
class Tolerances:
    atol: float = 1e-3
    """Largest accepted |eager - ONNX| over logits (and normalised boxes)."""
    min_agreement: float = 0.99
    """Smallest accepted share of agreeing top-1 labels / matched boxes / mask pixels."""
    box_pixels: float = 1.0
    """Largest accepted corner difference (pixels) of a matched box after post-processing."""
    threshold: float = 0.5
    """Detection score threshold of the post-processing."""
    fallback_top_k: int = 5
    """Boxes compared on an image without any box above the threshold (its best-scoring ones)."""


@dataclass
class ParityAccumulator:
    """Running parity figures over batches (eager vs ONNX Runtime on the same processor outputs)."""

    task: str
    names: tuple[str, ...]
    tolerances: Tolerances
    max_abs: dict[str, float] | None = None
    agree: int = 0
    total: int = 0
    images: int = 0
    max_box_pixels: float = 0.0
    eager_boxes: int = 0
    fallback_images: int = 0

    def add(self, eager: Sequence[np.ndarray], onnx: Sequence[np.ndarray], image_processor: Any,
            sizes: list[tuple[int, int]]) -> None:
        self.images += len(sizes)
        diffs = {name: float(np.abs(a - b).max()) for name, a, b in zip(self.names, eager, onnx)}
        self.max_abs = {name: max(diffs[name], (self.max_abs or {}).get(name, 0.0)) for name in self.names}
        if self.task == "object-detection":
            self._add_boxes(eager, onnx, image_processor, sizes)
        elif self.task == "semantic-segmentation":
            self._add_masks(eager, onnx, image_processor, sizes)
        else:
            self.agree += int((eager[0].argmax(-1) == onnx[0].argmax(-1)).sum())
            self.total += len(sizes)

    def _add_boxes(self, eager: Sequence[np.ndarray], onnx: Sequence[np.ndarray], image_processor: Any,
                   sizes: list[tuple[int, int]]) -> None:
        """Boxes above the threshold must match; an image with none there (a briefly trained detector) compares
        its ``fallback_top_k`` best-scoring boxes instead, so that the check is never empty."""
        post = [image_processor.post_process_object_detection(
            as_model_output(self.names, arrays), threshold=0.0, target_sizes=sizes) for arrays in (eager, onnx)]
        for reference, candidate in zip(*post):
            keep = reference["scores"] >= self.tolerances.threshold
            self.eager_boxes += int(keep.sum())
            if keep.any():
                reference = {key: value[keep] for key, value in reference.items()}
                candidate = {key: value[candidate["scores"] >= self.tolerances.threshold]
                             for key, value in candidate.items()}
            else:
                self.fallback_images += 1
                reference, candidate = (_top(detections, self.tolerances.fallback_top_k)
                                        for detections in (reference, candidate))
            matched = _matched_boxes(reference, candidate, self.tolerances.box_pixels)
            self.agree += matched[0]
            self.total += max(len(reference["boxes"]), len(candidate["boxes"]))
            self.max_box_pixels = max(self.max_box_pixels, matched[1])

    def _add_masks(self, eager: Sequence[np.ndarray], onnx: Sequence[np.ndarray], image_processor: Any,
                   sizes: list[tuple[int, int]]) -> None:
        masks = [image_processor.post_process_semantic_segmentation(as_model_output(self.names, arrays),
                                                                    target_sizes=sizes) for arrays in (eager, onnx)]
        for reference, candidate in zip(*masks):
            self.agree += int((reference == candidate).sum())
            self.total += reference.numel()

    @property
    def agreement(self) -> float:
        return self.agree / self.total if self.total else 1.0

    @property
    def agreement_name(self) -> str:
        return {"object-detection": "boxes_matched", "semantic-segmentation": "mask_pixels_agree"}.get(
            self.task, "top1_agree")

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"images": self.images, "max_abs_diff": self.max_abs or {},
                                  self.agreement_name: round(self.agreement, 6), "compared": self.total,
                                  "tolerances": vars(self.tolerances)}
        if self.task == "object-detection":
            report["eager_boxes_above_threshold"] = self.eager_boxes
            report["max_box_corner_diff_pixels"] = round(self.max_box_pixels, 4)
            report["images_compared_on_top_k"] = self.fallback_images
        report["passed"] = not self.failures()
        return report

    def failures(self) -> list[str]:
        tol = self.tolerances
        problems = [f"max |eager - onnx| of {name} is {value:.3g} > {tol.atol:g}"
                    for name, value in (self.max_abs or {}).items() if value > tol.atol]
        if self.agreement < tol.min_agreement:
            problems.append(f"{self.agreement_name} is {self.agreement:.4f} < {tol.min_agreement:g} "
                            f"({self.agree}/{self.total})")
        return problems


def _top(detections: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    order = detections["scores"].argsort(descending=True)[:k]
    return {key: value[order] for key, value in detections.items()}


def _matched_boxes(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor],
                   box_pixels: float) -> tuple[int, float]:
    """Boxes of ``reference`` with a same-label box of ``candidate`` within ``box_pixels`` at every corner
    (greedy, one-to-one), and the largest corner difference among the matched."""
    used: set[int] = set()
    matched, worst = 0, 0.0
    for box, label in zip(reference["boxes"], reference["labels"]):
        best, best_diff = None, float("inf")
        for index, (other, other_label) in enumerate(zip(candidate["boxes"], candidate["labels"])):
            if index in used or int(other_label) != int(label):
                continue
            diff = float((box - other).abs().max())
            if diff < best_diff:
                best, best_diff = index, diff
        if best is not None and best_diff <= box_pixels:
            used.add(best)
            matched += 1
            worst = max(worst, best_diff)
    return matched, worst


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
