"""Semantic segmentation: palette and mask readers, layouts, data checks, label semantics, transforms and
the streaming metric (against a straightforward numpy reference). End-to-end runs: test_segmentation_e2e.py."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from transformers import EvalPrediction

from recipes.config import RecipeError
from recipes.parse import parse_recipe
from recipes.sample_data.streets import CLASSES, make_streets_dataset
from recipes.tasks import get_task
from recipes.tasks.segmentation import formats, masks
from recipes.tasks.segmentation.metric import SegmentationMetric, confusion_counts
from recipes.tasks.segmentation.transforms import (
    build_train_augmentation,
    logits_to_class_ids,
    processor_resizes_masks_exactly,
    transform_segmentation_batch,
)
from recipes.transforms import collate_images_and_labels

STREET_NAMES = list(CLASSES)


def _load(tmp_path: Path, *args: str):
    recipe = parse_recipe(["--task", "semantic-segmentation", "--model_type", "segformer",
                           "--output_dir", str(tmp_path / "out"), *args])
    return get_task("semantic-segmentation").load_data(recipe.data, seed=0)


@pytest.fixture(scope="module")
def streets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 small synthetic CamSeq-layout frames."""
    return make_streets_dataset(tmp_path_factory.mktemp("streets"), n_frames=10, seed=3, size=(24, 32))


def _index_folder(root: Path, n: int = 6, layout: str = "folders", values: tuple[int, ...] = (0, 1, 2),
                  size: tuple[int, int] = (12, 16)) -> Path:
    """Index masks: ``images/`` + ``masks/`` (``folders``) or ``<name>_mask.png`` (``side-by-side``).
    Mask column ``x`` holds ``values[x % len(values)]``; the image encodes the value in its red channel."""
    height, width = size
    columns = np.array([values[x % len(values)] for x in range(width)], dtype=np.uint8)
    mask = np.broadcast_to(columns, (height, width)).copy()
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = mask * 40
    for i in range(n):
        if layout == "folders":
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(parents=True, exist_ok=True)
            image_path, mask_path = root / "images" / f"f{i:03d}.jpg", root / "masks" / f"f{i:03d}.png"
        else:
            root.mkdir(parents=True, exist_ok=True)
            image_path, mask_path = root / f"f{i:03d}.png", root / f"f{i:03d}_mask.png"
        Image.fromarray(image).save(image_path)
        Image.fromarray(mask).save(mask_path)
    return root


# ----------------------------------------------------------------------------- palettes


def test_label_colors_txt_with_crlf_and_one_or_two_tabs(tmp_path: Path) -> None:
    path = tmp_path / "label_colors.txt"
    path.write_bytes(b"64 128 64\tAnimal\r\n128 0 0\t\tBuilding\r\n0 0 0\t\tVoid\r\n\r\n")
    palette = formats.read_label_colors(path)
    assert palette.names == ("Animal", "Building", "Void")
    assert palette.colours == ((64, 128, 64), (128, 0, 0), (0, 0, 0))


def test_class_dict_csv_with_stray_spaces_and_no_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "class_dict.csv"
    path.write_text("name,r,g,b\nBicyclist,0,128, 192\nBridge,0, 128, 64\nWall,64, 192, 0")
    palette = formats.read_palette_file(path)
    assert palette.names == ("Bicyclist", "Bridge", "Wall")
    assert palette.colours == ((0, 128, 192), (0, 128, 64), (64, 192, 0))


@pytest.mark.parametrize(("content", "message"), [
    ("128 0\tRoad\r\n", r"line 1: cannot read '128 0\\tRoad'.*R G B<TAB>ClassName"),
    ("1 2 3\tA\n1 2 3\tB\n", r"line 2: colour \(1, 2, 3\) is used by both `A` and `B`"),
    ("300 0 0\tA\n", "outside 0..255"),
])
def test_malformed_palette_names_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "label_colors.txt"
    path.write_text(content)
    with pytest.raises(RecipeError, match=message):
        formats.read_label_colors(path)


