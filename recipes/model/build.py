"""Models, image processors and the Trainer subclass shared by every task."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoImageProcessor

from recipes.config import ModelArguments, RecipeError
from recipes.model.backbones import (
    backbone_normalisation,
    detector_config_kwargs,
    load_backbone_source,
    load_into_detector,
)
from recipes.model.batchnorm import fix_tensorflow_dropout, fix_tensorflow_momentum, freeze_statistics
from recipes.model.labels import label_parameter_rows, move_head_rows, named_labels, plan_labels
from recipes.model.timm_checkpoints import (
    apply_processor_overrides,
    check_timm_architecture,
    fix_timm_config,
    timm_processor_overrides,
)
from recipes.transforms import timm_data_config

logger = logging.getLogger("recipes")

SAME_PROCESSOR_AS = {"rt_detr_v2": "rt_detr", "d_fine": "rt_detr"}
"""Architectures without an image processor of their own: their Hub checkpoints ship this type's."""


def build_image_processor(model_args: ModelArguments, extra_kwargs: dict[str, Any] | None = None) -> Any:
    """Load the image processor of ``model_name_or_path`` (or ``image_processor_name``), or build the
    default one for ``model_type`` when the model is built from a config."""
    backbone = {}
    if model_args.backbone_name_or_path:  # the new detector's backbone expects its own pixel statistics
        backbone = backbone_normalisation(model_args.backbone_name_or_path, **_hub_kwargs(model_args))
    kwargs = {**(extra_kwargs or {}), **backbone, **(model_args.image_processor_overrides or {})}
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name:
        try:
            processor = AutoImageProcessor.from_pretrained(
                name,
                revision=model_args.model_revision,
                cache_dir=model_args.cache_dir,
                trust_remote_code=model_args.trust_remote_code,
                **kwargs,
            )
        except ImportError as err:  # e.g. a timm checkpoint without timm
            raise RecipeError(f"Cannot build the image processor of `{name}`: {err}") from err
        except OSError as err:
            local = Path(name).expanduser()
            if _timm_hint(name):
                raise RecipeError(f"Could not load the image processor of `{name}`.{_timm_hint(name)}") from err
            if local.is_dir() and not (local / "preprocessor_config.json").is_file():
                raise RecipeError(
                    f"{local} has no preprocessor_config.json, so how its model expects images is unknown. Copy the "
                    "file from the checkpoint it was fine-tuned from (or save its image processor there with "
                    "`AutoImageProcessor.from_pretrained(BASE).save_pretrained(FOLDER)`), or set "
                    "`image_processor_name` to that checkpoint."
                ) from err
            raise RecipeError(f"Could not load the image processor of `{name}`: {err}") from err
        except ValueError as err:
            raise RecipeError(f"`{name}` has no image processor this task can use: {err}{_timm_hint(name)}") from err
        if timm_data_config(processor) is not None:  # timm_wrapper: timm's transform from pretrained_cfg
            check_timm_architecture(getattr(processor, "architecture", None), f"`{name}`")
            if model_args.image_processor_overrides:
                processor = timm_processor_overrides(processor, model_args.image_processor_overrides, f"`{name}`")
        return processor
    model_type = SAME_PROCESSOR_AS.get(model_args.model_type or "", model_args.model_type or "")
    classes = default_processor_classes(model_type)
    processor_class = classes.get("torchvision") or classes.get("pil")
    if processor_class is None:
        raise RecipeError(
            f"No default image processor for model_type `{model_args.model_type}`; set `image_processor_name`."
        )
    return processor_class(**kwargs)


def default_processor_classes(model_type: str) -> dict[str, type]:
    """The image processor classes transformers registers for ``model_type`` (``{"torchvision": …, "pil": …}``;
    empty when it has none), read through the public ``CONFIG_MAPPING`` and ``IMAGE_PROCESSOR_MAPPING``."""
    try:
        found = transformers.IMAGE_PROCESSOR_MAPPING[transformers.CONFIG_MAPPING[model_type]]
    except (KeyError, ValueError):
        return {}
    if isinstance(found, tuple):  # (slow, fast) in releases before the torchvision/PIL backends
        return {key: cls for key, cls in zip(("pil", "torchvision"), found) if cls is not None}
    return {key: cls for key, cls in dict(found).items() if cls is not None}


