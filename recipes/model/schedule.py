"""Fine-tuning schedules for pretrained models: per-parameter learning rates (backbone rate, layer-wise decay),
head warm-up (fastai's ``fine_tune``), and the learning-rate range test (fastai's ``lr_find``)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

logger = logging.getLogger("recipes")

BLOCK = re.compile(r"^(.*?\.\d+)\.")
"""A parameter's block: its name up to the first numeric component (``vit.encoder.layer.7``, ``…stages.2``)."""


def layer_ranks(names: Iterable[str], head: set[str]) -> dict[str, int]:
    """Depth rank of each parameter: 0 for the stem (before the first numbered block), 1…L for the blocks in the
    order the model registers them, L + 1 for what follows the last block and for the ``head`` parameters."""
    names = list(names)
    blocks: dict[str, int] = {}
    for name in names:
        match = BLOCK.match(name)
        if match and name not in head:
            blocks.setdefault(match.group(1), len(blocks) + 1)
    top = len(blocks) + 1
    ranks, seen_block = {}, False
    for name in names:
        match = BLOCK.match(name)
        if name in head:
            ranks[name] = top
        elif match and match.group(1) in blocks:
            ranks[name], seen_block = blocks[match.group(1)], True
        else:
            ranks[name] = top if seen_block else 0
    return ranks


def timm_layer_ids(model: torch.nn.Module) -> dict[str, int] | None:
    """Depth of each parameter of a timm model wrapped by transformers (``timm_model``), as timm's own layer-wise
    decay (``param_groups_layer_decay``) computes it: the model's ``group_matcher(coarse=False)`` (0 = stem, then
    its blocks; what it does not match — the final norm, pooling and classifier — is the top group). ``None`` for
    other models, or a timm model without a ``group_matcher`` (the block names are used instead)."""
    inner = getattr(model, "timm_model", None)
    if inner is None or not hasattr(inner, "group_matcher"):
        return None
    from timm.models import group_parameters

    ids = group_parameters(inner, inner.group_matcher(coarse=False), reverse=True)
    return {f"timm_model.{name}": int(layer) for name, layer in ids.items()}


def model_layer_ranks(model: torch.nn.Module, names: list[str], head: set[str]) -> dict[str, int]:
    """:func:`layer_ranks` of ``model``'s parameters ``names``; timm models use timm's grouping
    (:func:`timm_layer_ids`), with the ``head`` parameters and any name it does not list on top."""
    ids = timm_layer_ids(model)
    if ids is None:
        return layer_ranks(names, head)
    top = max(ids.values(), default=0)
    return {name: top if name in head else ids.get(name, top) for name in names}


@dataclass
class LearningRates:
    """How the learning rate varies over a model's parameters."""

    base: float
    backbone: float | None = None
    """For parameters whose name contains ``backbone`` (DETR-style)."""
    layer_decay: float | None = None
    """Block k of L gets ``base * layer_decay ** (L + 1 - k)``; the head and the top get ``base``."""
    head: set[str] = field(default_factory=set)

    def per_parameter(self, names: list[str], ranks: dict[str, int] | None = None) -> dict[str, float]:
        """Each parameter's rate; ``ranks``: depths from the model itself (:func:`model_layer_ranks`), else they
        are read from the names (:func:`layer_ranks`)."""
        rates = dict.fromkeys(names, self.base)
        if self.layer_decay is not None:
            ranks = ranks if ranks is not None else layer_ranks(names, self.head)
            top = max(ranks.values(), default=0)
            rates = {name: self.base * self.layer_decay ** (top - ranks[name]) for name in names}
        if self.backbone is not None:
            rates = {name: self.backbone if "backbone" in name else rate for name, rate in rates.items()}
        return rates


def parameter_groups(
    model: torch.nn.Module, rates: LearningRates, weight_decay: float, decay_names: set[str]
) -> list[dict[str, Any]]:
    """Optimizer groups, one per (learning rate, weight decay, head or not), of the trainable parameters."""
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    names = [name for name, _ in named]
    ranks = model_layer_ranks(model, names, rates.head) if rates.layer_decay is not None else None
    per_parameter = rates.per_parameter(names, ranks)
    groups: dict[tuple[float, bool, bool], dict[str, Any]] = {}
    for name, param in named:
        key = (per_parameter[name], name in decay_names, name in rates.head)
        group = groups.setdefault(key, {
            "params": [], "lr": key[0], "weight_decay": weight_decay if key[1] else 0.0, "is_head": key[2],
        })
        group["params"].append(param)
    return list(groups.values())


