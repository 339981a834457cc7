"""BatchNorm that survives fine-tuning: TensorFlow-convention momentum, frozen statistics, and which models care.

transformers' MobileNetV1 (0.9997), MobileNetV2/DeepLabV3 (0.997) and EfficientNet (0.99, from
``config.batch_norm_momentum``) pass TensorFlow's *decay* as PyTorch's ``momentum``, which weights the *new*
batch: one training step replaces the pretrained running statistics with that batch's. Every other BatchNorm in
transformers 5.x uses PyTorch's 0.1; DETR-family backbones use frozen BatchNorm (no running update at all).

The literal conversion (``1 - m``: 0.0003 for MobileNetV1) is a ~3,300-step moving average: over a fine-tuning run
of a few hundred steps the running statistics stay ImageNet's while the weights move, and evaluation (which uses
them) collapses — measured on food101-mini with MobileNetV1-0.25, 3 epochs at lr 1e-3: 0.33 validation accuracy
with 0.0003 against 0.90 with 0.1 (0.93 with batch statistics). So these layers get PyTorch's default, 0.1.
"""

from __future__ import annotations

import logging

import torch
from torch.nn.modules.batchnorm import _BatchNorm

logger = logging.getLogger("recipes")

TENSORFLOW_MOMENTUM_THRESHOLD = 0.5
"""A BatchNorm momentum above this is a TensorFlow decay (no PyTorch model in transformers or timm uses one)."""
FINE_TUNING_MOMENTUM = 0.1
"""PyTorch's default BatchNorm momentum, used instead of a TensorFlow decay."""


def batchnorm_layers(model: torch.nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers that keep running statistics (frozen variants have none and are not listed)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def fix_tensorflow_momentum(model: torch.nn.Module, momentum: float | None = None) -> int:
    """Replace TensorFlow-convention momentum (``m > 0.5``) by ``momentum`` (default: PyTorch's 0.1) on every
    BatchNorm; with ``momentum`` given, set it on every BatchNorm. Logs once; idempotent. Momentum is not saved with
    the weights, so this runs after every load."""
    threshold = TENSORFLOW_MOMENTUM_THRESHOLD
    layers = batchnorm_layers(model)
    fixed = [m for m in layers if m.momentum is not None and m.momentum > threshold]
    architecture = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    if fixed:
        found = sorted({round(m.momentum, 6) for m in fixed})
        logger.info(
            "%s: %d BatchNorm layers had TensorFlow-style momentum %s (a decay; as PyTorch momentum %s, too slow "
            "for the running statistics to follow fine-tuning); using %s.", architecture, len(fixed), found,
            [round(1 - m, 6) for m in found], momentum if momentum is not None else FINE_TUNING_MOMENTUM,
        )
    for module in layers if momentum is not None else fixed:
        module.momentum = momentum if momentum is not None else FINE_TUNING_MOMENTUM
    return len(fixed)


def fix_tensorflow_dropout(config: object) -> float | None:
    """MobileNetV1/V2 configs default ``classifier_dropout_prob`` to TensorFlow's *keep* probability (0.999, 0.8):
    as a drop probability it discards almost every feature in training. Return the corrected value, if any."""
    probability = getattr(config, "classifier_dropout_prob", None)
    if getattr(config, "model_type", None) in ("mobilenet_v1", "mobilenet_v2") and probability and probability > 0.5:
        config.classifier_dropout_prob = round(1.0 - probability, 6)
        logger.info("%s: classifier_dropout_prob %s is TensorFlow's keep probability; using %s.",
                    config.model_type, probability, config.classifier_dropout_prob)
        return config.classifier_dropout_prob
    return None


def _stay_in_eval_mode(module: torch.nn.Module, _inputs: object) -> None:
    module.train(False)


def freeze_statistics(model: torch.nn.Module) -> int:
    """Keep every BatchNorm in evaluation mode during training: the pretrained running statistics are used and
    never updated (for small per-device batches); the affine weights still train."""
    layers = batchnorm_layers(model)
    for module in layers:
        module.register_forward_pre_hook(_stay_in_eval_mode)
    return len(layers)
