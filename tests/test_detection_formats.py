"""Detection data: VOC / COCO / metadata.jsonl / Hub readers, layout detection and the data checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage

from recipes.config import RecipeError
from recipes.sample_data.plates import make_plates_dataset, voc_xml
from recipes.tasks.detection.checks import check_split
from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data
from recipes.tasks.detection.formats.common import rows_to_dataset
from recipes.tasks.detection.formats.layout import detect_layout, read_detection_folder, resolve_format


def _image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new(mode, size, (90, 120, 30, 255)[: len(mode)]).save(path)
    return path


def _voc(root: Path, stem: str, boxes: list[tuple], size: tuple[int, int] = (64, 48), *, xml_size=None,
         filename: str | None = None, image_dir: str = "images", annotation_dir: str = "annotations",
         extension: str = ".png", make_image: bool = True) -> Path:
    if make_image:
        _image(root / image_dir / f"{stem}{extension}", size)
    xml = root / annotation_dir / f"{stem}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    width, height = xml_size or size
    xml.write_text(voc_xml(filename or f"{stem}{extension}", width, height, list(boxes)), encoding="utf-8")
    return xml


def _load(**kwargs) -> object:
    return load_detection_data(DetectionDataArguments(**kwargs), seed=0)


def test_kaggle_voc_layout_schema_and_negatives(tmp_path: Path) -> None:
    make_plates_dataset(tmp_path, n_images=10, seed=3, size=96)
    _voc(tmp_path, "Empty", [])  # a negative: no objects
    data = _load(train_dir=str(tmp_path), train_val_split=0.3)
    assert data.id2label == {0: "licence"}
    assert len(data.train) + len(data.validation) == 11
    assert set(data.train.column_names) == {"image", "image_id", "width", "height", "objects"}
    feature = data.train.features["objects"]["category"].feature
    assert isinstance(feature, ClassLabel) and feature.names == ["licence"]
    assert isinstance(data.train.features["image"], Image) and not data.train.features["image"].decode
    rows = list(data.train) + list(data.validation)
    assert any(len(r["objects"]["bbox"]) == 0 for r in rows), "negatives must be kept"
    summary = data.summary
    assert summary["skipped_files"] == []
    stats = summary["train_statistics"]
    assert {"boxes_per_class", "boxes_per_image", "box_width_px", "boxes_by_coco_size", "negatives"} <= set(stats)
    total = sum(summary[f"{s}_statistics"]["boxes"] for s in ("train", "validation"))
    assert total == sum(len(r["objects"]["bbox"]) for r in rows)
    again = _load(train_dir=str(tmp_path), train_val_split=0.3)
    assert again.validation["image_id"] == data.validation["image_id"], "the validation split must be seeded"


def test_generic_voc_with_imagesets_splits(tmp_path: Path) -> None:
    for stem, box in (("a", (1, 2, 30, 20)), ("b", (5, 5, 40, 40)), ("c", (0, 0, 10, 10))):
        _voc(tmp_path, stem, [box], image_dir="JPEGImages", annotation_dir="Annotations", extension=".jpg")
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("a\nb\n")
    (main / "val.txt").write_text("c\n")
    assert detect_layout(tmp_path) == "voc"
    data = _load(train_dir=str(tmp_path))
    assert len(data.train) == 2 and len(data.validation) == 1
    assert data.validation[0]["objects"]["bbox"] == [[0.0, 0.0, 10.0, 10.0]]


def _coco_file(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def test_coco_layout_splits_categories_and_crowd(tmp_path: Path) -> None:
    categories = [{"id": 3, "name": "car"}, {"id": 1, "name": "plate"}]
    for split, names in (("train", ["t1.png", "t2.png"]), ("val", ["v1.png"])):
        for name in names:
            _image(tmp_path / split / name, (50, 40))
        images = [{"id": i + 10, "file_name": n, "width": 50, "height": 40} for i, n in enumerate(names)]
        annotations = [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [1, 1, 10, 8], "area": 80, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20, 5, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
        ]
        _coco_file(tmp_path / "annotations" / f"instances_{split}.json", images, annotations, categories)
    assert detect_layout(tmp_path) == "coco"
    data = _load(train_dir=str(tmp_path))
    assert data.id2label == {0: "plate", 1: "car"}, "COCO categories keep their id order"
    assert len(data.train) == 2 and len(data.validation) == 1
    first = data.train.filter(lambda r: r["image_id"] == 10)[0]
    assert first["objects"]["category"] == [0, 1]
    assert first["objects"]["bbox"] == [[1.0, 1.0, 10.0, 8.0], [20.0, 5.0, 20.0, 20.0]]
    assert data.summary["reader_counts"]["crowd_boxes_skipped"] == 2


def test_imagefolder_metadata_jsonl_with_class_names(tmp_path: Path) -> None:
    lines = []
    for i in range(4):
        _image(tmp_path / f"img{i}.png", (40, 30))
        lines.append({"file_name": f"img{i}.png", "objects": {"bbox": [[2, 3, 10, 5]], "categories": [i % 2]}})
    lines.append({"file_name": "img0.png", "objects": {"bbox": [], "categories": []}})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    assert detect_layout(tmp_path) == "imagefolder"
    data = _load(train_dir=str(tmp_path), class_names=["cat", "dog"], train_val_split=0.2)
    assert data.id2label == {0: "cat", 1: "dog"}
    assert len(data.train) + len(data.validation) == 5


def test_metadata_jsonl_numbers_out_of_range_are_named_not_an_overflow(tmp_path: Path) -> None:
    lines = []
    for i in range(4):
        _image(tmp_path / f"img{i}.png", (40, 30))
        lines.append({"file_name": f"img{i}.png", "image_id": i, "objects": {"bbox": [[2, 3, 10, 5]],
                                                                          "categories": [0]}})
    lines[1]["image_id"] = 2**70
    lines[2]["objects"]["bbox"] = [[2, 3, 1e300, 5]]
    lines[3]["objects"]["categories"] = [float("inf")]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    result = read_detection_folder(tmp_path, "imagefolder", ["cat"])
    assert sorted(p.path.rsplit(":", 1)[-1] for p in result.problems) == ["2", "3", "4"], result.problems
    assert len(rows_to_dataset(result.splits["train"])) == 1


def test_hub_convention_from_parquet(tmp_path: Path) -> None:
    """A Hub-style dataset (embedded image bytes, ClassLabel categories, objects as a list of dicts)."""
    import io

    def png(size: tuple[int, int]) -> bytes:
        buffer = io.BytesIO()
        PILImage.new("RGB", size, (10, 200, 10)).save(buffer, format="PNG")
        return buffer.getvalue()

    features = Features({
        "image": Image(),
        "image_id": Value("int64"),
        "objects": List({"bbox": List(Value("float32"), length=4), "category": ClassLabel(names=["a", "b"])}),
        "extra": Value("string"),
    })
    rows = [{"image": {"bytes": png((32, 24)), "path": None}, "image_id": i, "extra": "x",
             "objects": [{"bbox": [1, 1, 8, 8], "category": i % 2}, {"bbox": [30, 20, 9, 9], "category": 1}]}
            for i in range(6)]
    splits = DatasetDict({"train": Dataset.from_list(rows[:4], features=features),
                          "validation": Dataset.from_list(rows[4:], features=features)})
    for split, dataset in splits.items():
        dataset.to_parquet(str(tmp_path / "data" / f"{split}-00000.parquet"))
    data = _load(dataset_name=str(tmp_path))
    assert data.id2label == {0: "a", 1: "b"}
    assert len(data.train) == 4 and len(data.validation) == 2
    assert "extra" not in data.train.column_names
    row = data.train[0]
    assert (row["width"], row["height"]) == (32, 24)
    assert row["objects"]["bbox"] == [[1.0, 1.0, 8.0, 8.0], [30.0, 20.0, 2.0, 4.0]], "past the edge: clipped"
    assert data.summary["checks"]["train"]["clipped_boxes"] == 4


def test_validation_dir_may_use_another_layout(tmp_path: Path) -> None:
    train = tmp_path / "train_voc"
    for stem in ("a", "b"):
        _voc(train, stem, [(1, 1, 20, 20)])
    validation = tmp_path / "val_metadata"
    _image(validation / "v.png")
    (validation / "metadata.jsonl").write_text(json.dumps(
        {"file_name": "v.png", "objects": {"bbox": [[1, 1, 5, 5], [2, 2, 6, 6]], "category": ["licence", "car"]}}))
    data = _load(train_dir=str(train), validation_dir=str(validation))
    assert len(data.train) == 2 and len(data.validation) == 1
    assert data.id2label == {0: "car", 1: "licence"}, "class names are gathered from every split"
    assert data.validation[0]["objects"]["category"] == [1, 0]


def test_bad_inputs_are_reported_by_name_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    _voc(root, "good", [(5, 5, 20, 20)])
    _voc(root, "missing", [(5, 5, 20, 20)], make_image=False)
    _image(tmp_path / "outside.png")
    _voc(root, "escape", [(1, 1, 5, 5)], filename="../../outside.png", make_image=False)
    (root / "annotations" / "broken.xml").write_text("<annotation><object><name>x</name>", encoding="utf-8")
    _voc(root, "resized", [(5, 5, 20, 20)], size=(64, 48), xml_size=(640, 480))
    _voc(root, "edges", [(50, 40, 90, 70), (10, 10, 10, 30), (30, 20, 20, 30), (100, 100, 120, 120), (1, 1, 9, 9)])
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "annotations" / "corrupt.xml").write_text(voc_xml("corrupt.png", 64, 48, [(1, 1, 5, 5)]))
    data = _load(train_dir=str(root), train_val_split=0.25)

    skipped = {Path(s["path"]).name.split(" ")[0]: s["reason"] for s in data.summary["skipped_files"]}
    assert set(skipped) >= {"missing.xml", "escape.xml", "broken.xml"}
    assert "not found" in skipped["missing.xml"]
    assert "outside the data root" in skipped["escape.xml"]
    assert "cannot parse XML" in skipped["broken.xml"]
    assert any("corrupt" in Path(s["path"]).name for s in data.summary["skipped_files"])
    kept = sorted(Path(r["image"]["path"]).stem for r in [*data.train, *data.validation])
    assert kept == ["edges", "good", "resized"]

    checks = {k: sum(c.get(k, 0) for c in data.summary["checks"].values() if isinstance(c.get(k, 0), int))
              for k in ("clipped_boxes", "dropped_degenerate_boxes", "dropped_outside_boxes")}
    assert checks == {"clipped_boxes": 1, "dropped_degenerate_boxes": 2, "dropped_outside_boxes": 1}
    mismatches = [m for c in data.summary["checks"].values() for m in c["size_mismatches"]]
    assert len(mismatches) == 1 and "resized.xml" in mismatches[0] and "640x480" in mismatches[0]
    edges = next(r for r in [*data.train, *data.validation] if "edges" in r["image"]["path"])
    assert (edges["width"], edges["height"]) == (64, 48), "the image wins over <size>"
    assert edges["objects"]["bbox"] == [[50.0, 40.0, 14.0, 8.0], [1.0, 1.0, 8.0, 8.0]]
    assert any("outside.png" in r.getMessage() or "escape.xml" in r.getMessage() for r in caplog.records)


def test_strict_mode_stops_naming_the_file(tmp_path: Path) -> None:
    _voc(tmp_path, "good", [(5, 5, 20, 20)])
    _voc(tmp_path, "good2", [(5, 5, 20, 20)])
    _voc(tmp_path, "lost", [(5, 5, 20, 20)], make_image=False)
    with pytest.raises(RecipeError, match=r"lost\.xml.*not found"):
        _load(train_dir=str(tmp_path), strict=True)


def test_layout_detection_and_format_mismatch(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    _voc(voc, "a", [(1, 1, 5, 5)])
    assert resolve_format(voc, "auto") == "voc"
    with pytest.raises(RecipeError, match=r"dataset_format: coco.*--dataset_format voc"):
        resolve_format(voc, "coco")
    with pytest.raises(RecipeError, match="Unknown dataset_format"):
        resolve_format(voc, "kitti")
    empty = tmp_path / "empty"
    _image(empty / "x.png")
    with pytest.raises(RecipeError, match="Could not recognise the layout"):
        _load(train_dir=str(empty))
    with pytest.raises(RecipeError, match="does not exist"):
        _load(train_dir=str(tmp_path / "nowhere"))


def test_check_split_drops_unknown_classes_and_handles_exif(tmp_path: Path) -> None:
    image = PILImage.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90°: decoded upright as 20x40
    image.save(tmp_path / "rotated.jpg", exif=exif)
    rows = [{"image": {"path": str(tmp_path / "rotated.jpg"), "bytes": None}, "image_id": 0, "width": 40,
             "height": 20, "objects": {"bbox": [[1, 1, 5, 5], [2, 2, 3, 3]], "category": ["keep", "other"]},
             "source": "rotated.xml"}]
    checked, report = check_split(rows_to_dataset(rows), ["keep"], "train")
    assert (checked[0]["width"], checked[0]["height"]) == (20, 40)
    assert checked[0]["objects"]["category"] == [0]
    assert report.counts["unknown_class_boxes"] == 1
    assert len(report.size_mismatches) == 1
    assert np.isclose(checked[0]["objects"]["area"][0], 25.0)


def test_class_names_matching_no_box_stop_the_run(tmp_path: Path) -> None:
    make_plates_dataset(tmp_path, n_images=6, seed=1, size=96)
    with pytest.raises(RecipeError, match=r"None of the training boxes belongs to `class_names` \['car'\]"):
        _load(train_dir=str(tmp_path), class_names=["car"], train_val_split=0.3)


def test_malformed_coco_entries_are_reported_not_fatal(tmp_path: Path) -> None:
    _image(tmp_path / "good" / "a.png", (50, 40))
    _coco_file(tmp_path / "good" / "instances_train.json",
               [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 8]},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": ["x", 1, 10, 8]}],
               [{"id": 1, "name": "plate"}])
    _coco_file(tmp_path / "good" / "instances_val.json", [], [], [{"id": "not-a-number", "name": "plate"}])
    result = read_detection_folder(tmp_path / "good", "coco")
    assert any("instances_val.json" in bad.path and "categories" in bad.reason for bad in result.problems)
    assert result.counts["malformed_boxes_skipped"] == 1
    assert len(result.splits["train"]) == 1


@pytest.mark.parametrize(("entry", "reason"), [
    ({"width": float("inf")}, "`width: inf` is not a pixel count"),
    ({"height": 1e300}, "`height: 1e+300` is not a pixel count"),
    ({"id": 2**70}, "does not fit a 64-bit integer"),
])
def test_coco_numbers_out_of_range_are_named_not_an_overflow(tmp_path: Path, entry: dict, reason: str) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "train" / name, (50, 40))
    images = [{"id": i + 1, "file_name": n, "width": 50, "height": 40} for i, n in enumerate(["a.png", "b.png",
                                                                                                 "c.png"])]
    images[1].update(entry)  # json.dumps writes Infinity / 1e+300 / a 22-digit id, and json.loads reads them back
    annotations = [{"id": i, "image_id": image["id"], "category_id": 1, "bbox": [1, 1, 10, 8]}
                   for i, image in enumerate(images)]
    annotations.append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 1, 1e300, 8]})  # float32: inf
    _coco_file(tmp_path / "annotations" / "instances_train.json", images, annotations, [{"id": 1, "name": "plate"}])
    data = _load(train_dir=str(tmp_path), train_val_split=0.5)
    skipped = data.summary["skipped_files"]
    assert len(skipped) == 1 and skipped[0]["path"].endswith("instances_train.json (b.png)"), skipped
    assert reason in skipped[0]["reason"]
    rows = [*data.train, *data.validation]
    assert sorted(Path(r["image"]["path"]).name for r in rows) == ["a.png", "c.png"]
    assert all(np.isfinite(box).all() for r in rows for box in r["objects"]["bbox"])
    with pytest.raises(RecipeError, match=reason.replace("+", r"\+").replace("`", ".")):
        _load(train_dir=str(tmp_path), strict=True)


def test_a_decompression_bomb_in_a_detection_folder_is_skipped_and_named(tmp_path: Path) -> None:
    from helpers import png_bomb

    root = tmp_path / "data"
    for stem in "abcdefgh":
        _voc(root, stem, [(5, 5, 20, 20)])
    (root / "images" / "bomb.png").write_bytes(png_bomb())
    (root / "annotations" / "bomb.xml").write_text(voc_xml("bomb.png", 20000, 20000, [(1, 1, 5, 5)]))
    data = _load(train_dir=str(root), train_val_split=0.25)
    reasons = [s["reason"] for s in data.summary["skipped_files"] if "bomb" in s["path"]]
    assert reasons and "pixels" in reasons[0], data.summary["skipped_files"]
    kept = sorted(Path(r["image"]["path"]).stem for r in [*data.train, *data.validation])
    assert kept == list("abcdefgh")
