"""The data-check cache (recipes/data/check_cache.py): a second load decodes nothing and reports the same; a changed
file, ``recheck_data`` and a changed option redo the checks; another rank of a distributed run reuses the result."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import recipes.data.sources
from recipes.data.check_cache import CheckCache, file_signature
from recipes.decode.images import check_image_record
from recipes.sample_data.plates import LABEL, make_plates_dataset
from recipes.sample_data.shapes import make_shapes_dataset
from recipes.sample_data.streets import make_streets_dataset
from recipes.tasks import get_task
from recipes.tasks.classification.data import ClassificationDataArguments
from recipes.tasks.detection import checks as detection_checks
from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data
from recipes.tasks.segmentation import masks
from recipes.tasks.segmentation.data import SegmentationDataArguments


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image the classification check decodes (the check runs in this process for small datasets)."""
    seen: list[str] = []

    def counting(record):
        seen.append(record["path"])
        return check_image_record(record)

    monkeypatch.setattr(recipes.data.sources, "check_image_record", counting)
    return seen


def _shapes(tmp_path: Path) -> Path:
    root = make_shapes_dataset(tmp_path / "shapes", images_per_class=5, size=16, seed=0,
                               classes=("circle", "square"))
    (root / "circle" / "broken.png").write_bytes(b"not an image")
    return root


def _classify(root: Path, **options):
    return get_task("image-classification").load_data(
        ClassificationDataArguments(train_dir=str(root), train_val_split=0.3, **options), seed=0)


def test_second_load_reuses_the_checks_and_reports_the_same(tmp_path: Path, decodes: list[str], caplog) -> None:
    root = _shapes(tmp_path)
    first = _classify(root)
    assert len(decodes) == 11
    assert [event["result"] for event in first.summary["check_cache"]["passes"]] == ["computed", "computed"]
    decodes.clear()
    with caplog.at_level(logging.INFO, logger="recipes"):
        second = _classify(root)
    assert decodes == []  # nothing decoded again
    assert [event["result"] for event in second.summary["check_cache"]["passes"]] == ["cached", "cached"]
    assert "cached result used, from" in caplog.text
    assert "Skipping" in caplog.text and "broken.png" in caplog.text  # the report is in the log on cached runs
    for key in ("skipped_files", "train_examples", "validation_examples", "train_per_class"):
        assert second.summary[key] == first.summary[key]
    assert [s["path"] for s in second.summary["skipped_files"]] == [str(root / "circle" / "broken.png")]
    assert second.train["image"] == first.train["image"]
    cache_files = {Path(event["file"]) for event in second.summary["check_cache"]["passes"]}
    assert all(path.is_file() and path.parent.parent == Path(os.environ["HF_DATASETS_CACHE"]) for path in cache_files)


def test_recheck_data_and_a_changed_file_redo_the_checks(tmp_path: Path, decodes: list[str]) -> None:
    root = _shapes(tmp_path)
    _classify(root)
    decodes.clear()
    rechecked = _classify(root, recheck_data=True)
    assert len(decodes) == 11
    assert {event["result"] for event in rechecked.summary["check_cache"]["passes"]} == {"recomputed"}
    # A good image overwritten with garbage: its split is checked again and the file is reported.
    victim = root / "square" / "square_0000.png"
    victim.write_bytes(b"garbage")
    decodes.clear()
    changed = _classify(root)
    assert str(victim) in decodes and str(root / "circle" / "circle_0000.png") not in decodes
    assert {s["path"] for s in changed.summary["skipped_files"]} == {str(victim), str(root / "circle" / "broken.png")}
    results = {e["split"]: e["result"] for e in changed.summary["check_cache"]["passes"]}
    assert "computed" in results.values() and "cached" in results.values()  # only the changed split is redone


def test_signature_follows_size_and_modification_time_not_embedded_bytes(tmp_path: Path) -> None:
    from datasets import Dataset, Features, Image

    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    features = Features({"image": Image(decode=False)})
    on_disk = Dataset.from_dict({"image": [{"path": str(path), "bytes": None}]}, features=features)
    # (encoding drops the bytes of a record whose path exists: cast a plain struct column instead)
    embedded = Dataset.from_dict({"image": [{"bytes": b"x", "path": str(path)}]})
    embedded = embedded.cast_column("image", features["image"])
    before, before_embedded = file_signature(on_disk, ["image"]), file_signature(embedded, ["image"])
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    after = file_signature(on_disk, ["image"])
    assert after != before
    assert file_signature(embedded, ["image"]) == before_embedded  # bytes in the row: the fingerprint covers them
    path.write_bytes(b"four")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert file_signature(on_disk, ["image"]) != after  # same time, other size


def test_signature_sees_a_same_size_edit_whose_modification_time_was_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets import Dataset, Features, Image

    import recipes.data.check_cache as check_cache

    path = tmp_path / "a.png"
    path.write_bytes(bytes(8192))
    on_disk = Dataset.from_dict({"image": [{"path": str(path), "bytes": None}]},
                                features=Features({"image": Image(decode=False)}))

    def edit(offset: int) -> str:  # same size, same modification time (cp -p, rsync -t, a coarse-mtime mount)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        return file_signature(on_disk, ["image"])

    before = edit(0)
    assert edit(4000) != before  # a small dataset is hashed whole: an edit anywhere is seen
    monkeypatch.setattr(check_cache, "FULL_HASH_MAX_BYTES", 0)  # a large dataset: the first and last KB
    sampled = file_signature(on_disk, ["image"])
    assert edit(10) != sampled and edit(8191) != edit(10)
    assert edit(4000) == file_signature(on_disk, ["image"])  # (documented: a middle-only edit needs recheck_data)


