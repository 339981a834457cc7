"""Video files in ``vision-recipes predict``: every ``--vid_stride``-th frame is predicted exactly as the same frame
saved as an image is (same preprocessing, batches and outputs), with ``frame`` and ``time_s`` in its record; the
annotated video; broken and truncated files; a real clip made from the CamSeq frames; the benchmark's smoke run.

Clips are written here with PyAV directly (not with the code under test), and decoded back independently."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, assert_ok, shared_dataset
from PIL import Image

av = pytest.importorskip("av", reason='video needs PyAV: pip install -e ".[video]"')

TASKS = {
    "classification": "image-classification",
    "detection": "object-detection",
    "segmentation": "image-segmentation",
}


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """``frames`` (RGB ``uint8`` arrays of one even size) as an H.264 clip; an MP4 keeps its index at the front
    (``faststart``), as cameras and web videos do, so a cut file still has its first frames."""
    options = {"movflags": "+faststart"} if path.suffix in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def synthetic_frames(count: int, size: tuple[int, int] = (64, 48), noise: bool = False) -> list[np.ndarray]:
    """A bright square moving over a gradient (``noise``: plus random pixels, so the file's bytes grow with it)."""
    width, height = size
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)
        frame[..., 2] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
        x = (5 * i) % (width - 16)
        frame[10:26, x : x + 16] = (250, 250, 40)
        if noise:
            frame = np.clip(frame + rng.integers(-60, 60, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
    return frames


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def assert_drawn_like(shown: np.ndarray, expected: np.ndarray, plain: np.ndarray) -> None:
    """A decoded frame of an annotated video against the drawing expected on it and the plain frame: where the
    drawing changed the frame (boxes, labels, mask colours), the video shows the drawing (H.264 is lossy: close to
    it, far from the plain frame)."""
    expected, plain, shown = expected.astype(int), plain.astype(int), shown.astype(int)
    drawn = np.abs(expected - plain).max(axis=2) > 40
    assert drawn.mean() > 0.001, "the expected drawing leaves the frame as it was"
    near, far = np.abs(shown - expected)[drawn].mean(), np.abs(shown - plain)[drawn].mean()
    assert near < far / 3, (near, far)


def read_rows(output: Path) -> list[dict]:
    path = output / "predictions.jsonl" if output.is_dir() else output
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained tiny models of the quickstart recipes, one per task (seconds to build)."""
    from test_demo import RECIPES, _save_tiny_model

    root = tmp_path_factory.mktemp("tiny-video-models")
    return {task: _save_tiny_model(RECIPES[tag], root / task) for task, tag in TASKS.items()}


def output_for(task: str, folder: Path, name: str) -> Path:
    return folder / (name if task == "segmentation" else f"{name}.jsonl")


@pytest.mark.parametrize("task", list(TASKS))
def test_video_frames_are_predicted_as_the_same_frames_saved_as_images(
    task: str, tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.decode.video import probe_video
    from recipes.modes.predict import main

    clip = write_clip(tmp_path / "clip.mp4", synthetic_frames(12, size=(160, 120)), fps=10)
    frames = decode(clip)
    assert len(frames) == 12
    pictures = []
    for number in (0, 3, 6, 9):
        pictures.append(tmp_path / f"frame{number}.png")
        Image.fromarray(frames[number]).save(pictures[-1])
    model, drawn = str(tiny_models[task]), tmp_path / "drawn"
    from_video, from_images = output_for(task, tmp_path, "video"), output_for(task, tmp_path, "images")
    workers = "1" if task == "detection" else "0"  # both loader paths: a decoding worker, the main process
    common = ["--batch_size", "3", "--threshold", "0", "--num_workers", workers]
    assert (
        main([model, str(clip), "--output", str(from_video), "--vid_stride", "3", "--visualize", str(drawn), *common])
        == 0
    )
    summary = capsys.readouterr().out
    assert re.search(
        r"4 frames of 1 video\(s\) \(--vid_stride 3\), 0 stopped early: decode [\d.]+ fps, model "
        r"[\d.]+ fps, end-to-end [\d.]+ fps",
        summary,
    ), summary
    drawn_images = tmp_path / "drawn_images"
    assert (
        main([model, *map(str, pictures), "--output", str(from_images), "--visualize", str(drawn_images), *common]) == 0
    )

    rows, expected = read_rows(from_video), read_rows(from_images)
    assert [list(row)[:3] for row in rows] == [["file", "frame", "time_s"]] * 4
    assert [(row["file"], row["frame"]) for row in rows] == [(str(clip), n) for n in (0, 3, 6, 9)]
    assert [row["time_s"] for row in rows] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    for row, reference in zip(rows, expected):
        if task == "segmentation":  # masks: <video>_<frame>.png, the same pixels as the image's mask
            assert row["mask"] == f"clip_{row['frame']:06d}.png"
            assert np.array_equal(
                np.asarray(Image.open(from_video / row["mask"])),
                np.asarray(Image.open(from_images / reference["mask"])),
            )
            row, reference = {**row, "mask": None}, {**reference, "mask": None}
        assert {k: v for k, v in row.items() if k not in ("file", "frame", "time_s")} == {
            k: v for k, v in reference.items() if k != "file"
        }
    if task == "detection":
        assert all(row["boxes"] for row in rows)

    (annotated,) = drawn.iterdir()
    info = probe_video(annotated)
    assert annotated.name == "000000_clip.mp4" and info.codec == "h264"
    assert (info.frames, info.fps, info.width, info.height) == (4, Fraction(10, 3), 160, 120)
    shown, plain = decode(annotated), [frames[n] for n in (0, 3, 6, 9)]
    assert len(shown) == 4
    for frame, picture, drawing in zip(shown, plain, sorted(drawn_images.glob("*.png")), strict=True):
        assert_drawn_like(frame, np.asarray(Image.open(drawing)), picture)  # drawn as the image was


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_truncated_video_keeps_its_frames_names_where_it_stopped_and_exits_3(
    suffix: str, tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.modes.predict import EXIT_INCOMPLETE_VIDEO, main

    whole = write_clip(tmp_path / f"whole{suffix}", synthetic_frames(20, noise=True))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    model, out = str(tiny_models["classification"]), tmp_path / "rows.jsonl"
    assert main([model, str(whole), str(cut), "--output", str(out), "--num_workers", "0"]) == EXIT_INCOMPLETE_VIDEO
    err = capsys.readouterr().err
    stopped = re.search(
        rf"video stopped: {re.escape(str(cut))} stopped after frame (\d+) \((\d+) frames read\) of "
        r"the 20 its header announces",
        err,
    )
    assert stopped, err
    last = int(stopped.group(1))
    assert 3 <= last < 19 and f"exit code {EXIT_INCOMPLETE_VIDEO}" in err
    rows = read_rows(out)  # what was read is kept, in order
    assert [row["frame"] for row in rows if row["file"] == str(whole)] == list(range(20))
    assert [row["frame"] for row in rows if row["file"] == str(cut)] == list(range(last + 1))


def test_a_file_that_is_no_video_is_named_and_nothing_readable_exits_2(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.modes.predict import EXIT_INCOMPLETE_VIDEO, main

    model = str(tiny_models["classification"])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    assert main([model, str(garbage), "--output", str(tmp_path / "a.jsonl"), "--num_workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{garbage} cannot be opened as a video" in err and "no frame read" in err
    assert "error: none of the 1 input file(s) could be read" in err and not (tmp_path / "a.jsonl").exists()
    clip = write_clip(tmp_path / "clip.mkv", synthetic_frames(4))
    picture = tmp_path / "picture.png"
    Image.fromarray(synthetic_frames(1)[0]).save(picture)
    out = tmp_path / "b.jsonl"
    assert (
        main([model, str(garbage), str(picture), str(clip), "--output", str(out), "--num_workers", "0"])
        == EXIT_INCOMPLETE_VIDEO
    )
    assert [(row["file"], row.get("frame")) for row in read_rows(out)] == [(str(picture), None)] + [
        (str(clip), n) for n in range(4)
    ]
    assert main([model, str(clip), "--output", str(out), "--vid_stride", "0", "--overwrite"]) == 2
    assert "--vid_stride must be at least 1" in capsys.readouterr().err


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_on_a_real_camseq_clip_equals_the_pipeline_on_its_frames(fine_tuned, tmp_path: Path) -> None:
    """CamSeq's frames are consecutive frames of a drive: encoded to an MP4 here, predicted through the CLI."""
    from test_predict import run_mode
    from transformers import pipeline

    from recipes.decode.video import probe_video

    model = fine_tuned("segmentation")
    photos = sorted(p for p in shared_dataset("camseq").glob("*.png") if not p.stem.endswith("_L"))[:6]
    clip = write_clip(tmp_path / "camseq.mp4", [np.asarray(Image.open(p).convert("RGB")) for p in photos], fps=15)
    masks, drawn = tmp_path / "masks", tmp_path / "drawn"
    result = run_mode(
        "predict",
        str(model),
        str(clip),
        "--output",
        str(masks),
        "--visualize",
        str(drawn),
        "--batch_size",
        "2",
        "--num_workers",
        "1",
    )
    assert_ok(result)
    assert "6 frames of 1 video(s), 0 stopped early: decode" in result.stdout
    rows = read_rows(masks)
    assert [(row["frame"], row["width"], row["height"]) for row in rows] == [(n, 960, 720) for n in range(6)]
    pipe = pipeline("image-segmentation", model=str(model))
    label2id = pipe.model.config.label2id
    for row, frame in zip(rows, decode(clip)):
        ids = np.asarray(Image.open(masks / row["mask"]))
        expected = np.full(ids.shape, -1)
        for found in pipe(Image.fromarray(frame)):
            expected[np.asarray(found["mask"]) > 0] = label2id[found["label"]]
        assert (ids == expected).mean() > 0.9999  # batched convolutions may flip an arg-max tie here and there
    (annotated,) = drawn.iterdir()
    info = probe_video(annotated)
    assert (info.frames, info.fps, info.width, info.height, info.codec) == (6, 15, 960, 720, "h264")


@pytest.mark.real_data
@pytest.mark.slow
def test_video_benchmark_quick_run_prints_both_fps_and_the_ratio(tmp_path: Path) -> None:
    figures = tmp_path / "fps.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.video",
            "--quick",
            "--seconds",
            "0.3",
            "--tasks",
            "classification",
            "--batch_size",
            "1",
            "4",
            "--json",
            str(figures),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_ok(result)
    data = json.loads(figures.read_text())
    row = data["tasks"]["classification"]
    assert row["frames"] == 9 and row["naive_fps"] > 0
    assert [run["batch_size"] for run in row["ours"]] == [1, 4]
    for run in row["ours"]:
        assert run["end_to_end"] > 0 and run["decode"] > 0 and run["model"] >= run["end_to_end"] * 0.9
        assert run["ratio"] == pytest.approx(run["end_to_end"] / row["naive_fps"], rel=0.05)
    assert data["decode_fps"]["pyav"] > 0
    assert re.search(r"classification\s+9\s+4\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+ [\d.]+x", result.stdout), (
        result.stdout
    )
