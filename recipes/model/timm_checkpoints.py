"""timm checkpoints (``timm/...`` on the Hub) as transformers loads them: ``timm_wrapper`` configs,
``TimmWrapperForImageClassification`` and ``TimmWrapperImageProcessor`` (the preprocessing is timm's own, from
``config.json``'s ``pretrained_cfg``; see :func:`recipes.transforms.timm_data_config`).

What this module fixes or checks before anything is built:

- an ``architecture`` timm does not know stops the run naming the closest names and the fix (transformers would
  only say "upgrade timm", late, after the data was loaded);
- timm ≥ 1.0.2x's ``save_for_hf`` writes ``model_args`` with ``num_classes``, which transformers passes to
  ``timm.create_model`` next to its own ``num_classes=num_labels``: every such checkpoint fails to load
  ("got multiple values for keyword argument 'num_classes'"). ``num_classes`` is the label count, which the config's
  ``num_labels`` already holds, so it is dropped from ``model_args`` (and the fine-tuned model is saved without it,
  so ``pipeline()`` loads it);
- ``image_processor_overrides`` become timm data-config keys of ``pretrained_cfg`` (the processor is rebuilt from
  them, and the model's saved ``pretrained_cfg`` gets the same values, so ``pipeline()`` preprocesses as training
  and evaluation did).
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

from recipes.config import RecipeError

logger = logging.getLogger("recipes")

TIMM_MODEL_TYPE = "timm_wrapper"
TIMM_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
"""The ``pretrained_cfg`` keys timm's ``resolve_data_config`` reads for the evaluation transform."""


def is_timm_config(config: Any) -> bool:
    return getattr(config, "model_type", None) == TIMM_MODEL_TYPE


def check_timm_architecture(architecture: str | None, where: str) -> None:
    """Stop with the fix when timm cannot build ``architecture`` (named in ``where``'s ``config.json``)."""
    try:
        import timm
    except ImportError as err:
        raise RecipeError(f"{where} is a timm checkpoint and timm is not installed: pip install timm") from err
    if architecture and timm.is_model(architecture):
        return
    close = difflib.get_close_matches(str(architecture), timm.list_models(), n=3, cutoff=0.6)
    hint = f" (closest names: {', '.join(close)})" if close else ""
    raise RecipeError(
        f"{where}: its config.json names the timm architecture `{architecture}`, which timm {timm.__version__} does "
        f"not know{hint}. Set `architecture` in config.json to a name from `timm.list_models()`, or upgrade timm "
        "(`pip install -U timm`) if the checkpoint was made with a newer one."
    )


def fix_timm_config(config: Any, where: str) -> Any:
    """``config`` ready for ``TimmWrapperForImageClassification`` (architecture checked, ``num_classes`` out of
    ``model_args``); other configs pass unchanged."""
    if not is_timm_config(config):
        return config
    check_timm_architecture(getattr(config, "architecture", None), where)
    model_args = dict(getattr(config, "model_args", None) or {})
    if "num_classes" in model_args:
        model_args.pop("num_classes")
        config.model_args = model_args or None
    return config


def timm_processor_overrides(processor: Any, overrides: dict[str, Any], where: str) -> Any:
    """A ``TimmWrapperImageProcessor`` with ``overrides`` (timm data-config keys) applied to its data config."""
    unknown = sorted(set(overrides) - set(TIMM_DATA_KEYS))
    if unknown:
        raise RecipeError(
            f"`image_processor_overrides` sets {unknown}, which a timm checkpoint's processor ({where}) does not "
            f"have: its preprocessing is timm's data config, keys {list(TIMM_DATA_KEYS)} (e.g. "
            "{crop_pct: 1.0, input_size: [3, 288, 288]})."
        )
    config = {**processor.data_config, **_timm_sizes(overrides)}
    return type(processor)(pretrained_cfg=config, architecture=getattr(processor, "architecture", None))


def _timm_sizes(overrides: dict[str, Any]) -> dict[str, Any]:
    """``input_size`` as timm wants it, ``[channels, height, width]``, from ``224`` or ``[height, width]`` too."""
    size = overrides.get("input_size")
    if size is None:
        return dict(overrides)
    if isinstance(size, int):
        size = [3, size, size]
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        size = [3, *size]
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(v, int) for v in size)):
        raise RecipeError(f"`image_processor_overrides.input_size` {overrides['input_size']!r}: give 224, "
                          "[height, width] or [3, height, width].")
    return {**overrides, "input_size": list(size)}


def apply_processor_overrides(config: Any, overrides: dict[str, Any] | None) -> None:
    """Write ``image_processor_overrides`` into a timm config's ``pretrained_cfg``, so the saved model's processor
    (``pipeline()``'s) is the one training and evaluation used."""
    if not overrides or not is_timm_config(config):
        return
    pretrained = dict(getattr(config, "pretrained_cfg", None) or {})
    pretrained.update(_timm_sizes(overrides))
    config.pretrained_cfg = pretrained
