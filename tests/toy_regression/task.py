"""Image regression: one number per image (here the brightness of synthetic images), with a one-output head on any
``AutoModelForImageClassification`` (``problem_type: regression``, mean squared error)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from transformers import AutoModelForImageClassification

from recipes.config import DataArguments, RecipeError
from recipes.data.sources import local_path
from recipes.data.splits import pick_splits
from recipes.decode.images import load_rgb
from recipes.tasks.base import PredictionSink, PredictOptions, StreamingMetric, Task, TaskData

TARGET = "target"
LISTING = "metadata.jsonl"
NAMES = {0: "brightness"}


def make_brightness_dataset(root: Path, count: int = 48, size: int = 32, seed: int = 0) -> Path:
    """``count`` noisy grey images of random brightness and ``metadata.jsonl`` (``file_name``, ``target``)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        level = float(rng.uniform(0.1, 0.9))
        pixels = np.clip(level * 255 + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        PILImage.fromarray(pixels).save(root / f"image_{i:03d}.png")
        rows.append({"file_name": f"image_{i:03d}.png", TARGET: round(level, 4)})
    (root / LISTING).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def read_folder(folder: Path, column: str) -> Dataset:
    listing = folder / LISTING
    if not listing.is_file():
        raise RecipeError(f"{folder} has no {LISTING} (lines of file_name and {TARGET}).")
    rows = [json.loads(line) for line in listing.read_text().splitlines() if line.strip()]
    features = Features({column: Image(decode=False), TARGET: Value("float32")})
    return Dataset.from_dict(
        {column: [str(folder / row["file_name"]) for row in rows], TARGET: [row[TARGET] for row in rows]},
        features=features,
    )


class RegressionMetric(StreamingMetric):
    """Mean absolute and squared error over the evaluation set (two sums and a count)."""

    def __init__(self) -> None:
        self.reset()

    def update(self, predictions: Any, labels: Any) -> None:
        values = torch.as_tensor(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)
        error = values.float().reshape(-1).cpu() - torch.as_tensor(labels).float().reshape(-1).cpu()
        self.absolute += float(error.abs().sum())
        self.squared += float((error**2).sum())
        self.count += error.numel()

    def compute(self) -> dict[str, float]:
        count = max(self.count, 1)
        return {"mae": self.absolute / count, "mse": self.squared / count, "samples": self.count}

    def reset(self) -> None:
        self.absolute, self.squared, self.count = 0.0, 0.0, 0


class RegressionSink(PredictionSink):
    """``--output predictions.jsonl``: ``{"file", "value"}`` per image."""

    def __init__(self, options: PredictOptions) -> None:
        self.format = self.chosen_format(options.format)
        self.path = options.output
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("w", encoding="utf-8")

    def decode(
        self, outputs: Any, sizes: list[tuple[int, int]], inputs: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return [{"value": round(float(value), 6)} for value in outputs.logits.float()[:, 0]]

    def add(self, file: str, size: tuple[int, int], prediction: dict[str, Any]) -> None:
        self.handle.write(json.dumps({"file": file, **prediction}) + "\n")

    def close(self) -> list[Path]:
        self.handle.close()
        return [self.path]


def transform_batch(batch: dict[str, list], *, processor: Any, column: str) -> dict[str, Any]:
    images = [load_rgb(record) for record in batch[column]]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return {"pixel_values": list(pixels), "labels": [float(value) for value in batch[TARGET]]}


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.float32),
    }


class ImageRegression(Task):
    name = "image-regression"
    pipeline_tag = "image-classification"  # transformers has no regression pipeline; the card's tag
    display_name = "Image Regression"
    aliases = ("regression",)
    architecture_suffixes = ("ForImageClassification",)
    auto_model_class = AutoModelForImageClassification
    main_metric = "mae"
    card_metrics = {"mae": "Mean absolute error", "mse": "Mean squared error"}

    @classmethod
    def recognises(cls, config: Any) -> bool:
        return super().recognises(config) and getattr(config, "problem_type", None) == "regression"

    @classmethod
    def training_defaults(cls) -> dict[str, Any]:
        return {**super().training_defaults(), "greater_is_better": False}

    def load_data(
        self, data_args: DataArguments, seed: int, cache_dir: str | None = None, with_train: bool = True
    ) -> TaskData:
        column = data_args.image_column_name
        splits = {}
        for split in ("train", "validation", "test"):
            folder = local_path(getattr(data_args, f"{split}_dir"), f"{split}_dir")
            if folder is not None:
                splits[split] = read_folder(folder, column)
        train, validation, test = pick_splits(splits, data_args, seed, with_train=with_train)
        found = {"train": train, "validation": validation, "test": test}
        summary = {f"{split}_examples": len(data) for split, data in found.items() if data is not None}
        return TaskData(train=train, validation=validation, test=test, id2label=dict(NAMES), summary=summary)

    def transforms(self, image_processor: Any, data_args: DataArguments, data: TaskData) -> tuple[Callable, Callable]:
        def apply(batch: dict[str, list]) -> dict[str, Any]:
            return transform_batch(batch, processor=image_processor, column=data_args.image_column_name)

        return apply, apply

    def collator(
        self, image_processor: Any, data: TaskData, data_args: DataArguments | None = None, model_config: Any = None
    ) -> Callable:
        return collate

    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        return RegressionMetric()

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        return {"problem_type": "regression"}

    def card_sections(self, context: Any) -> list[tuple[str, str]]:
        metrics = context.metrics.get("eval", {})
        return [("Errors", f"Mean absolute error {metrics.get('eval_mae', float('nan')):.4f} (brightness 0-1).")]

    def prediction_sink(self, model: Any, image_processor: Any, options: PredictOptions) -> PredictionSink:
        return RegressionSink(options)

    def sample_images(self, count: int) -> list[PILImage.Image]:
        rng = np.random.default_rng(0)
        return [PILImage.fromarray(np.full((48, 64, 3), int(rng.integers(30, 220)), np.uint8)) for _ in range(count)]
