"""Recipes: every YAML parses, CLI overrides win, unknown keys fail with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recipes.config import RecipeError
from recipes.parse import parse_recipe
from recipes.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in p.parts)
ACCELERATE_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_recipe_parses(path: Path, tmp_path: Path) -> None:
    # GPU-only settings (bf16) are valid recipes; on this CPU machine they need --use_cpu to validate.
    recipe = parse_recipe([str(path), "--output_dir", str(tmp_path), "--use_cpu"])
    source = yaml.safe_load(path.read_text())
    assert recipe.run.task == get_task(source["task"]).name
    assert recipe.training.remove_unused_columns is False
    assert recipe.training.batch_eval_metrics is True
    for key, value in source.items():
        if key in ("output_dir", "task") or isinstance(value, dict) or value is None:
            continue
        part = next(p for p in (recipe.run, recipe.data, recipe.model, recipe.training) if hasattr(p, key))
        actual = getattr(part, key)
        if key == "report_to" and value == "none":
            value = []  # TrainingArguments normalises "none" to no integrations
        assert actual == value or actual == [value] or str(actual).endswith(str(value)), key


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_are_valid(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 1


def test_command_line_overrides_yaml(tmp_path: Path) -> None:
    recipe = parse_recipe([
        "configs/quickstart/classification.yaml", "--learning_rate", "1e-4", "--output_dir", str(tmp_path),
        "--augmentation", "strong", "--max_train_samples", "7", "--config_overrides", '{"hidden_size": 32}',
    ])
    assert recipe.training.learning_rate == 1e-4
    assert recipe.data.augmentation == "strong"
    assert recipe.data.max_train_samples == 7
    assert recipe.model.config_overrides == {"hidden_size": 32}
    assert recipe.training.output_dir == str(tmp_path)


def test_config_flag_form(tmp_path: Path) -> None:
    recipe = parse_recipe(["--config", "configs/quickstart/classification.yaml", "--output_dir", str(tmp_path)])
    assert recipe.model.model_type == "resnet"


def test_unknown_yaml_key_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: image-classification\nmodel_type: vit\nlerning_rate: 0.1\n")
    with pytest.raises(RecipeError, match=r"lerning_rate.*Did you mean `learning_rate`"):
        parse_recipe([str(bad)])


def test_unknown_cli_flag_names_the_flag() -> None:
    with pytest.raises(RecipeError, match="num_train_epoch"):
        parse_recipe(["configs/quickstart/classification.yaml", "--num_train_epoch", "3"])


def test_task_specific_keys_are_rejected_for_other_tasks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: image-classification\nmodel_type: vit\nreduce_labels: true\n")
    with pytest.raises(RecipeError, match="reduce_labels"):
        parse_recipe([str(bad)])


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: image-classification\n")
    with pytest.raises(RecipeError, match="model_name_or_path"):
        parse_recipe([str(bad)])


def test_unknown_task(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: depth-estimation\nmodel_type: vit\n")
    with pytest.raises(RecipeError, match="Unknown task `depth-estimation`"):
        parse_recipe([str(bad)])


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_recipe([str(bad)])


def test_forced_arguments_cannot_be_turned_off(tmp_path: Path) -> None:
    recipe = parse_recipe(["configs/quickstart/classification.yaml", "--remove_unused_columns", "true",
                           "--output_dir", str(tmp_path)])
    assert recipe.training.remove_unused_columns is False


def test_resolved_recipe_hides_the_token(tmp_path: Path) -> None:
    recipe = parse_recipe(["configs/quickstart/classification.yaml", "--hub_token", "hf_secret123",
                           "--output_dir", str(tmp_path)])
    assert "hf_secret123" not in str(recipe.to_dict())


def test_command_line_folder_replaces_the_recipes_hub_dataset(tmp_path: Path) -> None:
    recipe = parse_recipe(["configs/food101-vit.yaml", "--use_cpu", "--train_dir", str(tmp_path),
                           "--output_dir", str(tmp_path)])
    assert recipe.data.dataset_name is None and recipe.data.train_dir == str(tmp_path)


def test_command_line_hub_dataset_replaces_the_recipes_folder(tmp_path: Path) -> None:
    recipe = parse_recipe(["configs/quickstart/classification.yaml", "--dataset_name", "ethz/food101",
                           "--output_dir", str(tmp_path)])
    assert recipe.data.dataset_name == "ethz/food101" and recipe.data.train_dir is None


def test_missing_reporting_integration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"report_to \['wandb'\] is not installed: pip install wandb"):
        parse_recipe(["configs/quickstart/classification.yaml", "--report_to", "wandb", "--output_dir", str(tmp_path)])


def test_wrong_value_type_names_the_key_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: image-classification\nmodel_type: resnet\nnum_train_epochs: five\n")
    with pytest.raises(RecipeError, match=rf"Invalid value for `num_train_epochs` in {bad}.*'five'"):
        parse_recipe([str(bad)])


def test_early_stopping_without_evaluation_is_turned_off_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="recipes"):
        recipe = parse_recipe(["configs/plates-detr.yaml", "--eval_strategy", "no", "--use_cpu"])
    assert recipe.run.early_stopping_patience is None and not recipe.training.load_best_model_at_end
    assert "early stopping is off" in caplog.text


def test_extra_metrics_run_module_code_only_with_trust_remote_code(tmp_path: Path) -> None:
    base = ["configs/quickstart/classification.yaml", "--output_dir", str(tmp_path), "--use_cpu"]
    for metric in ("accuracy", str(tmp_path / "my_metric.py")):  # a canonical Hub id is a script too
        with pytest.raises(RecipeError, match=r"`extra_metrics: .*trust_remote_code: true"):
            parse_recipe([*base, "--extra_metrics", metric])
    recipe = parse_recipe([*base, "--extra_metrics", "accuracy", "--trust_remote_code", "true"])
    assert recipe.run.extra_metrics == ["accuracy"] and recipe.model.trust_remote_code
    assert parse_recipe(base).run.extra_metrics == []  # the default runs no module code


def test_memory_is_pinned_only_for_an_accelerator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU run the Trainer's evaluation loader does not pin memory, so torch does not warn at each evaluation
    that pinning needs an accelerator; with one, pinning stays on unless the recipe turns it off."""
    import warnings

    import torch
    from transformers import Trainer

    import recipes.parse

    quickstart = str(REPO / "configs" / "quickstart" / "classification.yaml")
    monkeypatch.setattr(recipes.parse, "accelerator_available", lambda: False)
    recipe = parse_recipe([quickstart, "--output_dir", str(tmp_path)])
    assert recipe.training.dataloader_pin_memory is False

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": ((x * self.weight).sum(-1) - labels).pow(2).mean()}

    examples = [{"x": torch.ones(2), "labels": torch.tensor(1.0)} for _ in range(4)]
    trainer = Trainer(model=Tiny(), args=recipe.training, eval_dataset=examples)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert trainer.evaluate()["eval_loss"] == pytest.approx(1.0)
    assert not [w for w in caught if "pin_memory" in str(w.message)], [str(w.message) for w in caught]

    monkeypatch.setattr(recipes.parse, "accelerator_available", lambda: True)
    assert parse_recipe([quickstart, "--output_dir", str(tmp_path)]).training.dataloader_pin_memory is True
    assert parse_recipe([quickstart, "--output_dir", str(tmp_path), "--use_cpu", "true"]
                        ).training.dataloader_pin_memory is False
    assert parse_recipe([quickstart, "--output_dir", str(tmp_path), "--dataloader_pin_memory", "false"]
                        ).training.dataloader_pin_memory is False
