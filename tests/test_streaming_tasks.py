"""Streamed training (``streaming: true``) for object detection and semantic segmentation: local parquet and
webdataset shards with bad records, each good example once per pass (one process and two), per-record checks,
resume, ``strict``, and the clear errors."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TWO_CPU_PROCESSES, assert_ok, run_cli
from PIL import Image

from recipes.config import RecipeError
from recipes.data.streaming.progress import RECORD_COUNTS
from recipes.lifecycle import STREAM_KEYS_ENV, run
from recipes.parse import parse_recipe
from recipes.tasks import get_task

DETECTION = str(REPO / "configs" / "quickstart" / "detection.yaml")
SEGMENTATION = str(REPO / "configs" / "quickstart" / "segmentation.yaml")
BROKEN = b"\x89PNG\r\n\x1a\n truncated: not an image"
SMALL = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--make_plots", "false",
         "--use_cpu", "true", "--report_to", "none", "--dataloader_num_workers", "0",
         "--dataloader_persistent_workers", "false", "--eval_strategy", "no", "--save_strategy", "steps",
         "--save_steps", "2", "--save_total_limit", "5"]


def _png(array_or_image) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array_or_image) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def _key(data: bytes) -> str:
    """The key :func:`recipes.data.streaming.examples.example_key` logs for an image record with these bytes."""
    return hashlib.sha1(data).hexdigest()[:16]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A webdataset shard: ``members`` (``key.field`` names, bytes) in order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _keys(folder: Path, rank: int = 0) -> list[tuple[int, str]]:
    """``[(pass, key), …]`` of one process of a streamed run (its debug key log, one file per process)."""
    return [(int(epoch), key) for epoch, key in
            (line.split("\t") for line in (folder / f"rank{rank}.tsv").read_text().splitlines())]


# ----------------------------------------------------------------------------- object detection


def _detection_features(category):
    from datasets import Features, List, Value
    from datasets import Image as ImageFeature

    return Features({"image": ImageFeature(), "objects": {"bbox": List(List(Value("float32"), length=4)),
                                                          "category": List(category)}})


def _plates(n: int, seed: int) -> list[dict]:
    from recipes.sample_data.plates import draw_plates_image

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        image, boxes = draw_plates_image(96, rng)
        rows.append({"image": {"bytes": _png(image), "path": f"plates{seed}-{i}.png"},
                     "objects": {"bbox": [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes],
                                 "category": [0] * len(boxes)}})
    return rows


@pytest.fixture(scope="module")
def detection_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """3 train shards of 4 records (one broken image, one box past the image's edge, one zero-width box, one box of
    the second category) and a validation shard of 4, with a ClassLabel category."""
    from datasets import ClassLabel, Dataset

    folder = tmp_path_factory.mktemp("detection-stream")
    train = _plates(12, seed=0)
    train[2]["image"] = {"bytes": BROKEN, "path": "broken.png"}
    train[5]["objects"] = {"bbox": [[80.0, 10.0, 40.0, 12.0]], "category": [0]}  # 96 px wide: clipped at x = 96
    train[7]["objects"] = {"bbox": [[10.0, 10.0, 0.0, 12.0], [20.0, 20.0, 30.0, 10.0]], "category": [0, 1]}
    features = _detection_features(ClassLabel(names=["plate", "sign"]))
    for k in range(3):
        Dataset.from_list(train[4 * k: 4 * k + 4], features=features).to_parquet(str(folder / f"train-{k}.parquet"))
    Dataset.from_list(_plates(4, seed=1), features=features).to_parquet(str(folder / "validation-0.parquet"))
    good = [_key(row["image"]["bytes"]) for i, row in enumerate(train) if i != 2]
    return {"folder": folder, "good_keys": good}


def _detection_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [DETECTION, "--streaming", "true", "--train_file", str(folder / "train-*.parquet"), "--validation_file",
            str(folder / "validation-*.parquet"), "--max_eval_samples", "4", "--output_dir", str(out),
            "--image_processor_overrides", '{"size": {"height": 64, "width": 64}}', *SMALL, *extra]


@pytest.mark.slow
def test_detection_streams_each_good_example_once_through_the_cli(tmp_path: Path, detection_shards) -> None:
    folder, out, keys = detection_shards["folder"], tmp_path / "out", tmp_path / "keys"
    # 12 records, batches of 4: 3 steps are one pass.
    result = run_cli(*_detection_args(folder, out, "--max_steps", "3"),
                     env={STREAM_KEYS_ENV: str(keys), "OMP_NUM_THREADS": "1"})
    assert_ok(result)
    logged = _keys(keys)
    assert {epoch for epoch, _ in logged} == {0}
    assert sorted(key for _, key in logged) == sorted(detection_shards["good_keys"])  # each good one, once
    manifest = json.loads((out / "run_manifest.json").read_text())
    report = manifest["data_summary"]["streaming"]
    assert report["examples_seen"] == 11
    assert report["bad_records"] == 1 and report["skipped_records"][0]["path"] == "broken.png"
    assert "cannot read the image" in report["skipped_records"][0]["reason"]
    assert report["record_checks"] == {"clipped_boxes": 1, "dropped_degenerate_boxes": 1}
    assert manifest["data_summary"]["validation_examples"] == 4
    assert manifest["data_summary"]["class_names"] == ["plate", "sign"]
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_samples"] == 4 and 0 <= metrics["eval_map"] <= 1
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "plate", "1": "sign"}
    assert "1 bad streamed record(s) skipped" in result.stderr
    card = (out / "README.md").read_text()
    assert "| train (streamed) | 11 examples trained on |" in card and "1 bad streamed record(s)" in card
    assert "streamed training records as they were read: clipped boxes: 1, dropped degenerate boxes: 1." in card


def test_detection_stream_resumes_with_the_remaining_records_in_order(
    tmp_path: Path, detection_shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run resumed from a mid-pass checkpoint trains on exactly the records the uninterrupted run trained on
    after that checkpoint, in the same order, and ends with the same counts."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)  # see the segmentation resume test
    folder, out = detection_shards["folder"], tmp_path / "out"
    # 12 records (1 bad), batches of 4: a pass is 3 steps; 4 steps cross into the second pass.
    monkeypatch.setenv(STREAM_KEYS_ENV, str(tmp_path / "full-keys"))
    full = run(parse_recipe(_detection_args(folder, out, "--max_steps", "4")))
    logged = _keys(tmp_path / "full-keys")
    assert sorted(key for epoch, key in logged if epoch == 0) == sorted(detection_shards["good_keys"])
    assert [epoch for epoch, _ in logged].count(1) > 0
    report = full.data.summary["streaming"]

    state = json.loads((out / "checkpoint-2" / "stream_state" / "rank0.json").read_text())
    assert state["epoch"] == 0 and state["positions"] == {"0": 8}
    assert 0 < state["examples_seen"] < report["examples_seen"]
    monkeypatch.setenv(STREAM_KEYS_ENV, str(tmp_path / "resumed-keys"))
    resumed = run(parse_recipe(_detection_args(folder, out, "--max_steps", "4", "--resume_from_checkpoint",
                                               str(out / "checkpoint-2"))))
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert _keys(tmp_path / "resumed-keys") == logged[state["examples_seen"]:]  # the rest, in the same order
    again = resumed.data.summary["streaming"]
    for key in ("examples_seen", "bad_records", "record_checks", "passes_completed"):
        assert again[key] == report[key], key


def test_detection_record_check_cleans_boxes_like_the_map_style_checks() -> None:
    """Boxes clipped, degenerate and unknown-category boxes dropped (counted); unreadable or malformed records
    are reasons to skip. ``class_names`` [sign] keeps only the ClassLabel's second category."""
    from recipes.tasks.detection.streaming import check_stream_record

    check = {"image_column": "img", "objects_column": "boxes", "source_names": ["plate", "sign"],
             "label2id": {"sign": 0}}
    image = {"bytes": _png(np.zeros((40, 60, 3), np.uint8)), "path": "a.png"}
    record = {"img": image, "width": 60, "height": 50, "image_id": 7, "boxes": {
        "bbox": [[50, 5, 20, 10], [1, 1, 0, 5], [5, 5, 10, 10], [70, 5, 5, 5]], "category": [1, 1, 0, 1]}}
    assert check_stream_record(record, **check) is None
    assert record["image"] is image and record["image_id"] == 7
    assert record["objects"] == {"bbox": [[50.0, 5.0, 10.0, 10.0]], "category": [0], "area": [100.0]}
    assert record[RECORD_COUNTS] == {"clipped_boxes": 1, "dropped_degenerate_boxes": 1, "unknown_class_boxes": 1,
                                     "dropped_outside_boxes": 1, "size_mismatches": 1}
    broken = {"img": {"bytes": BROKEN, "path": "b.png"}, "boxes": {"bbox": [], "category": []}}
    assert check_stream_record(broken, **check).startswith("cannot read the image")
    for objects, reason in (({"bbox": [[1, 1, 5, 5]], "category": []}, "1 bbox(es) but 0 categories"),
                            ({"bbox": [[1, 1, 5]], "category": [0]}, "is not 4 numbers"),
                            ({"category": [0]}, "0 bbox(es) but 1 categories"),
                            ({"bbox": [[1, 1, 5, 5]], "category": [None]}, "neither a class id nor a name"),
                            ([{"category": 0}], "malformed `boxes` (needs bbox and category lists)")):
        assert reason in check_stream_record({"img": image, "boxes": objects}, **check)


