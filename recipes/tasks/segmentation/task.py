"""Semantic segmentation: SegFormer on CamSeq/CamVid, or any ``AutoModelForSemanticSegmentation``.

Labels. Masks are converted once, before training, into class-id PNGs (see
:mod:`recipes.formats.segmentation`). Two recipe options decide which pixels are learned from:

* ``reduce_labels`` (default ``false``): raw class 0 is a "background/unlabelled" value, mapped to
  ``ignore_index``; every other value ``v`` becomes class ``v - 1``. With index masks, ``id2label`` then
  names the classes *after* the reduction (the Hugging Face convention, e.g. ADE20k); with a palette file,
  its first class is dropped (and named in the logs and the run manifest). Class 0 is never dropped
  unless you ask for it.
* ``ignore_index`` (default 255): the label of pixels that count neither in the loss nor in the metrics:
  padding added by the augmentations, ``reduce_labels``' class 0, the classes named in ``ignore_labels``
  (e.g. CamVid's ``Void``), unknown colours and out-of-range indices. It is also written to the model
  config (``semantic_loss_ignore_index`` / ``loss_ignore_index``) so the model's loss ignores them too.

Evaluation. Images *and* masks are resized to the model's input size (masks with nearest neighbour),
so metrics are measured at that resolution. Per batch, the logits (e.g. 1/4 of the input size for
SegFormer) are upsampled bilinearly to the mask size and reduced to class ids before being gathered;
a confusion matrix accumulates them, so memory does not grow with the validation set. The
``image-segmentation`` pipeline likewise upsamples the logits to each input image's own size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoModelForSemanticSegmentation

from recipes.config import RecipeError
from recipes.data.check_cache import CheckCache
from recipes.data.splits import pick_splits
from recipes.draw import plots
from recipes.tasks.base import PredictionSink, PredictOptions, Quickstart, RunContext, StreamingMetric, Task, TaskData
from recipes.tasks.parity import ParityRule, Tolerances
from recipes.tasks.segmentation import demo, formats
from recipes.tasks.segmentation.data import (
    SegmentationData,
    SegmentationDataArguments,
    check_and_convert_split,
    label_mapping,
    load_segmentation_source,
    log_pixel_share,
)
from recipes.tasks.segmentation.metric import SegmentationMetric
from recipes.tasks.segmentation.outputs import SegmentationSink
from recipes.tasks.segmentation.parity import MaskParity
from recipes.tasks.segmentation.report import fmt, labels_note, prediction_grid, training_palette
from recipes.tasks.segmentation.streaming import load_streaming_segmentation
from recipes.tasks.segmentation.transforms import (
    build_train_augmentation,
    logits_to_class_ids,
    processor_resizes_masks_exactly,
    transform_segmentation_batch,
)
from recipes.transforms import ProcessorGeometry, collate_images_and_labels, device_normaliser, uint8_batches

logger = logging.getLogger("recipes")

# --------------------------------------------------------------------------- task


class SemanticSegmentation(Task):
    """Fine-tune any ``AutoModelForSemanticSegmentation`` (SegFormer, UperNet, DPT, ...) on masks."""

    name = "semantic-segmentation"
    pipeline_tag = "image-segmentation"
    aliases = ("segmentation", "image-segmentation")
    architecture_suffixes = ("ForSemanticSegmentation",)
    demo_description = "the mask over the image and a legend of the classes present"
    demo_video = True
    quickstart = Quickstart("segmentation", "configs/quickstart/segmentation.yaml", demo.make_streets, "mean_iou",
                            "about 1/number of classes", demo.street_images)
    data_arguments_class = SegmentationDataArguments
    auto_model_class = AutoModelForSemanticSegmentation
    main_metric = "mean_iou"
    card_metrics = {
        "mean_iou": "Mean IoU",
        "mean_accuracy": "Mean accuracy",
        "overall_accuracy": "Pixel accuracy",
    }
    supports_streaming = True

    def load_data(
        self, data_args: SegmentationDataArguments, seed: int, cache_dir: str | None = None, with_train: bool = True
    ) -> TaskData:
        if data_args.streaming and with_train:
            return load_streaming_segmentation(data_args, seed, cache_dir)
        source = load_segmentation_source(data_args, cache_dir, with_train)
        mapping = label_mapping(source, data_args)
        train, validation, test = pick_splits(source.splits, data_args, seed, ordered_holdout=source.ordered,
                                              with_train=with_train)
        summary: dict[str, Any] = {
            "layout": source.layout,
            "mask_encoding": "colour" if source.palette is not None else "index",
            "palette_file": source.palette.source if source.palette is not None else None,
            "reduce_labels": data_args.reduce_labels,
            "ignore_index": data_args.ignore_index,
            "ignored_classes": list(mapping.dropped),
            "skipped_files": [],
            "invalid_label_files": [],
            "orphan_masks": source.orphan_masks,
        }
        if source.orphan_masks:
            logger.warning("%d mask(s) have no image and are not used, e.g. %s", len(source.orphan_masks),
                           source.orphan_masks[0])
        checked: dict[str, Dataset] = {}
        cache = CheckCache.from_args(data_args, cache_dir)
        for split, dataset in (("train", train), ("validation", validation), ("test", test)):
            if dataset is None:
                continue
            checked[split], report = check_and_convert_split(
                dataset, split, image_column=data_args.image_column_name, mask_column=source.mask_column,
                mapping=mapping, palette=source.palette, data_args=data_args, cache=cache,
            )
            for key in ("skipped_files", "invalid_label_files"):
                summary[key] += report.pop(key)
            summary.update(report)
        summary["check_cache"] = cache.summary()
        if "train_pixel_share" in summary:
            log_pixel_share(summary["train_pixel_share"])
        return SegmentationData(
            train=checked.get("train"),
            validation=checked["validation"],
            test=checked.get("test"),
            id2label=mapping.id2label,
            dataset_id=data_args.dataset_name,
            summary=summary,
            palette=training_palette(source.palette, mapping),
            ignore_index=data_args.ignore_index,
            stored_ignore=mapping.stored_ignore,
        )

    def transforms(self, image_processor: Any, data_args: SegmentationDataArguments, data: SegmentationData):
        geometry = ProcessorGeometry.from_processor(image_processor)
        common = {
            "image_column": data_args.image_column_name,
            "processor": image_processor,
            "masks_through_processor": processor_resizes_masks_exactly(image_processor),
            "stored_ignore": data.stored_ignore,
            "ignore_index": data.ignore_index,
            "label_lookup": data.label_lookup,
        }
        train_augment = build_train_augmentation(
            data_args.augmentation, geometry.height, geometry.width, mask_fill=data.stored_ignore
        )
        return (
            partial(transform_segmentation_batch, augment=train_augment, **common),
            partial(transform_segmentation_batch, augment=None, **common),
        )

    def stream_check(self, data_args: SegmentationDataArguments, data: SegmentationData) -> Callable | None:
        return data.stream_check

    def relabel(
        self, data: SegmentationData, data_args: SegmentationDataArguments, data_to_model: dict[int, int],
        id2label: dict[int, str],
    ) -> SegmentationData:
        if len(id2label) > data.stored_ignore:
            raise RecipeError(f"The checkpoint has {len(id2label)} classes, more than these converted masks can hold.")
        lookup = list(range(data.stored_ignore + 1))
        for data_id, model_id in data_to_model.items():
            lookup[data_id] = model_id
        by_name = {name: data.palette[i] for i, name in data.id2label.items()}
        palette = {i: by_name.get(name, (128, 128, 128)) for i, name in id2label.items()}
        return dataclasses.replace(data, id2label=dict(id2label), palette=palette, label_lookup=tuple(lookup))

    def collator(
        self, image_processor: Any, data: TaskData, data_args: Any = None, model_config: Any = None
    ) -> Callable:
        fast, keep_uint8 = uint8_batches(image_processor, data_args)
        return partial(collate_images_and_labels, processor=image_processor, fast=fast, keep_uint8=keep_uint8)

    def device_transform(self, image_processor: Any, data_args: SegmentationDataArguments) -> Callable | None:
        return device_normaliser(image_processor, data_args)

    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        return SegmentationMetric(data.id2label)

    def preprocess_logits_for_metrics(self, image_processor: Any, model_config: Any = None) -> Callable | None:
        return logits_to_class_ids

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        # Segmentation configs name their loss's ignore label either way (SegFormer, DPT, BEiT,
        # MobileViT: semantic_loss_ignore_index; UperNet: loss_ignore_index); the other one is inert.
        ignore_index = data.ignore_index
        return {"semantic_loss_ignore_index": ignore_index, "loss_ignore_index": ignore_index}

    def image_processor_kwargs(self, data_args: SegmentationDataArguments) -> dict[str, Any]:
        # Recorded in preprocessor_config.json so the saved processor treats masks as training did.
        return {"do_reduce_labels": data_args.reduce_labels}

    def make_plots(self, context: RunContext, output_dir: Path) -> dict[str, Path]:
        written = {}
        per_class = context.eval_details.get("per_class") or {}
        ious = {name: values["iou"] for name, values in per_class.items() if values["iou"] is not None}
        if ious:
            written["per_class_iou"] = plots.bar_chart(
                ious, output_dir / "per_class_iou.png", title="Validation IoU per class", xlabel="IoU"
            )
        grid = prediction_grid(context, output_dir / "predictions.png")
        if grid is not None:
            written["predictions"] = grid
        # The class colours travel with the model (the demo app and users colour predictions with them).
        palette = {str(index): list(colour) for index, colour in context.data.palette.items()}
        (output_dir / "palette.json").write_text(json.dumps(palette, indent=1))
        return written

    def card_sections(self, context: RunContext) -> list[tuple[str, str]]:
        sections = []
        per_class = context.eval_details.get("per_class")
        share = context.data.summary.get("train_pixel_share", {})
        if per_class:
            rows = ["| Class | IoU | Accuracy | Validation pixels | Train pixel share |", "|---|---|---|---|---|"]
            for name, values in per_class.items():
                rows.append(
                    f"| {name} | {fmt(values['iou'])} | {fmt(values['accuracy'])} | {values['pixels']} "
                    f"| {f'{share[name]:.2%}' if name in share else '-'} |"  # not counted in streamed runs
                )
            note = ("\n\n— : class absent from both the predictions and the validation masks (left out of the "
                    "mean IoU).")
            sections.append(("Per-class results (validation)", "\n".join(rows) + note))
        palette = context.data.palette
        if palette:
            rows = ["| Id | Class | Colour | RGB | Hex |", "|---|---|---|---|---|"]
            for index, name in context.data.id2label.items():
                colour = palette[index]
                code = formats.hex_colour(colour)
                rows.append(f'| {index} | {name} | <span style="color:{code}">███</span> | '
                            f"{tuple(colour)} | `{code}` |")
            sections.append(("Palette", "\n".join(rows)))
        sections.append(("Labels and evaluation", labels_note(context)))
        return sections

    def usage_snippet(self, model_id: str) -> str:
        return (
            "from transformers import pipeline\n\n"
            f'segmenter = pipeline("image-segmentation", model="{model_id}")\n'
            'for segment in segmenter("path/to/street.png"):  # one entry per class found in the image\n'
            '    print(segment["label"], segment["mask"].size)  # mask: PIL image at the input\'s size'
        )

    def prediction_sink(self, model: Any, image_processor: Any, options: PredictOptions) -> PredictionSink:
        return SegmentationSink(model.config, image_processor, options)

    def parity_rule(self, tolerances: Tolerances) -> ParityRule:
        return MaskParity(tolerances)

    def render(self, image: Any, prediction: dict[str, Any], palette: Any = None,
               id2label: dict[int, str] | None = None) -> Any:
        import numpy as np

        from recipes.draw.render import class_palette, draw_mask

        id2label = id2label or {}
        if palette is None:
            palette = class_palette(None, max(len(id2label), int(np.asarray(prediction["mask"]).max(initial=0)) + 1))
        return draw_mask(image, prediction, palette, id2label)

    def demo_outputs(self, gr: Any, config: Any) -> list[Any]:
        return demo.demo_outputs(gr)

    def demo_predict(self, pipe: Any, image: Any, scale: tuple[float, float], palette: Any, *controls: Any) -> Any:
        return demo.demo_predict(pipe, image, palette)