def test_colour_lookup_is_vectorised_and_matches_a_per_pixel_loop() -> None:
    rng = np.random.default_rng(0)
    colours = tuple(tuple(int(v) for v in c) for c in rng.integers(0, 256, size=(12, 3)))
    palette = formats.Palette(tuple(f"c{i}" for i in range(12)), colours, "test")
    choice = rng.integers(0, 13, size=(20, 30))  # 12 = a colour outside the palette
    rgb = np.array([*colours, (1, 2, 3)], dtype=np.uint8)[choice]
    indices, _ = formats.colours_to_indices(rgb, palette)
    lookup = {colour: i for i, colour in enumerate(colours)}
    expected = [[lookup.get(tuple(int(v) for v in rgb[y, x]), -1) for x in range(30)] for y in range(20)]
    assert np.array_equal(indices, np.array(expected))


def test_unknown_colours_are_counted_and_named_in_hex() -> None:
    palette = formats.Palette(("a", "b"), ((10, 20, 30), (40, 50, 60)), "test")
    mapping = formats.build_label_mapping(["a", "b"], reduce_labels=False, ignore_labels=[], ignore_index=255,
                                          raw_ignore_value=None)
    rgb = np.array([[[10, 20, 30], [40, 50, 60], [255, 0, 255], [255, 0, 255]]], dtype=np.uint8)
    converted = masks.convert_mask(Image.fromarray(rgb), mapping, palette)
    assert converted.class_ids.tolist() == [[0, 1, 255, 255]]
    assert converted.invalid_pixels == 2 and converted.invalid_examples == ["#ff00ff"]


@pytest.mark.real_data
def test_real_camseq_palette_files_agree() -> None:
    from helpers import shared_dataset

    root = shared_dataset("camseq")
    txt, csv = formats.read_palette_file(root / "label_colors.txt"), formats.read_palette_file(root / "class_dict.csv")
    assert len(txt.names) == 32 and dict(zip(txt.names, txt.colours)) == dict(zip(csv.names, csv.colours))
    assert dict(zip(txt.names, txt.colours))["Void"] == (0, 0, 0)


@pytest.mark.parametrize(("value", "expected"), [
    ({"0": "road", "1": "sky"}, {0: "road", 1: "sky"}),
    (["road", "sky"], {0: "road", 1: "sky"}),
    ('{"1": "sky", "0": "road"}', {0: "road", 1: "sky"}),
])
def test_id2label_from_mapping_list_or_json(value: object, expected: dict) -> None:
    assert formats.parse_id2label(value) == expected


def test_id2label_from_a_file_and_gaps_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "road", "1": "sky"}))
    assert formats.parse_id2label(str(tmp_path / "id2label.json")) == {0: "road", 1: "sky"}
    with pytest.raises(RecipeError, match="without gaps"):
        formats.parse_id2label({0: "road", 2: "sky"})
    with pytest.raises(RecipeError, match="does not exist"):
        formats.parse_id2label(str(tmp_path / "missing.json"))


def test_id2label_json_from_a_hub_dataset_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub) -> None:
    from hub_server import patch_hub_client

    fake_hub.seed("user/streets", {"id2label.json": b'{"0": "road", "1": "sky"}'}, repo_type="dataset")
    patch_hub_client(monkeypatch, fake_hub, tmp_path / "hf")
    assert formats.hub_id2label("user/streets") == {0: "road", 1: "sky"}
    fake_hub.seed("user/no-labels", {"README.md": b"# x"}, repo_type="dataset")
    with pytest.raises(RecipeError, match=r"id2label.json.*user/no-labels.*Set `id2label`"):
        formats.hub_id2label("user/no-labels")


# ----------------------------------------------------------------------------- layouts


