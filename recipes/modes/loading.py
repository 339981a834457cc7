"""Load a fine-tuned model for reuse: a local output folder or a Hub id → model, processor and task."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from recipes.config import ModelArguments, RecipeError
from recipes.model.build import build_image_processor
from recipes.model.timm_checkpoints import fix_timm_config
from recipes.tasks import Task, task_for_config

logger = logging.getLogger("recipes")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class FineTuned:
    """A model ready for inference with the processor it was trained with."""

    reference: str
    task: Task
    model: torch.nn.Module
    image_processor: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def local_dir(self) -> Path | None:
        """The model's folder when it is local (palette, validation images, card live there)."""
        path = Path(self.reference).expanduser()
        return path if path.is_dir() else None


def read_manifest(model_dir: Path | None) -> dict[str, Any]:
    """The model's ``run_manifest.json`` (empty for Hub ids and folders without one)."""
    path = model_dir / "run_manifest.json" if model_dir is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def resolve_device(device: str | None) -> torch.device:
    """``--device``: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:1``..."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise RecipeError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"--device {device}: no CUDA GPU is visible here. Use --device cpu (or auto).")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``--dtype``: float32 by default; bf16/fp16 only on a GPU (CPU half precision is slow and inexact)."""
    if dtype in (None, "", "auto"):
        return torch.float32
    if dtype not in DTYPES:
        raise RecipeError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}.")
    chosen = DTYPES[dtype]
    if chosen != torch.float32 and device.type != "cuda":
        raise RecipeError(f"--dtype {dtype} is for GPUs; on {device.type} use float32 (the default).")
    return chosen


def load_fine_tuned(
    reference: str,
    *,
    device: str | None = "auto",
    dtype: str | None = None,
    revision: str = "main",
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
) -> FineTuned:
    """Load ``reference`` (output folder or Hub id): its task from ``config.json``, the ``AutoModelFor…`` of that
    task in eval mode on ``device``, and its own image processor (the one ``pipeline()`` would use)."""
    local = Path(reference).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise RecipeError(
            f"{local} has no config.json: pass the output folder of `vision-recipes train` (it holds config.json, "
            "model.safetensors and preprocessor_config.json), not a checkpoint-* subfolder or a data folder."
        )
    try:
        config = AutoConfig.from_pretrained(reference, revision=revision, cache_dir=cache_dir,
                                            trust_remote_code=trust_remote_code)
    except OSError as err:
        raise RecipeError(
            f"Could not load the model `{reference}`: no such local folder, and the Hub did not serve it ({err}). "
            "Check the path or the Hub id (and HF_TOKEN for private repos)."
        ) from err
    config = fix_timm_config(config, f"`{reference}`")
    task = task_for_config(config, where=reference)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    model_args = ModelArguments(model_name_or_path=reference, model_revision=revision, cache_dir=cache_dir,
                                trust_remote_code=trust_remote_code)
    image_processor = build_image_processor(model_args)
    model = task.auto_model_class.from_pretrained(
        reference, config=config, revision=revision, cache_dir=cache_dir, trust_remote_code=trust_remote_code,
        dtype=torch_dtype,
    )
    model.to(torch_device).eval()
    logger.info("Loaded %s (%s, %s) on %s", reference, type(model).__name__, task.name, torch_device)
    return FineTuned(reference=reference, task=task, model=model, image_processor=image_processor,
                     device=torch_device, dtype=torch_dtype)
