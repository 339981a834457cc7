"""YOLO txt detection data (Ultralytics, Roboflow, CVAT, Label Studio exports): layouts, data.yaml, bad inputs,
and the real car-plates photos converted from their VOC XML: the same boxes through both readers."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_ok, run_cli, shared_dataset
from PIL import Image as PILImage

from recipes.config import RecipeError
from recipes.sample_data.plates import voc_xml
from recipes.tasks.detection.checks import check_split
from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data
from recipes.tasks.detection.formats.common import rows_to_dataset
from recipes.tasks.detection.formats.layout import detect_layout, read_detection_folder, resolve_format
from recipes.tasks.detection.formats.voc import parse_voc_xml

QUICKSTART = "configs/quickstart/detection.yaml"


def _image(path: Path, size: tuple[int, int] = (80, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, (90, 120, 30)).save(path)
    return path


def _sample(images: Path, labels: Path, stem: str, lines: list[str] | None, size: tuple[int, int] = (80, 40),
            extension: str = ".png") -> None:
    """One image, and its label file unless ``lines`` is ``None``."""
    _image(images / f"{stem}{extension}", size)
    if lines is not None:
        labels.mkdir(parents=True, exist_ok=True)
        (labels / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _load(**kwargs) -> object:
    return load_detection_data(DetectionDataArguments(**kwargs), seed=0)


def _rows(data) -> dict[str, dict]:
    """Checked rows of every split by image stem."""
    splits = [data.train, data.validation, *([data.test] if data.test is not None else [])]
    return {Path(row["image"]["path"]).stem: row for split in splits for row in split}


def _problems(root: Path, **kwargs) -> dict[str, str]:
    """``{"<file>:<line>" or "<file>": reason}`` of what the reader reported, file names relative to ``root``."""
    result = read_detection_folder(root, "auto", **kwargs)
    return {str(Path(bad.path).relative_to(root)): bad.reason for bad in result.problems}


# --------------------------------------------------------------------------- layouts and data.yaml


def test_flat_layout_pixels_negatives_and_yaml_name_order(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    _sample(images, labels, "two", ["0 0.5 0.5 0.25 0.5", "1 0.125 0.25 0.25 0.5"], size=(80, 40))
    _sample(images, labels, "tall", ["1 0.5 0.25 0.5 0.1"], size=(30, 60), extension=".jpg")
    _sample(images, labels, "empty", [])  # an empty label file: a negative
    _sample(images, labels, "unlabelled", None)  # no label file: a negative too
    (tmp_path / "data.yaml").write_text("names: [zebra, apple]\nnc: 2\n")
    assert detect_layout(tmp_path) == "yolo" and resolve_format(tmp_path, "yolo") == "yolo"
    data = _load(train_dir=str(tmp_path), train_val_split=0.25)
    assert data.id2label == {0: "zebra", 1: "apple"}, "the ids of data.yaml, not alphabetical order"
    rows = _rows(data)
    assert set(rows) == {"two", "tall", "empty", "unlabelled"}
    assert (rows["two"]["width"], rows["two"]["height"]) == (80, 40)
    assert rows["two"]["objects"]["bbox"] == [[30.0, 10.0, 20.0, 20.0], [0.0, 0.0, 20.0, 20.0]]
    assert rows["two"]["objects"]["category"] == [0, 1]
    np.testing.assert_allclose(rows["tall"]["objects"]["bbox"], [[7.5, 12.0, 15.0, 6.0]], atol=1e-5,
                               err_msg="x by the width, y by the height")
    assert rows["empty"]["objects"]["bbox"] == [] and rows["unlabelled"]["objects"]["bbox"] == []
    assert data.summary["skipped_files"] == []
    assert data.summary["reader_counts"] == {"yolo_images_without_label_file": 1}
    assert sum(data.summary[f"{s}_statistics"]["negatives"] for s in ("train", "validation")) == 2


def test_pixels_use_the_upright_size_of_exif_rotated_photos(tmp_path: Path) -> None:
    """Labelling tools and Ultralytics label the image as it is displayed (EXIF orientation applied)."""
    image = PILImage.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # stored 40x20, shown upright as 20x40
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "rotated.jpg", exif=exif)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "rotated.txt").write_text("0 0.5 0.5 0.5 0.25\n")
    rows = read_detection_folder(tmp_path).splits["train"]
    assert (rows[0]["width"], rows[0]["height"]) == (20, 40)
    assert rows[0]["objects"]["bbox"] == [[5.0, 15.0, 10.0, 10.0]]
    checked, report = check_split(rows_to_dataset(rows), ["0"], "train")
    assert checked[0]["objects"]["bbox"] == [[5.0, 15.0, 10.0, 10.0]] and not report.size_mismatches


@pytest.mark.parametrize(
    ("yaml_text", "names"),
    [
        ("names:\n  0: person\n  1: bicycle\n  2: car\n", ["person", "bicycle", "car"]),
        ("names: {'0': person, '2': car, '1': bicycle}\n", ["person", "bicycle", "car"]),
        ("nc: 3\n", ["class_0", "class_1", "class_2"]),
        ("names: [person, bicycle, car]\n", ["person", "bicycle", "car"]),
    ],
    ids=["mapping", "string-keys-unordered", "nc-only", "list"],
)
def test_data_yaml_names(tmp_path: Path, yaml_text: str, names: list[str]) -> None:
    _sample(tmp_path / "images", tmp_path / "labels", "a", ["2 0.5 0.5 0.5 0.5", "0 0.2 0.2 0.1 0.1"])
    _sample(tmp_path / "images", tmp_path / "labels", "b", ["1 0.5 0.5 0.5 0.5"])
    (tmp_path / "data.yaml").write_text(yaml_text)
    data = _load(train_dir=str(tmp_path), train_val_split=0.5)
    assert list(data.id2label.values()) == names
    assert _rows(data)["a"]["objects"]["category"] == [2, 0]


def test_classes_txt_names_label_studio_export(tmp_path: Path) -> None:
    """Label Studio's YOLO export: images/, labels/ and classes.txt (no data.yaml)."""
    _sample(tmp_path / "images", tmp_path / "labels", "a", ["1 0.5 0.5 0.5 0.5"])
    (tmp_path / "classes.txt").write_text("Airplane\nCar\n")
    (tmp_path / "notes.json").write_text(json.dumps({"categories": [{"id": 0, "name": "Airplane"}], "info": {}}))
    assert detect_layout(tmp_path) == "yolo"
    result = read_detection_folder(tmp_path)
    assert result.declared_names == ["Airplane", "Car"]
    assert result.splits["train"][0]["objects"]["category"] == ["Car"]