def test_camseq_layout_is_detected_and_split_by_time(tmp_path: Path, streets: Path) -> None:
    data = _load(tmp_path, "--train_dir", str(streets), "--train_val_split", "0.3")
    assert list(data.id2label.values()) == STREET_NAMES  # class 0 (Building) kept: no reduce_labels
    assert data.summary["layout"] == "camvid" and data.summary["mask_encoding"] == "colour"
    frames = [Path(r["path"]).name for split in (data.train, data.validation) for r in split["image"]]
    assert frames == sorted(frames)  # the validation frames are the last ones: no leak between neighbours
    assert (len(data.train), len(data.validation)) == (7, 3)
    share = data.summary["train_pixel_share"]
    assert share["Sky"] > 0.05 and share["Road"] > 0.05 and sum(share.values()) == pytest.approx(1.0, abs=1e-4)
    assert data.palette[STREET_NAMES.index("Road")] == (128, 64, 128)


def test_kaggle_camvid_layout_with_labels_folder_and_class_dict(tmp_path: Path, streets: Path) -> None:
    root = tmp_path / "CamVid"
    for split, frames in (("train", range(0, 6)), ("val", range(6, 9))):
        (root / split).mkdir(parents=True)
        (root / f"{split}_labels").mkdir()
        for path in sorted(streets.glob("*_L.png"))[frames.start:frames.stop]:
            stem = path.stem.removesuffix("_L")
            (root / split / f"{stem}.png").write_bytes((streets / f"{stem}.png").read_bytes())
            (root / f"{split}_labels" / path.name).write_bytes(path.read_bytes())
    rows = ["name,r,g,b"] + [f"{name},{r}, {g},{b}" for name, (r, g, b) in CLASSES.items()]
    (root / "class_dict.csv").write_text("\n".join(rows))
    data = _load(tmp_path, "--train_dir", str(root))
    assert (len(data.train), len(data.validation)) == (6, 3)
    assert data.summary["palette_file"].endswith("class_dict.csv")


@pytest.mark.parametrize("layout", ["folders", "side-by-side"])
def test_index_mask_layouts_with_id2label_json(tmp_path: Path, layout: str) -> None:
    root = _index_folder(tmp_path / "data", layout=layout)
    (root / "id2label.json").write_text(json.dumps({"0": "road", "1": "car", "2": "sky"}))
    data = _load(tmp_path, "--train_dir", str(root))
    assert data.id2label == {0: "road", 1: "car", 2: "sky"} and data.summary["mask_encoding"] == "index"
    assert len(data.train) + len(data.validation) == 6


def test_unknown_layout_lists_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "data" / "a.png")
    with pytest.raises(RecipeError, match=r"Cannot tell the segmentation layout.*1 image file\(s\) \(a.png\)"):
        _load(tmp_path, "--train_dir", str(tmp_path / "data"))


def test_dataset_format_that_does_not_match_the_folder(tmp_path: Path, streets: Path) -> None:
    with pytest.raises(RecipeError, match=r"dataset_format `index-masks` expects .* use --dataset_format camvid"):
        _load(tmp_path, "--train_dir", str(streets), "--dataset_format", "index-masks")
    with pytest.raises(RecipeError, match="Unknown dataset_format `coco`"):
        _load(tmp_path, "--train_dir", str(streets), "--dataset_format", "coco")
    data = _load(tmp_path, "--train_dir", str(streets), "--dataset_format", "camseq")  # an alias
    assert data.summary["layout"] == "camvid"


def test_missing_palette_and_missing_class_names_are_clear_errors(tmp_path: Path, streets: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in list(streets.glob("*.png"))[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    with pytest.raises(RecipeError, match=r"no label_colors\.txt or class_dict\.csv.*set `label_colors_file`"):
        _load(tmp_path, "--train_dir", str(folder))
    root = _index_folder(tmp_path / "index")
    with pytest.raises(RecipeError, match="Index masks need class names: set `id2label`"):
        _load(tmp_path, "--train_dir", str(root))


def test_hub_style_dataset_with_annotation_column(tmp_path: Path) -> None:
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    root = _index_folder(tmp_path / "raw", n=5, values=(0, 1, 2, 3))
    rows = {"image": [str(p) for p in sorted((root / "images").iterdir())],
            "annotation": [str(p) for p in sorted((root / "masks").iterdir())]}
    dataset = Dataset.from_dict(rows, features=Features({"image": ImageFeature(), "annotation": ImageFeature()}))
    (tmp_path / "hub" / "data").mkdir(parents=True)
    dataset.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))
    (tmp_path / "hub" / "id2label.json").write_text(json.dumps(["car", "road", "sky"]))  # after reduce_labels
    data = _load(tmp_path, "--dataset_name", str(tmp_path / "hub"), "--reduce_labels", "--train_val_split", "0.4")
    assert data.id2label == {0: "car", 1: "road", 2: "sky"} and data.summary["layout"] == "hub"
    assert (len(data.train), len(data.validation)) == (3, 2)
    assert data.summary["train_pixel_share"]["(ignored)"] == pytest.approx(0.25)  # raw 0 → ignore


