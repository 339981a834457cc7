"""Streamed training (``streaming: true``): Hub and local parquet shards, two processes, bad records, resume."""

from __future__ import annotations

import hashlib
import json
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import TWO_CPU_PROCESSES, assert_ok, run_cli

from recipes.config import RecipeError
from recipes.data.streaming import loader as stream_loader
from recipes.data.streaming.examples import collate_stream
from recipes.data.streaming.loader import StreamLoader, StreamStateCallback
from recipes.data.streaming.progress import STATE_DIR, StreamProgress
from recipes.data.streaming.sources import check_streaming_recipe
from recipes.lifecycle import STREAM_KEYS_ENV, run
from recipes.parse import parse_recipe

QUICKSTART = "configs/quickstart/classification.yaml"
BROKEN = b"\x89PNG\r\n\x1a\n truncated: not an image"
SMALL = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--make_plots", "false",
         "--use_cpu", "true", "--report_to", "none", "--dataloader_num_workers", "0"]


def _shapes(root: Path, per_class: int, seed: int):
    from datasets import Image

    from recipes.sample_data.shapes import make_shapes_dataset
    from recipes.tasks.classification.data import class_folder_splits

    make_shapes_dataset(root, images_per_class=per_class, size=32, seed=seed)
    listed = class_folder_splits({"train": root})["train"]
    # the image bytes inside the parquet (a path alone would only work on this machine)
    embedded = listed.map(lambda row: {"image": {"bytes": Path(row["image"]["path"]).read_bytes(),
                                                 "path": Path(row["image"]["path"]).name}})
    return embedded.cast_column("image", Image())


@pytest.fixture(scope="module")
def parquet_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """4 train shards of 8 records (one record is a broken image) and 1 validation shard of 8, written with
    ``datasets`` (so the label column is a ClassLabel), plus the keys of the 31 good training images."""
    from datasets import concatenate_datasets

    base = tmp_path_factory.mktemp("stream")
    train = _shapes(base / "train-images", per_class=8, seed=0)
    broken = train.select([5]).map(lambda row: {"image": {"bytes": BROKEN, "path": "broken.png"}})
    train = concatenate_datasets([train.select(range(5)), broken, train.select(range(6, len(train)))])
    validation = _shapes(base / "validation-images", per_class=2, seed=1)
    shards = base / "data"
    shards.mkdir()
    for k in range(4):
        train.shard(4, k, contiguous=True).to_parquet(str(shards / f"train-{k:05d}-of-00004.parquet"))
    validation.to_parquet(str(shards / "validation-00000-of-00001.parquet"))
    keys = [hashlib.sha1(record["bytes"]).hexdigest()[:16] for record in train.cast_column("image", _raw())["image"]]
    good = [key for key in keys if key != hashlib.sha1(BROKEN).hexdigest()[:16]]
    assert len(good) == 31
    return {"folder": shards, "good_keys": good}


def _raw():
    from datasets import Image

    return Image(decode=False)


