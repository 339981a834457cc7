"""The EMA of the weights (``ema: true``): timm's warmed-up average of parameters and BatchNorm statistics, swapped
in for evaluation, saved in checkpoints, resumed exactly, kept equal on two DDP processes; FSDP refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO, TWO_CPU_PROCESSES, assert_ok, run_cli
from safetensors.torch import load_file, save_file

from recipes.artifacts.card import _hyperparameter_table
from recipes.config import RecipeError
from recipes.model.ema import EMA_FILE, EmaSettings, WeightAverage, check_ema_supported
from recipes.parse import parse_recipe

QUICKSTART = "configs/quickstart/classification.yaml"


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())


def _train_step(model: torch.nn.Module, generator: torch.Generator) -> None:
    """New weights and new BatchNorm statistics, as an optimizer step and a training forward give them."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator))
    model.train()
    model(torch.randn(2, 3, 6, 6, generator=generator))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_the_average_is_the_warmed_up_ema_of_parameters_and_batchnorm_statistics() -> None:
    model = _tiny()
    average = WeightAverage(model, EmaSettings(decay=0.9, warmup=True))
    assert average.decay(1) == 0.0, "the first update copies the weights"
    assert average.decay(2) == pytest.approx(1 - 2**-0.75) and average.decay(10_000) == 0.9, "capped at ema_decay"
    assert WeightAverage(model, EmaSettings(decay=0.9, warmup=False)).decay(2) == 0.9
    generator = torch.Generator().manual_seed(1)
    expected = {key: value.double() for key, value in model.state_dict().items()}
    for step in range(1, 7):
        _train_step(model, generator)
        average.update(model, step)
        decay = 0.0 if step == 1 else min(0.9, 1 - step**-0.75)
        for key, value in model.state_dict().items():
            floating = value.is_floating_point()
            expected[key] = decay * expected[key] + (1 - decay) * value.double() if floating else value.double()
    averaged = average.module.state_dict()
    for key, value in expected.items():
        assert torch.allclose(averaged[key].double(), value, atol=1e-5), key
    batchnorm = "1.running_mean"
    assert not torch.allclose(averaged[batchnorm], model.state_dict()[batchnorm]), "BatchNorm statistics averaged"
    assert averaged["1.num_batches_tracked"] == model.state_dict()["1.num_batches_tracked"] == 6, "counts copied"


def test_evaluation_swaps_the_average_in_and_restores_the_exact_weights() -> None:
    model = _tiny()
    average = WeightAverage(model, EmaSettings(decay=0.9, warmup=True))
    generator = torch.Generator().manual_seed(2)
    for step in range(1, 4):
        _train_step(model, generator)
        average.update(model, step)
    own = {key: value.clone() for key, value in model.state_dict().items()}
    assert not _same(own, average.module.state_dict())
    with pytest.raises(RuntimeError, match="inside"), average.applied_to(model):
        assert _same(model.state_dict(), average.module.state_dict())
        raise RuntimeError("inside")
    assert _same(model.state_dict(), own), "the training weights come back bit for bit, also after an error"


def test_the_average_saved_in_a_checkpoint_loads_back_exactly_and_bad_files_are_named(tmp_path: Path) -> None:
    model = _tiny()
    average = WeightAverage(model, EmaSettings(decay=0.99, warmup=True))
    generator = torch.Generator().manual_seed(3)
    for step in range(1, 4):
        _train_step(model, generator)
        average.update(model, step)
    folder = tmp_path / "checkpoint-3"
    assert average.save(folder) == folder / EMA_FILE
    restored = WeightAverage(_tiny(seed=5), EmaSettings(decay=0.99, warmup=True))
    restored.load(folder)
    assert _same(restored.module.state_dict(), average.module.state_dict())

    with pytest.raises(RecipeError, match=r"checkpoint-1 has no ema.safetensors: it was saved by a run without"):
        restored.load(tmp_path / "checkpoint-1")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / EMA_FILE).write_bytes((folder / EMA_FILE).read_bytes()[:100])
    with pytest.raises(RecipeError, match=r"ema.safetensors is unreadable .*earlier checkpoint"):
        restored.load(cut)
    other = tmp_path / "other"
    other.mkdir()
    save_file({"weight": torch.zeros(2)}, str(other / EMA_FILE))
    with pytest.raises(RecipeError, match="saved from another model"):
        restored.load(other)


def test_ema_keys_are_checked_and_the_card_names_the_decay() -> None:
    for decay in ("1.0", "0", "-0.5"):
        with pytest.raises(RecipeError, match=rf"`ema_decay: {float(decay)}` must lie strictly between 0 and 1"):
            parse_recipe([QUICKSTART, "--ema", "true", "--ema_decay", decay])
    recipe = parse_recipe([QUICKSTART, "--ema", "true", "--ema_decay", "0.998"])
    assert "| EMA of the weights (this model; its evaluations) | decay 0.998 (warmed up" in _hyperparameter_table(
        recipe
    )
    assert "EMA" not in _hyperparameter_table(parse_recipe([QUICKSTART]))