# ----------------------------------------------------------------------------- bad input


def _damaged_streets(tmp_path: Path, streets: Path) -> Path:
    root = tmp_path / "damaged"
    root.mkdir()
    for path in streets.iterdir():
        (root / path.name).write_bytes(path.read_bytes())
    frames = sorted(p for p in root.glob("*.png") if not p.stem.endswith("_L"))
    (root / f"{frames[0].stem}_L.png").unlink()  # missing mask
    Image.new("RGB", (8, 8), CLASSES["Road"]).save(root / f"{frames[1].stem}_L.png")  # wrong size
    mask = np.array(Image.open(root / f"{frames[2].stem}_L.png"))
    mask[:2, :5] = (255, 0, 255)  # 10 pixels of a colour missing from label_colors.txt
    Image.fromarray(mask).save(root / f"{frames[2].stem}_L.png")
    return root


def test_bad_pairs_are_skipped_and_unknown_colours_counted(tmp_path: Path, streets: Path) -> None:
    root = _damaged_streets(tmp_path, streets)
    data = _load(tmp_path, "--train_dir", str(root), "--train_val_split", "0.2")
    reasons = {Path(item["path"]).name: item["reason"] for item in data.summary["skipped_files"]}
    assert len(reasons) == 2
    assert any("missing mask" in r and "_L.png" in r for r in reasons.values())
    assert any("is 8x8 but its image is 32x24" in r for r in reasons.values())
    assert len(data.train) + len(data.validation) == 8
    (invalid,) = data.summary["invalid_label_files"]
    assert invalid["pixels"] == 10 and invalid["examples"] == "#ff00ff"
    assert data.summary["train_invalid_label_pixels"] == 10


def test_strict_mode_stops_naming_the_files(tmp_path: Path, streets: Path) -> None:
    root = _damaged_streets(tmp_path, streets)
    with pytest.raises(RecipeError, match=r"(?s)strict mode.*missing mask.*is 8x8.*10 pixel\(s\).*#ff00ff"):
        _load(tmp_path, "--train_dir", str(root), "--strict", "--train_val_split", "0.2")


def test_out_of_range_indices_are_counted_or_stop_a_strict_run(tmp_path: Path) -> None:
    root = _index_folder(tmp_path / "data", values=(0, 1, 2, 7))
    labels = ["road", "car", "sky"]
    data = _load(tmp_path, "--train_dir", str(root), "--id2label", json.dumps(labels))
    assert data.summary["invalid_label_files"][0]["examples"] == "7"
    with pytest.raises(RecipeError, match=r"f000.jpg: 48 pixel\(s\).*out-of-range class ids \(7\)"):
        _load(tmp_path, "--train_dir", str(root), "--id2label", json.dumps(labels), "--strict")


def test_colour_masks_in_an_index_layout_are_reported(tmp_path: Path, streets: Path) -> None:
    root = tmp_path / "data"
    for i, path in enumerate(sorted(streets.glob("*_L.png"))[:3]):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        (root / "masks" / f"{i}.png").write_bytes(path.read_bytes())
        (root / "images" / f"{i}.png").write_bytes((streets / path.name.replace("_L", "")).read_bytes())
    with pytest.raises(RecipeError, match=r"RGB colour mask, not a class-index mask.*label_colors_file"):
        _load(tmp_path, "--train_dir", str(root), "--id2label", '["a", "b"]', "--strict")


