"""Distributed correctness: what evaluation gathers across processes, the best-model reload under FSDP, and the
multi-node template run as two "machines" on one host."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import REPO, TWO_CPU_PROCESSES, assert_ok
from hub_server import FakeHubServer

from recipes.artifacts.checkpoints import FINGERPRINT_FILE
from recipes.model.trainer import RecipeTrainer, cpu_records
from recipes.sample_data.plates import make_plates_dataset
from recipes.tasks import get_task
from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data

MULTI_NODE = REPO / "configs" / "accelerate" / "multi_node.yaml"
SLURM = REPO / "configs" / "accelerate" / "slurm.sbatch"
QUICKSTART = str(REPO / "configs" / "quickstart" / "classification.yaml")


# --------------------------------------------------------------------------- object gather: CPU records only


class OnAnotherGpu(torch.Tensor):
    """A tensor that reports ``cuda:1``, as a label tensor of another rank's GPU does (``.to("cpu")`` copies it)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 1)

    def to(self, *args, **kwargs):
        target = torch.device(args[0] if args else kwargs["device"])
        return self.as_subclass(torch.Tensor).clone() if target.type == "cpu" else self


class RecordingAccelerator:
    def __init__(self) -> None:
        self.calls: list[tuple[object, bool]] = []

    def gather_for_metrics(self, data, use_gather_object: bool = False):
        self.calls.append((data, use_gather_object))
        return data