def test_detection_stream_without_category_names_stops_clearly(tmp_path: Path) -> None:
    from datasets import Dataset, Value

    from recipes.tasks.detection.streaming import load_streaming_detection

    Dataset.from_list(_plates(4, seed=2), features=_detection_features(Value("int64"))).to_parquet(
        str(tmp_path / "train-0.parquet"))
    args = [DETECTION, "--streaming", "true", "--train_file", str(tmp_path / "train-0.parquet"),
            "--max_eval_samples", "2", "--max_steps", "1", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(RecipeError, match=r"has no category names .* Set --class_names"):
        load_streaming_detection(parse_recipe(args).data, seed=0)
    recipe = parse_recipe([*args, "--class_names", "plate"])
    data = load_streaming_detection(recipe.data, seed=0)
    assert data.id2label == {0: "plate"} and data.summary["validation_held_out_from_stream"] == 2
    assert len(data.validation) == 2  # held out from the stream: the other two stream, their ids name plates
    assert data.summary["checks"]["validation"]["unknown_class_boxes"] == 0
    boxes = data.summary["validation_statistics"]["boxes_per_class"]["plate"]
    check = get_task("detection").stream_check(recipe.data, data)
    for record in data.train:
        assert check(record) is None
        assert record["objects"]["category"] == [0] * len(record["objects"]["bbox"])
        assert not record.get(RECORD_COUNTS, {}).get("unknown_class_boxes")
        boxes += len(record["objects"]["bbox"])
    assert boxes > 0


def _webdataset_plate(index: int, row: dict) -> list[tuple[str, bytes]]:
    """A plates record as webdataset members: ``NNN.jpg`` and ``NNN.json`` (boxes of integer-valued floats written
    as integers, category ids, as a writer of such shards would)."""
    data = row["image"]["bytes"]
    if data != BROKEN:
        data = _jpeg(Image.open(io.BytesIO(data)))
    objects = row["objects"]
    boxes = [[int(v) if float(v).is_integer() else v for v in box] for box in objects["bbox"]]
    return [(f"{index:03d}.jpg", data),
            (f"{index:03d}.json", json.dumps({"bbox": boxes, "category": objects["category"]}).encode())]


def test_detection_webdataset_shards_keep_boxes_as_written(tmp_path: Path) -> None:
    """webdataset ``key.jpg`` + ``key.json`` (``{"bbox": [[x, y, w, h], …], "category": [ids or names]}``): boxes
    and categories reach the check as written, though the first records (from which ``datasets`` infers the
    column's types) have integer boxes and category ids; a broken image is a bad record naming its shard."""
    from recipes.data.streaming.examples import StreamingExamples
    from recipes.model.build import build_image_processor
    from recipes.tasks.detection.streaming import load_streaming_detection

    rows = _plates(7, seed=3)
    rows[5]["objects"] = {"bbox": [[10.5, 20.25, 30.5, 8.75]], "category": ["sign"]}  # past the 5 inferred from
    rows[6]["image"]["bytes"] = BROKEN
    _tar(tmp_path / "train-0.tar", [m for i in range(6) for m in _webdataset_plate(i, rows[i])])
    _tar(tmp_path / "train-1.tar", _webdataset_plate(6, rows[6]))
    args = [DETECTION, "--streaming", "true", "--train_file", str(tmp_path / "*.tar"), "--image_column_name", "jpg",
            "--objects_column_name", "json", "--class_names", "plate", "sign", "--max_eval_samples", "2",
            "--shuffle_buffer_size", "0", "--max_steps", "1", "--output_dir", str(tmp_path / "out"),
            "--image_processor_overrides", '{"size": {"height": 64, "width": 64}}']
    recipe = parse_recipe(args)
    task = get_task("detection")
    data = load_streaming_detection(recipe.data, seed=0)
    assert len(data.validation) == 2 and data.summary["validation_statistics"]["boxes_per_class"]["plate"] > 0
    check = task.stream_check(recipe.data, data)
    records = {record["__key__"]: record for record in data.train}
    assert sorted(records) == ["002", "003", "004", "005", "006"]
    assert check(records["005"]) is None
    assert records["005"]["objects"]["bbox"] == [[10.5, 20.25, 30.5, 8.75]]  # not truncated to integers
    assert records["005"]["objects"]["category"] == [1]

    processor = build_image_processor(recipe.model, task.image_processor_kwargs(recipe.data))
    transform, _ = task.transforms(processor, recipe.data, data)
    examples = list(StreamingExamples(data.train, transform, "jpg", check))
    bad = [e["_stream"]["bad"] for e in examples if "bad" in e["_stream"]]
    assert len(bad) == 1 and bad[0]["path"] == "006.jpg" and bad[0]["shard"].endswith("train-1.tar")
    good = [e for e in examples if "bad" not in e["_stream"]]
    assert len(good) == 4 and {tuple(e["pixel_values"].shape) for e in good} == {(3, 64, 64)}
    assert good[-1]["labels"]["class_labels"].tolist() == [1]


def test_a_record_the_reader_cannot_parse_stops_the_run_clearly(tmp_path: Path) -> None:
    """Invalid JSON in a webdataset shard ends the ``datasets`` stream: the loader stops with a clear error (not a
    traceback, not a silently short pass), even when the batch it falls in is incomplete and dropped."""
    from functools import partial

    import torch
    from torch.utils.data import DataLoader

    from recipes.data.streaming.examples import StreamingExamples, collate_stream
    from recipes.data.streaming.loader import StreamLoader
    from recipes.data.streaming.progress import StreamProgress
    from recipes.data.streaming.sources import load_streams

    members = [m for i, row in enumerate(_plates(6, seed=4)) for m in _webdataset_plate(i, row)]
    members[-1] = ("005.json", b"{not json")
    _tar(tmp_path / "train-0.tar", members)
    recipe = parse_recipe([DETECTION, "--streaming", "true", "--train_file", str(tmp_path / "train-0.tar"),
                           "--max_steps", "1", "--output_dir", str(tmp_path / "out")])
    stream = load_streams(recipe.data)["train"]
    examples = StreamingExamples(stream, lambda batch: batch, "jpg")
    for batch_size in (4, 8):  # the error in a batch with 1 good record, then in the incomplete first batch
        collate = partial(collate_stream, collate=lambda rows: {"rows": torch.tensor(len(rows))})
        loader = StreamLoader(DataLoader(examples, batch_size=batch_size, collate_fn=collate), examples,
                              StreamProgress(), torch.device("cpu"), drop_last=True)
        loader.set_epoch(0)
        with pytest.raises(RecipeError, match=r"Reading the training stream failed after 5 record\(s\) of this "
                                              r"process \(the last record read came from shard \S+train-0\.tar: "
                                              r".*\): JSONDecodeError: .* fix or remove it in the shards"):
            list(loader)
    # behind a shuffle buffer the reader is ahead of the last record received: the error says so
    shuffled = StreamingExamples(stream.shuffle(seed=0, buffer_size=3), lambda batch: batch, "jpg", read_ahead=3)
    with pytest.raises(RecipeError, match=r"the last record received came from shard \S+train-0\.tar; the shuffle "
                                          r"buffer reads up to 3 records ahead, so the unreadable one is in"):
        list(StreamLoader(DataLoader(shuffled, batch_size=4, collate_fn=collate), shuffled, StreamProgress(),
                          torch.device("cpu")))


# ----------------------------------------------------------------------------- semantic segmentation


@pytest.fixture(scope="module")
def segmentation_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """3 train shards of 4 (image, index mask) records, one mask of the wrong size and one with a value of no
    class; a validation shard of 4; ``id2label.json`` next to the shards."""
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    from recipes.sample_data.streets import CLASSES, draw_street

    folder = tmp_path_factory.mktemp("segmentation-stream")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        frame, ids = draw_street(48, 64, rng)
        rows.append({"image": {"bytes": _png(frame), "path": f"frame{i}.png"},
                     "annotation": {"bytes": _png(ids), "path": f"frame{i}_mask.png"}})
    rows[3]["annotation"] = {"bytes": _png(np.zeros((10, 10), np.uint8)), "path": "small_mask.png"}
    rogue = np.zeros((48, 64), np.uint8)
    rogue[:4, :4] = 40  # 9 classes: 40 is no class id (and not ignore_index 255)
    rows[9]["annotation"] = {"bytes": _png(rogue), "path": "rogue_mask.png"}
    features = Features({"image": ImageFeature(), "annotation": ImageFeature()})
    for k in range(3):
        Dataset.from_list(rows[4 * k: 4 * k + 4], features=features).to_parquet(str(folder / f"train-{k}.parquet"))
    Dataset.from_list(rows[12:], features=features).to_parquet(str(folder / "validation-0.parquet"))
    (folder / "id2label.json").write_text(json.dumps(list(CLASSES)))
    good = [_key(row["image"]["bytes"]) for i, row in enumerate(rows[:12]) if i not in (3, 9)]
    return {"folder": folder, "good_keys": good}


def _segmentation_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [SEGMENTATION, "--streaming", "true", "--train_file", str(folder / "train-*.parquet"),
            "--validation_file", str(folder / "validation-*.parquet"), "--max_eval_samples", "4", "--output_dir",
            str(out), "--image_processor_overrides", '{"size": {"height": 32, "width": 32}}', *SMALL, *extra]


@pytest.mark.slow
def test_segmentation_streams_each_good_pair_once_and_resumes(
    tmp_path: Path, segmentation_shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    # datasets waits 5 s for Arrow's reader threads whenever a parquet stream closes (each pass end, each run's
    # end): a guard for interpreter shutdown, which this in-process test does not reach in the meantime.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    folder = segmentation_shards["folder"]
    # 12 records (2 bad), batches of 4: a pass is 3 steps; 4 steps cross into the second pass.
    monkeypatch.setenv(STREAM_KEYS_ENV, str(tmp_path / "full-keys"))
    out = tmp_path / "out"
    full = run(parse_recipe(_segmentation_args(folder, out, "--max_steps", "4")))
    logged = _keys(tmp_path / "full-keys")
    first_pass = [key for epoch, key in logged if epoch == 0]
    assert sorted(first_pass) == sorted(segmentation_shards["good_keys"])  # each good pair once per pass
    report = full.data.summary["streaming"]
    assert report["bad_records"] >= 2  # both bad ones in pass 0 (and those of pass 1 read so far)
    reasons = {record["path"]: record["reason"] for record in report["skipped_records"] if record["pass"] == 0}
    assert "is 10x10 but its image is 64x48" in reasons["frame3.png"]
    assert "with values that are no class id nor ignore_index (40)" in reasons["frame9.png"]
    assert full.data.id2label[0] == "Building" and "Void" in full.data.summary["ignored_classes"]
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["data_summary"]["streaming"]["examples_seen"] == report["examples_seen"] == len(logged)
    assert 0 <= full.metrics["eval"]["eval_mean_iou"] <= 1 and full.metrics["eval"]["eval_samples"] == 4

    monkeypatch.setenv(STREAM_KEYS_ENV, str(tmp_path / "resumed-keys"))
    state = json.loads((out / "checkpoint-2" / "stream_state" / "rank0.json").read_text())
    assert state["epoch"] == 0 and state["positions"] == {"0": 8}
    resumed = run(parse_recipe(_segmentation_args(folder, out, "--max_steps", "4", "--resume_from_checkpoint",
                                                  str(out / "checkpoint-2"))))
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert _keys(tmp_path / "resumed-keys") == logged[state["examples_seen"]:]  # the rest, in the same order
    assert resumed.data.summary["streaming"]["examples_seen"] == report["examples_seen"]
    assert resumed.data.summary["streaming"]["bad_records"] == report["bad_records"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_stream_each_good_segmentation_pair_once(tmp_path: Path, segmentation_shards) -> None:
    """2 CPU processes (gloo) on 3 parquet shards: the stream is split by record, and across both processes every
    good pair of the pass is trained on exactly once (each process logs its keys to its own file)."""
    out, keys = tmp_path / "out", tmp_path / "keys"
    # 12 records, 6 per process, batches of 3 (the 2 bad records leave a good one in any batch): 2 steps, one pass.
    result = run_cli(*_segmentation_args(segmentation_shards["folder"], out, "--max_steps", "2",
                                         "--per_device_train_batch_size", "3"),
                     launcher=TWO_CPU_PROCESSES, env={STREAM_KEYS_ENV: str(keys), "OMP_NUM_THREADS": "1"})
    assert_ok(result)
    assert sorted(path.name for path in keys.iterdir()) == ["rank0.tsv", "rank1.tsv"]
    per_rank = [[key for epoch, key in _keys(keys, rank) if epoch == 0] for rank in (0, 1)]
    assert all(per_rank) and not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(segmentation_shards["good_keys"])  # each good pair once
    manifest = json.loads((out / "run_manifest.json").read_text())
    report = manifest["data_summary"]["streaming"]
    assert manifest["world_size"] == 2 and report["examples_seen_per_process"] == [len(part) for part in per_rank]
    assert (report["examples_seen"], report["bad_records"], report["dropped_at_pass_end"]) == (10, 2, 0)
    assert {record["path"] for record in report["skipped_records"]} == {"frame3.png", "frame9.png"}
    states = [json.loads((out / "checkpoint-2" / "stream_state" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [state["positions"] for state in states] == [{"0": 6}, {"0": 6}]  # every record of both parts read


def test_segmentation_stream_needs_class_names(tmp_path: Path, segmentation_shards) -> None:
    """Class names from id2label.json beside a dataset's shards (here a local ``dataset_name`` folder), else a
    clear error; a missing mask column is named."""
    from recipes.tasks.segmentation.streaming import load_streaming_segmentation

    hub_style = [SEGMENTATION, "--streaming", "true", "--dataset_name", str(segmentation_shards["folder"]),
                 "--max_eval_samples", "3", "--max_steps", "1", "--output_dir", str(tmp_path / "hub")]
    data = load_streaming_segmentation(parse_recipe(hub_style).data, seed=0)
    assert data.id2label[0] == "Building" and len(data.id2label) == 8  # Void ignored (ignore_labels)
    assert len(data.validation) == 3 and data.summary["validation_examples"] == 3
    assert data.stream_check(next(iter(data.train))) is None  # the first training pair is good

    shards = tmp_path / "shards"
    shards.mkdir()
    for path in segmentation_shards["folder"].glob("*.parquet"):
        (shards / path.name).write_bytes(path.read_bytes())
    args = _segmentation_args(shards, tmp_path / "out", "--max_steps", "1")
    with pytest.raises(RecipeError, match="Index masks need class names: set `id2label`"):
        load_streaming_segmentation(parse_recipe(args).data, seed=0)
    with pytest.raises(RecipeError, match=r"Column `masks` \(set by `mask_column_name`\) not found"):
        load_streaming_segmentation(parse_recipe([*args, "--id2label", '["a", "b"]', "--mask_column_name",
                                                  "masks"]).data, seed=0)


def test_segmentation_webdataset_shards_stream_and_strict_stops_at_the_first_bad_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webdataset ``key.jpg`` + ``key.mask.png`` shards with id2label.json beside them: ``strict`` stops the run at
    the pair whose mask has the wrong size, naming it, its shard and the fix; without ``strict`` the run trains
    on the good pairs and lists the bad one with its shard."""
    import datasets

    from recipes.sample_data.streets import CLASSES, draw_street

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    rng = np.random.default_rng(1)
    members = []
    for i in range(6):
        frame, ids = draw_street(48, 64, rng)
        if i == 4:
            ids = np.zeros((10, 10), np.uint8)
        members.append([(f"{i:03d}.jpg", _jpeg(frame)), (f"{i:03d}.mask.png", _png(ids))])
    _tar(tmp_path / "train-0.tar", [m for pair in members[:3] for m in pair])
    _tar(tmp_path / "train-1.tar", [m for pair in members[3:] for m in pair])
    (tmp_path / "id2label.json").write_text(json.dumps(list(CLASSES)))

    def args(name: str, *extra: str) -> list[str]:
        return [SEGMENTATION, "--streaming", "true", "--train_file", str(tmp_path / "*.tar"), "--image_column_name",
                "jpg", "--mask_column_name", "mask.png", "--max_eval_samples", "2", "--max_steps", "2",
                "--output_dir", str(tmp_path / name), "--image_processor_overrides",
                '{"size": {"height": 32, "width": 32}}', *SMALL, *extra]

    with pytest.raises(RecipeError, match=r"Bad streamed training record 004\.jpg in shard \S+train-1\.tar .*"
                                          r"strict mode\): mask 004\.mask\.png is 10x10 but its image is 64x48.*"
                                          r"or run with `--strict false` to skip"):
        run(parse_recipe(args("strict", "--strict", "true")))
    # 6 pairs, 2 held out for validation, 1 bad: each pass is 1 step of 3 good pairs
    result = run(parse_recipe(args("lenient", "--strict", "false")))
    report = result.data.summary["streaming"]
    assert (report["examples_seen"], report["bad_records"], report["passes_completed"]) == (6, 2, 1)
    bad = report["skipped_records"][0]
    assert bad["path"] == "004.jpg" and bad["shard"].endswith("train-1.tar") and "10x10" in bad["reason"]
    assert result.data.id2label[0] == "Building" and result.data.summary["validation_examples"] == 2