# ----------------------------------------------------------------------------- label semantics


def test_reduce_labels_and_ignore_index_are_explicit(tmp_path: Path) -> None:
    root = _index_folder(tmp_path / "data", values=(0, 1, 2, 3, 255))
    names = json.dumps(["road", "car", "sky"])
    kept = _load(tmp_path, "--train_dir", str(root), "--id2label", json.dumps(["bg", "road", "car", "sky"]))
    assert kept.id2label[0] == "bg"  # without reduce_labels, class 0 is a class like any other
    assert kept.summary["invalid_label_files"] == []  # 255 is the ignore_index: already ignored, not invalid
    reduced = _load(tmp_path, "--train_dir", str(root), "--id2label", names, "--reduce_labels",
                    "--ignore_index", "-100")
    assert reduced.id2label == {0: "road", 1: "car", 2: "sky"} and reduced.summary["reduce_labels"] is True
    transform = partial(transform_segmentation_batch, image_column="image", augment=lambda i, m: (i, m),
                        stored_ignore=reduced.stored_ignore, ignore_index=-100)
    labels = transform(reduced.train[:1])["labels"][0]
    assert labels.dtype == torch.int64
    assert labels[0, :6].tolist() == [-100, 0, 1, 2, -100, -100]  # 0 → ignore, v → v-1, 255 → ignore