def test_ema_with_fsdp_or_deepspeed_stops_before_the_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recipes.lifecycle import run

    with pytest.raises(RecipeError, match=r"`ema: true` is not supported with DeepSpeed"):
        check_ema_supported(SimpleNamespace(fsdp=None, deepspeed="ds_config.json"))
    with pytest.raises(RecipeError, match=r"not supported with FSDP: each process holds only a shard"):
        check_ema_supported(SimpleNamespace(fsdp="full_shard", deepspeed=None))
    # FSDP from `accelerate launch --config_file configs/accelerate/fsdp.yaml` (no recipe key): the launcher's flag.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    recipe = parse_recipe(
        [QUICKSTART, "--train_dir", str(tmp_path / "not-there"), "--output_dir", str(tmp_path / "out"), "--ema", "true"]
    )
    with pytest.raises(RecipeError, match=r"not supported with FSDP.*configs/accelerate/multi_gpu.yaml"):
        run(recipe)  # the missing train_dir would be the error if the data were read first
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    check_ema_supported(SimpleNamespace(fsdp=None, deepspeed=None))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.slow
def test_an_ema_run_evaluates_and_saves_the_average_and_resumes_as_uninterrupted(
    tmp_path: Path, shapes_dir: Path
) -> None:
    # 77 training images, batches of 16 (the incomplete one dropped for BatchNorm): 4 steps and a checkpoint per
    # epoch, 8 steps; the best checkpoint (lowest evaluation loss) is reloaded at the end.
    common = [
        QUICKSTART,
        "--train_dir",
        str(shapes_dir),
        "--augmentation",
        "none",
        "--dataloader_num_workers",
        "0",
        "--per_device_train_batch_size",
        "16",
        "--num_train_epochs",
        "2",
        "--make_plots",
        "false",
        "--logging_steps",
        "1",
        "--eval_strategy",
        "epoch",
        "--save_strategy",
        "epoch",
        "--load_best_model_at_end",
        "true",
        "--save_total_limit",
        "4",
        "--ema",
        "true",
    ]
    full = tmp_path / "full"
    assert_ok(run_cli(*common, "--output_dir", str(full)))
    checkpoints = sorted(full.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert [path.name for path in checkpoints] == ["checkpoint-4", "checkpoint-8"]
    for checkpoint in checkpoints:  # each holds the training weights (to continue) and their average
        assert not _same(_weights(checkpoint / EMA_FILE), _weights(checkpoint / "model.safetensors"))
    state = json.loads((full / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert _same(_weights(full / "model.safetensors"), _weights(best / EMA_FILE)), "the saved model: the best EMA"
    # The evaluation during training that chose the best checkpoint was the average's: the final evaluation of the
    # saved model gives the same loss.
    during = next(
        entry
        for entry in state["log_history"]
        if "eval_loss" in entry and entry["step"] == int(best.name.split("-")[1])
    )
    final = json.loads((full / "eval_results.json").read_text())
    assert final["eval_loss"] == pytest.approx(during["eval_loss"], rel=1e-6)
    assert "| EMA of the weights (this model; its evaluations) | decay 0.999" in (full / "README.md").read_text()

    # The same run killed after checkpoint-4 and rerun: it continues the average and ends exactly as uninterrupted.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copytree(full / "checkpoint-4", cut / "checkpoint-4")
    resumed = run_cli(*common, "--output_dir", str(cut))
    assert_ok(resumed)
    assert f"Found {cut / 'checkpoint-4'}: resuming" in resumed.stderr
    assert _same(_weights(cut / "checkpoint-8" / EMA_FILE), _weights(full / "checkpoint-8" / EMA_FILE))
    assert _same(
        _weights(cut / "checkpoint-8" / "model.safetensors"), _weights(full / "checkpoint-8" / "model.safetensors")
    )
    assert _same(_weights(cut / "model.safetensors"), _weights(full / "model.safetensors"))

    # A checkpoint of a run without EMA cannot continue an average: the rerun says so.
    shutil.rmtree(cut)
    cut.mkdir()
    shutil.copytree(full / "checkpoint-4", cut / "checkpoint-4")
    (cut / "checkpoint-4" / EMA_FILE).unlink()
    refused = run_cli(*common, "--output_dir", str(cut))
    assert refused.returncode == 2 and "has no ema.safetensors: it was saved by a run without" in refused.stderr


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ddp_processes_keep_the_same_average_and_save_it(tmp_path: Path, shapes_dir: Path) -> None:
    out, dump = tmp_path / "ddp", tmp_path / "dump"
    command = [
        *TWO_CPU_PROCESSES,
        str(REPO / "tests" / "ema_ddp_worker.py"),
        QUICKSTART,
        "--train_dir",
        str(shapes_dir),
        "--output_dir",
        str(out),
        "--use_cpu",
        "true",
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--save_strategy",
        "epoch",
        "--load_best_model_at_end",  # the averages compared are the ones training left, not a file both loaded
        "false",
        "--make_plots",
        "false",
        "--report_to",
        "none",
        "--ema",
        "true",
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),
        "EMA_DUMP_DIR": str(dump),
    }
    assert_ok(subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600))
    assert json.loads((out / "run_manifest.json").read_text())["world_size"] == 2
    ranks = [_weights(dump / f"ema-rank{rank}.safetensors") for rank in (0, 1)]
    assert _same(ranks[0], ranks[1]), "each process's average, from the same all-reduced weights, is the same"
    last = max(out.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert last.name == f"checkpoint-{json.loads((out / 'trainer_state.json').read_text())['global_step']}"
    assert _same(_weights(last / EMA_FILE), ranks[0]), "the main process saved its average in the checkpoint"
    assert not _same(_weights(last / "model.safetensors"), ranks[0]), "the average is not the training weights"
    assert _same(_weights(out / "model.safetensors"), ranks[0]), "the saved model is the average"
