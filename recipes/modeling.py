"""Models, image processors and the Trainer subclass shared by every task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoImageProcessor, Trainer
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

from recipes.config import ModelArguments, RecipeError

logger = logging.getLogger("recipes")


def build_image_processor(model_args: ModelArguments, extra_kwargs: dict[str, Any] | None = None) -> Any:
    """Load the image processor of ``model_name_or_path`` (or ``image_processor_name``), or build the
    default one for ``model_type`` when the model is built from a config."""
    kwargs = {**(extra_kwargs or {}), **(model_args.image_processor_overrides or {})}
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name:
        try:
            return AutoImageProcessor.from_pretrained(
                name,
                revision=model_args.model_revision,
                cache_dir=model_args.cache_dir,
                trust_remote_code=model_args.trust_remote_code,
                **kwargs,
            )
        except OSError as err:
            raise RecipeError(f"Could not load the image processor of `{name}`: {err}") from err
    mapping = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_args.model_type or "")
    class_name = (mapping or {}).get("torchvision") or (mapping or {}).get("pil")
    if class_name is None:
        raise RecipeError(
            f"No default image processor for model_type `{model_args.model_type}`; set `image_processor_name`."
        )
    return getattr(transformers, class_name)(**kwargs)


def build_model(
    auto_model_class: Any,
    model_args: ModelArguments,
    id2label: dict[int, str],
    config_kwargs: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """``auto_model_class`` (an ``AutoModelFor…``) with the dataset's labels: pretrained (head resized) or from a
    config. ``config_kwargs`` are the task's extra config attributes; the recipe's ``config_overrides`` win."""
    label_kwargs = {
        "num_labels": len(id2label),
        "id2label": {int(k): v for k, v in id2label.items()},
        "label2id": {v: int(k) for k, v in id2label.items()},
    }
    overrides = {**(config_kwargs or {}), **(model_args.config_overrides or {})}
    clashing = sorted(set(overrides) & {"num_labels", "id2label", "label2id"})
    if clashing:
        raise RecipeError(
            f"`config_overrides` sets {clashing}, which come from the dataset's labels; remove them from the recipe."
        )
    if model_args.model_name_or_path:
        common = {
            "revision": model_args.model_revision,
            "cache_dir": model_args.cache_dir,
            "trust_remote_code": model_args.trust_remote_code,
        }
        try:
            config = AutoConfig.from_pretrained(model_args.model_name_or_path, **label_kwargs, **overrides, **common)
            return auto_model_class.from_pretrained(
                model_args.model_name_or_path,
                config=config,
                ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
                **common,
            )
        except OSError as err:
            raise RecipeError(
                f"Could not load model `{model_args.model_name_or_path}`: {err}. Check the id or path, your "
                "network and HF_TOKEN; or set `model_type` to build a model from a config offline."
            ) from err
    try:
        config = AutoConfig.for_model(model_args.model_type, **label_kwargs, **overrides)
    except ValueError as err:
        raise RecipeError(f"Cannot build a `{model_args.model_type}` config: {err}") from err
    logger.info("Building a randomly initialised %s model from its config", model_args.model_type)
    return auto_model_class.from_config(config)


class RecipeTrainer(Trainer):
    """``Trainer`` with an optional separate learning rate for backbone parameters (DETR-style)."""

    def __init__(self, *args: Any, backbone_learning_rate: float | None = None, **kwargs: Any) -> None:
        self.backbone_learning_rate = backbone_learning_rate
        super().__init__(*args, **kwargs)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        # transformers resets `gather_function` to plain `gather_for_metrics` at the end of each evaluation loop,
        # which drops `eval_use_gather_object` from the second evaluation on; set it again every time.
        if self.args.eval_use_gather_object:
            self.gather_function = self._gather_objects_but_not_tensors
        return super().evaluation_loop(*args, **kwargs)

    def _gather_objects_but_not_tensors(self, data: Any) -> Any:
        """Per-image records (lists of dicts) travel as objects; plain tensors such as the per-batch losses are
        gathered as tensors, so the evaluation loss averages every process's batches correctly."""
        if isinstance(data, torch.Tensor):
            return self.accelerator.gather_for_metrics(data)
        return self.accelerator.gather_for_metrics(data, use_gather_object=True)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.backbone_learning_rate is None or self.optimizer is not None:
            return super().create_optimizer() if model is None else super().create_optimizer(model)
        model = model if model is not None else self.model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault(("backbone" in name, name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        param_groups = [
            {
                "params": params,
                "lr": self.backbone_learning_rate if is_backbone else self.args.learning_rate,
                "weight_decay": self.args.weight_decay if has_decay else 0.0,
            }
            for (is_backbone, has_decay), params in groups.items()
        ]
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    # transformers 5 saves some architectures (ViT, ...) under their legacy parameter names and
    # converts them back in `from_pretrained`; the Trainer's raw `load_state_dict` for resuming and for
    # `load_best_model_at_end` skips that conversion and silently loads nothing. Reload through
    # `from_pretrained` instead, so both paths restore the weights that were saved.
    def _reload_weights(self, checkpoint: str, model: torch.nn.Module | None = None) -> bool:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        weights = Path(checkpoint) / "model.safetensors"
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not weights.is_file():
            return False
        if not hasattr(type(target), "from_pretrained"):
            return False
        try:
            reloaded = type(target).from_pretrained(checkpoint, config=target.config)
            missing, unexpected = target.load_state_dict(reloaded.state_dict(), strict=False)
        except (RuntimeError, ValueError, OSError) as err:
            missing, unexpected = [str(err).splitlines()[0]], []
        if missing or unexpected:
            raise RecipeError(
                f"{checkpoint} was saved from another model or label set ({(missing or unexpected)[:3]}). "
                "Use a new --output_dir, or --auto_resume false to start over in this one."
            )
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        if not self._reload_weights(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        checkpoint = self.state.best_model_checkpoint
        if checkpoint and self._reload_weights(checkpoint):
            logger.info("Loaded the best model from %s (%s)", checkpoint, self.state.best_metric)
            return
        super()._load_best_model()
