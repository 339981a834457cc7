"""The demo mode's predictions equal ``transformers.pipeline()`` on a saved model of every task (tiny models from
the quickstart recipes); drawing, legend, palette and examples; command-line errors. The browser test is
tests/test_demo_browser.py."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features, Image
from PIL import Image as PILImage
from transformers import pipeline

from recipes.artifacts.examples import save_examples
from recipes.cli import main as cli_main
from recipes.draw.render import blend_mask, class_palette, legend_html, mask_legend
from recipes.model.build import build_image_processor
from recipes.modes.demo import example_images, make_predictor
from recipes.modes.loading import load_fine_tuned
from recipes.parse import parse_recipe
from recipes.tasks import get_task
from recipes.tasks.segmentation.data import SegmentationData

RECIPES = {
    "image-classification": "configs/quickstart/classification.yaml",
    "object-detection": "configs/quickstart/detection.yaml",
    "image-segmentation": "configs/quickstart/segmentation.yaml",
}
NAMES = {0: "alpha", 1: "beta", 2: "gamma"}


def _save_tiny_model(recipe_path: str, folder: Path) -> Path:
    recipe = parse_recipe([recipe_path, "--output_dir", str(folder)])
    task = get_task(recipe.run.task)
    # SegmentationData is TaskData plus the ignore_index that segmentation configs need.
    data = SegmentationData(train=None, validation=None, id2label=NAMES)  # type: ignore[arg-type]
    task.build_model(recipe.model, data).model.save_pretrained(folder)
    build_image_processor(recipe.model, task.image_processor_kwargs(recipe.data)).save_pretrained(folder)
    return folder


def _photo(seed: int = 0, size: tuple[int, int] = (80, 60)) -> PILImage.Image:
    return PILImage.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("pipeline_task", list(RECIPES))
def test_predictions_equal_the_transformers_pipeline(pipeline_task: str, tmp_path: Path) -> None:
    folder = _save_tiny_model(RECIPES[pipeline_task], tmp_path / "model")
    fine_tuned = load_fine_tuned(str(folder), device="cpu")
    assert fine_tuned.task.pipeline_tag == pipeline_task
    predict, reference, image = make_predictor(fine_tuned), pipeline(pipeline_task, model=str(folder)), _photo()
    if pipeline_task == "image-classification":
        scores = predict(image)
        expected = {found["label"]: found["score"] for found in reference(image, top_k=3)}
        assert scores.keys() == expected.keys() and np.allclose(list(scores.values()), list(expected.values()))
    elif pipeline_task == "object-detection":
        drawn, rows = predict(image, 0.0)
        expected = reference(image, threshold=0.0)
        assert drawn.size == image.size and len(rows) == len(expected) > 0
        assert sorted(row[0] for row in rows) == sorted(found["label"] for found in expected)
        assert not np.array_equal(np.asarray(drawn), np.asarray(image))  # boxes were drawn
    else:
        overlay, legend = predict(image)
        assert overlay.size == image.size
        for found in reference(image):
            assert f">{found['label']} <small>" in legend


def test_segmentation_overlay_and_legend() -> None:
    image = PILImage.new("RGB", (4, 2), (100, 100, 100))
    label_map = np.array([[0, 0, 0, 2], [0, 0, 2, 2]])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    overlay, legend = blend_mask(image, label_map, colours, opacity=0.5), mask_legend(label_map, colours, NAMES)
    pixels = np.asarray(overlay)
    assert pixels[0, 0].tolist() == [178, 50, 50] and pixels[0, 3].tolist() == [50, 50, 178]
    assert legend == [("alpha", (255, 0, 0), 0.625), ("gamma", (0, 0, 255), 0.375)]  # largest first, beta absent
    html = legend_html(legend)
    assert "rgb(255, 0, 0)" in html and "alpha <small>62.5%</small>" in html and "beta" not in html


def test_palette_from_palette_json_else_distinct_colours(tmp_path: Path) -> None:
    (tmp_path / "palette.json").write_text(json.dumps({"0": [128, 64, 128], "1": [0, 0, 192]}))
    assert class_palette(tmp_path, 2).tolist() == [[128, 64, 128], [0, 0, 192]]
    fallback = class_palette(None, 12)
    assert fallback.shape == (12, 3) and len({tuple(c) for c in fallback}) == 12


def test_examples_are_a_few_small_validation_images(tmp_path: Path) -> None:
    paths = []
    for i in range(7):
        paths.append(str(tmp_path / f"photo{i}.png"))
        _photo(i, size=(900, 300)).save(paths[-1])
    dataset = Dataset.from_dict({"pixels": paths}, features=Features({"pixels": Image(decode=False)}))
    out = tmp_path / "out"
    (out / "examples").mkdir(parents=True)
    (out / "examples" / "example_9.jpg").write_bytes(b"stale")
    written = save_examples(dataset, out, column="image", count=3, max_side=384)
    assert [p.name for p in written] == ["example_1.jpg", "example_2.jpg", "example_3.jpg"]
    assert example_images(out) == [str(p) for p in written]  # the stale file of an earlier run is gone
    assert all(PILImage.open(p).size == (384, 128) for p in written)
    # spread over the split: the first, middle and last image
    firsts = [np.asarray(PILImage.open(p), dtype=float).mean() for p in written]
    sources = [np.asarray(_photo(i, size=(900, 300)).resize((384, 128)), dtype=float).mean() for i in (0, 3, 6)]
    assert np.allclose(firsts, sources, atol=2)
    assert save_examples(None, out) == [] and example_images(out) == []


def test_demo_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    assert cli_main(["demo", str(tmp_path / "data")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["demo", str(tmp_path / "data"), "--threshold", "3"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_gradio_app_builds_with_examples(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason='the demo extra is not installed (pip install -e ".[demo]")')
    from recipes.modes.demo import build_app

    folder = _save_tiny_model(RECIPES["object-detection"], tmp_path / "model")
    (folder / "examples").mkdir()
    _photo().save(folder / "examples" / "example_1.jpg")
    app = build_app(load_fine_tuned(str(folder), device="cpu"), threshold=0.3)
    config = app.get_config_file()
    types = [component["type"] for component in config["components"]]
    assert {"image", "slider", "dataframe", "dataset"} <= set(types)
    slider = next(c for c in config["components"] if c["type"] == "slider")
    assert slider["props"]["value"] == 0.3


@pytest.mark.parametrize("pipeline_task", ["object-detection", "image-segmentation"])
def test_big_uploads_are_downscaled_and_boxes_stay_in_the_uploads_pixels(pipeline_task: str, tmp_path: Path) -> None:
    folder = _save_tiny_model(RECIPES[pipeline_task], tmp_path / "model")
    fine_tuned = load_fine_tuned(str(folder), device="cpu")
    big, max_side = _photo(size=(400, 300)), 100
    small = big.resize((100, 75), PILImage.Resampling.BILINEAR, reducing_gap=3.0)
    predict, reference = make_predictor(fine_tuned, max_side=max_side), pipeline(pipeline_task, model=str(folder))
    if pipeline_task == "object-detection":
        drawn, rows = predict(big, 0.0)
        assert drawn.size == (100, 75)  # drawn at the working scale
        expected = sorted(reference(small, threshold=0.0), key=lambda found: -found["score"])
        assert len(rows) == len(expected) > 0
        for row, found in zip(rows, expected):  # the table: the uploaded image's pixels (4x the working ones)
            assert row[2:] == [int(found["box"][k] * 4) for k in ("xmin", "ymin", "xmax", "ymax")]
    else:
        overlay, legend = predict(big)
        assert overlay.size == (100, 75)  # the label map and logits never take the upload's full size
        for found in reference(small):
            assert f">{found['label']} <small>" in legend


def test_demo_launch_caps_the_upload_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recipes.modes import demo

    launched: dict = {}

    class App:
        def launch(self, **kwargs) -> None:
            launched.update(kwargs)

    built: dict = {}
    monkeypatch.setattr(demo, "load_fine_tuned", lambda model, device: model)
    monkeypatch.setattr(demo, "build_app", lambda model, **options: built.update(options) or App())
    assert demo.main([str(tmp_path)]) == 0
    assert launched["max_file_size"] == demo.MAX_FILE_SIZE == "25mb" and built["max_side"] == demo.MAX_SIDE
    assert built["max_video_frames"] == demo.MAX_VIDEO_FRAMES == 300
    assert demo.main([str(tmp_path), "--max_file_size", "5mb", "--max_side", "512", "--max_video_frames", "60"]) == 0
    assert launched["max_file_size"] == "5mb" and built["max_side"] == 512 and built["max_video_frames"] == 60
    with pytest.raises(SystemExit, match="2"):
        demo.main([str(tmp_path), "--max_video_frames", "0"])


@pytest.mark.parametrize("pipeline_task", ["object-detection", "image-segmentation"])
def test_demo_annotates_a_video_frame_by_frame_as_it_draws_an_image(pipeline_task: str, tmp_path: Path) -> None:
    pytest.importorskip("av", reason='video needs PyAV: pip install -e ".[video]"')
    from test_video import assert_drawn_like, decode, synthetic_frames, write_clip

    from recipes.decode.video import probe_video
    from recipes.modes.demo import annotate_video, build_app

    fine_tuned = load_fine_tuned(str(_save_tiny_model(RECIPES[pipeline_task], tmp_path / "model")), device="cpu")
    predict, options = make_predictor(fine_tuned), (0.0,) if pipeline_task == "object-detection" else ()
    clip = write_clip(tmp_path / "clip.mp4", synthetic_frames(12, size=(160, 120)), fps=10)
    done = annotate_video(lambda image: predict(image, *options)[0], clip, tmp_path, max_frames=5)
    assert (done.frames, done.stride, done.stopped) == (4, 3, None)  # 12 frames, at most 5: every 3rd
    assert "4 frames annotated, 1 frame in 3" in done.describe()
    info = probe_video(done.path)
    assert done.path.suffix == ".mp4" and (info.codec, info.frames, info.fps) == ("h264", 4, Fraction(10, 3))
    frames = decode(clip)
    for shown, number in zip(decode(done.path), (0, 3, 6, 9), strict=True):
        expected = np.asarray(predict(PILImage.fromarray(frames[number]), *options)[0])
        assert_drawn_like(shown, expected, frames[number])
    noisy, cut = write_clip(tmp_path / "noisy.mp4", synthetic_frames(12, noise=True)), tmp_path / "cut.mp4"
    cut.write_bytes(noisy.read_bytes()[: noisy.stat().st_size * 7 // 10])
    partial = annotate_video(lambda image: predict(image, *options)[0], cut, tmp_path / "partial", max_frames=100)
    assert partial.stopped and f"{cut} stopped after frame {partial.frames - 1}" in partial.stopped
    assert 0 < partial.frames < 12 and probe_video(partial.path).frames == partial.frames
    ids = {block.get("props", {}).get("elem_id") for block in build_app(fine_tuned).config["components"]}
    assert {"video", "video_prediction", "video_info"} <= ids


def test_the_classification_demo_has_no_video_input(tmp_path: Path) -> None:
    from recipes.modes.demo import build_app

    fine_tuned = load_fine_tuned(str(_save_tiny_model(RECIPES["image-classification"], tmp_path)), device="cpu")
    ids = {block.get("props", {}).get("elem_id") for block in build_app(fine_tuned).config["components"]}
    assert "image" in ids and "video" not in ids