def _tensors(data) -> list[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        return [data]
    if isinstance(data, dict):
        return [t for value in data.values() for t in _tensors(value)]
    if isinstance(data, (list, tuple)):
        return [t for value in data for t in _tensors(value)]
    return []


def test_detection_labels_are_gathered_as_cpu_records(tmp_path: Path) -> None:
    """The labels a detection batch hands to the object gather (real transform + collate) arrive as plain CPU
    tensors even when they were on a GPU; the per-batch loss is still gathered as a tensor."""
    data = load_detection_data(DetectionDataArguments(train_dir=str(make_plates_dataset(
        tmp_path / "plates", n_images=10, seed=3, size=64)), train_val_split=0.3), seed=0)
    import transformers

    processor = transformers.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    task = get_task("object-detection")
    _, eval_transform = task.transforms(processor, DetectionDataArguments(train_dir="x"), data)
    batch = task.collator(processor, data)(data.validation.with_transform(eval_transform).__getitems__([0, 1]))
    on_gpu = [{key: value.as_subclass(OnAnotherGpu) for key, value in target.items()} for target in batch["labels"]]
    assert all(t.device.type == "cuda" for t in _tensors(on_gpu))

    accelerator = RecordingAccelerator()
    trainer = SimpleNamespace(accelerator=accelerator)
    gathered = RecipeTrainer._gather_objects_but_not_tensors(trainer, on_gpu)
    loss = torch.tensor([0.5, 0.7])
    assert RecipeTrainer._gather_objects_but_not_tensors(trainer, loss) is loss

    (sent, as_objects), (sent_loss, loss_as_objects) = accelerator.calls
    assert sent_loss is loss
    assert as_objects and not loss_as_objects
    assert isinstance(sent, list) and len(sent) == 2 and sent is gathered
    tensors = _tensors(sent)
    assert tensors and all(type(t) is torch.Tensor and t.device.type == "cpu" for t in tensors)
    for original, record in zip(batch["labels"], sent):
        assert record.keys() == original.keys()
        for key in original:
            assert torch.equal(record[key], original[key]), key


def test_cpu_records_keeps_structure_and_non_tensors() -> None:
    records = ({"a": [torch.ones(2).as_subclass(OnAnotherGpu), 3], "b": "x"},)
    moved = cpu_records(records)
    assert isinstance(moved, tuple) and moved[0]["a"][1] == 3 and moved[0]["b"] == "x"
    assert type(moved[0]["a"][0]) is torch.Tensor and moved[0]["a"][0].device.type == "cpu"


# --------------------------------------------------------------------------- FSDP: best-model reload


def test_fsdp_best_model_reload_goes_through_the_sharded_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under FSDP ``_load_best_model`` loads model.safetensors into the sharded model (not the Trainer's loader)."""
    import recipes.model.trainer as modeling

    calls = []
    monkeypatch.setattr(modeling, "load_into_sharded_model",
                        lambda sharded, model, checkpoint, main_process: calls.append((checkpoint, main_process))
                        or True)
    accelerator = SimpleNamespace(unwrap_model=lambda model: model, is_main_process=False)
    trainer = SimpleNamespace(state=SimpleNamespace(best_model_checkpoint="out/checkpoint-4", best_metric=0.5),
                              is_fsdp_enabled=True, accelerator=accelerator, model=object())
    RecipeTrainer._load_best_model(trainer)
    assert calls == [("out/checkpoint-4", False)]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fsdp2_reloads_legacy_named_checkpoint_into_shards(tmp_path: Path) -> None:
    """Two CPU processes (gloo) shard a tiny ViT with FSDP2 and reload a checkpoint saved under ViT's legacy
    parameter names: every weight comes back; a checkpoint of another label set is refused on both ranks; a folder
    without model.safetensors is left to the Trainer's loader on both."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "fsdp_reload_worker.py"), str(tmp_path / "best"), str(tmp_path / "other")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])},
    )
    assert_ok(result)
    # each rank writes each result as one whole line (one system call), so lines never interleave
    reloaded = dict(re.findall(r"^RELOADED (\d) (\S+)$", result.stdout, flags=re.M))
    assert set(reloaded) == {"0", "1"}, result.stdout
    assert float(reloaded["0"]) == 0.0, "the reloaded shards must hold exactly the checkpoint's weights"
    refused = re.findall(r"^REFUSED (\d) (.*)$", result.stdout, flags=re.M)
    assert sorted(rank for rank, _ in refused) == ["0", "1"], result.stdout
    assert all("--load_best_model_at_end false" in message for _, message in refused)
    assert "LOADED-WRONG" not in result.stdout
    missing = re.findall(r"^MISSING (\d) (\S+)$", result.stdout, flags=re.M)
    assert sorted(missing) == [("0", "False"), ("1", "False")], "no model.safetensors: the Trainer's loader, everywhere"


# --------------------------------------------------------------------------- many machines


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _machine_command(rank: int, port: int, data: Path, output_dir: Path) -> list[str]:
    """docs/distributed.md's multi-node command for one machine, pointed at this host, one process per "machine"."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(MULTI_NODE),
            "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--num_machines", "2", "--num_processes", "2", "--mixed_precision", "no",
            str(REPO / "scripts" / "train.py"), QUICKSTART, "--train_dir", str(data), "--output_dir",
            str(output_dir), "--use_cpu", "true", "--num_train_epochs", "1", "--per_device_eval_batch_size", "4",
            "--make_plots", "false", "--report_to", "none"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_multi_node_template_as_two_machines(tmp_path: Path, shapes_dir: Path) -> None:
    """configs/accelerate/multi_node.yaml as two "machines" (machine_rank 0 and 1) on 127.0.0.1: one process group
    of world size 2, one run summary (machine 0's), each validation image evaluated once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    port, out = _free_port(), tmp_path / "out"
    logs = [(tmp_path / f"machine{rank}.out", tmp_path / f"machine{rank}.err") for rank in (0, 1)]
    machines = []
    for rank, (stdout, stderr) in enumerate(logs):
        with stdout.open("w") as out_file, stderr.open("w") as err_file:
            machines.append(subprocess.Popen(_machine_command(rank, port, shapes_dir, out), cwd=REPO, env=env,
                                             stdout=out_file, stderr=err_file, start_new_session=True))
    deadline = time.monotonic() + 600
    try:  # a machine that fails leaves the other waiting for it: stop both at the first failure
        while any(m.poll() is None for m in machines) and not any(m.poll() for m in machines):
            assert time.monotonic() < deadline, "the two machines did not finish in 10 minutes"
            time.sleep(0.5)
    finally:
        killed = [machine.poll() is None for machine in machines]
        for machine, kill in zip(machines, killed):
            if kill:  # the launcher and the training process it started
                os.killpg(machine.pid, signal.SIGKILL)
                machine.wait()
    outputs = [(stdout.read_text(), stderr.read_text()) for stdout, stderr in logs]
    for _, machine, (stdout, stderr) in sorted(zip(killed, machines, outputs), key=lambda row: row[0]):
        assert_ok(subprocess.CompletedProcess(machine.args, machine.returncode, stdout, stderr))  # failure first

    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["world_size"] == 2, "both machines must join one process group"
    summaries = [stdout.count("Vision Recipes run summary") for stdout, _ in outputs]
    assert summaries == [1, 0], "only global rank 0 (machine 0) prints the summary and writes the outputs"
    validation = manifest["data_summary"]["validation_examples"]
    assert validation % 2 == 1, "an odd validation set: one process gets a padded duplicate that must be dropped"
    metrics = json.loads((out / "eval_results.json").read_text())
    evaluations = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"]
                   if "eval_samples" in h]
    # eval_samples is the metric's own count of the examples it received, gathered from both processes.
    assert evaluations and all(h["eval_samples"] == validation for h in evaluations)
    assert metrics["eval_samples"] == validation


# --------------------------------------------------------------------------- SLURM example


def _sbatch_exports(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(.*)$", text, flags=re.M))


def test_slurm_example_matches_the_multi_node_template() -> None:
    text = SLURM.read_text()
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(SLURM)], check=True)
    template = yaml.safe_load(MULTI_NODE.read_text())
    assert "--config_file configs/accelerate/multi_node.yaml" in text
    launch = text[text.index("accelerate launch --config_file"):]
    overridden = re.findall(r"--(\w+)", launch[:launch.index("scripts/")])
    assert overridden, "the sbatch script overrides the template's per-node keys"
    for key in overridden:
        assert key == "config_file" or key in template, f"--{key} is not a key of {MULTI_NODE.name}"
    for key in ("machine_rank", "main_process_ip", "main_process_port", "num_machines", "num_processes"):
        assert key in overridden, f"the sbatch script must set --{key} per job"
    script = re.search(r"(scripts/\w+\.py) (configs/[\w./-]+\.yaml)", launch)
    assert script and (REPO / script.group(1)).is_file() and (REPO / script.group(2)).is_file()
    assert "SLURM_NODEID" in text and "scontrol show hostnames" in text and "srun" in text
    assert re.search(r"^#SBATCH --nodes=(\d+)", text, flags=re.M)
    assert re.search(r"^#SBATCH --ntasks-per-node=1$", text, flags=re.M), "one launcher per node"
    assert "GPUS_PER_NODE" in _sbatch_exports(text)


# --------------------------------------------------------------------------- two processes: Hub decisions, SIGTERM

PREEMPTION_REPO = "user/two-process-run"


def _two_process_command(data: Path, output_dir: Path, *extra: str) -> list[str]:
    """A short two-process (gloo) run that saves every 10 steps: 60 steps of the quickstart ResNet."""
    return [*TWO_CPU_PROCESSES, str(REPO / "scripts" / "train.py"), QUICKSTART, "--train_dir", str(data),
            "--output_dir", str(output_dir), "--use_cpu", "true", "--max_steps", "60", "--save_strategy", "steps",
            "--save_steps", "10", "--eval_strategy", "no", "--load_best_model_at_end", "false",
            "--per_device_train_batch_size", "8", "--logging_steps", "10", "--make_plots", "false",
            "--report_to", "none", *extra]


def _two_process_env(hub: FakeHubServer, home: Path) -> dict[str, str]:
    return {**hub.client_env(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_DATASETS_OFFLINE": "1",
            "PYTHONPATH": str(REPO), "HF_DATASETS_CACHE": str(home / "datasets")}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path) -> Iterator[SimpleNamespace]:
    """One uninterrupted two-process run that pushes each checkpoint and the final model to a local Hub-API server
    (kept for the module's tests), with its outputs and the server."""
    root = tmp_path_factory.mktemp("two-process")
    with FakeHubServer() as hub:
        out = root / "uninterrupted"
        command = _two_process_command(shapes_dir, out, "--push_checkpoints", "true", "--push_to_hub", "true",
                                       "--hub_model_id", PREEMPTION_REPO)
        result = subprocess.run(command, cwd=REPO, env=_two_process_env(hub, root / "hf_home"), capture_output=True,
                                text=True, timeout=600)
        yield SimpleNamespace(hub=hub, out=out, root=root, result=result, data=shapes_dir,
                              metrics=json.loads((out / "eval_results.json").read_text()) if result.returncode == 0
                              else None)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_push_once_and_resume_from_the_hub_with_one_decision(two_process_run) -> None:
    """Only the main process pushes (each checkpoint once, with every process's RNG state: the others reached the
    barrier before it staged the push; the final model once); a rerun elsewhere with resume_from_hub lists the Hub
    once (the main process decides, the other uses its answer), both resume the same step, and the result equals
    the uninterrupted run."""
    run = two_process_run
    assert_ok(run.result)
    hub = run.hub
    titles = [commit.title for commit in hub.commits(PREEMPTION_REPO)]
    assert titles == ["initial commit", *(f"Training checkpoint checkpoint-{step}" for step in range(10, 61, 10)),
                      "Upload fine-tuned model with Vision Recipes"], titles  # each once, the final model once
    for commit, step in zip(hub.commits(PREEMPTION_REPO)[1:], range(10, 61, 10)):  # each as it was pushed
        pushed = {name.rsplit("/", 1)[1] for name in commit.tree if name.startswith(f"checkpoints/checkpoint-{step}/")}
        assert {"rng_state_0.pth", "rng_state_1.pth", FINGERPRINT_FILE} <= pushed, (step, sorted(pushed))
    # the Hub keeps the last two checkpoints (save_total_limit 2); without the last one the rerun continues from 50
    from huggingface_hub import CommitOperationDelete, HfApi

    HfApi(endpoint=hub.url, token=hub.token).create_commit(
        PREEMPTION_REPO, [CommitOperationDelete("checkpoints/checkpoint-60/", is_folder=True)],
        commit_message="without checkpoint-60")
    listed_before = len(hub.requests)
    out = run.root / "from-hub"
    result = subprocess.run(_two_process_command(run.data, out, "--resume_from_hub", PREEMPTION_REPO), cwd=REPO,
                            env=_two_process_env(hub, run.root / "hf_home_rerun"), capture_output=True, text=True,
                            timeout=600)
    assert_ok(result)
    paths = [r.path for r in hub.requests[listed_before:] if r.method == "GET"]
    assert len([p for p in paths if f"/{PREEMPTION_REPO}/tree/main?" in p]) == 1, paths  # one listing, one decision
    assert len([p for p in paths if p.endswith("/checkpoints/checkpoint-50/model.safetensors")]) == 1, paths
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 60
    assert f"Resuming from checkpoint-50 of {PREEMPTION_REPO}" in result.stderr
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] == run.metrics["eval_accuracy"]
    assert metrics["eval_loss"] == pytest.approx(run.metrics["eval_loss"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigterm_to_the_launcher_stops_every_process_at_one_step_with_a_checkpoint(two_process_run) -> None:
    """SIGTERM to `accelerate launch` (what Kubernetes sends a pod; the launcher forwards it to each process):
    every process stops at the same step, that step's checkpoint is saved whole (both processes' RNG states) and
    pushed, each process exits with 143 and so does the launcher; rerunning the command continues from that
    checkpoint (both processes, one decision) and ends equal to the uninterrupted run."""
    run = two_process_run
    assert_ok(run.result)
    out = run.root / "preempted"
    repo = "user/preempted-run"
    command = _two_process_command(run.data, out, "--push_checkpoints", "true", "--hub_model_id", repo)
    env = {**_two_process_env(run.hub, run.root / "hf_home_preempted"), "VISION_RECIPES_PUSH_WAIT_S": "20"}
    log = run.root / "preempted.log"
    with log.open("w") as log_file:
        launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint-10" / FINGERPRINT_FILE).is_file():
            assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-5000:]
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    text = log.read_text()
    assert launcher.returncode == 143, text[-5000:]
    stops = re.findall(r"Preempted: stopped at step (\d+) with its checkpoint saved; exiting with 143", text)
    assert len(stops) == 2 and stops[0] == stops[1], text[-5000:]  # both processes, the same step
    step = int(stops[0])
    assert 10 < step < 60, f"stopped at {step}: the signal must arrive during training"
    from recipes.artifacts.checkpoints import checkpoint_problem, last_checkpoint

    saved = out / f"checkpoint-{step}"
    assert last_checkpoint(out) == str(saved) and checkpoint_problem(saved) is None
    assert (saved / "rng_state_0.pth").is_file() and (saved / "rng_state_1.pth").is_file()
    assert "Unable to shutdown process" not in text, "a process had to be killed"
    pushed = {name.split("/")[1] for name in run.hub.files(repo) if name.startswith("checkpoints/")}
    assert f"checkpoint-{step}" in pushed, (pushed, text[-5000:])

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert_ok(rerun)
    assert f"Found {saved}: resuming the interrupted run from it." in rerun.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 60
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] == run.metrics["eval_accuracy"]
    assert metrics["eval_loss"] == pytest.approx(run.metrics["eval_loss"], rel=1e-4)