def test_class_names_name_the_ids_when_the_folder_has_no_names(tmp_path: Path) -> None:
    _sample(tmp_path / "images", tmp_path / "labels", "a", ["1 0.5 0.5 0.5 0.5"])
    _sample(tmp_path / "images", tmp_path / "labels", "b", ["0 0.5 0.5 0.5 0.5", "2 0.5 0.5 0.5 0.5"])
    result = read_detection_folder(tmp_path, class_names=["cat", "dog"])
    assert [row["objects"]["category"] for row in result.splits["train"]] == [["dog"]]
    assert [(Path(b.path).name, b.reason) for b in result.problems] == [
        ("b.txt:2", "class id 2 is not in the names of `class_names` (0: cat, 1: dog)")]
    without = read_detection_folder(tmp_path)
    assert [row["objects"]["category"] for row in without.splits["train"]] == [["1"], ["0", "2"]]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("names: [a, b]\nnc: 3\n", r"nc: 3.*names.*2 entries"),
        ("names: {zero: a}\n", r"not an id"),
        ("names: a\n", r"must be a list"),
        ("names: [a, a]\n", r"repeats \['a'\]"),
        ("names: [a\n", r"Cannot read the YOLO dataset file .*data\.yaml"),
        ("- a\n- b\n", r"must be a YAML mapping"),
        ("names: [a]\nkpt_shape: [17]\n", r"kpt_shape"),
    ],
)
def test_malformed_data_yaml_stops_naming_it(tmp_path: Path, yaml_text: str, message: str) -> None:
    _sample(tmp_path / "images", tmp_path / "labels", "a", ["0 0.5 0.5 0.5 0.5"])
    (tmp_path / "data.yaml").write_text(yaml_text)
    with pytest.raises(RecipeError, match=message):
        _load(train_dir=str(tmp_path))


