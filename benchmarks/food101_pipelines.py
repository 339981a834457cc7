"""The pipelines the classification benchmark compares (the HF-docs baseline, ours, ours on the decode
cache), the data they read, and the small timing helpers."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import PIL
import torch
import torchvision
import transformers
from datasets import Dataset, concatenate_datasets, load_dataset
from datasets import Image as ImageFeature
from torch.utils.data import default_collate
from torchvision import transforms as v1
from transformers import (
    ViTImageProcessor,
)

from recipes.data.sources import undecoded
from recipes.decode.tensors import decode_to_tensor
from recipes.decode.turbojpeg import region_decoding_library
from recipes.tasks.classification.transforms import (
    build_train_augmentation,
    decode_into_cache,
    transform_classification_batch,
)
from recipes.transforms import (
    ProcessorGeometry,
    collate_images_and_labels,
    normalize_uint8_inputs,
    verified_fast_normalisation,
)

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DATA_DIR = REPO.parent / "shared" / "datasets" / "food101-mini"
IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
NAIVE, BEFORE, OURS, CACHED = "naive", "ours-before", "ours", "ours+cache"
VARIANTS = (NAIVE, BEFORE, OURS, CACHED)
DESCRIPTIONS = {
    NAIVE: "HF docs: PIL decode + Compose(RRC, flip, ToTensor, Normalize) per image, default collate",
    BEFORE: "previous default: undecoded records, full libjpeg-turbo decode, v2 RRC+flip on uint8, batch normalise",
    OURS: "default: crop box from the JPEG header, decode at the DCT scale the box needs, one-copy crop+resize+flip, "
          "uint8 batches normalised by the consuming process (normalize_on_device)",
    CACHED: "ours on the decode cache (raw RGB records, no JPEG decoding per epoch)",
}
STAGES = ("read records", "decode", "crop+resize", "flip", "to tensor", "normalize", "collate")


@dataclass(frozen=True)
class Settings:
    """How much to measure (``--quick`` shortens every part)."""

    batch_size: int
    rounds: int
    passes: int
    warmup_epochs: int
    rounds_main_process: int
    stage_rounds: int
    stage_images: int | None
    train_steps: int
    train_rounds: int
    train_threads: int
    seed: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        quick = args.quick
        return cls(
            batch_size=args.batch_size,
            rounds=args.rounds or (2 if quick else 7),
            passes=getattr(args, "passes", None) or (1 if quick else 3),
            warmup_epochs=1,
            rounds_main_process=0 if quick or args.no_main_process else 3,
            stage_rounds=1 if quick else 3,
            stage_images=64 if quick else None,
            train_steps=args.train_steps or (6 if quick else 30),
            train_rounds=args.train_rounds or (1 if quick else 3),
            train_threads=args.train_threads,
            seed=args.seed,
        )


@dataclass(frozen=True)
class Variant:
    """One pipeline: a dataset with its ``with_transform`` function set, and its collate function."""

    name: str
    dataset: Dataset
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    device_transform: Callable[[dict[str, Any], torch.device], dict[str, Any]] | None = None
    """What the training process does to each batch before the model (``normalize_on_device``)."""

    def consume(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as the model receives it: ``device_transform`` applied, on the CPU here."""
        return batch if self.device_transform is None else self.device_transform(batch, torch.device("cpu"))


# --------------------------------------------------------------------------- helpers