class HeadWarmup(TrainerCallback):
    """Train only the head for the first ``epochs`` (the other groups' scheduled learning rate is 0), then
    everything. Works by scaling the scheduler's base rates, so it is safe under DDP/FSDP (every parameter keeps
    its gradient) and follows a resumed run's epoch."""

    def __init__(self, epochs: float) -> None:
        self.epochs = epochs
        self.saved: list[float] | None = None

    def _body_groups(self, optimizer: Any) -> list[int]:
        return [i for i, group in enumerate(optimizer.param_groups) if not group.get("is_head", False)]

    def _apply(self, state: Any, optimizer: Any, scheduler: Any) -> None:
        base = getattr(scheduler, "base_lrs", None)
        if optimizer is None or base is None:
            return
        warming = (state.epoch or 0.0) < self.epochs
        if warming and self.saved is None:
            self.saved = list(base)
            for i in self._body_groups(optimizer):
                base[i] = 0.0
                optimizer.param_groups[i]["lr"] = 0.0
            logger.info("Head warm-up: only the new head trains until epoch %g.", self.epochs)
        elif not warming and self.saved is not None:
            base[:] = self.saved
            self.saved = None
            logger.info("Head warm-up done at epoch %.2f: training every layer.", state.epoch or 0.0)

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                       lr_scheduler: Any = None, **kwargs: Any) -> None:
        self._apply(state, optimizer, lr_scheduler)

    def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                      lr_scheduler: Any = None, **kwargs: Any) -> None:
        self._apply(state, optimizer, lr_scheduler)


@dataclass
class RangeTest:
    """The result of a learning-rate range test."""

    learning_rates: list[float]
    losses: list[float]
    """Exponentially smoothed training loss at each rate."""
    suggested: float | None
    """The rate at the steepest descent of the smoothed loss (fastai's ``valley``-style pick)."""
    minimum: float | None
    """The rate at the lowest smoothed loss."""


def range_test(
    trainer: Any, start_lr: float = 1e-7, end_lr: float = 1.0, steps: int = 100, smoothing: float = 0.05,
    diverge: float = 4.0,
) -> RangeTest:
    """Train ``steps`` batches with the learning rate rising exponentially from ``start_lr`` to ``end_lr``, and stop
    early once the smoothed loss exceeds ``diverge`` times its minimum. The model's weights are restored after."""
    model = trainer.model
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.create_optimizer()
    optimizer = trainer.optimizer
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    base = trainer.args.learning_rate
    device = trainer.args.device
    rates, losses, smoothed, best = [], [], 0.0, math.inf
    batches = iter(())
    model.train()
    for step in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(trainer.get_train_dataloader())
            batch = next(batches)
        lr = start_lr * (end_lr / start_lr) ** (step / max(1, steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr * group["initial_lr"] / base  # keeps the groups' ratios (layer decay, backbone)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if hasattr(trainer, "device_inputs"):  # gpu_decode / normalize_on_device batches
            inputs = trainer.device_inputs(inputs)
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        smoothed = value if step == 0 else smoothing * value + (1 - smoothing) * smoothed
        rates.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if step > 5 and smoothed > diverge * best:
            break
    model.load_state_dict(initial)
    optimizer.zero_grad()
    trainer.optimizer = None
    return RangeTest(rates, losses, *suggest(rates, losses))


def suggest(rates: list[float], losses: list[float]) -> tuple[float | None, float | None]:
    """``(steepest, minimum)``: the rate where the smoothed loss falls fastest (per log-step, before the minimum)
    and the rate at the minimum."""
    if len(losses) < 5:
        return None, None
    lowest = min(range(len(losses)), key=losses.__getitem__)
    slopes = [(losses[i + 1] - losses[i - 1]) for i in range(1, max(2, lowest))]
    steepest = min(range(len(slopes)), key=slopes.__getitem__) + 1 if slopes else lowest
    return rates[steepest], rates[lowest]
