"""Video files for ``predict`` and the demo: probing, frame-by-frame decoding to the ``uint8`` tensors images decode
to, and writing an annotated video in the input's codec family.

Decoded with PyAV (FFmpeg, bundled in its wheels: no system library needed). On the project's CPU machine it
decodes a 10 s 720p H.264 clip to RGB faster than torchcodec (``python -m benchmarks.video --decoders``), and
torchcodec needs the system's FFmpeg libraries, which PyAV does not. A file that stops before its end (truncated,
corrupt packets) yields the frames before the break, then raises :class:`BadVideoError` naming the file and the
last frame read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from recipes.config import RecipeError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")

ENCODERS = {
    "h264": "libx264",
    "hevc": "libx264",
    "vp8": "libvpx",
    "vp9": "libvpx-vp9",
    "av1": "libvpx-vp9",
    "mpeg4": "mpeg4",
    "mjpeg": "mjpeg",
}
"""Encoder of the annotated video per input codec (same family, or the closest one that PyAV's wheels ship)."""
CONTAINER_ENCODERS = {".webm": "libvpx-vp9", ".avi": "mpeg4"}
"""Encoder when the input's own does not fit its container (others: ``libx264``)."""
ENCODER_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "20"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


class BadVideoError(ValueError):
    """A video that cannot be opened, or that stops before its end; the message names the file and the frame."""


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def import_av() -> Any:
    """PyAV, or a clear error saying how to install it."""
    try:
        import av
    except ImportError as err:
        raise RecipeError('Video files need PyAV: pip install -e ".[video]" (or pip install av).') from err
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says."""

    path: Path
    fps: Fraction
    frames: int | None
    """Frame count from the header (the container's, else duration times rate); ``None`` when it tells neither."""
    width: int
    height: int
    codec: str


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its 0-based number in the file, its time, the RGB ``uint8`` ``(3, H, W)`` tensor, and
    the seconds spent decoding it (plus the skipped frames before it)."""

    index: int
    time_s: float
    image: torch.Tensor
    decode_s: float
    decoded: int
    """Frames decoded for this one (``stride`` except at the start)."""


def probe_video(path: Path) -> VideoInfo:
    """The header of ``path``'s first video stream; :class:`BadVideoError` naming the file when there is none."""
    av = import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadVideoError(f"{path} has no video stream.")
            stream = container.streams.video[0]
            fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
            frames = int(stream.frames or 0)
            if not frames and container.duration:
                frames = round(container.duration / 1_000_000 * fps)
            return VideoInfo(
                path=path,
                fps=fps,
                frames=frames or None,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                codec=stream.codec_context.name,
            )
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise BadVideoError(
            f"{path} cannot be opened as a video ({err}): no frame read. Fix: check that the "
            "file is complete (a cut MP4 loses its index at the end)."
        ) from err


def read_frames(info: VideoInfo, stride: int = 1) -> Iterator[VideoFrame]:
    """Every ``stride``-th frame of the video (frames 0, stride, 2·stride...), decoded in order. When the file
    breaks, or ends before the frame count of its header, the frames read so far have been yielded and
    :class:`BadVideoError` names the file and the last frame read."""
    av = import_av()
    path, index, last = info.path, -1, None
    started = time.perf_counter()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                index += 1
                if index % stride:
                    continue
                array = frame.to_ndarray(format="rgb24")
                time_s = float(frame.time) if frame.time is not None else index / float(info.fps)
                now = time.perf_counter()
                yield VideoFrame(
                    index=index,
                    time_s=round(time_s, 4),
                    image=torch.from_numpy(array).permute(2, 0, 1),
                    decode_s=now - started,
                    decoded=index - (last if last is not None else -1),
                )
                last, started = index, time.perf_counter()
    except (av.error.FFmpegError, OSError) as err:
        raise BadVideoError(_stopped(path, index, info.frames, getattr(err, "strerror", None) or str(err))) from err
    if info.frames is not None and index + 1 < info.frames - (0 if path.suffix.lower() in (".mp4", ".mov") else 1):
        raise BadVideoError(_stopped(path, index, info.frames, "the file ends early (truncated?)"))


def _stopped(path: Path, index: int, expected: int | None, reason: str) -> str:
    read = f"after frame {index} ({index + 1} frames read)" if index >= 0 else "before its first frame"
    of = f" of the {expected} its header announces" if expected else ""
    return f"{path} stopped {read}{of}: {reason}"


class VideoWriter:
    """An annotated video beside the input's kind: same container (file extension) and codec family, the input's
    frame rate divided by the stride. Frames are PIL images of one size (odd sizes are scaled to even ones, which
    4:2:0 video needs); the file is opened on the first frame."""

    def __init__(self, path: Path, info: VideoInfo, stride: int = 1) -> None:
        self.path, self.info = path, info
        self.rate = info.fps / stride
        self.container: Any = None
        self.stream: Any = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        av = import_av()
        suffix = self.path.suffix.lower()
        options = {"movflags": "+faststart"} if suffix in (".mp4", ".mov") else {}
        self.container = av.open(str(self.path), "w", options=options)
        chosen = ENCODERS.get(self.info.codec, "libx264")
        for name in dict.fromkeys((chosen, CONTAINER_ENCODERS.get(suffix, "libx264"))):
            try:
                self.stream = self.container.add_stream(name, rate=self.rate, options=ENCODER_OPTIONS.get(name, {}))
                break
            except (ValueError, av.error.FFmpegError):
                continue
        if self.stream is None:
            raise RecipeError(f"No encoder for {self.path} (tried {chosen}). Fix: write an .mp4 instead.")
        self.stream.width, self.stream.height = max(2, width - width % 2), max(2, height - height % 2)
        self.stream.pix_fmt = "yuvj420p" if self.stream.codec_context.name == "mjpeg" else "yuv420p"

    def write(self, image: Image.Image) -> None:
        av = import_av()
        if self.container is None:
            self._open(*image.size)
        frame = av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")
        frame = frame.reformat(width=self.stream.width, height=self.stream.height, format=self.stream.pix_fmt)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush and close; the path, or ``None`` when no frame was written."""
        if self.container is None:
            return None
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None
        return self.path