def log(message: str = "") -> None:
    """Print progress straight away (the benchmark runs for minutes)."""
    print(message, flush=True)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` intra-op threads, like a ``DataLoader`` worker (which uses one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """``items`` rotated by ``shift``: each round starts with a different variant."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def median_ratios(per_round: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``numerator / denominator`` measured in the same round."""
    return statistics.median(a / b for a, b in zip(per_round[numerator], per_round[denominator]))


def resolve_data_dir(path: Path) -> Path:
    """The dataset folder, or a clear error naming what is missing."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise SystemExit(
            f"error: dataset folder {path} not found. Pass --data-dir pointing to food101-mini "
            "(an image folder: <split>/<class>/*.jpg), e.g. ../shared/datasets/food101-mini."
        )
    if not any(path.rglob("*.jpg")):
        raise SystemExit(f"error: no .jpg files under {path}: the benchmark needs real JPEG photos.")
    return path


# --------------------------------------------------------------------------- pipelines


def naive_augmentation(geometry: ProcessorGeometry) -> v1.Compose:
    """The per-image ``Compose`` of the Hugging Face image-classification docs."""
    return v1.Compose(
        [
            v1.RandomResizedCrop((geometry.height, geometry.width)),
            v1.RandomHorizontalFlip(),
            v1.ToTensor(),
            v1.Normalize(mean=geometry.mean, std=geometry.std),
        ]
    )


def naive_transform(batch: dict[str, list], *, augment: Callable) -> dict[str, list]:
    """The HF-docs ``with_transform`` function: images already decoded to PIL by ``datasets``."""
    return {
        "pixel_values": [augment(image.convert("RGB")) for image in batch[IMAGE_COLUMN]],
        "labels": list(batch[LABEL_COLUMN]),
    }


def before_transform(batch: dict[str, list], *, augment: Callable) -> dict[str, list]:
    """The previous default ``with_transform`` function: full decode, then the v2 ``Compose``."""
    return {
        "pixel_values": [augment(decode_to_tensor(record)) for record in batch[IMAGE_COLUMN]],
        "labels": list(batch[LABEL_COLUMN]),
    }


def check_equivalent_augmentation(naive: v1.Compose, ours: Any) -> str:
    """Assert the two pipelines sample crops and flips the same way; describe them."""
    crop, flip = naive.transforms[0], naive.transforms[1]
    our_crop, our_flip = ours.transforms[0], ours.transforms[1]
    assert tuple(crop.size) == tuple(our_crop.size), (crop.size, our_crop.size)
    assert tuple(crop.scale) == tuple(our_crop.scale), (crop.scale, our_crop.scale)
    assert tuple(crop.ratio) == tuple(our_crop.ratio), (crop.ratio, our_crop.ratio)
    modes = {str(getattr(m, "value", m)).lower() for m in (crop.interpolation, our_crop.interpolation)}
    assert modes == {"bilinear"}, modes
    assert crop.antialias and our_crop.antialias
    assert flip.p == our_flip.p
    ratio = f"({crop.ratio[0]:.3f}, {crop.ratio[1]:.3f})"
    return (
        f"RandomResizedCrop({tuple(crop.size)}, scale={tuple(crop.scale)}, ratio={ratio}, bilinear, "
        f"antialias) + HorizontalFlip(p={flip.p}) + Normalize -> float32 (B, 3, H, W)"
    )


def load_food101(data_dir: Path, cache_dir: str) -> Dataset:
    """Every image of every split of the folder as one dataset (``image`` decoded lazily to PIL)."""
    splits = load_dataset("imagefolder", data_dir=str(data_dir), cache_dir=cache_dir)
    dataset = concatenate_datasets(list(splits.values()))
    if not isinstance(dataset.features[IMAGE_COLUMN], ImageFeature):
        raise SystemExit(f"error: {data_dir} did not load as an image folder.")
    return dataset


def benchmark_processor() -> ViTImageProcessor:
    """The image processor of every variant: 224x224, mean = std = 0.5 (ViT's)."""
    return ViTImageProcessor()


def build_variants(
    dataset: Dataset, geometry: ProcessorGeometry
) -> tuple[dict[str, Variant], dict[str, Dataset], dict[str, Any]]:
    """The three pipelines, their untransformed sources, and the one-time cost of the decode cache."""
    naive = naive_augmentation(geometry)
    ours = build_train_augmentation("basic", geometry.height, geometry.width)
    raw = undecoded(dataset, IMAGE_COLUMN)

    start = time.perf_counter()
    cached = raw.map(
        partial(decode_into_cache, image_column=IMAGE_COLUMN),
        batched=True,
        batch_size=32,
        desc="Decoding images into the cache",
    )
    build_s = time.perf_counter() - start
    cache_bytes = sum(Path(f["filename"]).stat().st_size for f in cached.cache_files)

    ours_transform = partial(
        transform_classification_batch, image_column=IMAGE_COLUMN, label_column=LABEL_COLUMN, augment=ours
    )
    processor = benchmark_processor()
    fast = verified_fast_normalisation(processor)
    before_collate = partial(collate_images_and_labels, processor=processor, fast=fast)  # normalised in the worker
    ours_collate = partial(collate_images_and_labels, processor=processor, fast=fast, keep_uint8=True)
    on_device = partial(normalize_uint8_inputs, geometry=fast)  # the default normalize_on_device
    variants = {
        NAIVE: Variant(
            NAIVE, dataset.with_transform(partial(naive_transform, augment=naive)), default_collate
        ),
        BEFORE: Variant(BEFORE, raw.with_transform(partial(before_transform, augment=ours)), before_collate),
        OURS: Variant(OURS, raw.with_transform(ours_transform), ours_collate, on_device),
        CACHED: Variant(CACHED, cached.with_transform(ours_transform), ours_collate, on_device),
    }
    cache = {
        "build_seconds": build_s,
        "build_images_per_s": len(dataset) / build_s,
        "disk_mib": cache_bytes / 2**20,
        "augmentation": check_equivalent_augmentation(naive, ours),
    }
    return variants, {NAIVE: raw, BEFORE: raw, OURS: raw, CACHED: cached}, cache


# --------------------------------------------------------------------------- 1. transform throughput


def environment() -> dict[str, Any]:
    """Versions and the machine's load (the benchmark is sensitive to other processes)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "datasets": datasets.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_average": list(os.getloadavg()),
        "region_decoding": region_decoding_library(),
    }


