"""Image classification: ViT on Food-101, or any ``AutoModelForImageClassification``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Image, load_dataset
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchvision.transforms import v2
from transformers import AutoModelForImageClassification

from recipes.config import DataArguments, RecipeError
from recipes.data import (
    drop_bad_images,
    load_hub_splits,
    local_path,
    pick_splits,
    require_columns,
    undecoded,
)
from recipes.tasks.base import StreamingMetric, Task, TaskData
from recipes.transforms import ProcessorGeometry, decode_to_tensor, encode_raw_rgb, normalize_batch

logger = logging.getLogger("recipes")

SPLIT_FOLDERS = {"train", "validation", "val", "valid", "test"}


@dataclass
class ClassificationDataArguments(DataArguments):
    """Data keys of the image-classification task."""

    label_column_name: str = field(default="label", metadata={"help": "Column holding the class labels."})
    cache_decoded_images: bool = field(
        default=False,
        metadata={
            "help": "Decode each training image once into the datasets cache (raw RGB, lossless) so epochs "
            "skip JPEG decoding. Costs H*W*3 bytes of disk per image."
        },
    )


# --------------------------------------------------------------------------- data


def load_classification_splits(data_args: ClassificationDataArguments, cache_dir: str | None) -> dict[str, Dataset]:
    """Splits from a Hub id, an image folder (``root/<class>/*``) or CSV/JSONL listings."""
    if data_args.dataset_name:
        return load_hub_splits(data_args, cache_dir)
    if data_args.train_file:
        return _load_listing_files(data_args)
    train_dir = local_path(data_args.train_dir, "train_dir")
    if train_dir is not None and not train_dir.is_dir():
        raise RecipeError(f"`train_dir` must be a folder of class folders, got the file {train_dir}.")
    if train_dir is None:
        raise RecipeError(
            "No data: set `dataset_name` (Hub id), `train_dir` (image folder) or `train_file` (CSV/JSONL)."
        )
    subdirs = {p.name for p in train_dir.iterdir() if p.is_dir()}
    if "train" in subdirs and subdirs <= SPLIT_FOLDERS:
        splits = _imagefolder(data_dir=str(train_dir))
    else:
        data_files = {"train": str(train_dir / "**")}
        for split, value in (("validation", data_args.validation_dir), ("test", data_args.test_dir)):
            folder = local_path(value, f"{split}_dir")
            if folder is not None:
                data_files[split] = str(folder / "**")
        splits = _imagefolder(data_files=data_files)
    return splits


def _imagefolder(**kwargs: Any) -> dict[str, Dataset]:
    where = kwargs.get("data_dir") or kwargs.get("data_files")
    try:
        loaded = load_dataset("imagefolder", **kwargs)
    except Exception as err:
        raise RecipeError(
            f"Could not read an image folder from {where}: {err}. Expected root/<class_name>/<image>.jpg "
            "(optionally inside train/, validation/ and test/ folders)."
        ) from err
    splits = dict(loaded)
    if "label" not in splits["train"].column_names:
        raise RecipeError(
            f"No class folders found in {where}: put each class's images in its own folder (root/<class>/img.jpg)."
        )
    return splits


def _load_listing_files(data_args: ClassificationDataArguments) -> dict[str, Dataset]:
    files = {
        split: local_path(value, f"{split}_file")
        for split, value in (
            ("train", data_args.train_file),
            ("validation", data_args.validation_file),
            ("test", data_args.test_file),
        )
        if value
    }
    splits = {}
    for split, path in files.items():
        builders = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
        builder = builders.get(path.suffix.lower())
        if builder is None:
            raise RecipeError(f"{path}: listing files must be .csv, .tsv, .json or .jsonl.")
        extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            dataset = load_dataset(builder, data_files=str(path), split="train", **extra)
        except Exception as err:
            raise RecipeError(f"Cannot read the listing {path}: {err}") from err
        column = data_args.image_column_name
        require_columns(dataset, {"image_column_name": column}, str(path))
        empty = [i + 2 for i, value in enumerate(dataset[column]) if not value]
        if empty:
            raise RecipeError(f"{path}: empty `{column}` on line(s) {empty[:10]}; every row needs an image path.")
        dataset = dataset.map(partial(_resolve_path, column=column, base=path.parent))
        splits[split] = dataset.cast_column(column, Image(decode=False))
    return splits


def _resolve_path(row: dict[str, Any], *, column: str, base: Path) -> dict[str, str]:
    """Make a listing's relative image path absolute (relative to the listing file)."""
    return {column: str(base / row[column])}


def ensure_class_labels(splits: dict[str, Dataset], column: str) -> dict[str, Dataset]:
    """Make ``column`` a ``ClassLabel`` in every split (string labels are encoded, names shared)."""
    train = splits["train"]
    feature = train.features[column]
    if isinstance(feature, ClassLabel):
        return splits
    values = set()
    for dataset in splits.values():
        values.update(dataset.unique(column))
    names = sorted(str(v) for v in values)
    if all(isinstance(v, (int, np.integer)) for v in values):
        names = [str(i) for i in range(int(max(values)) + 1)]
    class_label = ClassLabel(names=names)
    encoded = {}
    for split, dataset in splits.items():
        if isinstance(next(iter(values)), str):
            dataset = dataset.map(lambda row: {column: class_label.str2int(str(row[column]))})
        encoded[split] = dataset.cast_column(column, class_label)
    return encoded


# --------------------------------------------------------------------------- transforms


def build_train_augmentation(preset: str, height: int, width: int) -> v2.Compose:
    """Named training presets on ``uint8`` tensors: ``none``, ``basic`` (random-resized-crop + flip),
    ``strong`` (basic + TrivialAugmentWide + random erasing)."""
    size = (height, width)
    if preset == "none":
        return build_eval_transform(height, width)
    basic = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    if preset == "basic":
        return v2.Compose(basic)
    if preset == "strong":
        return v2.Compose([*basic, v2.TrivialAugmentWide(), v2.RandomErasing(p=0.25, value=0)])
    raise RecipeError(f"Unknown augmentation preset `{preset}` for image-classification: use none, basic or strong.")


def build_eval_transform(height: int, width: int, crop_pct: float = 0.875) -> v2.Compose:
    """Resize the short side to ``size / crop_pct`` then centre-crop to the model's input size."""
    resize = round(max(height, width) / crop_pct)
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop((height, width))])


def transform_classification_batch(
    batch: dict[str, list], *, image_column: str, label_column: str, augment: Callable
) -> dict[str, list]:
    """``with_transform`` function: decode, augment to ``uint8`` tensors, keep the labels."""
    return {
        "pixel_values": [augment(decode_to_tensor(record)) for record in batch[image_column]],
        "labels": list(batch[label_column]),
    }


def collate_classification(examples: list[dict[str, Any]], *, geometry: ProcessorGeometry) -> dict[str, torch.Tensor]:
    """Stack ``uint8`` images, normalise the batch at once, and stack the labels."""
    pixels = torch.stack([example["pixel_values"] for example in examples])
    return {
        "pixel_values": normalize_batch(pixels, geometry),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
    }


def decode_into_cache(batch: dict[str, list], *, image_column: str) -> dict[str, list]:
    """``Dataset.map`` function: replace encoded images by their decoded RGB pixels (lossless)."""
    return {
        image_column: [
            {"bytes": encode_raw_rgb(decode_to_tensor(record)), "path": record.get("path")}
            for record in batch[image_column]
        ]
    }


# --------------------------------------------------------------------------- metrics


class ClassificationMetric(StreamingMetric):
    """Accuracy, top-5 accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix.

    Streams through torchmetrics state (a confusion matrix and counters), so memory does not
    grow with the evaluation set.
    """

    def __init__(self, id2label: dict[int, str]) -> None:
        self.id2label = id2label
        num_classes = len(id2label)
        metrics: dict[str, Any] = {
            "accuracy": MulticlassAccuracy(num_classes, average="micro", sync_on_compute=False),
            "f1_macro": MulticlassF1Score(num_classes, average="macro", sync_on_compute=False),
            "precision": MulticlassPrecision(num_classes, average=None, sync_on_compute=False),
            "recall": MulticlassRecall(num_classes, average=None, sync_on_compute=False),
            "f1": MulticlassF1Score(num_classes, average=None, sync_on_compute=False),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes, sync_on_compute=False),
        }
        if num_classes >= 5:
            metrics["top5_accuracy"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", sync_on_compute=False)
        self.collection = MetricCollection(metrics, compute_groups=False)
        self.num_samples = 0
        self.predictions: list[int] = []  # one int per example, for `evaluate` modules
        self.references: list[int] = []

    def update(self, predictions: Any, labels: Any) -> None:
        logits = torch.as_tensor(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)
        labels = torch.as_tensor(labels).long()
        self.collection.update(logits.float().cpu(), labels.cpu())
        self.num_samples += int(labels.numel())
        if self.keep_predictions:
            self.predictions.extend(logits.argmax(-1).tolist())
            self.references.extend(labels.tolist())

    def compute(self) -> dict[str, float]:
        values = self.collection.compute()
        names = [self.id2label[i] for i in range(len(self.id2label))]
        self._details = {
            "per_class": {
                name: {
                    "precision": float(values["precision"][i]),
                    "recall": float(values["recall"][i]),
                    "f1": float(values["f1"][i]),
                }
                for i, name in enumerate(names)
            },
            "confusion_matrix": values["confusion_matrix"].tolist(),
            "labels": names,
            "predictions": list(self.predictions),
            "references": list(self.references),
        }
        result = {"accuracy": float(values["accuracy"]), "f1_macro": float(values["f1_macro"])}
        if "top5_accuracy" in values:
            result["top5_accuracy"] = float(values["top5_accuracy"])
        result["samples"] = self.num_samples
        return result

    def reset(self) -> None:
        self.collection.reset()
        self.num_samples = 0
        self.predictions, self.references = [], []


# --------------------------------------------------------------------------- task


class ImageClassification(Task):
    """Fine-tune any ``AutoModelForImageClassification`` on an image-classification dataset."""

    name = "image-classification"
    pipeline_tag = "image-classification"
    data_arguments_class = ClassificationDataArguments
    auto_model_class = AutoModelForImageClassification
    main_metric = "accuracy"
    card_metrics = {"accuracy": "Accuracy", "top5_accuracy": "Top-5 accuracy", "f1_macro": "Macro F1"}

    def load_data(self, data_args: ClassificationDataArguments, seed: int, cache_dir: str | None = None) -> TaskData:
        splits = load_classification_splits(data_args, cache_dir)
        image_column, label_column = data_args.image_column_name, data_args.label_column_name
        for split, dataset in splits.items():
            require_columns(
                dataset,
                {"image_column_name": image_column, "label_column_name": label_column},
                f"the {split} split",
            )
        splits = ensure_class_labels(splits, label_column)
        train, validation, test = pick_splits(splits, data_args, seed, stratify_by=label_column)
        names = train.features[label_column].names
        id2label = dict(enumerate(names))
        summary: dict[str, Any] = {"skipped_files": []}
        checked = {}
        for split, dataset in (("train", train), ("validation", validation), ("test", test)):
            if dataset is None:
                continue
            dataset = undecoded(dataset, image_column)
            if data_args.check_images:
                dataset, bad = drop_bad_images(
                    dataset, image_column, split, data_args.strict, data_args.preprocessing_num_workers
                )
                summary["skipped_files"] += [{"split": split, "path": b.path, "reason": b.reason} for b in bad]
            checked[split] = dataset
        for split, dataset in checked.items():
            counts = np.bincount(np.asarray(dataset[label_column], dtype=np.int64), minlength=len(names))
            summary[f"{split}_examples"] = len(dataset)
            summary[f"{split}_per_class"] = {names[i]: int(c) for i, c in enumerate(counts)}
        if data_args.cache_decoded_images:
            checked["train"] = checked["train"].map(
                partial(decode_into_cache, image_column=image_column),
                batched=True,
                batch_size=32,
                num_proc=data_args.preprocessing_num_workers,
                desc="Decoding training images into the cache",
            )
        return TaskData(
            train=checked["train"],
            validation=checked["validation"],
            test=checked.get("test"),
            id2label=id2label,
            dataset_id=data_args.dataset_name,
            summary=summary,
        )

    def transforms(self, image_processor: Any, data_args: ClassificationDataArguments, data: TaskData):
        geometry = ProcessorGeometry.from_processor(image_processor)
        common = {"image_column": data_args.image_column_name, "label_column": data_args.label_column_name}
        train_augment = build_train_augmentation(data_args.augmentation, geometry.height, geometry.width)
        eval_augment = build_eval_transform(geometry.height, geometry.width)
        return (
            partial(transform_classification_batch, augment=train_augment, **common),
            partial(transform_classification_batch, augment=eval_augment, **common),
        )

    def collator(self, image_processor: Any, data: TaskData):
        return partial(collate_classification, geometry=ProcessorGeometry.from_processor(image_processor))

    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        return ClassificationMetric(data.id2label)

    def make_plots(self, context: Any, output_dir: Path) -> dict[str, Path]:
        from recipes import plots

        details = context.eval_details
        written = {}
        if details.get("confusion_matrix"):
            written["confusion_matrix"] = plots.confusion_matrix(
                np.asarray(details["confusion_matrix"]), details["labels"], output_dir / "confusion_matrix.png"
            )
        worst = plots.classification_top_losses(context, output_dir / "top_losses.png")
        if worst is not None:
            written["top_losses"] = worst
        return written

    def card_sections(self, context: Any) -> list[tuple[str, str]]:
        per_class = context.eval_details.get("per_class")
        if not per_class:
            return []
        rows = ["| Class | Precision | Recall | F1 |", "|---|---|---|---|"]
        rows += [
            f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} |" for name, v in per_class.items()
        ]
        return [("Per-class results (validation)", "\n".join(rows))]
