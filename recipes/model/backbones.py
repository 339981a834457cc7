"""A detector built on the weights of a pretrained backbone (``backbone_name_or_path``).

The backbone comes from a classification checkpoint (a transformers folder or Hub id whose architecture has an
``AutoBackbone``, such as ResNet or ConvNeXt), a timm checkpoint (``timm/<name>`` on the Hub or a folder saved by
timm or ``TimmWrapperModel``), or another detector's backbone (a checkpoint whose config has a ``backbone_config``).
The detector architecture (``model_type``: RT-DETR, RT-DETRv2, D-FINE, DETR, Conditional or Deformable DETR) is
built from its config around that backbone; every backbone tensor is loaded from the checkpoint and the rest is
freshly initialised.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoBackbone, AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

from recipes.config import RecipeError

logger = logging.getLogger("recipes")

MULTI_SCALE_DETECTORS = ("rt_detr", "rt_detr_v2", "d_fine", "deformable_detr")
"""Detectors that read several feature levels (by default the backbone's last three: strides 8, 16, 32)."""
SINGLE_SCALE_DETECTORS = ("detr", "conditional_detr")
"""Detectors that read the backbone's last feature level only."""
ENCODER_INPUT_DETECTORS = ("rt_detr", "rt_detr_v2", "d_fine")
"""Detectors whose config names the channels and strides of each feature level (``encoder_in_channels``)."""
PROBE_SIZE = 256
"""Side of the blank image run through a backbone to measure its feature channels and strides."""


@dataclass
class BackboneSource:
    """A pretrained backbone, ready to be put into a detector config."""

    name: str
    config: Any
    """The backbone config (``out_indices`` set) that the detector's ``backbone_config`` takes."""
    state_dict: dict[str, torch.Tensor]
    """The backbone module's tensors, keyed as in ``AutoBackbone.from_config(config)``."""
    channels: list[int]
    strides: list[int]
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    unused: list[str] = field(default_factory=list)
    """Checkpoint tensors outside the backbone's feature levels (a classifier head, a detector's transformer)."""


def resolve_folder(name_or_path: str, revision: str = "main", cache_dir: str | None = None) -> Path:
    """A local checkpoint folder, or a Hub repo's config and weights downloaded into the cache."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local
    if local.suffix in (".safetensors", ".bin", ".pth", ".pt") or local.exists():
        raise RecipeError(
            f"backbone_name_or_path `{name_or_path}` is a file; give the checkpoint folder that holds it with its "
            "config.json (timm: save it with `timm.models.save_for_hf(model, folder)`, or load it with "
            "`TimmWrapperModel` and `save_pretrained(folder)`)."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # huggingface_hub raises many kinds (offline, 404, auth)
        raise RecipeError(
            f"Could not get the backbone checkpoint `{name_or_path}`: {err}. Check the path or Hub id (a local "
            "folder needs config.json and model.safetensors), your network and HF_TOKEN."
        ) from err


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder's safetensors files (one file or shards)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RecipeError(f"{folder} has no *.safetensors weights; save the backbone checkpoint with safetensors.")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(file))
        except (SafetensorError, OSError) as err:
            raise RecipeError(f"{file} cannot be read ({err}); it is truncated or not a safetensors file.") from err
    return tensors


def _processor_statistics(folder: Path) -> tuple[list[float] | None, list[float] | None]:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None, None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None, None
    return values.get("image_mean"), values.get("image_std")


def backbone_config_of(folder: Path, name: str, **hub_kwargs: Any) -> tuple[Any, list[float] | None,
                                                                           list[float] | None]:
    """The backbone config a checkpoint provides, with the image mean and std its backbone was trained with."""
    try:
        config = AutoConfig.from_pretrained(folder, **hub_kwargs)
    except (OSError, ValueError) as err:
        raise RecipeError(f"{folder} has no config.json transformers can read ({err}); it is no checkpoint.") from err
    mean, std = _processor_statistics(folder)
    if config.model_type == "timm_wrapper":
        from transformers import TimmBackboneConfig

        pretrained = getattr(config, "pretrained_cfg", None) or {}
        return (TimmBackboneConfig(backbone=config.architecture, use_pretrained_backbone=False,
                                   freeze_batch_norm_2d=True),
                mean or pretrained.get("mean"), std or pretrained.get("std"))
    nested = getattr(config, "backbone_config", None)
    if nested is not None:
        nested = copy.deepcopy(nested)
        if nested.model_type == "timm_backbone":
            nested.use_pretrained_backbone = False
            nested.freeze_batch_norm_2d = True
        return nested, mean, std
    if config.model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES:
        return config, mean, std
    raise RecipeError(
        f"`{name}` is a {config.model_type} checkpoint, and transformers has no backbone class for "
        f"{config.model_type} (AutoBackbone supports: {', '.join(sorted(MODEL_FOR_BACKBONE_MAPPING_NAMES))}). Use "
        "one of those, a timm checkpoint (timm/<name>, or a folder saved by timm), or a detector checkpoint whose "
        "backbone it is (e.g. the same weights in timm layout)."
    )


def _with_out_indices(config: Any, out_indices: list[int] | None, model_type: str) -> Any:
    """``config`` whose feature levels are ``out_indices`` (default: what the detector reads)."""
    config = copy.deepcopy(config)
    if config.model_type == "timm_backbone":
        import timm

        try:
            info = timm.create_model(config.backbone, pretrained=False, features_only=True).feature_info
        except RuntimeError as err:
            raise RecipeError(f"timm cannot build `{config.backbone}` as a feature extractor: {err}") from err
        levels = len(info)
    else:
        levels = len(getattr(config, "stage_names", [])) - 1
    if levels < 1:
        raise RecipeError(f"The backbone {config.model_type} has no feature levels a detector can read.")
    # timm numbers its feature levels 0..levels-1; transformers' stages are 1..levels (0 is the stem).
    last = levels - 1 if config.model_type == "timm_backbone" else levels
    default = list(range(max(0, last - 2), last + 1)) if model_type in MULTI_SCALE_DETECTORS else [last]
    wanted = list(out_indices) if out_indices else default
    bad = [i for i in wanted if not 0 <= i <= last]
    if bad:
        raise RecipeError(
            f"backbone_out_indices {wanted} do not fit this backbone: it has levels 0..{last} "
            f"({'timm feature levels' if config.model_type == 'timm_backbone' else 'stage_names'}). Pick indices in "
            "that range, e.g. the last three for RT-DETR / D-FINE / Deformable DETR, the last one for (Conditional) "
            "DETR."
        )
    config.out_indices = list(wanted)
    if hasattr(config, "out_features") and config.model_type != "timm_backbone":
        config.out_features = [config.stage_names[i] for i in wanted]
    return config


def match_tensors(
    target: dict[str, torch.Tensor], checkpoint: dict[str, torch.Tensor], name: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint's tensors for each ``target`` key, found under one common prefix; and the checkpoint keys
    left over. Stops with a clear error when the backbone is not (all) there or a shape differs."""
    bare = {key: key.removeprefix("_backbone.") for key in target}
    anchor_key = max(bare.values(), key=len)  # the longest name is the least ambiguous
    prefixes = {key[: len(key) - len(anchor_key)] for key in checkpoint
                if key == anchor_key or key.endswith("." + anchor_key)}
    for prefix in sorted(prefixes, key=len):
        found = {key: checkpoint.get(prefix + short) for key, short in bare.items()}
        if all(value is not None for value in found.values()):
            break
    else:
        missing = sorted(short for short in bare.values() if not any(k.endswith(short) for k in checkpoint))
        raise RecipeError(
            f"`{name}` does not hold this backbone's weights: {len(missing)} of {len(bare)} tensors are missing "
            f"(e.g. {missing[:3]}). Check that the checkpoint is the backbone you name (architecture and size), or "
            "set backbone_name_or_path to one that is."
        )
    wrong = [f"{key}: {tuple(found[key].shape)} vs {tuple(value.shape)}" for key, value in target.items()
             if found[key].shape != value.shape]
    if wrong:
        raise RecipeError(
            f"`{name}` has tensors of other shapes than this backbone ({wrong[:3]}): it is another size or variant of "
            "the architecture. Use the checkpoint's own architecture and size."
        )
    used = {prefix + short for short in bare.values()}
    return {key: value.to(target[key].dtype) for key, value in found.items()}, sorted(set(checkpoint) - used)


def measure_levels(backbone: torch.nn.Module, channels: int = 3) -> tuple[list[int], list[int]]:
    """Channels and strides of a backbone's feature maps (a blank image goes through it once)."""
    backbone.eval()
    with torch.no_grad():
        maps = backbone(torch.zeros(1, channels, PROBE_SIZE, PROBE_SIZE)).feature_maps
    return [int(m.shape[1]) for m in maps], [PROBE_SIZE // int(m.shape[-1]) for m in maps]


def load_backbone_source(
    name_or_path: str, model_type: str, out_indices: list[int] | None = None, **hub_kwargs: Any
) -> BackboneSource:
    """The backbone of ``name_or_path`` with its weights, its feature levels measured, for a ``model_type`` detector."""
    folder = resolve_folder(name_or_path, hub_kwargs.get("revision", "main"), hub_kwargs.get("cache_dir"))
    config, mean, std = backbone_config_of(folder, name_or_path, **hub_kwargs)
    config = _with_out_indices(config, out_indices, model_type)
    try:
        backbone = AutoBackbone.from_config(config)
    except (ImportError, RuntimeError, ValueError) as err:
        raise RecipeError(f"Cannot build the backbone of `{name_or_path}` ({config.model_type}): {err}") from err
    state, unused = match_tensors(backbone.state_dict(), read_tensors(folder), name_or_path)
    backbone.load_state_dict(state)
    channels, strides = measure_levels(backbone, getattr(config, "num_channels", 3))
    return BackboneSource(name_or_path, config, state, channels, strides, mean, std, unused)


def detector_config_kwargs(model_type: str, source: BackboneSource, overrides: dict[str, Any]) -> dict[str, Any]:
    """Config attributes that put ``source`` into a ``model_type`` detector (the recipe's overrides checked)."""
    if model_type not in (*MULTI_SCALE_DETECTORS, *SINGLE_SCALE_DETECTORS):
        raise RecipeError(
            f"backbone_name_or_path builds a detector of model_type {', '.join(MULTI_SCALE_DETECTORS)} or "
            f"{', '.join(SINGLE_SCALE_DETECTORS)}; got `{model_type}`. Set model_type to one of them."
        )
    kwargs: dict[str, Any] = {"backbone_config": source.config}
    levels = len(source.channels)
    if model_type in ENCODER_INPUT_DETECTORS:
        hidden = int(overrides.get("encoder_hidden_dim", 256))
        kwargs.update(encoder_in_channels=source.channels, feat_strides=source.strides, num_feature_levels=levels,
                      decoder_in_channels=[hidden] * levels, encode_proj_layers=[levels - 1],
                      freeze_backbone_batch_norms=True)
        given = overrides.get("encoder_in_channels")
        if given is not None and list(given) != source.channels:
            raise RecipeError(
                f"config_overrides sets encoder_in_channels {list(given)}, but the backbone's feature levels have "
                f"{source.channels} channels (strides {source.strides}). Remove encoder_in_channels from the recipe "
                "(it is set from the backbone), or change backbone_out_indices."
            )
        extra = overrides.get("num_feature_levels")
        if model_type == "rt_detr_v2" and extra is not None:
            # The decoder's deformable attention samples every level the encoder hands it (the extra ones are
            # made from the last by strided convolutions): its own level count must follow, or the first forward
            # fails with an IndexError deep in the attention.
            given_levels = overrides.get("decoder_n_levels", extra)
            if int(given_levels) != int(extra):
                raise RecipeError(
                    f"config_overrides sets num_feature_levels {extra} but decoder_n_levels {given_levels}; the "
                    "RT-DETRv2 decoder samples every feature level. Remove decoder_n_levels (it follows "
                    "num_feature_levels) or set both to the same number."
                )
            kwargs["decoder_n_levels"] = int(extra)
    elif model_type == "deformable_detr":
        kwargs["num_feature_levels"] = max(levels, int(overrides.get("num_feature_levels", levels + 1)))
    elif levels != 1:
        raise RecipeError(
            f"{model_type} reads one feature level; backbone_out_indices gives {levels}. Set one index (the last)."
        )
    return kwargs


def find_backbone_module(model: torch.nn.Module, tensor_names: set[str] | None = None) -> torch.nn.Module:
    """The model's backbone: a transformers ``BackboneMixin`` (``TimmBackbone``, ``ResNetBackbone``, …), or, where
    the detector unwraps it ((Conditional) DETR keeps timm's own module), the largest module under a ``backbone``
    name whose tensors are all among ``tensor_names``."""
    from transformers.backbone_utils import BackboneMixin

    for module in model.modules():
        if isinstance(module, BackboneMixin) and module is not model:
            return module
    best: tuple[int, torch.nn.Module] | None = None
    if tensor_names:
        for name, module in model.named_modules():
            if "backbone" not in name:
                continue
            names = {key.removeprefix("_backbone.") for key in module.state_dict()}
            if names and names <= tensor_names and (best is None or len(names) > best[0]):
                best = (len(names), module)
    if best is None:
        raise RecipeError(f"{type(model).__name__} has no backbone module to load pretrained backbone weights into.")
    return best[1]


def load_into_detector(model: torch.nn.Module, source: BackboneSource) -> list[str]:
    """Copy the backbone tensors into ``model``; the names of the model's parameters that are new."""
    backbone = find_backbone_module(model, {key.removeprefix("_backbone.") for key in source.state_dict})
    # A detector may swap BatchNorm for its frozen variant (same tensors, buffers only): load by name.
    state, _ = match_tensors(backbone.state_dict(), source.state_dict, source.name)
    backbone.load_state_dict(state)
    prefix = next(name for name, module in model.named_modules() if module is backbone)
    return [name for name, _ in model.named_parameters() if not name.startswith(prefix + ".")]


def backbone_normalisation(name_or_path: str, **hub_kwargs: Any) -> dict[str, Any]:
    """Image processor settings that give the backbone the pixels it was trained on (its mean and std)."""
    folder = resolve_folder(name_or_path, hub_kwargs.get("revision", "main"), hub_kwargs.get("cache_dir"))
    _, mean, std = backbone_config_of(folder, name_or_path, **hub_kwargs)
    if mean is None or std is None:
        logger.warning("`%s` does not say which image mean/std its backbone was trained with; the detector's "
                       "image processor keeps its own (set image_processor_overrides to change it).", name_or_path)
        return {}
    return {"do_normalize": True, "image_mean": [float(v) for v in mean], "image_std": [float(v) for v in std]}
