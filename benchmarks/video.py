"""End-to-end FPS of ``vision-recipes predict`` on a 720p video against a naive frame-by-frame ``pipeline()`` loop,
per task; and the decode FPS of PyAV against torchcodec on the same clip.

    python -m benchmarks.video                           # 10 s 720p clip, all tasks, CPU
    python -m benchmarks.video --quick --json fps.json   # 1 s (a smoke run)
    python -m benchmarks.video --device cuda             # on a GPU
    python -m benchmarks.video --decoders_only           # decoders only

The clip: the real CamSeq frames (consecutive frames of a drive, 960 x 720) resized to 1280 x 720 and played forward
then backward to 10 s at 30 fps, H.264 (libx264). Models: the real checkpoints of ``../shared/pretrained`` with a
head for each task (``benchmarks.predict_throughput.save_model``). Timed, model loading excluded:

- ours: ``predict`` (PyAV decoding and the image processor in one DataLoader worker with ``--num_workers 1``, in
  the main process with 0; batches of ``--batch_size`` frames): its end-to-end FPS, and the decode and model FPS it
  reports;
- naive: ``for frame in av.open(clip).decode(video=0): pipe(frame.to_image())``, the loop a user writes first.

Decoders: every frame to an RGB ``uint8`` ``(3, H, W)`` tensor, one decoding thread, PyAV (``to_ndarray``) against
torchcodec (``VideoDecoder``, frame by frame and in batches of 16); torchcodec needs the system's FFmpeg libraries
and is left out when it cannot load them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.predict_throughput import PIPELINE_TASKS, SHARED, save_model

SIZE = (1280, 720)
FPS = 30


def make_clip(path: Path, seconds: float) -> Path:
    """The CamSeq frames at 1280 x 720, forward then backward, to ``seconds`` at 30 fps (H.264 MP4)."""
    import av
    from PIL import Image

    frames = sorted(p for p in (SHARED / "datasets" / "camseq").glob("*.png") if not p.stem.endswith("_L"))
    order = frames + frames[-2:0:-1]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "20"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for i in range(round(seconds * FPS)):
            image = Image.open(order[i % len(order)]).convert("RGB").resize(SIZE, Image.Resampling.BILINEAR)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_pyav(path: Path) -> int:
    import av

    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for frame in container.decode(stream):
            torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            count += 1
    return count


def decode_torchcodec(path: Path, batch: int = 1) -> int:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), num_ffmpeg_threads=1, seek_mode="approximate")
    if batch == 1:
        return sum(1 for _ in decoder)
    total = len(decoder)
    return sum(decoder.get_frames_in_range(i, min(total, i + batch)).data.shape[0] for i in range(0, total, batch))


def time_decoders(path: Path, repeats: int) -> dict[str, float | str]:
    """Frames per second of each decoder (best of ``repeats``, run alternately), or why it could not run."""
    candidates: dict[str, Any] = {
        "pyav": decode_pyav,
        "torchcodec": decode_torchcodec,
        "torchcodec_batch16": lambda p: decode_torchcodec(p, 16),
    }
    best: dict[str, float | str] = {}
    for _ in range(repeats):
        for name, decode in candidates.items():
            if isinstance(best.get(name), str):
                continue
            try:
                started = time.perf_counter()
                count = decode(path)
                fps = count / (time.perf_counter() - started)
            except (ImportError, RuntimeError, OSError) as err:
                best[name] = f"unavailable: {str(err).splitlines()[0][:120]}"
                continue
            best[name] = max(fps, float(best.get(name, 0.0)))
    return best


def time_naive(task: str, model: Path, clip: Path, device: str) -> float:
    """Frames per second of the frame-by-frame ``pipeline()`` loop (model loading excluded)."""
    import av
    from transformers import pipeline

    pipe = pipeline(PIPELINE_TASKS[task], model=str(model), device=device)
    kwargs = {"threshold": 0.5} if task == "detection" else {}
    started, count = time.perf_counter(), 0
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            pipe(frame.to_image(), **kwargs)
            count += 1
    return count / (time.perf_counter() - started)


def time_ours(model: Path, clip: Path, output: Path, device: str, batch_size: int, workers: int) -> dict[str, float]:
    from recipes.modes.predict import build_parser, predict

    args = build_parser().parse_args(
        [
            str(model),
            str(clip),
            "--output",
            str(output),
            "--device",
            device,
            "--batch_size",
            str(batch_size),
            "--num_workers",
            "1",
        ]
    )
    summary = predict(args)
    if output.is_dir():  # the next batch size writes it again
        shutil.rmtree(output)
    else:
        output.unlink()
    assert summary.frames > 0 and not summary.stopped, summary.stopped
    return summary.video_fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(PIPELINE_TASKS), choices=list(PIPELINE_TASKS))
    parser.add_argument("--quick", action="store_true", help="A 1 s clip (a smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="Clip length (default 10; --quick: 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, nargs="+", default=[8], help="predict's batch size(s), each timed")
    parser.add_argument("--num_workers", type=int, default=1, help="predict's decoding worker (0: in the main process)")
    parser.add_argument("--decoders_only", action="store_true")
    parser.add_argument("--json", default=None, help="Write the figures here")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 10.0)
    figures: dict[str, Any] = {
        "clip": {"seconds": seconds, "size": list(SIZE), "fps": FPS},
        "device": args.device,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "tasks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "camseq-720p.mp4", seconds)
        figures["decode_fps"] = decoders = time_decoders(clip, repeats=1 if args.quick else 3)
        print(
            f"decode {seconds:g} s 720p H.264 to RGB tensors, 1 thread: "
            + ", ".join(
                f"{name} {value:.1f} fps" if isinstance(value, float) else f"{name} {value}"
                for name, value in decoders.items()
            ),
            flush=True,
        )
        if not args.decoders_only:
            print(
                f"{'task':15s} {'frames':>6s} {'batch':>5s} {'ours e2e':>9s} {'decode':>8s} {'model':>8s} "
                f"{'naive':>8s} ratio",
                flush=True,
            )
        for task in [] if args.decoders_only else args.tasks:
            model = save_model(task, Path(tmp) / task)
            output = Path(tmp) / (f"{task}-masks" if task == "segmentation" else f"{task}.jsonl")
            runs = [
                {"batch_size": size, **time_ours(model, clip, output, args.device, size, args.num_workers)}
                for size in args.batch_size
            ]
            naive = time_naive(task, model, clip, args.device)
            frames = round(seconds * FPS)
            for run in runs:
                run.update({k: round(v, 2) for k, v in run.items() if k != "batch_size"})
                run["ratio"] = round(run["end_to_end"] / naive, 2)
                print(
                    f"{task:15s} {frames:6d} {run['batch_size']:5d} {run['end_to_end']:9.2f} {run['decode']:8.1f} "
                    f"{run['model']:8.2f} {naive:8.2f} {run['ratio']:.2f}x",
                    flush=True,
                )
            figures["tasks"][task] = {"frames": frames, "ours": runs, "naive_fps": round(naive, 2)}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
