"""Pins the private ``transformers.Trainer`` internals that :class:`recipes.model.trainer.RecipeTrainer` overrides, and
the ``datasets`` internals the data code reads (the stratified split, cache-shard names, ``Dataset._fingerprint``).

``RecipeTrainer`` reloads checkpoints through ``from_pretrained`` (``_load_from_checkpoint``, ``_load_best_model``),
re-installs its gather function before every evaluation loop (``gather_function``) and builds its own optimizer
groups. These are not public API: a transformers release that renames or rewires them must fail here, loudly,
instead of silently loading nothing or gathering wrongly. ``pyproject.toml`` caps transformers and datasets at the
tested minor.
"""

from __future__ import annotations

import inspect

from transformers import Trainer

from recipes.model.trainer import RecipeTrainer


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


# --------------------------------------------------------------------------- datasets internals


def test_the_stratified_split_internal_still_gives_train_test_splits_indices() -> None:
    """``recipes.data.holdout_split`` feeds ``datasets.arrow_dataset.stratified_shuffle_split_generate_indices`` the
    labels through Arrow (``train_test_split(stratify_by_column=...)`` reads them row by row); the split must stay
    the one ``train_test_split`` makes."""
    from datasets import ClassLabel, Dataset, Features, Value

    from recipes.data.splits import holdout_split

    features = Features({"id": Value("int64"), "label": ClassLabel(names=["a", "b", "c"])})
    dataset = Dataset.from_dict(
        {"id": list(range(60)), "label": [i % 3 if i < 45 else 0 for i in range(60)]}, features=features
    )
    train, validation = holdout_split(dataset, 0.25, seed=7, stratify_by="label")
    expected = dataset.train_test_split(test_size=15, stratify_by_column="label", seed=7)
    assert train["id"] == expected["train"]["id"] and validation["id"] == expected["test"]["id"], (
        "datasets changed stratified_shuffle_split_generate_indices or how train_test_split calls it: "
        "update recipes.data.holdout_split"
    )


def test_map_with_workers_still_names_its_cache_shards_as_the_check_cache_expects(tmp_path) -> None:
    """The data-check cache finds (and removes) the per-worker shards of a result by datasets' naming
    (``<file>_00000_of_00002.arrow``: ``recipes.data.check_cache.SHARD_SUFFIX``)."""
    from pathlib import Path

    from datasets import Dataset

    from recipes.data.check_cache import SHARD_SUFFIX

    Dataset.from_dict({"x": list(range(8))}).map(
        lambda row: {"y": row["x"] * 2}, num_proc=2, cache_file_name=str(tmp_path / "result.arrow")
    )
    shards = sorted(path.stem for path in Path(tmp_path).glob("result*.arrow"))
    assert shards and all(SHARD_SUFFIX.search(stem) for stem in shards), (
        f"datasets names map shards {shards}: update recipes.data.check_cache.SHARD_SUFFIX"
    )


def test_datasets_still_fingerprint_each_dataset() -> None:
    """The data-check cache keys and run_manifest.json read ``Dataset._fingerprint`` (no public accessor)."""
    from datasets import Dataset

    dataset = Dataset.from_dict({"x": [1, 2, 3]})
    fingerprint = getattr(dataset, "_fingerprint", None)
    assert isinstance(fingerprint, str) and fingerprint, "datasets no longer sets Dataset._fingerprint"
    assert dataset.select([0, 1])._fingerprint != fingerprint


def test_default_image_processors_come_from_the_public_mappings() -> None:
    """A model built from a config gets the image processor transformers registers for its type."""
    import transformers

    from recipes.model.build import default_processor_classes

    assert default_processor_classes("vit")["torchvision"] is transformers.ViTImageProcessor
    assert default_processor_classes("no-such-model-type") == {}