def test_the_decoder_versions_are_in_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets import Dataset

    import recipes.data.check_cache as check_cache

    dataset = Dataset.from_dict({"x": [1, 2]})
    cache = CheckCache(directory=tmp_path)
    versions = {"torchvision": "0.1", "simplejpeg": "1.0", "torch": "2.0"}
    real = check_cache.metadata.version
    monkeypatch.setattr(check_cache.metadata, "version", lambda name: versions.get(name) or real(name))
    keys = []
    for name in ("torchvision", "simplejpeg", "torch"):
        check_cache._library_versions.cache_clear()
        keys.append(cache.key(dataset, "images", len))
        versions[name] += ".post1"
    check_cache._library_versions.cache_clear()
    keys.append(cache.key(dataset, "images", len))
    check_cache._library_versions.cache_clear()
    assert len(set(keys)) == 4, keys
    assert "pillow-jpg" in check_cache._library_versions()  # Pillow's libjpeg(-turbo) too


def test_a_new_result_replaces_the_older_ones_of_the_same_data_and_check(
    tmp_path: Path, decodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))  # this test's results only
    root = _shapes(tmp_path)
    first = _classify(root)
    directory = Path(first.summary["check_cache"]["directory"])
    files = sorted(directory.glob("*.arrow"))
    assert len(files) == 2  # one per split
    for round_ in range(3):  # the data changes three times: still one result per split
        victim = root / "square" / f"square_000{round_}.png"
        victim.write_bytes(b"garbage" * (round_ + 1))
        changed = _classify(root)
        now = sorted(directory.glob("*.arrow"))
        assert len(now) == 2, now
        assert {Path(e["file"]) for e in changed.summary["check_cache"]["passes"]} == set(now)
    other = _shapes(tmp_path / "other")  # another dataset keeps its own results beside them
    _classify(other)
    assert len(sorted(directory.glob("*.arrow"))) == 4
    assert {s["path"] for s in _classify(root).summary["skipped_files"]} >= {str(victim)}


def test_another_rank_reuses_what_the_main_process_wrote(tmp_path: Path, decodes: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = _shapes(tmp_path)
    main = _classify(root, recheck_data=True)  # LOCAL_RANK 0 (or unset): the main process checks
    assert len(decodes) == 11
    decodes.clear()
    monkeypatch.setenv("LOCAL_RANK", "1")  # the same recipe on rank 1, after main_process_first let it in
    assert CheckCache.from_args(ClassificationDataArguments(recheck_data=True)).recheck is False
    other = _classify(root, recheck_data=True)
    assert decodes == []
    assert {event["result"] for event in other.summary["check_cache"]["passes"]} == {"cached"}
    assert other.summary["skipped_files"] == main.summary["skipped_files"]


def test_workers_default_to_the_cpus_for_large_splits_only() -> None:
    cache = CheckCache()
    assert cache.num_proc(10) is None  # a few images: starting processes would cost more than it saves
    assert cache.num_proc(100_000) == min(8, len(os.sched_getaffinity(0))) or cache.num_proc(100_000) is None
    assert CheckCache(num_workers=4).num_proc(3) == 3
    assert CheckCache(num_workers=1).num_proc(1000) is None


def test_detection_checks_and_statistics_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_plates_dataset(tmp_path / "plates", n_images=10, seed=4, size=64)
    measured: list[object] = []
    real = detection_checks.upright_size
    monkeypatch.setattr(detection_checks, "upright_size", lambda record: measured.append(record) or real(record))
    args = DetectionDataArguments(train_dir=str(root), train_val_split=0.2)
    first = load_detection_data(args, seed=0)
    assert len(measured) == 10
    measured.clear()
    second = load_detection_data(args, seed=0)
    assert measured == []
    assert {e["result"] for e in second.summary["check_cache"]["passes"]} == {"cached"}
    for key in ("train_statistics", "validation_statistics", "checks", "skipped_files"):
        assert second.summary[key] == first.summary[key]
    assert second.summary["train_statistics"]["boxes"] > 0
    # Other class names are another check: the boxes are checked again.
    load_detection_data(DetectionDataArguments(train_dir=str(root), train_val_split=0.2,
                                               class_names=[LABEL, "car"]), seed=0)
    assert len(measured) == 10


def test_segmentation_mask_conversion_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_streets_dataset(tmp_path / "streets", n_frames=6, seed=3, size=(24, 32))
    converted: list[object] = []
    real = masks.check_and_convert_one
    monkeypatch.setattr(masks, "check_and_convert_one", lambda *a, **k: converted.append(a) or real(*a, **k))
    task = get_task("semantic-segmentation")
    first = task.load_data(SegmentationDataArguments(train_dir=str(root)), seed=0)
    assert len(converted) == 6
    converted.clear()
    second = task.load_data(SegmentationDataArguments(train_dir=str(root)), seed=0)
    assert converted == []
    assert second.summary["train_pixel_share"] == first.summary["train_pixel_share"]
    assert masks.decode_class_ids(second.train[0]["mask"]).tolist() == masks.decode_class_ids(
        first.train[0]["mask"]).tolist()
    mask = next(root.rglob("*_L.png"))
    os.utime(mask, ns=(2_000_000_000, 2_000_000_000))  # a touched mask: converted again
    task.load_data(SegmentationDataArguments(train_dir=str(root)), seed=0)
    assert len(converted) > 0