def test_ignore_labels_and_bad_ignore_index(tmp_path: Path, streets: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _load(tmp_path, "--train_dir", str(streets), "--ignore_labels", "Void", "Sky")
    assert "Void" not in data.id2label.values() and "Sky" not in data.id2label.values()
    assert data.summary["ignored_classes"] == ["Sky", "Void"]
    # A recipe's ignore_labels that this data lacks (e.g. [Void] on another dataset) is reported, not fatal.
    with caplog.at_level("WARNING", logger="recipes"):
        data = _load(tmp_path, "--train_dir", str(streets), "--ignore_labels", "Voids")
    assert "`ignore_labels` ['Voids'] are not classes of this data" in caplog.text
    assert "Void" in data.id2label.values()
    with pytest.raises(RecipeError, match="ignore_index 3 is the id of class `LaneMkgsDriv`"):
        _load(tmp_path, "--train_dir", str(streets), "--ignore_index", "3")


# ----------------------------------------------------------------------------- transforms


def _striped_pair(height: int = 40, width: int = 60) -> tuple[Image.Image, dict]:
    """Dark grey image columns are class 0, light grey ones class 1 (period 10 px): grey survives the colour
    jitters (hue, saturation, greyscale) and brightness/contrast keep the order; the mask as a record."""
    classes = (np.arange(width) // 10) % 2
    mask = np.broadcast_to(classes, (height, width)).astype(np.uint8)
    grey = np.array([[40, 40, 40], [210, 210, 210]], dtype=np.uint8)[mask]
    return Image.fromarray(grey), {"bytes": masks.encode_class_ids(mask), "path": None}


@pytest.mark.parametrize("preset", ["basic", "strong"])
def test_augmentations_keep_the_mask_aligned_with_the_image(preset: str) -> None:
    image, mask = _striped_pair()
    augment = build_train_augmentation(preset, 32, 32, mask_fill=255)
    transform = partial(transform_segmentation_batch, image_column="image", augment=augment, stored_ignore=255,
                        ignore_index=255)
    torch.manual_seed(0)
    padded = 0
    for _ in range(16):
        out = transform({"image": [image], "mask": [mask]})
        pixels, labels = out["pixel_values"][0], out["labels"][0]
        assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.uint8 and labels.shape == (32, 32)
        assert set(labels.unique().tolist()) <= {0, 1, 255}
        labelled = labels != 255
        brightness = pixels.float().mean(0)[labelled]
        looks_light = brightness > (brightness.max() + brightness.min()) / 2
        if (labels[labelled] == 1).any() and (labels[labelled] == 0).any():
            agreement = (looks_light == (labels[labelled] == 1)).float().mean()
            assert agreement > 0.85  # only pixels on stripe borders may disagree (interpolation, blur)
        padded += int((~labelled).any())
    assert padded  # scaled below the crop size at least once: the padding is ignore_index


def test_horizontal_flip_moves_image_and_mask_together() -> None:
    image, mask = _striped_pair(8, 30)
    flip = v2.Compose([v2.RandomHorizontalFlip(p=1.0)])
    out = transform_segmentation_batch({"image": [image], "mask": [mask]}, image_column="image", augment=flip,
                                       processor=None, masks_through_processor=False, stored_ignore=255,
                                       ignore_index=255)
    original = masks.decode_class_ids(mask)
    assert np.array_equal(out["labels"][0].numpy(), original[:, ::-1])
    assert np.array_equal(out["pixel_values"][0].permute(1, 2, 0).numpy(), np.asarray(image)[:, ::-1])


def test_eval_transform_and_collate_match_the_image_processor() -> None:
    from transformers import SegformerImageProcessor

    processor = SegformerImageProcessor(size={"height": 32, "width": 48})
    image, mask = _striped_pair(32, 48)
    transform = partial(transform_segmentation_batch, image_column="image", augment=None, processor=processor,
                        masks_through_processor=processor_resizes_masks_exactly(processor), stored_ignore=255,
                        ignore_index=255)
    out = transform({"image": [image], "mask": [mask]})
    batch = collate_images_and_labels([{"pixel_values": out["pixel_values"][0], "labels": out["labels"][0]}],
                                      processor=processor)
    expected = processor(image, return_tensors="pt")["pixel_values"]
    assert batch["pixel_values"].shape == (1, 3, 32, 48) and batch["labels"].shape == (1, 32, 48)
    assert torch.allclose(batch["pixel_values"], expected, atol=1e-5)
    resized = transform({"image": [image.resize((96, 64))], "mask": [mask]})  # mask size differs: still 32x48
    assert resized["labels"][0].shape == (32, 48)


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(RecipeError, match="Unknown augmentation preset `fancy` for semantic-segmentation"):
        build_train_augmentation("fancy", 8, 8, mask_fill=255)


# ----------------------------------------------------------------------------- metrics


def _reference_scores(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Per-class intersection / union over all labelled pixels, written out plainly."""
    valid = (labels >= 0) & (labels < num_classes)
    ious, accuracies, per_class = [], [], {}
    for c in range(num_classes):
        intersection = np.sum((predictions == c) & (labels == c) & valid)
        union = np.sum(((predictions == c) | (labels == c)) & valid)
        truth = np.sum((labels == c) & valid)
        per_class[c] = (intersection / union if union else None, intersection / truth if truth else None)
        if union:
            ious.append(intersection / union)
        if truth:
            accuracies.append(intersection / truth)
    return {"mean_iou": np.mean(ious), "mean_accuracy": np.mean(accuracies),
            "overall_accuracy": np.sum((predictions == labels) & valid) / valid.sum(), "per_class": per_class}


def test_streaming_metric_matches_the_reference() -> None:
    rng = np.random.default_rng(0)
    num_classes, images = 6, 23
    labels = rng.integers(0, 4, size=(images, 9, 11))  # classes 4 and 5 never in the ground truth
    labels[rng.random(labels.shape) < 0.1] = 255  # ignore_index
    labels[0, 0, :] = -100  # accelerate's padding value
    predictions = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 5, size=labels.shape))
    predictions = np.clip(predictions, 0, 4)  # class 4 predicted (IoU 0), class 5 absent everywhere
    metric = SegmentationMetric({i: f"c{i}" for i in range(num_classes)})
    for start in range(0, images, 5):  # uneven batches
        batch = slice(start, start + 5)
        class_ids = torch.as_tensor(predictions[batch]).to(torch.uint8)  # as logits_to_class_ids returns them
        out = metric(EvalPrediction(class_ids, torch.as_tensor(labels[batch])), compute_result=start + 5 >= images)
    expected = _reference_scores(predictions, labels, num_classes)
    assert out["samples"] == images
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert out[key] == pytest.approx(expected[key], abs=1e-12)
    per_class = metric.details["per_class"]
    for c, (iou, accuracy) in expected["per_class"].items():
        assert per_class[f"c{c}"]["iou"] == (None if iou is None else pytest.approx(iou))
        assert per_class[f"c{c}"]["accuracy"] == (None if accuracy is None else pytest.approx(accuracy))
    assert per_class["c5"]["iou"] is None and per_class["c4"]["iou"] == 0.0
    assert all(np.isfinite(v) for v in out.values())


def test_metric_resets_and_handles_an_all_ignored_set() -> None:
    metric = SegmentationMetric({0: "a", 1: "b"})
    metric(EvalPrediction(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3)), compute_result=True)
    out = metric(EvalPrediction(torch.zeros(1, 3, 3), torch.full((1, 3, 3), 255)), compute_result=True)
    assert out == {"mean_iou": 0.0, "mean_accuracy": 0.0, "overall_accuracy": 0.0, "samples": 1}


def test_logits_are_upsampled_to_the_label_size_then_reduced() -> None:
    logits = torch.randn(3, 5, 4, 6)
    labels = torch.zeros(3, 16, 24, dtype=torch.long)
    class_ids = logits_to_class_ids((logits,), labels)
    expected = torch.nn.functional.interpolate(logits, size=(16, 24), mode="bilinear", align_corners=False).argmax(1)
    assert class_ids.shape == (3, 16, 24) and class_ids.dtype == torch.uint8
    assert torch.equal(class_ids.long(), expected)
    counts = confusion_counts(class_ids, labels, 5)
    assert counts.sum() == 3 * 16 * 24 and counts[1:].sum() == 0


# ----------------------------------------------------------------------------- models and recipes


def test_second_architecture_upernet_with_the_ignore_index(tmp_path: Path, streets: Path) -> None:
    from recipes.model.build import build_image_processor

    backbone = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 16], "depths": [1, 1, 1, 1],
                "out_features": ["stage1", "stage2", "stage3", "stage4"]}
    overrides = json.dumps({"backbone_config": backbone, "hidden_size": 16, "auxiliary_channels": 8})
    recipe = parse_recipe(["--task", "semantic-segmentation", "--model_type", "upernet",
                           "--config_overrides", overrides,
                           "--image_processor_overrides", '{"size": {"height": 32, "width": 32}}',
                           "--train_dir", str(streets), "--ignore_index", "-100", "--output_dir", str(tmp_path)])
    task = get_task("semantic-segmentation")
    data = task.load_data(recipe.data, seed=0)
    processor = build_image_processor(recipe.model, task.image_processor_kwargs(recipe.data))
    model = task.build_model(recipe.model, data).model
    assert type(model).__name__ == "UperNetForSemanticSegmentation" and model.config.loss_ignore_index == -100
    _, eval_transform = task.transforms(processor, recipe.data, data)
    batch = task.collator(processor, data)([data.validation.with_transform(eval_transform)[i] for i in range(2)])
    outputs = model(**batch)
    assert torch.isfinite(outputs.loss) and outputs.logits.shape == (2, len(data.id2label), 32, 32)


def test_camseq_segformer_recipe_follows_the_segformer_recipe() -> None:
    recipe = parse_recipe(["configs/camseq-segformer.yaml"])
    args = recipe.training
    assert recipe.model.model_name_or_path == "nvidia/mit-b0" and recipe.run.task == "semantic-segmentation"
    assert args.learning_rate == 6e-5 and args.lr_scheduler_type.value == "polynomial"
    assert args.optim.value == "adamw_torch" and args.batch_eval_metrics and args.metric_for_best_model == "mean_iou"
    assert recipe.data.train_dir == "data/camseq01" and recipe.data.ignore_labels == ["Void"]  # documented download
    assert recipe.data.reduce_labels is False and recipe.data.ignore_index == 255