def test_ultralytics_split_folders(tmp_path: Path) -> None:
    """images/{train,val,test}/ + labels/{train,val,test}/ (Ultralytics, CVAT's Ultralytics export)."""
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(count):
            _sample(tmp_path / "images" / split, tmp_path / "labels" / split, f"{split}{i}", ["0 0.5 0.5 0.5 0.5"])
    (tmp_path / "data.yaml").write_text("names: [plate]\n")
    data = _load(train_dir=str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (3, 2, 1)
    assert sorted(Path(p["path"]).stem for p in data.validation["image"]) == ["val0", "val1"]


def test_roboflow_export_with_relative_yaml_paths(tmp_path: Path) -> None:
    """Roboflow writes `train: ../train/images` in data.yaml beside train/, valid/, test/: read from the root."""
    for split, count in (("train", 3), ("valid", 2), ("test", 1)):
        for i in range(count):
            _sample(tmp_path / split / "images", tmp_path / split / "labels", f"{split}{i}", ["0 0.5 0.5 0.5 0.5"])
    (tmp_path / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 1\nnames: ['plate']\n")
    assert detect_layout(tmp_path) == "yolo"
    data = _load(train_dir=str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (3, 2, 1)
    assert data.id2label == {0: "plate"}
    # the same export without data.yaml: the split folders are found on disk
    (tmp_path / "data.yaml").unlink()
    data = _load(train_dir=str(tmp_path), class_names=["plate"])
    assert (len(data.train), len(data.validation), len(data.test)) == (3, 2, 1)
    # one split folder as validation_dir: the class names come from the data.yaml one level up
    (tmp_path / "data.yaml").write_text("names: ['plate']\n")
    data = _load(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "valid"))
    assert (len(data.train), len(data.validation)) == (3, 2) and data.id2label == {0: "plate"}


def test_yaml_split_paths_relative_to_its_path_key_and_image_lists(tmp_path: Path) -> None:
    """`path:` (relative to the yaml file) is the base of the split paths; a split may be a .txt image list."""
    base = tmp_path / "dataset"
    for i in range(4):
        _sample(base / "images" / "all", base / "labels" / "all", f"img{i}", [f"{i % 2} 0.5 0.5 0.5 0.5"])
    (base / "train.txt").write_text("./images/all/img0.png\n./images/all/img1.png\nimages/all/img2.png\n")
    (base / "val.txt").write_text("./images/all/img3.png\n")
    (tmp_path / "data.yaml").write_text("path: dataset\ntrain: train.txt\nval: [val.txt]\nnames: {0: a, 1: b}\n")
    data = _load(train_dir=str(tmp_path))
    assert sorted(Path(p["path"]).stem for p in data.train["image"]) == ["img0", "img1", "img2"]
    assert [Path(p["path"]).stem for p in data.validation["image"]] == ["img3"]
    assert _rows(data)["img3"]["objects"]["category"] == [1]
    # a `path:` that is not a folder here (written on another machine): the split paths are read from the yaml's
    (tmp_path / "data.yaml").write_text(
        "path: /content/datasets/elsewhere\ntrain: dataset/images/all\nnames: {0: a, 1: b}\n")
    data = _load(train_dir=str(tmp_path), train_val_split=0.25)
    assert len(data.train) + len(data.validation) == 4


def test_missing_or_escaping_split_paths_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _sample(root / "images" / "train", root / "labels" / "train", "a", ["0 0.5 0.5 0.5 0.5"])
    _image(tmp_path / "outside.png")
    (root / "list.txt").write_text("../outside.png\nimages/train/nothere.png\nimages/train/a.png\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\ntest: list.txt\nnames: [x]\n")
    problems = _problems(root)
    assert set(problems) == {"data.yaml", "list.txt:1", "list.txt:2"}
    assert "not found" in problems["data.yaml"] and "images/val" in problems["data.yaml"]
    assert "outside the data root" in problems["list.txt:1"]
    assert "not found" in problems["list.txt:2"]
    assert len(read_detection_folder(root).splits["test"]) == 1


# --------------------------------------------------------------------------- bad inputs, named by file and line


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        (["0 0.5 0.5 0.2 0.2", "0 0.5 zero 0.2 0.2"], 2, r"cannot parse `0 0.5 zero 0.2 0.2`"),
        (["0 0.5 0.5 0.2"], 1, r"expected 5 numbers .* found 4"),
        (["0 0.5 0.5 0.2 0.2", "", "0 0.5 0.5 0.2 0.2 0.93"], 3, r"found 6 \(class, box and a confidence"),
        (["-1 0.5 0.5 0.2 0.2"], 1, r"class id `-1` is not a non-negative integer"),
        (["1.5 0.5 0.5 0.2 0.2"], 1, r"class id `1.5`"),
        (["0 0.5 nan 0.2 0.2"], 1, r"non-finite"),
        (["0 0.5 0.5 0.2 0.2", "1 0.5 0.5 0.2 0.2", "2 0.5 0.5 0.2 0.2"], 3,
         r"class id 2 is not in the names of data\.yaml \(0: car, 1: bus\)"),
    ],
    ids=["not-a-number", "too-few", "confidence", "negative-class", "fractional-class", "nan", "unknown-class"],
)
def test_bad_label_lines_skip_the_image_naming_file_and_line(
    tmp_path: Path, lines: list[str], line: int, reason: str
) -> None:
    _sample(tmp_path / "images", tmp_path / "labels", "good", ["1 0.5 0.5 0.2 0.2"])
    _sample(tmp_path / "images", tmp_path / "labels", "bad", lines)
    (tmp_path / "data.yaml").write_text("names: [car, bus]\n")
    problems = _problems(tmp_path)
    assert list(problems) == [f"labels/bad.txt:{line}"]
    assert re.search(reason, problems[f"labels/bad.txt:{line}"])
    data = _load(train_dir=str(tmp_path), validation_dir=str(tmp_path))
    assert set(_rows(data)) == {"good"}, "the image of a broken label file is skipped, not kept as a negative"
    assert data.summary["skipped_files"][0]["path"].endswith(f"bad.txt:{line}")
    with pytest.raises(RecipeError, match=rf"strict mode[\s\S]*labels/bad\.txt:{line}: "):
        _load(train_dir=str(tmp_path), strict=True)


