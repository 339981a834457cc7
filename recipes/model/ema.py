"""An exponential moving average of the weights (``ema: true``): timm's ``ModelEmaV3`` kept next to the model.

The average covers the whole ``state_dict``: parameters and floating-point buffers (BatchNorm running mean and
variance are averaged, as timm does; integer buffers such as ``num_batches_tracked`` are copied). It is kept in
float32 on the model's device and updated after every optimizer step (so once per ``gradient_accumulation_steps``
batches). Under DDP every process keeps one: the parameters it averages are the same everywhere after the gradient
all-reduce, and the averaged BatchNorm statistics, which each process gathers from its own batches, are the main
process's, broadcast after each update (:meth:`WeightAverage.share_buffers`): the averages stay bit-for-bit equal.
FSDP and DeepSpeed shard or partition the weights, so one process's average would cover only its part: refused
(:func:`check_ema_supported`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import TrainerCallback

from recipes.config import RecipeError

logger = logging.getLogger("recipes")

EMA_FILE = "ema.safetensors"
"""The average's tensors inside each ``checkpoint-N`` folder (the folder's ``model.safetensors`` holds the
training weights that resuming continues from)."""
WARMUP_POWER = 0.75
"""Warm-up of the decay, ``1 - step ** -0.75`` (timm's ``warmup_power``; 3/4 is the value its reference gives for
runs shorter than about 100k steps)."""


@dataclass(frozen=True)
class EmaSettings:
    """The recipe's EMA keys (``ema_decay``, ``ema_warmup``)."""

    decay: float
    warmup: bool

    def describe(self) -> str:
        """One line for logs and the model card."""
        if self.warmup:
            return f"decay {self.decay} (warmed up as 1 - step^-{WARMUP_POWER:g}, capped at {self.decay})"
        return f"decay {self.decay} from the second step"


def check_ema_supported(args: Any) -> None:
    """Refuse ``ema`` with FSDP or DeepSpeed (from the recipe or from ``accelerate launch``'s config), before
    anything is loaded: their processes hold shards of the weights, not the whole model."""
    from accelerate.utils import parse_flag_from_env

    if args.fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP"):
        raise RecipeError(_UNSUPPORTED.format(what="FSDP"))
    if args.deepspeed or parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        raise RecipeError(_UNSUPPORTED.format(what="DeepSpeed"))


_UNSUPPORTED = (
    "`ema: true` is not supported with {what}: each process holds only a shard of the weights, so an average kept "
    "per process would not be the model's. Train with DDP (configs/accelerate/multi_gpu.yaml) for an EMA, or set "
    "`ema: false`."
)


class WeightAverage:
    """The moving average of one model's weights: updated in place, swapped in for evaluation, saved and loaded."""

    def __init__(self, model: torch.nn.Module, settings: EmaSettings) -> None:
        from timm.utils import ModelEmaV3

        self.settings = settings
        # float32 whatever the model's dtype (a bfloat16 average would need stochastic rounding, whose generator
        # state a checkpoint would also have to hold), where timm has the option (its newer releases); the models
        # trained here keep float32 weights (bf16/fp16 are autocast), whose average is float32 either way.
        precision = {"dtype": torch.float32, "stochastic_rounding": False}
        if "stochastic_rounding" not in inspect.signature(ModelEmaV3).parameters:
            precision = {}
        self.average = ModelEmaV3(
            model, decay=settings.decay, use_warmup=settings.warmup, warmup_power=WARMUP_POWER, **precision
        )

    @property
    def module(self) -> torch.nn.Module:
        """The averaged copy of the model."""
        return self.average.module

    def decay(self, step: int) -> float:
        """The decay of the update made after optimizer step ``step`` (1-based; 0 at step 1: a copy)."""
        return self.average.get_decay(step)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Average in the weights ``model`` has after optimizer step ``step``."""
        self.average.update(model, step=step)

    @torch.no_grad()
    def share_buffers(self) -> None:
        """Give every process the main process's averaged floating-point buffers (BatchNorm statistics), in one
        broadcast. Under DDP the parameters are the same on every process after each step, but each process's
        running statistics come from its own batches (DDP broadcasts the main process's at the next forward), so
        averages kept per process would drift apart in them."""
        buffers = [buffer for buffer in self.module.buffers() if buffer.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([buffer.reshape(-1) for buffer in buffers])
        torch.distributed.broadcast(flat, src=0)
        offset = 0
        for buffer in buffers:
            buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Make ``model``'s parameters and buffers the average's."""
        for target, value in zip(model.state_dict().values(), self.module.state_dict().values(), strict=True):
            target.copy_(value)

    @contextmanager
    def applied_to(self, model: torch.nn.Module) -> Iterator[None]:
        """``model`` holds the average inside the block and exactly its own weights again afterwards."""
        with torch.no_grad():
            own = [tensor.clone() for tensor in model.state_dict().values()]
            self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for target, value in zip(model.state_dict().values(), own, strict=True):
                    target.copy_(value)

    def save(self, folder: str | Path) -> Path:
        """Write the average into ``folder`` (a checkpoint) as :data:`EMA_FILE`."""
        from safetensors.torch import save_model

        path = Path(folder) / EMA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(
            self.module, str(path), metadata={"decay": str(self.settings.decay), "warmup": str(self.settings.warmup)}
        )
        return path

    def load(self, folder: str | Path) -> None:
        """Read the average saved in checkpoint ``folder``; a missing or unreadable file stops with the fix."""
        from safetensors.torch import load_model

        path = Path(folder) / EMA_FILE
        if not path.is_file():
            raise RecipeError(
                f"{folder} has no {EMA_FILE}: it was saved by a run without `ema: true`, so the average of its "
                "weights cannot be continued. Resume it with `ema: false`, or start over in a new --output_dir."
            )
        device = next(self.module.parameters()).device
        try:
            missing, unexpected = load_model(self.module, path, strict=False, device=str(device))
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise RecipeError(
                f"{path} is unreadable ({str(err).splitlines()[0]}); resume from an earlier "
                "checkpoint or start over in a new --output_dir."
            ) from err
        if missing or unexpected:
            raise RecipeError(
                f"{path} was saved from another model ({sorted(missing or unexpected)[:3]}); use a new --output_dir."
            )


class EmaCallback(TrainerCallback):
    """Updates the average after each optimizer step and writes it into every checkpoint folder (before the
    run fingerprint, the checkpoint's completion mark, which callbacks added later write)."""

    def __init__(self, weight_average: WeightAverage) -> None:
        self.weight_average = weight_average

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        settings = self.weight_average.settings
        span = 1.0 / (1.0 - settings.decay)
        if not settings.warmup and state.max_steps and span > state.max_steps:
            logger.warning(
                "ema_decay %s averages over about %.0f steps but the run has %d: the EMA stays close to "
                "the first steps' weights. Set `ema_warmup: true` or a lower ema_decay.",
                settings.decay,
                span,
                state.max_steps,
            )
        logger.info("EMA of the weights: %s; evaluations and the saved model use it.", settings.describe())

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: torch.nn.Module | None = None, **kwargs: Any
    ) -> None:
        self.weight_average.update(model, state.global_step)
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            self.weight_average.share_buffers()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and folder.is_dir():
            self.weight_average.save(folder)
