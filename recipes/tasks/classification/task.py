"""Image classification: ViT on Food-101, or any ``AutoModelForImageClassification``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from transformers import AutoModelForImageClassification

from recipes.config import RecipeError
from recipes.data.check_cache import CheckCache, arrow_column
from recipes.data.sources import drop_bad_images, require_columns, undecoded
from recipes.data.splits import pick_splits
from recipes.decode.turbojpeg import region_decoding_status
from recipes.tasks.base import PredictionSink, PredictOptions, Quickstart, RunContext, StreamingMetric, Task, TaskData
from recipes.tasks.classification import demo, report
from recipes.tasks.classification.data import (
    ClassificationDataArguments,
    ensure_class_labels,
    load_classification_splits,
    translate_labels,
)
from recipes.tasks.classification.metric import ClassificationMetric
from recipes.tasks.classification.outputs import ClassificationSink
from recipes.tasks.classification.parity import TopLabelParity
from recipes.tasks.classification.streaming import label_check, load_streaming_classification
from recipes.tasks.classification.transforms import (
    build_train_augmentation,
    collate_classification,
    decode_into_cache,
    encoded_classification_batch,
    transform_classification_batch,
)
from recipes.tasks.parity import ParityRule, Tolerances
from recipes.transforms import (
    ProcessorGeometry,
    device_normaliser,
    pixels_on_device,
    uint8_batches,
    verified_fast_normalisation,
)

logger = logging.getLogger("recipes")

# --------------------------------------------------------------------------- task


class ImageClassification(Task):
    """Fine-tune any ``AutoModelForImageClassification`` on an image-classification dataset."""

    name = "image-classification"
    pipeline_tag = "image-classification"
    aliases = ("classification",)
    architecture_suffixes = ("ForImageClassification", "ForImageClassificationWithTeacher")
    demo_description = "the top classes and their probabilities"
    quickstart = Quickstart("classification", "configs/quickstart/classification.yaml", demo.make_shapes,
                            "accuracy", "0.25 (4 balanced classes)", demo.shape_images)
    data_arguments_class = ClassificationDataArguments
    auto_model_class = AutoModelForImageClassification
    main_metric = "accuracy"
    card_metrics = {"accuracy": "Accuracy", "top5_accuracy": "Top-5 accuracy", "f1_macro": "Macro F1"}
    supports_streaming = True

    def load_data(
        self, data_args: ClassificationDataArguments, seed: int, cache_dir: str | None = None, with_train: bool = True
    ) -> TaskData:
        if data_args.streaming and with_train:
            return load_streaming_classification(data_args, seed, cache_dir)
        unstorable: list[dict[str, str]] = []  # files named in another encoding than UTF-8: skipped at listing
        splits = load_classification_splits(data_args, cache_dir, skipped=unstorable, with_train=with_train)
        image_column, label_column = data_args.image_column_name, data_args.label_column_name
        for split, dataset in splits.items():
            require_columns(
                dataset,
                {"image_column_name": image_column, "label_column_name": label_column},
                f"the {split} split",
            )
        splits = ensure_class_labels(splits, label_column)
        train, validation, test = pick_splits(splits, data_args, seed, stratify_by=label_column,
                                              with_train=with_train)
        names = (train or validation).features[label_column].names
        id2label = dict(enumerate(names))
        summary: dict[str, Any] = {"skipped_files": list(unstorable)}
        cache = CheckCache.from_args(data_args, cache_dir)
        checked = {}
        for split, dataset in (("train", train), ("validation", validation), ("test", test)):
            if dataset is None:
                continue
            dataset = undecoded(dataset, image_column)
            if data_args.check_images:
                dataset, bad = drop_bad_images(dataset, image_column, split, data_args.strict, cache=cache)
                summary["skipped_files"] += [{"split": split, "path": b.path, "reason": b.reason} for b in bad]
            checked[split] = dataset
        for split, dataset in checked.items():
            labels = arrow_column(dataset, label_column).to_numpy().astype(np.int64)
            counts = np.bincount(labels, minlength=len(names))
            summary[f"{split}_examples"] = len(dataset)
            summary[f"{split}_per_class"] = {names[i]: int(c) for i, c in enumerate(counts)}
        if data_args.cache_decoded_images and "train" in checked:
            checked["train"] = cache.map(
                checked["train"], partial(decode_into_cache, image_column=image_column), check="decoded-images",
                split="train", desc="Decoding training images into the cache", file_columns=[image_column],
                modules=["recipes.decode.tensors"], batched=True, batch_size=32,
            )
        summary["check_cache"] = cache.summary()
        return TaskData(
            train=checked.get("train"),
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
        if data_args.gpu_decode:  # the Trainer augments on the device (device_transform)
            train = partial(encoded_classification_batch, **common)
        else:
            train = partial(transform_classification_batch, augment=train_augment, processor=image_processor, **common)
            if not data_args.cache_decoded_images:
                logger.info(region_decoding_status())
        return (
            train,
            partial(transform_classification_batch, augment=None, processor=image_processor, **common),
        )

    def stream_check(self, data_args: ClassificationDataArguments, data: TaskData) -> Callable:
        return label_check(data_args, data.id2label)

    def relabel(
        self, data: TaskData, data_args: ClassificationDataArguments, data_to_model: dict[int, int],
        id2label: dict[int, str],
    ) -> TaskData:
        feature = ClassLabel(names=[id2label[i] for i in range(len(id2label))])
        translate = partial(translate_labels, column=data_args.label_column_name, mapping=data_to_model)

        def convert(dataset: Dataset | None) -> Dataset | None:
            if dataset is None:
                return None
            features = dataset.features.copy()
            features[data_args.label_column_name] = feature
            return dataset.map(translate, batched=True, features=features, desc="Label ids → the checkpoint's")

        return dataclasses.replace(
            data, train=convert(data.train), validation=convert(data.validation), test=convert(data.test),
            id2label=dict(id2label),
        )

    def collator(
        self, image_processor: Any, data: TaskData, data_args: Any = None, model_config: Any = None
    ) -> Callable:
        fast, keep_uint8 = uint8_batches(image_processor, data_args)
        return partial(collate_classification, processor=image_processor, fast=fast, keep_uint8=keep_uint8)

    def device_transform(self, image_processor: Any, data_args: ClassificationDataArguments) -> Callable | None:
        if not data_args.gpu_decode:
            return device_normaliser(image_processor, data_args)
        if data_args.cache_decoded_images:
            raise RecipeError("`gpu_decode` decodes JPEGs on the GPU and `cache_decoded_images` stores them decoded: "
                              "choose one (set one of them to false).")
        if not torch.cuda.is_available():
            logger.warning("gpu_decode: no CUDA GPU here, so the main process decodes training images on the CPU "
                           "(slower than DataLoader workers). Use it on GPU machines.")
        geometry = ProcessorGeometry.from_processor(image_processor)
        augment = build_train_augmentation(data_args.augmentation, geometry.height, geometry.width)
        return partial(pixels_on_device, augment=augment, processor=image_processor,
                       fast=verified_fast_normalisation(image_processor))

    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        return ClassificationMetric(data.id2label)

    def make_plots(self, context: RunContext, output_dir: Path) -> dict[str, Path]:
        written = {
            "confusion_matrix": report.confusion_matrix_plot(context, output_dir / "confusion_matrix.png"),
            "top_losses": report.top_losses_plot(context, output_dir / "top_losses.png"),
        }
        return {name: path for name, path in written.items() if path is not None}

    def card_sections(self, context: RunContext) -> list[tuple[str, str]]:
        per_class = context.eval_details.get("per_class")
        return [("Per-class results (validation)", report.per_class_markdown(per_class))] if per_class else []

    def prediction_sink(self, model: Any, image_processor: Any, options: PredictOptions) -> PredictionSink:
        return ClassificationSink(model.config, options)

    def parity_rule(self, tolerances: Tolerances) -> ParityRule:
        return TopLabelParity(tolerances)

    def render(self, image: Any, prediction: dict[str, Any], palette: Any = None,
               id2label: dict[int, str] | None = None) -> Any:
        from recipes.draw.render import draw_top_labels

        return draw_top_labels(image, prediction)

    def demo_outputs(self, gr: Any, config: Any) -> list[Any]:
        return demo.demo_outputs(gr, config)

    def demo_predict(self, pipe: Any, image: Any, scale: tuple[float, float], palette: Any, *controls: Any) -> Any:
        return demo.demo_predict(pipe, image)
