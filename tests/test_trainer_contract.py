"""Pins the private ``transformers.Trainer`` internals that :class:`recipes.modeling.RecipeTrainer` overrides.

``RecipeTrainer`` reloads checkpoints through ``from_pretrained`` (``_load_from_checkpoint``, ``_load_best_model``),
re-installs its gather function before every evaluation loop (``gather_function``) and builds its own optimizer
groups. These are not public API: a transformers release that renames or rewires them must fail here, loudly,
instead of silently loading nothing or gathering wrongly. ``pyproject.toml`` caps transformers at the tested minor.
"""

from __future__ import annotations

import inspect

from transformers import Trainer

from recipes.modeling import RecipeTrainer


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_checkpoint_loading_hooks_keep_their_signatures_and_callers() -> None:
    assert _parameters(Trainer._load_from_checkpoint) == ["self", "resume_from_checkpoint", "model"]
    assert _parameters(Trainer._load_best_model) == ["self"]
    source = inspect.getsource(Trainer)
    assert "self._load_from_checkpoint(" in source, "resume no longer goes through _load_from_checkpoint"
    assert "self._load_best_model()" in source, "load_best_model_at_end no longer goes through _load_best_model"


def test_evaluation_loop_still_gathers_through_gather_function() -> None:
    assert "self.gather_function" in inspect.getsource(Trainer.evaluation_loop)
    assert "gather_function" in inspect.getsource(Trainer), "Trainer no longer defines gather_function"


def test_optimizer_helpers_keep_their_signatures() -> None:
    assert _parameters(Trainer.create_optimizer) == ["self", "model"]
    assert _parameters(Trainer.get_decay_parameter_names) == ["self", "model"]
    assert _parameters(Trainer.get_optimizer_cls_and_kwargs)[:2] == ["args", "model"]


def test_recipe_trainer_overrides_exactly_these_private_methods() -> None:
    private = {name for name in vars(RecipeTrainer) if name.startswith("_") and not name.startswith("__")}
    inherited = {name for name in private if hasattr(Trainer, name)}
    assert inherited == {"_load_from_checkpoint", "_load_best_model"}, (
        "RecipeTrainer overrides a new private Trainer method: pin it in this file"
    )
