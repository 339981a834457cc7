"""Where the time of each classification input pipeline goes: milliseconds per image and per stage (read,
decode, crop+resize, flip, to-tensor, normalise, collate), single-threaded like a ``DataLoader`` worker.

``ours-before`` is the previous default (full libjpeg-turbo decode, then the torchvision v2 ``Compose``);
``ours`` the current one (crop box drawn from the JPEG header, decode of the box alone where libjpeg-turbo 3 is
available, else at the smallest DCT scale that keeps the box's resolution, crop+resize with the flip folded into
the crop's one copy: ``recipes.decode.tensors.decode_augmented``, whose steps are timed here one by one; its ``flip``
stage is the draw only, and its normalisation writes each image into the batch directly, so it has no separate
stacking cost)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from torch.utils.data import default_collate

from benchmarks.food101_pipelines import (
    BEFORE,
    CACHED,
    IMAGE_COLUMN,
    LABEL_COLUMN,
    NAIVE,
    STAGES,
    VARIANTS,
    Settings,
    benchmark_processor,
    naive_augmentation,
    rotated,
    torch_threads,
)
from recipes.decode.crop import apply_transform, crop_box, decode_for_crop, draw_flip, jpeg_header, resized_crop_scaled
from recipes.decode.tensors import decode_to_tensor, record_bytes
from recipes.tasks.classification.transforms import build_train_augmentation
from recipes.transforms import ProcessorGeometry, normalize_batch, processor_pixel_values, verified_fast_normalisation


class StageClock:
    """Accumulates the wall time of named stages."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def __call__(self, stage: str, function: Callable, *args: Any) -> Any:
        start = time.perf_counter()
        result = function(*args)
        self.seconds[stage] += time.perf_counter() - start
        return result


def fast_path(clock: StageClock, record: Any, crop: Any, flip: Any) -> torch.Tensor:
    """``decode_augmented`` step by step (JPEG records: every image of food101-mini)."""
    def decode(record: Any) -> tuple:
        data = record_bytes(record)
        height, width, orientation = jpeg_header(data)
        return decode_for_crop(data, crop_box(crop, height, width), height, width, orientation, tuple(crop.size))

    pixels, box, height, width = clock("decode", decode, record)
    mirrored = clock("flip", draw_flip, flip)  # the draw only: the mirroring is folded into the crop's copy
    return clock("crop+resize", resized_crop_scaled, pixels, box, height, width, crop, mirrored)


def stage_pass(pipeline: str, source: Dataset, geometry: ProcessorGeometry, batch_size: int) -> dict[str, float]:
    """One single-threaded pass over ``source`` (undecoded records), timing each stage: ms per image."""
    clock = StageClock()
    records_of = source.with_format(None)
    crop, flip, to_tensor, normalize = naive_augmentation(geometry).transforms
    our_crop, our_flip = build_train_augmentation("basic", geometry.height, geometry.width).transforms
    processor = benchmark_processor()
    fast = verified_fast_normalisation(processor)
    decode_pil = ImageFeature().decode_example  # what datasets does for the HF-docs pipeline
    for begin in range(0, len(source), batch_size):
        rows = clock("read records", records_of.__getitem__, slice(begin, begin + batch_size))
        examples = []
        for record, label in zip(rows[IMAGE_COLUMN], rows[LABEL_COLUMN]):
            if pipeline == NAIVE:
                image = clock("decode", lambda r: decode_pil(r).convert("RGB"), record)
                image = clock("flip", flip, clock("crop+resize", crop, image))
                pixels = clock("normalize", normalize, clock("to tensor", to_tensor, image))
            elif pipeline == BEFORE:
                image = clock("decode", decode_to_tensor, record)
                pixels = clock("flip", our_flip, clock("crop+resize", our_crop, image))
            elif pipeline == CACHED:
                image = clock("decode", decode_to_tensor, record)
                image = clock("crop+resize", apply_transform, our_crop, image)
                pixels = clock("flip", apply_transform, our_flip, image)
            else:
                pixels = fast_path(clock, record, our_crop, our_flip)
            examples.append({"pixel_values": pixels, "labels": label})
        if pipeline == NAIVE:
            clock("collate", default_collate, examples)
        else:
            images = [x["pixel_values"] for x in examples]
            clock("collate", lambda e: torch.tensor([x["labels"] for x in e], dtype=torch.long), examples)
            clock("normalize", lambda s: normalize_batch(s, fast) if fast is not None
                  else processor_pixel_values(processor, s, sized=True), images)
    return {stage: 1000 * seconds / len(source) for stage, seconds in clock.seconds.items()}


def measure_stages(
    sources: dict[str, Dataset], geometry: ProcessorGeometry, settings: Settings
) -> dict[str, dict[str, float]]:
    """Median ms per image of each stage, per pipeline, over interleaved single-threaded passes."""
    if settings.stage_images is not None:
        sources = {n: s.select(range(min(settings.stage_images, len(s)))) for n, s in sources.items()}
    passes: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with torch_threads(1):
        for index in range(settings.stage_rounds + 1):  # the first round warms caches up
            for name in rotated(VARIANTS, index):
                timings = stage_pass(name, sources[name], geometry, settings.batch_size)
                if index:
                    passes[name].append(timings)
    result: dict[str, Any] = {}
    for name, runs in passes.items():
        stages = {stage: statistics.median(run[stage] for run in runs) for stage in STAGES}
        stages["total"] = statistics.median(sum(run.values()) for run in runs)
        result[name] = stages
    return result
