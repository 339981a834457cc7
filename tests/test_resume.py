"""Checkpoints on the Hub and resuming: checkpoint pushes during training, ``resume_from_hub`` on a new machine,
and the run fingerprint that keeps a rerun from continuing a stale or finished run."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import assert_ok, run_cli

from recipes.artifacts.checkpoints import (
    FINGERPRINT_FILE,
    check_checkpoint,
    checkpoint_problem,
    differences,
    finished_run,
    last_checkpoint,
    training_fingerprint,
    write_fingerprint,
)
from recipes.artifacts.hub import CheckpointPusher, download_checkpoint
from recipes.config import RecipeError
from recipes.parse import parse_recipe
from recipes.tasks import get_task

QUICKSTART = "configs/quickstart/classification.yaml"
REPO_ID = "user/shapes-run"


def _fingerprint(*args: str, train: str = "aaaa") -> dict:
    recipe = parse_recipe([QUICKSTART, "--output_dir", "out", *args])
    return training_fingerprint(recipe, SimpleNamespace(train=SimpleNamespace(_fingerprint=train),
                                                        validation=SimpleNamespace(_fingerprint="vvvv"), test=None))


def test_the_fingerprint_holds_what_shapes_training_and_nothing_else() -> None:
    base = _fingerprint()
    same = _fingerprint("--output_dir", "elsewhere", "--logging_steps", "3", "--per_device_eval_batch_size", "2",
                        "--dataloader_num_workers", "4", "--push_to_hub", "--hub_model_id", "a/b", "--hub_token",
                        "hf_secret", "--make_plots", "false", "--push_checkpoints", "true", "--save_total_limit", "5",
                        "--report_to", "none", "--auto_resume", "false")
    assert differences(base, same) == []
    assert "hf_secret" not in json.dumps(same)
    changed = differences(base, _fingerprint("--learning_rate", "1e-4", "--num_train_epochs", "3", "--seed", "1",
                                             "--config_overrides", '{"embedding_size": 8}', train="bbbb"))
    named = {line.split(":")[0] for line in changed}
    assert named == {"learning_rate", "num_train_epochs", "seed", "config_overrides", "data (train split, datasets "
                     "fingerprint)"}
    assert "learning_rate: 0.003 → 0.0001" in changed


def test_checkpoint_of_another_run_stops_auto_resume_and_warns_when_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = _checkpoint(tmp_path / "out", 4)
    check_checkpoint(checkpoint, _fingerprint(), explicit=False)  # same run: continues silently
    with pytest.raises(RecipeError) as info:
        check_checkpoint(checkpoint, _fingerprint("--learning_rate", "1e-4"), explicit=False)
    message = str(info.value)
    assert "learning_rate: 0.003 → 0.0001" in message
    assert "--output_dir" in message and "--auto_resume false" in message
    assert f"--resume_from_checkpoint {checkpoint}" in message
    with caplog.at_level(logging.WARNING, logger="recipes"):
        check_checkpoint(checkpoint, _fingerprint("--learning_rate", "1e-4"), explicit=True)
        (checkpoint / FINGERPRINT_FILE).unlink()
        check_checkpoint(checkpoint, _fingerprint("--learning_rate", "1e-4"), explicit=False)
    warnings = [record.getMessage() for record in caplog.records]
    assert "differ" in warnings[0] and "learning_rate" in warnings[0]
    assert "older version" in warnings[1]


def test_resume_from_hub_errors_say_what_is_wrong(tmp_path: Path, fake_hub) -> None:
    with pytest.raises(RecipeError, match="`user/missing` not found"):
        download_checkpoint("user/missing", tmp_path / "a", token=fake_hub.token, endpoint=fake_hub.url)
    fake_hub.seed("user/model-only", {"config.json": b"{}"})
    with pytest.raises(RecipeError, match=r"holds no checkpoints.*--push_checkpoints true"):
        download_checkpoint("user/model-only", tmp_path / "b", token=fake_hub.token, endpoint=fake_hub.url)
    with pytest.raises(RecipeError, match="not authorised") as info:
        download_checkpoint("user/model-only", tmp_path / "c", token="hf_wrong_secret", endpoint=fake_hub.url)
    assert "hf_wrong_secret" not in str(info.value)


def test_pusher_mirrors_the_kept_checkpoints_even_when_rotated_during_the_upload(tmp_path: Path, fake_hub) -> None:
    out = tmp_path / "out"
    pusher = CheckpointPusher.start(REPO_ID, fake_hub.token, endpoint=fake_hub.url)
    args, control = SimpleNamespace(output_dir=str(out), save_total_limit=2), SimpleNamespace()
    for step in (1, 2, 3):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "optimizer.pt").write_bytes(bytes([step]) * 64)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if step == 3:  # the Trainer rotates checkpoint-1 away (save_total_limit 2) before on_save
            shutil.rmtree(out / "checkpoint-1")
        pusher.on_save(args, SimpleNamespace(global_step=step, is_world_process_zero=True), control)
        if step == 2:
            shutil.rmtree(folder)  # rotated away while its upload may still run: the staged copy is pushed
            (out / "checkpoint-2").mkdir()
    pusher.wait()
    assert pusher.pushed == ["checkpoint-1", "checkpoint-2", "checkpoint-3"] and not pusher.last_failed
    files = fake_hub.files(REPO_ID)
    assert sorted(name for name in files if name.startswith("checkpoints/")) == [
        "checkpoints/checkpoint-2/optimizer.pt", "checkpoints/checkpoint-2/trainer_state.json",
        "checkpoints/checkpoint-3/optimizer.pt", "checkpoints/checkpoint-3/trainer_state.json",
    ]
    assert files["checkpoints/checkpoint-2/optimizer.pt"] == bytes([2]) * 64
    assert not list(out.glob(".checkpoint-push-*")), "staged copies are removed after their upload"


def _tokenless(root: Path, token: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and token.encode() in path.read_bytes()]


@pytest.mark.slow
def test_checkpoints_on_the_hub_resume_on_a_new_machine_and_reruns_never_continue_a_stale_run(
    tmp_path: Path, shapes_dir: Path, fake_hub
) -> None:
    data = tmp_path / "data"
    shutil.copytree(shapes_dir, data)
    # 77 training images, batches of 32 (the incomplete one dropped for BatchNorm): 2 steps and a checkpoint per epoch.
    common = [QUICKSTART, "--train_dir", str(data), "--augmentation", "none", "--dataloader_num_workers", "0",
              "--per_device_train_batch_size", "32", "--num_train_epochs", "2", "--make_plots", "false",
              "--logging_steps", "1"]
    first = tmp_path / "machine-1" / "run"
    push = ["--push_checkpoints", "true", "--push_to_hub", "--hub_model_id", REPO_ID, "--hub_token", fake_hub.token]
    env = fake_hub.client_env(tmp_path / "hf_home", token=False)  # the token only comes from the command line
    result = run_cli(*common, "--output_dir", str(first), *push, env=env)
    assert_ok(result)
    titles = [commit.title for commit in fake_hub.commits(REPO_ID)]
    assert titles[1:3] == ["Training checkpoint checkpoint-2", "Training checkpoint checkpoint-4"]
    files = fake_hub.files(REPO_ID)
    for step in (2, 4):
        for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                     FINGERPRINT_FILE):
            assert f"checkpoints/checkpoint-{step}/{name}" in files
        assert f"checkpoints/checkpoint-{step}/training_args.bin" not in files  # a pickle with local paths
    assert "model.safetensors" in files and "README.md" in files  # the final push, as before
    token = fake_hub.token
    assert not [name for name, content in files.items() if token.encode() in content]
    assert not _tokenless(first.parent, token) and token not in result.stdout + result.stderr
    full_metrics = json.loads((first / "eval_results.json").read_text())
    full_state = json.loads((first / "trainer_state.json").read_text())

    # Rerunning the finished run: says so, trains nothing, pushes nothing.
    commits = len(fake_hub.commits(REPO_ID))
    weights = (first / "model.safetensors").stat().st_mtime_ns
    again = run_cli(*common, "--output_dir", str(first), *push, env=env)
    assert_ok(again)
    assert "holds a finished run (step 4 of 4" in again.stdout and "--auto_resume false" in again.stdout
    assert "train_runtime" not in again.stdout + again.stderr
    assert len(fake_hub.commits(REPO_ID)) == commits and (first / "model.safetensors").stat().st_mtime_ns == weights

    # A changed learning rate or changed data would silently continue the old run: both stop, saying what differs.
    stale = run_cli(*common, "--output_dir", str(first), "--learning_rate", "1e-3")
    assert stale.returncode == 2, stale.stderr[-3000:]
    assert "learning_rate: 0.003 → 0.001" in stale.stderr
    assert "--output_dir" in stale.stderr and "--auto_resume false" in stale.stderr
    next(data.glob("circle/*.png")).unlink()
    recipe = parse_recipe([*common, "--output_dir", str(first)])
    task_data = get_task(recipe.run.task).load_data(recipe.data, seed=recipe.training.seed)
    with pytest.raises(RecipeError, match=r"data \(train split") as info:
        finished_run(recipe, training_fingerprint(recipe, task_data))
    assert "learning_rate" not in str(info.value)
    shutil.copytree(shapes_dir / "circle", data / "circle", dirs_exist_ok=True)

    # The first machine died right after pushing checkpoint-2: roll the Hub back to that commit.
    repo = fake_hub.repo(REPO_ID)
    del repo.commits[titles.index("Training checkpoint checkpoint-2") + 1:]
    second = tmp_path / "machine-2" / "run"
    resumed = run_cli(*common, "--output_dir", str(second), "--resume_from_hub", REPO_ID,
                      env=fake_hub.client_env(tmp_path / "hf_home_2"))
    assert_ok(resumed)
    assert f"Resuming from checkpoint-2 of {REPO_ID}" in resumed.stderr
    assert "differ from the run that saved it" not in resumed.stderr
    state = json.loads((second / "trainer_state.json").read_text())
    assert state["global_step"] == full_state["global_step"] == 4
    losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
    full_losses = {entry["step"]: entry["loss"] for entry in full_state["log_history"] if "loss" in entry}
    assert sorted(losses) == sorted(full_losses) == [1, 2, 3, 4]  # 1-2 come with checkpoint-2, 3-4 trained here
    assert losses == pytest.approx(full_losses, rel=1e-4)
    manifest = json.loads((second / "run_manifest.json").read_text())
    assert manifest["resumed_from"] == str(second / "checkpoint-2")
    metrics = json.loads((second / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] == pytest.approx(full_metrics["eval_accuracy"])
    assert metrics["eval_loss"] == pytest.approx(full_metrics["eval_loss"], rel=1e-4)
    assert not _tokenless(second.parent, token)


def test_a_failed_checkpoint_push_is_reported_without_the_token(tmp_path: Path, fake_hub) -> None:
    from huggingface_hub import HfApi

    folder = tmp_path / "out" / "checkpoint-1"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    pusher = CheckpointPusher(HfApi(endpoint=fake_hub.url, token="hf_secret_value"), REPO_ID)
    pusher.on_save(SimpleNamespace(output_dir=str(folder.parent), save_total_limit=None),
                   SimpleNamespace(global_step=1, is_world_process_zero=True), SimpleNamespace())
    pusher.wait()
    assert pusher.last_failed and not pusher.pushed
    assert "hf_secret_value" not in pusher.failed["checkpoint-1"]
    assert (folder / "trainer_state.json").is_file() and not list(folder.parent.glob(".checkpoint-push-*"))


def _checkpoint(folder: Path, step: int, *, fingerprint: bool = True) -> Path:
    """A complete ``checkpoint-{step}`` as this version saves it: weights, trainer state, fingerprint last."""
    import torch
    from safetensors.torch import save_file

    folder = folder / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"weight": torch.full((64, 64), float(step))}, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if fingerprint:
        write_fingerprint(folder, _fingerprint())
    return folder


def _cut_mid_save(folder: Path) -> None:
    """What a kill while the Trainer writes ``folder`` leaves: half the weights, no trainer state, no fingerprint."""
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name in ("trainer_state.json", FINGERPRINT_FILE):
        (folder / name).unlink(missing_ok=True)


def test_a_checkpoint_cut_mid_save_is_skipped_for_the_previous_complete_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    _checkpoint(out, 2)
    cut = _checkpoint(out, 4)
    _cut_mid_save(cut)
    problem = checkpoint_problem(cut)
    assert problem == "it has no trainer_state.json"
    (cut / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert "model.safetensors is truncated or unreadable" in checkpoint_problem(cut)  # a SafetensorError, caught
    (cut / "trainer_state.json").unlink()
    (out / "checkpoint-6").mkdir()  # the Trainer had only created the folder
    with caplog.at_level(logging.WARNING, logger="recipes"):
        assert last_checkpoint(out) == str(out / "checkpoint-2")
        assert (cut / "model.safetensors").is_file(), "only looked at"
        assert last_checkpoint(out, move_aside=True) == str(out / "checkpoint-2")
    warnings = [record.getMessage() for record in caplog.records]
    assert any(f"Skipping {cut}: an incomplete checkpoint" in w and "no trainer_state.json" in w
               and "resuming from checkpoint-2" in w for w in warnings)
    assert any(f"Skipping {out / 'checkpoint-6'}" in w and "moved aside to incomplete-checkpoint-6" in w
               for w in warnings)
    assert sorted(path.name for path in out.iterdir()) == [
        "checkpoint-2", "incomplete-checkpoint-4", "incomplete-checkpoint-6"]
    # The user naming the cut checkpoint is told what is missing instead of a transformers traceback.
    (out / "incomplete-checkpoint-4" / "trainer_state.json").write_text("{}")
    with pytest.raises(RecipeError, match=r"Cannot resume from .*truncated or unreadable.*earlier checkpoint"):
        check_checkpoint(out / "incomplete-checkpoint-4", _fingerprint(), explicit=True)
    _cut_mid_save(out / "checkpoint-2")
    assert last_checkpoint(out) is None
    assert "no complete checkpoint is left: training starts over" in caplog.records[-1].getMessage()


def test_checkpoints_of_versions_before_the_fingerprint_still_count(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _checkpoint(out, 2, fingerprint=False)
    _checkpoint(out, 4, fingerprint=False)
    assert last_checkpoint(out) == str(out / "checkpoint-4")
    write_fingerprint(out / "checkpoint-2", _fingerprint())  # this version's run: the fingerprint marks the end
    assert last_checkpoint(out) == str(out / "checkpoint-2")


@pytest.mark.slow
def test_a_run_killed_while_saving_a_checkpoint_resumes_from_the_previous_one_and_ends_as_uninterrupted(
    tmp_path: Path, shapes_dir: Path
) -> None:
    # 77 training images, batches of 32 (the incomplete one dropped for BatchNorm): 2 steps and a checkpoint per epoch.
    common = [QUICKSTART, "--train_dir", str(shapes_dir), "--augmentation", "none", "--dataloader_num_workers", "0",
              "--per_device_train_batch_size", "32", "--num_train_epochs", "2", "--make_plots", "false",
              "--logging_steps", "1"]
    full = tmp_path / "full"
    assert_ok(run_cli(*common, "--output_dir", str(full)))
    full_metrics = json.loads((full / "eval_results.json").read_text())
    # The same run killed while the Trainer wrote checkpoint-4: nothing of the final outputs exists yet.
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.copytree(full / name, cut / name)
    _cut_mid_save(cut / "checkpoint-4")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (cut / "checkpoint-4" / name).unlink()
    resumed = run_cli(*common, "--output_dir", str(cut))
    assert_ok(resumed)
    assert f"Skipping {cut / 'checkpoint-4'}: an incomplete checkpoint" in resumed.stderr
    assert f"Found {cut / 'checkpoint-2'}: resuming" in resumed.stderr
    assert "older version" not in resumed.stderr
    assert json.loads((cut / "run_manifest.json").read_text())["resumed_from"] == str(cut / "checkpoint-2")
    assert checkpoint_problem(cut / "checkpoint-4") is None and (cut / "incomplete-checkpoint-4").is_dir()
    metrics = json.loads((cut / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] == pytest.approx(full_metrics["eval_accuracy"])
    assert metrics["eval_loss"] == pytest.approx(full_metrics["eval_loss"], rel=1e-4)


@pytest.mark.slow
def test_a_step_failing_after_training_is_redone_by_the_rerun_without_training_again(
    tmp_path: Path, shapes_dir: Path, fake_hub
) -> None:
    from recipes.artifacts.checkpoints import STATUS_FILE, read_run_status

    out = tmp_path / "out"
    command = [QUICKSTART, "--train_dir", str(shapes_dir), "--output_dir", str(out), "--num_train_epochs", "1",
               "--make_plots", "false", "--push_to_hub", "--hub_model_id", "user/late"]
    # Training completes, then a late step fails: an extra metric that does not exist.
    failed = run_cli(*command, "--extra_metrics", str(tmp_path / "missing_metric.py"), "--trust_remote_code", "true",
                     env=fake_hub.client_env(tmp_path / "hf_home"))
    assert failed.returncode == 2 and "missing_metric.py" in failed.stderr, failed.stderr[-3000:]
    assert read_run_status(out) == "trained"
    assert not (out / "README.md").exists() and not (out / "run_manifest.json").exists()
    weights = (out / "model.safetensors").stat().st_mtime_ns
    eval_metrics = json.loads((out / "eval_results.json").read_text())

    # The rerun skips training and redoes what is missing; here the push fails (a wrong token)...
    again = run_cli(*command, env=fake_hub.client_env(tmp_path / "hf_home", token="hf_wrong_token"))
    assert again.returncode == 1, again.stderr[-3000:]
    assert "training skipped; evaluating, writing the outputs and pushing" in again.stderr
    assert "holds a finished run" not in again.stdout and "train_runtime" not in again.stdout + again.stderr
    assert (out / "README.md").is_file() and (out / "run_manifest.json").is_file()
    assert read_run_status(out) == "trained"  # the requested push is still to be made
    # ...so the next rerun makes it.
    pushed = run_cli(*command, env=fake_hub.client_env(tmp_path / "hf_home"))
    assert_ok(pushed)
    assert "training skipped" in pushed.stderr and read_run_status(out) == "finished"
    files = fake_hub.files("user/late")
    assert "model.safetensors" in files and "README.md" in files and STATUS_FILE not in files
    assert (out / "model.safetensors").stat().st_mtime_ns == weights, "the trained model is not trained again"
    # Evaluated with the saved model (not a fresh initialisation): the metrics of the first evaluation.
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] == pytest.approx(eval_metrics["eval_accuracy"])
    assert metrics["eval_loss"] == pytest.approx(eval_metrics["eval_loss"], rel=1e-5)
    assert json.loads((out / "train_results.json").read_text())["train_samples"] > 0
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["metrics"]["train"]["train_samples"] > 0
    finished = run_cli(*command, env=fake_hub.client_env(tmp_path / "hf_home"))
    assert_ok(finished)
    assert "holds a finished run" in finished.stdout


def test_an_output_dir_of_other_files_stops_the_run_before_anything_is_written(
    tmp_path: Path, shapes_dir: Path
) -> None:
    from recipes.artifacts.checkpoints import foreign_contents
    from recipes.artifacts.examples import save_examples
    from recipes.lifecycle import run

    project = tmp_path / "project"  # e.g. --output_dir . in a project folder
    project.mkdir()
    (project / "README.md").write_text("# My project\n")
    (project / "config.json").write_text("{}")
    with pytest.raises(RecipeError, match=r"holds files vision-recipes did not write \(README\.md, config\.json\)"
                                          r".*--overwrite true"):
        run(parse_recipe([QUICKSTART, "--train_dir", str(shapes_dir), "--output_dir", str(project)]))
    assert sorted(p.name for p in project.iterdir()) == ["README.md", "config.json"]
    assert (project / "README.md").read_text() == "# My project\n"
    # Folders of this tool's runs (checkpoints, status, a card it wrote) and empty ones are its own.
    assert foreign_contents(tmp_path / "missing") == [] and foreign_contents(project / "..") == ["project"]
    for sign in ("checkpoint-2", "run_status.json", "incomplete-checkpoint-4"):
        other = tmp_path / sign.replace(".", "_")
        (other / sign).mkdir(parents=True)
        (other / "README.md").write_text("# x\n")
        assert foreign_contents(other) == [], sign
    (project / "README.md").write_text("---\ntags:\n- vision-recipes\n---\n# card\n")
    assert foreign_contents(project) == []
    # The demo examples of an earlier run are replaced; other files in examples/ are left alone.
    from datasets import Dataset, Image

    examples = project / "examples"
    examples.mkdir()
    (examples / "example_7.jpg").write_bytes(b"earlier run")
    (examples / "my_photo.jpg").write_bytes(b"mine")
    photos = Dataset.from_dict({"image": [str(p) for p in sorted(shapes_dir.glob("*/*.png"))[:2]]}).cast_column(
        "image", Image())
    assert [p.name for p in save_examples(photos, project)] == ["example_1.jpg", "example_2.jpg"]
    assert sorted(p.name for p in examples.iterdir()) == ["example_1.jpg", "example_2.jpg", "my_photo.jpg"]


@pytest.mark.slow
def test_fault_injection_benchmark_quick() -> None:
    import subprocess
    import sys

    from helpers import REPO

    result = subprocess.run([sys.executable, "-m", "benchmarks.faults", "--quick"], cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "faults: 2 kills (1 SIGKILL, 1 SIGTERM; 1 while a checkpoint was being written, 0 after training): 2 of 2 " \
           "reruns finished with the metrics of the uninterrupted run" in result.stdout


def test_rerunning_an_interrupted_run_with_recheck_data_continues_it(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "out", 4)
    assert differences(_fingerprint(), _fingerprint("--recheck_data", "true")) == []
    check_checkpoint(checkpoint, _fingerprint("--recheck_data", "true"), explicit=False)  # not refused


def test_the_process_count_is_part_of_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainingArguments

    checkpoint = _checkpoint(tmp_path / "out", 4)  # saved by one process
    one = _fingerprint()
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    two = _fingerprint()
    assert differences(one, two) == ["processes: 1 → 2"]
    with pytest.raises(RecipeError, match="processes: 1 → 2"):
        check_checkpoint(checkpoint, two, explicit=False)
    older = json.loads((checkpoint / FINGERPRINT_FILE).read_text())
    del older["recipe"]["processes"]  # a checkpoint of a version before the key: not refused for it
    write_fingerprint(checkpoint, older)
    check_checkpoint(checkpoint, two, explicit=False)


@pytest.mark.slow
def test_sigterm_during_training_stops_it_and_the_queued_checkpoint_pushes_arrive(
    tmp_path: Path, shapes_dir: Path, fake_hub
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    serve = fake_hub.handle

    def slow_commits(request):  # each checkpoint commit takes a while: pushes queue up behind training
        if request.method == "POST" and "/commit/" in request.path:
            time.sleep(1.5)
        return serve(request)

    fake_hub.handle = slow_commits
    out = tmp_path / "run"

    def saved_steps() -> list[int]:
        """Steps of the complete checkpoints in ``out`` (their fingerprint written), in order."""
        return sorted(int(path.name.split("-")[1]) for path in out.glob("checkpoint-*")
                      if (path / FINGERPRINT_FILE).is_file())

    command = [sys.executable, "scripts/train.py", QUICKSTART, "--train_dir", str(shapes_dir), "--output_dir",
               str(out), "--max_steps", "200", "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no",
               "--load_best_model_at_end", "false", "--per_device_train_batch_size", "8",
               "--make_plots", "false", "--push_checkpoints", "true", "--hub_model_id", REPO_ID]
    env = {**fake_hub.client_env(tmp_path / "hf_home"), "PYTHONUNBUFFERED": "1", "HF_DATASETS_OFFLINE": "1",
           "VISION_RECIPES_PUSH_WAIT_S": "120"}
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(step >= 3 for step in saved_steps()):  # not checkpoint-3 itself: rotation may remove it first
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-5000:]
            time.sleep(0.05)
        assert len([c for c in fake_hub.commits(REPO_ID) if c.title.startswith("Training checkpoint")]) < 3
        process.send_signal(signal.SIGTERM)
        log = process.communicate(timeout=200)[0]
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert process.returncode == 143, log[-5000:]
    assert "SIGTERM: stopping training" in log
    saved = saved_steps()
    pushed = [c.title for c in fake_hub.commits(REPO_ID) if c.title.startswith("Training checkpoint")]
    every = range(1, saved[-1] + 1)  # each checkpoint saved before the signal (the older ones rotated away locally)
    assert saved[-1] >= 3 and pushed == [f"Training checkpoint checkpoint-{step}" for step in every], log[-5000:]
    files = fake_hub.files(REPO_ID)
    assert {name.split("/")[1] for name in files if name.startswith("checkpoints/")} == {
        f"checkpoint-{step}" for step in saved}
    assert files[f"checkpoints/checkpoint-{saved[-1]}/{FINGERPRINT_FILE}"] == (
        out / f"checkpoint-{saved[-1]}" / FINGERPRINT_FILE).read_bytes()
    stopped = re.search(r"Preempted: stopped at step (\d+) with its checkpoint saved; exiting with 143", log)
    assert stopped and int(stopped.group(1)) == saved[-1] < 200, log[-5000:]  # the step it stopped at, saved
    assert checkpoint_problem(out / f"checkpoint-{saved[-1]}") is None and not (out / "model.safetensors").exists()


def test_the_sigterm_handler_is_only_there_during_training_and_a_slow_push_is_waited_for_a_bounded_time(
    tmp_path: Path, fake_hub
) -> None:
    import signal
    import time

    from recipes.training import Preempted, StopWhenPreempted, preempted_anywhere, stop_on_sigterm

    def previous(signum, frame) -> None:
        pass

    one_process = SimpleNamespace(world_size=1)
    old = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(Preempted) as info, stop_on_sigterm():
            assert signal.getsignal(signal.SIGTERM) is not previous
            control = SimpleNamespace(should_save=False, should_training_stop=False)
            StopWhenPreempted().on_step_end(one_process, None, control)
            assert not (control.should_save or control.should_training_stop)
            signal.raise_signal(signal.SIGTERM)  # noted: training stops at the end of the step, with a checkpoint
            assert preempted_anywhere(one_process)
            StopWhenPreempted().on_step_end(one_process, None, control)
            assert control.should_save and control.should_training_stop
            signal.raise_signal(signal.SIGTERM)  # a second one: at once
        assert info.value.code == 143 and signal.getsignal(signal.SIGTERM) is previous
        assert not preempted_anywhere(one_process)
    finally:
        signal.signal(signal.SIGTERM, old)

    serve = fake_hub.handle
    fake_hub.handle = lambda request: (time.sleep(3) if "/commit/" in request.path else None) or serve(request)
    folder = tmp_path / "out" / "checkpoint-1"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    pusher = CheckpointPusher.start(REPO_ID, fake_hub.token, endpoint=fake_hub.url)
    pusher.on_save(SimpleNamespace(output_dir=str(folder.parent), save_total_limit=None),
                   SimpleNamespace(global_step=1, is_world_process_zero=True), SimpleNamespace())
    started = time.monotonic()
    pusher.wait(timeout=0.5)
    assert time.monotonic() - started < 2 and pusher.last_failed and "within" in pusher.failed["checkpoint-1"]


def test_the_first_push_after_resume_from_hub_without_save_total_limit_deletes_nothing(
    tmp_path: Path, fake_hub
) -> None:
    fake_hub.seed(REPO_ID, {f"checkpoints/checkpoint-{step}/trainer_state.json": b"{}" for step in (1, 2)})
    out = tmp_path / "out"
    download_checkpoint(REPO_ID, out, token=fake_hub.token, endpoint=fake_hub.url)  # checkpoint-2 only
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "trainer_state.json").write_text("{}")
    pusher = CheckpointPusher.start(REPO_ID, fake_hub.token, endpoint=fake_hub.url)
    pusher.on_save(SimpleNamespace(output_dir=str(out), save_total_limit=None),
                   SimpleNamespace(global_step=3, is_world_process_zero=True), SimpleNamespace())
    pusher.wait()
    assert pusher.pushed == ["checkpoint-3"]
    assert {name.split("/")[1] for name in fake_hub.files(REPO_ID) if name.startswith("checkpoints/")} == {
        "checkpoint-1", "checkpoint-2", "checkpoint-3"}


def test_resume_from_hub_resumes_the_step_the_main_process_listed(tmp_path: Path, fake_hub) -> None:
    from recipes.artifacts.hub import hub_checkpoints
    from recipes.lifecycle import main_process_decides

    fake_hub.seed(REPO_ID, {"checkpoints/checkpoint-2/trainer_state.json": b"{}"})
    args = SimpleNamespace(process_index=0, world_size=1)
    steps = main_process_decides(args, hub_checkpoints, REPO_ID, fake_hub.token, fake_hub.url)
    assert steps == [2]
    # the run of another machine pushes checkpoint-3 before a second process downloads: it takes the listed step
    fake_hub.seed(REPO_ID, {"checkpoints/checkpoint-3/trainer_state.json": b"{}"})
    fetched = download_checkpoint(REPO_ID, tmp_path / "rank1", token=fake_hub.token, endpoint=fake_hub.url,
                                  steps=steps)
    assert fetched.name == "checkpoint-2" and not (tmp_path / "rank1" / "checkpoint-3").exists()
    with pytest.raises(RecipeError, match="`user/empty` not found"):  # the main process's error, raised on every one
        main_process_decides(args, hub_checkpoints, "user/empty", fake_hub.token, fake_hub.url)


def test_a_photo_replaced_by_another_of_the_same_name_is_another_run(tmp_path: Path, shapes_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(shapes_dir, data)
    recipe = parse_recipe([QUICKSTART, "--train_dir", str(data), "--output_dir", str(tmp_path / "out")])
    task = get_task(recipe.run.task)

    def fingerprint() -> dict:
        return training_fingerprint(recipe, task.load_data(recipe.data, seed=42, cache_dir=str(tmp_path / "cache")))

    before = fingerprint()
    assert before["files"]["train"] and differences(before, fingerprint()) == []
    images = sorted(path for path in data.rglob("*") if path.is_file())
    images[0].write_bytes(images[-1].read_bytes())  # another photo under the same name: paths unchanged
    changed = differences(before, fingerprint())
    assert changed and all(line.startswith("files (") for line in changed), changed
    checkpoint = _checkpoint(tmp_path / "out", 2, fingerprint=False)
    write_fingerprint(checkpoint, before)
    with pytest.raises(RecipeError, match="images replaced or edited"):
        check_checkpoint(checkpoint, fingerprint(), explicit=False)


@pytest.mark.parametrize("outcome", ["finished", "preempted", "recipe error"])
def test_train_ends_the_process_group_after_a_run_but_not_after_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    # Leaving the Gloo group to the interpreter's exit can abort a finished distributed run ("terminate called
    # without an active exception"); after an error another process may still wait in a collective.
    import torch.distributed as dist

    import recipes.lifecycle
    import recipes.parse
    from recipes.modes.train import main
    from recipes.training import SIGTERM_EXIT_CODE, Preempted

    def fake_run(recipe: object) -> SimpleNamespace:
        if outcome == "preempted":
            raise Preempted(SIGTERM_EXIT_CODE)
        if outcome == "recipe error":
            raise RecipeError("broken recipe")
        return SimpleNamespace(push_error=None)

    monkeypatch.setattr(recipes.parse, "parse_recipe", lambda argv: object())
    monkeypatch.setattr(recipes.lifecycle, "run", fake_run)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        if outcome == "preempted":
            with pytest.raises(Preempted):
                main([])
        else:
            assert main([]) == (2 if outcome == "recipe error" else 0)
        assert dist.is_initialized() == (outcome == "recipe error")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