def test_label_file_without_image_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for split in ("train", "val"):
        _sample(tmp_path / "images" / split, tmp_path / "labels" / split, f"{split}_ok", ["0 0.5 0.5 0.5 0.5"])
    (tmp_path / "labels" / "val" / "lost.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "labels" / "val" / "classes.txt").write_text("plate\n")  # labelImg writes it there: not a label
    (tmp_path / "labels" / "train.cache").write_bytes(b"\x00")  # Ultralytics' cache: not a label
    problems = _problems(tmp_path)
    assert list(problems) == ["labels/val/lost.txt"]
    assert "label file without an image" in problems["labels/val/lost.txt"]
    assert "images/val" in problems["labels/val/lost.txt"]
    with caplog.at_level(logging.WARNING, logger="recipes"):
        data = _load(train_dir=str(tmp_path))
    assert len(data.train) == len(data.validation) == 1
    assert any("lost.txt" in record.getMessage() for record in caplog.records)
    with pytest.raises(RecipeError, match=r"lost\.txt: label file without an image"):
        _load(train_dir=str(tmp_path), strict=True)


def test_boxes_outside_the_image_are_clipped_counted_and_logged_by_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [
        "0 0.9 0.5 0.4 0.5",  # right half past the edge: clipped (its numbers are in [0, 1]: not logged)
        "0 1.5 0.5 0.2 0.2",  # entirely outside: dropped
        "0 40 20 16 8",  # pixel coordinates instead of fractions: outside, dropped
        "0 0.5 0.5 0 0.2",  # zero width: dropped as degenerate
        "0 0.25 0.5 0.5 0.5",  # fine
    ]
    _sample(tmp_path / "images", tmp_path / "labels", "edges", lines, size=(80, 40))
    _sample(tmp_path / "images", tmp_path / "labels", "other", ["0 0.5 0.5 0.5 0.5"])
    with caplog.at_level(logging.WARNING, logger="recipes"):
        data = _load(train_dir=str(tmp_path), train_val_split=0.5)
    assert _rows(data)["edges"]["objects"]["bbox"] == [[56.0, 10.0, 24.0, 20.0], [0.0, 10.0, 40.0, 20.0]]
    checks = {k: sum(c.get(k, 0) for c in data.summary["checks"].values())
              for k in ("clipped_boxes", "dropped_outside_boxes", "dropped_degenerate_boxes")}
    assert checks == {"clipped_boxes": 1, "dropped_outside_boxes": 2, "dropped_degenerate_boxes": 1}
    assert data.summary["reader_counts"]["yolo_lines_outside_0_1"] == 2
    logged = " ".join(r.getMessage() for r in caplog.records if "outside [0, 1]" in r.getMessage())
    assert "edges.txt:2" in logged and "edges.txt:3" in logged and "edges.txt:1" not in logged


def test_segmentation_polygons_become_their_bounding_boxes(tmp_path: Path) -> None:
    """Ultralytics segmentation labels (class x1 y1 x2 y2 ...; OBB exports are 4-point polygons) train the
    detector with the polygon's bounding box, as Ultralytics does for detection."""
    lines = ["1 0.1 0.2 0.6 0.25 0.5 0.8 0.2 0.7", "0 0.5 0.5 0.25 0.5", "0 0.2 0.2 0.4 0.3 0.3 0.6"]
    _sample(tmp_path / "images", tmp_path / "labels", "poly", lines, size=(100, 50))
    result = read_detection_folder(tmp_path, "yolo", class_names=["a", "b"])
    row = result.splits["train"][0]
    np.testing.assert_allclose(row["objects"]["bbox"], [[10.0, 10.0, 50.0, 30.0], [37.5, 12.5, 25.0, 25.0],
                                                        [20.0, 10.0, 20.0, 20.0]], atol=1e-9)
    assert row["objects"]["category"] == ["b", "a", "a"]
    assert result.counts["yolo_polygons_as_boxes"] == 2


def test_pose_labels_use_the_box_and_ignore_the_keypoints(tmp_path: Path) -> None:
    """With `kpt_shape: [2, 3]` a line is class + box + 6 keypoint numbers (7 numbers would read as a polygon)."""
    _sample(tmp_path / "images", tmp_path / "labels", "pose", ["0 0.5 0.5 0.5 0.5 0.1 0.1 2 0.9 0.9 1"], (40, 40))
    _sample(tmp_path / "images", tmp_path / "labels", "short", ["0 0.5 0.5 0.5 0.5 0.1 0.1 2"], (40, 40))
    (tmp_path / "data.yaml").write_text("names: [person]\nkpt_shape: [2, 3]\n")
    result = read_detection_folder(tmp_path)
    assert [r["objects"]["bbox"] for r in result.splits["train"]] == [[[10.0, 10.0, 20.0, 20.0]]]
    assert [Path(b.path).name for b in result.problems] == ["short.txt:1"]
    assert result.problems[0].reason.startswith("expected 11 numbers (class, cx, cy, w, h and 6 keypoint numbers")


def test_unreadable_image_is_skipped_by_the_common_checks(tmp_path: Path) -> None:
    for stem in ("good", "good2", "good3"):
        _sample(tmp_path / "images", tmp_path / "labels", stem, ["0 0.5 0.5 0.5 0.5"])
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (tmp_path / "labels" / "corrupt.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    data = _load(train_dir=str(tmp_path), train_val_split=0.5, class_names=["plate"])
    assert set(_rows(data)) == {"good", "good2", "good3"}
    skipped = {Path(s["path"]).name: s["reason"] for s in data.summary["skipped_files"]}
    assert "cannot read the image" in skipped["corrupt.txt"]


def test_format_forced_and_mismatched(tmp_path: Path) -> None:
    yolo = tmp_path / "yolo"
    _sample(yolo / "images", yolo / "labels", "a", ["0 0.5 0.5 0.5 0.5"])
    assert resolve_format(yolo, "ultralytics") == "yolo"
    with pytest.raises(RecipeError, match=r"dataset_format: voc.*--dataset_format yolo"):
        resolve_format(yolo, "voc")
    voc = tmp_path / "voc"
    _image(voc / "images" / "a.png")
    (voc / "annotations").mkdir()
    (voc / "annotations" / "a.xml").write_text(voc_xml("a.png", 80, 40, [(1, 1, 5, 5)]))
    with pytest.raises(RecipeError, match=r"dataset_format: yolo.*has no YOLO labels.*--dataset_format voc"):
        resolve_format(voc, "yolo")
    only_images = tmp_path / "only_images"
    _image(only_images / "images" / "a.png")
    assert detect_layout(only_images) is None, "images/ without labels/ is no YOLO folder"


# --------------------------------------------------------------------------- real photos: car-plates as YOLO


def _car_plates_as_yolo(root: Path, target: Path, limit: int | None = None) -> list[str]:
    """Write ``root``'s VOC boxes as YOLO labels (10 decimals, normalised by the real image size) beside
    symbolic links to its images; the stems written."""
    (target / "images").mkdir(parents=True)
    (target / "labels").mkdir()
    (target / "data.yaml").write_text("names:\n  0: licence\n")
    stems = sorted(p.stem for p in (root / "annotations").glob("*.xml"))[:limit]
    for stem in stems:
        filename, _, _, boxes, _ = parse_voc_xml(root / "annotations" / f"{stem}.xml")
        image = root / "images" / (filename or f"{stem}.png")
        with PILImage.open(image) as opened:
            width, height = opened.size
        lines = [f"0 {(x + w / 2) / width:.10f} {(y + h / 2) / height:.10f} {w / width:.10f} {h / height:.10f}"
                 for x, y, w, h in boxes]
        (target / "images" / image.name).symlink_to(image)
        (target / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return stems


@pytest.mark.real_data
def test_car_plates_as_yolo_give_the_voc_boxes(tmp_path: Path) -> None:
    root = shared_dataset("car-plates")
    stems = _car_plates_as_yolo(root, tmp_path / "yolo")
    voc, yolo = read_detection_folder(root), read_detection_folder(tmp_path / "yolo")
    assert voc.problems == [] and yolo.problems == []
    checked = {}
    for name, result in (("voc", voc), ("yolo", yolo)):
        dataset, report = check_split(rows_to_dataset(result.splits["train"]), ["licence"], "train")
        assert report.skipped == [] and report.size_mismatches == []
        checked[name] = {Path(row["image"]["path"]).name: row for row in dataset}
    assert len(checked["yolo"]) == len(stems) == 167
    assert checked["yolo"].keys() == checked["voc"].keys()
    boxes = 0
    for image, voc_row in checked["voc"].items():
        yolo_row = checked["yolo"][image]
        assert (yolo_row["width"], yolo_row["height"]) == (voc_row["width"], voc_row["height"])
        assert yolo_row["objects"]["category"] == voc_row["objects"]["category"]
        np.testing.assert_allclose(yolo_row["objects"]["bbox"], voc_row["objects"]["bbox"], rtol=0, atol=0.01,
                                   err_msg=image)
        boxes += len(voc_row["objects"]["bbox"])
    assert boxes == 177, "every plate of the subset (docs/data.md: 177 boxes)"


@pytest.mark.slow
@pytest.mark.real_data
def test_car_plates_as_yolo_train_through_the_cli(tmp_path: Path) -> None:
    root = shared_dataset("car-plates")
    stems = _car_plates_as_yolo(root, tmp_path / "yolo", limit=12)
    output_dir = tmp_path / "run"
    result = run_cli(QUICKSTART, "--train_dir", str(tmp_path / "yolo"), "--output_dir", str(output_dir),
                     "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
                     "--per_device_train_batch_size", "2", "--dataloader_num_workers", "0",
                     "--dataloader_persistent_workers", "false", env={"OMP_NUM_THREADS": "1"})
    assert_ok(result)
    summary = json.loads((output_dir / "run_manifest.json").read_text())["data_summary"]
    assert summary["class_names"] == ["licence"] and summary["skipped_files"] == []
    assert summary["train_examples"] + summary["validation_examples"] == len(stems)
    assert json.loads((output_dir / "config.json").read_text())["id2label"] == {"0": "licence"}