def _timm_hint(name: str) -> str:
    """Advice for a local ``config.json`` that looks like timm's but lacks what transformers needs."""
    import json

    try:
        config = json.loads((Path(name).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    if isinstance(config, dict) and "architecture" in config and "pretrained_cfg" not in config:
        return (f" Its config.json names the timm architecture `{config['architecture']}` but has no "
                "`pretrained_cfg` (timm's preprocessing, which transformers needs to load it as a timm checkpoint): "
                "save the model with timm's `save_for_hf`/`push_to_hf_hub`, or add `pretrained_cfg` "
                "(`timm.models.get_pretrained_cfg(NAME).to_dict()`).")
    return ""


@dataclass
class LoadedModel:
    """A model ready for the Trainer, with what loading it did."""

    model: torch.nn.Module
    new_parameters: list[str] = field(default_factory=list)
    """Parameters that did not come from the checkpoint (a new or resized head): what head warm-up trains."""
    kept_label_rows: dict[str, int] = field(default_factory=dict)
    """Class name → the checkpoint row it kept (labels matched by name)."""


def _hub_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    return {
        "revision": model_args.model_revision,
        "cache_dir": model_args.cache_dir,
        "trust_remote_code": model_args.trust_remote_code,
    }


def load_checkpoint_config(model_args: ModelArguments) -> Any | None:
    """The checkpoint's own config (``None`` when the model is built from ``model_type``)."""
    if not model_args.model_name_or_path:
        return None
    try:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, **_hub_kwargs(model_args))
    except (OSError, ValueError) as err:
        raise RecipeError(
            f"Could not load the config of `{model_args.model_name_or_path}`: {err}. Check the id or path (a "
            "local checkpoint folder needs config.json), your network and HF_TOKEN; or set `model_type` to build "
            "a model from a config offline."
        ) from err
    return fix_timm_config(config, f"`{model_args.model_name_or_path}`")


def build_model(
    auto_model_class: Any,
    model_args: ModelArguments,
    id2label: dict[int, str],
    config_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """``auto_model_class`` (an ``AutoModelFor…``) with the dataset's labels, pretrained or from a config.

    A pretrained head keeps the rows of the classes it already knows, by name (:mod:`recipes.model.labels`); other rows
    are new. ``config_kwargs`` are the task's extra config attributes; the recipe's ``config_overrides`` win.
    TensorFlow-convention BatchNorm momentum is corrected (:mod:`recipes.model.batchnorm`).
    """
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
    if model_args.backbone_name_or_path:
        loaded = _build_on_backbone(auto_model_class, model_args, label_kwargs, overrides)
    elif model_args.model_name_or_path:
        loaded = _load_pretrained(auto_model_class, model_args, label_kwargs, overrides)
    else:
        try:
            config = AutoConfig.for_model(model_args.model_type, **label_kwargs, **overrides)
            if "classifier_dropout_prob" not in overrides:
                fix_tensorflow_dropout(config)
        except ValueError as err:
            raise RecipeError(f"Cannot build a `{model_args.model_type}` config: {err}") from err
        logger.info("Building a randomly initialised %s model from its config", model_args.model_type)
        model = auto_model_class.from_config(config)
        loaded = LoadedModel(model, [name for name, _ in model.named_parameters()])
    if model_args.box_nms_iou is not None:  # saved with the model: predict, evaluate and the demo read it back
        loaded.model.config.box_nms_iou = model_args.box_nms_iou
    fix_tensorflow_momentum(loaded.model, model_args.batchnorm_momentum)
    if model_args.freeze_batchnorm:
        logger.info("freeze_batchnorm: %d BatchNorm layers keep their running statistics.",
                    freeze_statistics(loaded.model))
    return loaded


def _build_on_backbone(
    auto_model_class: Any, model_args: ModelArguments, label_kwargs: dict[str, Any], overrides: dict[str, Any]
) -> LoadedModel:
    """A ``model_type`` detector whose backbone tensors come from ``backbone_name_or_path``; the rest is new."""
    source = load_backbone_source(model_args.backbone_name_or_path, model_args.model_type,
                                  model_args.backbone_out_indices, **_hub_kwargs(model_args))
    try:
        config = AutoConfig.for_model(model_args.model_type, **label_kwargs,
                                      **{**detector_config_kwargs(model_args.model_type, source, overrides),
                                         **overrides})
        model = auto_model_class.from_config(config)
    except (ValueError, TypeError, RuntimeError) as err:
        raise RecipeError(f"Cannot build a `{model_args.model_type}` detector on this backbone: {err}") from err
    new = load_into_detector(model, source)
    logger.info(
        "Backbone: all %d tensors loaded from %s (feature levels: channels %s, strides %s; %d checkpoint tensors "
        "outside them unused); %d other parameters are new.", len(source.state_dict), source.name, source.channels,
        source.strides, len(source.unused), len(new))
    return LoadedModel(model, new)


def _load_pretrained(
    auto_model_class: Any, model_args: ModelArguments, label_kwargs: dict[str, Any], overrides: dict[str, Any]
) -> LoadedModel:
    path, common = model_args.model_name_or_path, _hub_kwargs(model_args)
    original = load_checkpoint_config(model_args)
    checkpoint_labels = named_labels(original)
    plan = plan_labels(checkpoint_labels, label_kwargs["id2label"], evaluate_only=False)
    try:
        config = AutoConfig.from_pretrained(path, **label_kwargs, **overrides, **common)
        fix_timm_config(config, f"`{path}`")
        apply_processor_overrides(config, model_args.image_processor_overrides)
        if "classifier_dropout_prob" not in overrides:
            fix_tensorflow_dropout(config)
        model, info = auto_model_class.from_pretrained(
            path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            output_loading_info=True, **common,
        )
    except RecipeError:
        raise
    except ImportError as err:  # e.g. a timm backbone without timm
        raise RecipeError(f"Cannot build `{path}`: {err}") from err
    except (OSError, ValueError) as err:
        raise RecipeError(
            f"Could not load model `{path}`: {err}. Check the id or path, your network and HF_TOKEN; or set "
            "`model_type` to build a model from a config offline."
        ) from err
    new = sorted({*info.get("missing_keys", []), *(key for key, *_ in info.get("mismatched_keys", []))})
    loaded = LoadedModel(model, new)
    same_size = original.num_labels == len(plan.rows)
    if checkpoint_labels and not plan.is_identity and (plan.keeps_rows or same_size):
        rows = label_parameter_rows(auto_model_class, config)
        checkpoint_model = auto_model_class.from_pretrained(path, config=original, **common)
        move_head_rows(model, checkpoint_model, rows, plan)
        loaded.new_parameters = sorted({*new, *rows})
        loaded.kept_label_rows = {plan.id2label[i]: row for i, row in enumerate(plan.rows) if row is not None}
        logger.info("Kept the checkpoint's head rows for %d of %d classes (matched by name): %s",
                    len(loaded.kept_label_rows), len(plan.rows), loaded.kept_label_rows)
    elif new:
        logger.info("New parameters (not in the checkpoint): %s", ", ".join(new[:8]) + (" …" if len(new) > 8 else ""))
    return loaded