def _keys(folder: Path) -> dict[int, list[tuple[int, str]]]:
    """``rank → [(pass, key), …]`` from the debug logs of a streamed run."""
    logged = {}
    for path in sorted(folder.glob("rank*.tsv")):
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        logged[int(path.stem[4:])] = [(int(epoch), key) for epoch, key in rows]
    return logged


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_stream_a_hub_dataset_each_example_once(tmp_path: Path, fake_hub, parquet_shards) -> None:
    folder = parquet_shards["folder"]
    fake_hub.seed("user/shapes-stream", {f"data/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())},
                  repo_type="dataset")
    out, keys = tmp_path / "out", tmp_path / "keys"
    env = {**fake_hub.client_env(tmp_path / "hf_home"), STREAM_KEYS_ENV: str(keys), "OMP_NUM_THREADS": "1"}
    # 32 records over 2 processes (4 shards: 2 each) = 16 per process = 4 batches of 4: max_steps 4 is one pass.
    result = run_cli(QUICKSTART, "--dataset_name", "user/shapes-stream", "--streaming", "true", "--max_steps", "4",
                     "--max_eval_samples", "8", "--output_dir", str(out), *SMALL, launcher=TWO_CPU_PROCESSES, env=env)
    assert_ok(result)
    logged = _keys(keys)
    assert sorted(logged) == [0, 1]
    seen = [key for rank in logged.values() for _, key in rank]
    assert sorted(seen) == sorted(parquet_shards["good_keys"])  # each good example once, across both processes
    assert not set(k for _, k in logged[0]) & set(k for _, k in logged[1])
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["world_size"] == 2
    report = manifest["data_summary"]["streaming"]
    assert report["examples_seen"] == 31 and sorted(report["examples_seen_per_process"]) == [15, 16]
    assert report["bad_records"] == 1 and report["skipped_records"][0]["path"] == "broken.png"
    assert "Cannot decode" in report["skipped_records"][0]["reason"]
    assert manifest["data_summary"]["validation_examples"] == 8
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_samples"] == 8 and 0 <= metrics["eval_accuracy"] <= 1
    assert json.loads((out / "train_results.json").read_text())["train_samples"] == 31
    assert "1 bad streamed record(s) skipped" in result.stderr
    states = {p.name: json.loads(p.read_text()) for p in (out / "checkpoint-4" / "stream_state").iterdir()}
    assert sorted(states) == ["rank0.json", "rank1.json"]  # each process's position: all 16 of its records
    assert [state["positions"] for state in states.values()] == [{"0": 16}, {"0": 16}]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_strict_stops_both_processes_at_a_bad_streamed_record(tmp_path: Path, parquet_shards) -> None:
    """``strict`` under 2 processes: the process that reads the broken record stops with the named error, and the
    other stops with it at the same batch, repeating that error (its log may be on another machine), instead of
    failing in its next collective with a traceback; nothing is saved."""
    folder, out = parquet_shards["folder"], tmp_path / "out"
    result = run_cli(*_local(folder, out, "--max_steps", "4", "--strict", "true"), launcher=TWO_CPU_PROCESSES,
                     env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    named = r"Bad streamed training record broken\.png \(record \d+ of process ([01]), loader worker 0, pass 0"
    stopping = re.search(r"error: " + named, result.stderr)
    assert stopping, result.stderr[-4000:]
    other = 1 - int(stopping.group(1))
    assert re.search(rf"error: Process {stopping.group(1)} stopped the run, so process {other} stops too\. "
                     rf"Process {stopping.group(1)}: {named}", result.stderr), result.stderr[-4000:]
    assert "`--strict false`" in result.stderr
    assert "Connection closed by peer" not in result.stderr and "[rank" not in result.stderr  # no process traceback
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def _local(folder: Path, out: Path, *extra: str) -> list[str]:
    return [QUICKSTART, "--streaming", "true", "--train_file", str(folder / "train-*.parquet"),
            "--max_eval_samples", "4", "--output_dir", str(out), "--eval_strategy", "no",
            "--save_strategy", "steps", "--save_steps", "4", *SMALL, *extra]


class _Records(torch.utils.data.IterableDataset):
    """``count`` transformed stream examples of loader worker 0 (as
    :class:`recipes.data.streaming.examples.StreamingExamples` yields them), labelled by index; ``bad`` maps indices to
    the path of a bad-record marker."""

    def __init__(self, count: int, bad: dict[int, str]) -> None:
        self.count, self.bad = count, bad

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        for index in range(self.count):
            meta = {"position": (0, index)}
            if index in self.bad:
                yield {"_stream": {**meta, "bad": {"path": self.bad[index], "reason": "broken"}}}
            else:
                yield {"_stream": meta, "pixel_values": torch.zeros(1), "labels": index}


def test_a_pass_ends_on_every_process_when_one_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other process has 2 batches, this one 3: the third is left out (counted), the pass is over, and the
    position saved then is the start of the next pass."""
    from torch.utils.data import DataLoader

    other_has_batch = iter([True, True, False])
    monkeypatch.setattr(stream_loader, "_all_processes",
                        lambda flag, stop, device: (flag and next(other_has_batch), stop))
    collate = partial(collate_stream, collate=torch.utils.data.default_collate)
    progress = StreamProgress(rank=0, world_size=2)
    records = _Records(12, bad={1: "x.png"})
    loader = StreamLoader(DataLoader(records, batch_size=4, collate_fn=collate), records, progress,
                                    torch.device("cpu"))
    loader.set_epoch(0)
    batches = list(loader)
    assert [batch["labels"].tolist() for batch in batches] == [[0, 2, 3], [4, 5, 6, 7]]
    assert (progress.examples_seen, progress.bad_records, progress.dropped_at_pass_end) == (7, 1, 4)
    assert progress.state()["epoch"] == 1 and progress.state()["positions"] == {}


def _loader(records: _Records, progress, *, drop_last: bool = False, collate=torch.utils.data.default_collate):
    from torch.utils.data import DataLoader

    loader = StreamLoader(
        DataLoader(records, batch_size=4, collate_fn=partial(collate_stream, collate=collate)), records,
        progress, torch.device("cpu"), drop_last=drop_last)
    loader.set_epoch(0)
    return loader


def test_every_stop_reaches_the_other_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever stops this process's loader (a strict bad record in a batch dropped as incomplete, any other
    error) is sent in the per-batch all-reduce, and raised here as is; a stop sent by another process ends this
    one's pass at once with that process's message (both processes simulated in one)."""
    sent = []

    def all_processes(flag: bool, stop: bool, device: torch.device) -> tuple[bool, bool]:
        sent.append(stop)
        return flag, stop

    monkeypatch.setattr(stream_loader, "_all_processes", all_processes)
    strict = StreamProgress(rank=0, world_size=2, strict=True)
    with pytest.raises(RecipeError, match=r"last\.png .*strict mode"):
        list(_loader(_Records(10, bad={9: "last.png"}), strict, drop_last=True))
    assert sent == [False, False, True]

    def failing_collate(rows):
        raise KeyError("labels")

    sent.clear()
    with pytest.raises(KeyError, match="labels"):
        list(_loader(_Records(8, bad={}), StreamProgress(rank=0, world_size=2), collate=failing_collate))
    assert sent == [True]

    # process 1 stopped; this process (0) has a good batch but stops with it, naming process 1's error
    monkeypatch.setattr(stream_loader, "_all_processes", lambda flag, stop, device: (flag, True))
    monkeypatch.setattr(stream_loader, "_distributed", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)

    def gather(messages: list, own: str | None) -> None:
        messages[:] = [own, "Bad streamed training record x.png (…)"]

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    progress = StreamProgress(rank=0, world_size=2)
    with pytest.raises(RecipeError, match=r"^Process 1 stopped the run, so process 0 stops too\. Process 1: Bad "
                                          r"streamed training record x\.png"):
        list(_loader(_Records(8, bad={}), progress))
    assert progress.examples_seen == 0


@pytest.mark.parametrize("strict", [False, True])
def test_a_dropped_incomplete_batch_still_accounts_for_its_records(strict: bool) -> None:
    """With ``drop_last`` (BatchNorm models), the last incomplete batch of a pass is not trained on, but its bad
    record is still counted (or stops a strict run) and its good one is counted as dropped."""
    from torch.utils.data import DataLoader

    collate = partial(collate_stream, collate=torch.utils.data.default_collate)
    progress = StreamProgress(rank=0, world_size=1, strict=strict)
    records = _Records(10, bad={9: "last.png"})
    loader = StreamLoader(DataLoader(records, batch_size=4, collate_fn=collate), records, progress,
                                    torch.device("cpu"), drop_last=True)
    loader.set_epoch(0)
    if strict:
        with pytest.raises(RecipeError, match=r"last\.png .*strict mode.*--strict false"):
            list(loader)
        return
    batches = list(loader)
    assert [batch["labels"].tolist() for batch in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert (progress.examples_seen, progress.bad_records, progress.dropped_at_pass_end) == (8, 1, 1)
    assert progress.bad == [{"rank": 0, "pass": 0, "path": "last.png", "reason": "broken"}]


@pytest.mark.slow
def test_local_parquet_stream_resumes_where_it_stopped(
    tmp_path: Path, parquet_shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = parquet_shards["folder"]
    # 32 records, the first 4 held out for validation: 28 per pass = 7 batches; 9 steps cross into pass 2.
    monkeypatch.setenv(STREAM_KEYS_ENV, str(tmp_path / "full-keys"))
    full = run(parse_recipe(_local(folder, tmp_path / "full", "--max_steps", "9")))
    full_keys = _keys(tmp_path / "full-keys")[0]
    assert [epoch for epoch, _ in full_keys].count(0) == 27  # the broken record is in pass 0 (not held out)
    assert len({key for epoch, key in full_keys if epoch == 0}) == 27
    assert full.data.summary["streaming"]["passes_completed"] == 1

    monkeypatch.setenv(STREAM_KEYS_ENV, str(tmp_path / "resumed-keys"))
    out = tmp_path / "resumed"
    run(parse_recipe(_local(folder, out, "--max_steps", "4")))  # "interrupted" after 4 steps (checkpoint-4)
    state = json.loads((out / "checkpoint-4" / "stream_state" / "rank0.json").read_text())
    assert state["epoch"] == 0 and state["positions"] == {"0": 16}
    # named explicitly: the shorter run finished, and auto-resume refuses a finished run with other settings
    resumed = run(parse_recipe(_local(folder, out, "--max_steps", "9", "--resume_from_checkpoint",
                                      str(out / "checkpoint-4"))))
    assert resumed.resumed_from.endswith("checkpoint-4")
    assert _keys(tmp_path / "resumed-keys")[0] == full_keys  # same examples, same order, none twice
    assert resumed.data.summary["streaming"]["examples_seen"] == full.data.summary["streaming"]["examples_seen"]
    assert resumed.data.summary["streaming"]["bad_records"] == full.data.summary["streaming"]["bad_records"] >= 1


def test_streaming_without_max_steps_or_for_a_task_without_it_stops_clearly(tmp_path: Path, parquet_shards) -> None:
    folder = parquet_shards["folder"]
    args = [QUICKSTART, "--streaming", "true", "--train_file", str(folder / "train-*.parquet"), "--output_dir",
            str(tmp_path / "out"), *SMALL]
    with pytest.raises(RecipeError, match="streaming datasets have no length: set max_steps"):
        run(parse_recipe(args))
    recipe = parse_recipe([*args, "--max_steps", "2"])
    with pytest.raises(RecipeError, match="streaming is not supported for the task some-task"):
        check_streaming_recipe(recipe.data, recipe.training, "some-task", supported=False)
    with pytest.raises(RecipeError, match="set max_eval_samples"):
        run(parse_recipe([*args, "--max_steps", "2"]))  # no validation split and nothing to hold out


def test_webdataset_shards_need_class_names_then_stream(tmp_path: Path, shapes_dir: Path) -> None:
    """webdataset ``*.tar`` shards (``key.png`` + ``key.cls``): integer labels without names stop the run with the
    key to set; with ``class_names`` every record comes out transformed, with its label."""
    import io
    import tarfile

    from recipes.data.streaming.examples import StreamingExamples
    from recipes.tasks.classification.streaming import label_check, load_streaming_classification
    from recipes.tasks.classification.transforms import build_train_augmentation, transform_classification_batch

    names = sorted(d.name for d in shapes_dir.iterdir() if d.is_dir())
    files = sorted(shapes_dir.rglob("*.png"))
    for k in range(2):
        with tarfile.open(tmp_path / f"shard-{k}.tar", "w") as tar:
            for i, path in enumerate(files[k::2]):
                label = str(names.index(path.parent.name)).encode()
                for name, data in ((f"{k}_{i:04d}.png", path.read_bytes()), (f"{k}_{i:04d}.cls", label)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    args = [QUICKSTART, "--streaming", "true", "--train_file", str(tmp_path / "*.tar"), "--image_column_name", "png",
            "--label_column_name", "cls", "--max_steps", "2", "--max_eval_samples", "8", "--output_dir",
            str(tmp_path / "out"), *SMALL]
    with pytest.raises(RecipeError, match="Set --class_names"):
        run(parse_recipe(args))
    recipe = parse_recipe([*args, "--class_names", *names])
    data = load_streaming_classification(recipe.data, seed=0)
    assert len(data.validation) == 8 and data.id2label == dict(enumerate(names))
    transform = partial(transform_classification_batch, augment=build_train_augmentation("none", 32, 32),
                        image_column="png", label_column="cls")
    examples = list(StreamingExamples(data.train, transform, "png", label_check(recipe.data, data.id2label)))
    assert len(examples) == len(files) - 8 and not any("bad" in e["_stream"] for e in examples)
    assert {tuple(e["pixel_values"].shape) for e in examples} == {(3, 32, 32)}
    assert {e["labels"] for e in examples} == set(range(len(names)))


def test_decompression_bombs_in_a_stream_are_skipped_and_listed(tmp_path: Path) -> None:
    from helpers import jpeg_bomb, png_bomb

    train = _shapes(tmp_path / "images", per_class=4, seed=0)  # 16 records; 4 are held out for validation
    bombs = {5: ("bomb.png", png_bomb()), 9: ("bomb.jpg", jpeg_bomb())}
    train = train.cast_column("image", _raw()).map(
        lambda row, index: {"image": {"bytes": bombs[index][1], "path": bombs[index][0]}} if index in bombs else row,
        with_indices=True)
    folder = tmp_path / "data"
    folder.mkdir()
    train.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    context = run(parse_recipe(_local(folder, tmp_path / "out", "--max_steps", "4", "--shuffle_buffer_size", "0")))
    report = context.data.summary["streaming"]
    skipped = {record["path"]: record["reason"] for record in report["skipped_records"]}
    assert set(skipped) == {"bomb.png", "bomb.jpg"} and report["bad_records"] >= 2  # (again in a later pass)
    assert "65000 x 65000 = 4,225,000,000 pixels, over the limit of 178,956,970" in skipped["bomb.jpg"]
    assert "over the limit of 178,956,970 pixels" in skipped["bomb.png"]
    assert context.trainer.state.global_step == 4


def test_every_process_writes_its_stream_position_before_the_checkpoint_is_marked_and_pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process 1's ``stream_state/rank1.json`` is in the checkpoint before process 0 goes on to the callbacks that
    mark it complete and stage its push: a barrier after each process writes its own."""
    folder = tmp_path / "checkpoint-4" / STATE_DIR
    at_barrier = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: at_barrier.append(sorted(
        p.name for p in folder.iterdir())))
    callback = StreamStateCallback(StreamProgress(rank=1, world_size=2))
    args = SimpleNamespace(output_dir=str(tmp_path), world_size=2)
    callback.on_save(args, SimpleNamespace(global_step=4), SimpleNamespace())
    assert at_barrier == [["rank1.json"]]


def test_a_streamed_train_split_is_fingerprinted_by_its_shards_and_their_revision(
    tmp_path: Path, parquet_shards, fake_hub
) -> None:
    """A resumed stream applies its saved positions to the shard order: new shards, rewritten shards or a new Hub
    revision are another run (before: a streamed split had no fingerprint, so any of them resumed silently)."""
    import os
    import shutil

    from recipes.artifacts.checkpoints import differences, training_fingerprint
    from recipes.config import DataArguments
    from recipes.data.streaming.sources import load_streams

    folder = tmp_path / "shards"
    shutil.copytree(parquet_shards["folder"], folder)
    recipe = parse_recipe([QUICKSTART, "--output_dir", str(tmp_path / "out")])

    def fingerprint(streams: dict) -> dict:
        return training_fingerprint(recipe, SimpleNamespace(train=streams["train"], validation=None, test=None))

    def local() -> dict:
        return fingerprint(load_streams(DataArguments(train_file=str(folder / "train-*.parquet"))))

    first = local()
    assert first["data"]["train"] is not None and differences(first, local()) == []
    shutil.copy(folder / "train-00000-of-00004.parquet", folder / "train-00004-of-00004.parquet")  # a new shard
    assert [line.split(":")[0] for line in differences(first, local())] == ["data (train split, datasets fingerprint)"]
    (folder / "train-00004-of-00004.parquet").unlink()
    shard = folder / "train-00001-of-00004.parquet"
    shard.write_bytes((folder / "train-00002-of-00004.parquet").read_bytes())  # rewritten under the same name
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert differences(first, local())

    repo = "user/stream-revisions"
    original = parquet_shards["folder"]
    fake_hub.seed(repo, {f"data/{p.name}": p.read_bytes() for p in sorted(original.iterdir())}, repo_type="dataset")
    code = ("from datasets import load_dataset; from recipes.data.streaming.sources import stream_fingerprint; "
            f"print(stream_fingerprint(load_dataset({repo!r}, split='train', streaming=True)))")

    def hub() -> str:
        root = str(Path(__file__).resolve().parents[1])
        result = fake_hub.run_python(code, tmp_path / "hf_home", env={"PYTHONPATH": root})
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]

    before = hub()
    assert before != "None" and hub() == before
    fake_hub.seed(repo, {"data/train-00000-of-00004.parquet": (original / "train-00001-of-00004.parquet").read_bytes()},
                  repo_type="dataset")  # a new revision: the same shard names, other contents
    assert hub() != before
