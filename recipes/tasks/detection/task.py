"""Object detection: DETR on licence plates, or any ``AutoModelForObjectDetection``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, List
from transformers import AutoModelForObjectDetection

from recipes.config import RecipeError
from recipes.tasks.base import (
    PredictionSink,
    PredictOptions,
    Quickstart,
    RunContext,
    StreamingMetric,
    Task,
    TaskData,
)
from recipes.tasks.detection import demo
from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data, translate_categories
from recipes.tasks.detection.metric import DetectionMetric, detections_at_original_size, nms_iou_of
from recipes.tasks.detection.outputs import DetectionSink
from recipes.tasks.detection.parity import BoxParity
from recipes.tasks.detection.report import (
    data_checks_markdown,
    duplicate_boxes_markdown,
    precision_recall_plot,
    prediction_grid,
)
from recipes.tasks.detection.streaming import load_streaming_detection, record_check
from recipes.tasks.detection.transforms import (
    DetectionBatch,
    boxes_in_canvas_frame,
    build_detection_augmentation,
    collate_detection,
    multi_scale_sizes,
    training_resize,
    transform_detection_batch,
)
from recipes.tasks.parity import ParityRule, Tolerances

# --------------------------------------------------------------------------- task


class ObjectDetection(Task):
    """Fine-tune any ``AutoModelForObjectDetection`` (DETR, Conditional/Deformable DETR, YOLOS, RT-DETR…)."""

    name = "object-detection"
    pipeline_tag = "object-detection"
    aliases = ("detection",)
    architecture_suffixes = ("ForObjectDetection",)
    demo_description = "the boxes with label and score, and a score-threshold slider"
    demo_video = True
    onnx_outputs = ("logits", "pred_boxes")
    quickstart = Quickstart("detection", "configs/quickstart/detection.yaml", demo.make_plates, "map",
                            "0 (random boxes)", demo.plate_images)
    data_arguments_class = DetectionDataArguments
    auto_model_class = AutoModelForObjectDetection
    main_metric = "map"
    card_metrics = {
        "map": "mAP@[.5:.95]",
        "map_50": "mAP@.50",
        "map_75": "mAP@.75",
        "map_small": "mAP (small)",
        "map_medium": "mAP (medium)",
        "map_large": "mAP (large)",
        "mar_1": "mAR@1",
        "mar_10": "mAR@10",
        "mar_100": "mAR@100",
    }
    supports_streaming = True

    def forced_training_arguments(self) -> dict[str, Any]:
        # Labels are lists of per-image dicts and predictions one dict per image: gather them as objects.
        return {**super().forced_training_arguments(), "eval_use_gather_object": True}

    def load_data(
        self, data_args: DetectionDataArguments, seed: int, cache_dir: str | None = None, with_train: bool = True
    ) -> TaskData:
        if data_args.streaming and with_train:
            return load_streaming_detection(data_args, seed, cache_dir)
        return load_detection_data(data_args, seed, cache_dir, with_train=with_train)

    def stream_check(self, data_args: DetectionDataArguments, data: TaskData) -> Callable:
        return record_check(data_args, data)

    def transforms(self, image_processor: Any, data_args: DetectionDataArguments, data: TaskData):
        batch_sizes = multi_scale_sizes(image_processor, data_args.multi_scale)
        augment = build_detection_augmentation(data_args.augmentation, image_processor, resize=batch_sizes is None)
        train_resizes_itself = batch_sizes is not None or (
            augment is not None and training_resize(image_processor) is not None)
        return (
            partial(transform_detection_batch, image_processor=image_processor, augment=augment,
                    processor_resizes=not train_resizes_itself, batch_sizes=batch_sizes),
            partial(transform_detection_batch, image_processor=image_processor, augment=None, processor_resizes=True),
        )

    def check_image_processor(self, image_processor: Any) -> None:
        if not hasattr(image_processor, "post_process_object_detection"):
            raise RecipeError(
                f"The image processor {type(image_processor).__name__} has no `post_process_object_detection`, so "
                "object-detection outputs cannot be turned into boxes. Use the checkpoint of a detection model, or "
                "set `image_processor_name` to a detection processor (e.g. the DETR one)."
            )

    def relabel(
        self, data: TaskData, data_args: DetectionDataArguments, data_to_model: dict[int, int],
        id2label: dict[int, str],
    ) -> TaskData:
        names = [id2label[i] for i in range(len(id2label))]

        def convert(dataset: Dataset | None) -> Dataset | None:
            if dataset is None:
                return None
            features = dataset.features.copy()
            features["objects"]["category"] = List(ClassLabel(names=names))
            return dataset.map(partial(translate_categories, mapping=data_to_model), batched=True, features=features,
                               desc="Label ids → the checkpoint's")

        return dataclasses.replace(data, train=convert(data.train), validation=convert(data.validation),
                                   test=convert(data.test), id2label=dict(id2label))

    def collator(
        self, image_processor: Any, data: TaskData, data_args: Any = None, model_config: Any = None
    ) -> Callable[[list[dict[str, Any]]], DetectionBatch]:
        return partial(collate_detection,
                       return_pixel_mask="pixel_mask" in getattr(image_processor, "model_input_names", ()),
                       canvas_frame=boxes_in_canvas_frame(getattr(model_config, "model_type", None)))

    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        return DetectionMetric(data.id2label)

    def preprocess_logits_for_metrics(self, image_processor: Any, model_config: Any = None) -> Callable:
        return partial(detections_at_original_size, image_processor=image_processor,
                       nms_iou=nms_iou_of(model_config))

    def make_plots(self, context: RunContext, output_dir: Path) -> dict[str, Path]:
        written = {}
        grid = prediction_grid(context, output_dir / "validation_predictions.png",
                               limit=max(1, min(8, context.recipe.run.max_plot_images)))
        if grid is not None:
            written["validation_predictions"] = grid
        curve = precision_recall_plot(context.eval_details, output_dir / "precision_recall.png")
        if curve is not None:
            written["precision_recall"] = curve
        return written

    def card_sections(self, context: RunContext) -> list[tuple[str, str]]:
        sections = []
        per_class = context.eval_details.get("per_class")
        if per_class:
            rows = ["| Class | AP@[.5:.95] | AP@.50 | AP@.75 | Ground-truth boxes |", "|---|---|---|---|---|"]
            for name, values in per_class.items():
                cells = ["-" if values.get(k) is None else f"{values[k]:.4f}" for k in ("ap", "ap50", "ap75")]
                rows.append(f"| {name} | {' | '.join(cells)} | {values.get('gt_boxes', 0)} |")
            sections.append(("Per-class AP (validation)", "\n".join(rows)))
        if context.data is not None and context.data.summary.get("train_statistics"):
            sections.append(("Data checks", data_checks_markdown(context.data.summary)))
        nms_iou = nms_iou_of(context.model_config)
        if nms_iou is not None and nms_iou < 1.0:
            sections.append(("Duplicate boxes", duplicate_boxes_markdown(nms_iou)))
        return sections

    def usage_snippet(self, model_id: str) -> str:
        return (
            "from transformers import pipeline\n\n"
            f'detector = pipeline("object-detection", model="{model_id}")\n'
            'for found in detector("path/to/image.jpg", threshold=0.5):\n'
            '    print(found["label"], round(found["score"], 3), found["box"])  # box: xmin, ymin, xmax, ymax'
        )

    def prediction_sink(self, model: Any, image_processor: Any, options: PredictOptions) -> PredictionSink:
        return DetectionSink(model.config, image_processor, options)

    def parity_rule(self, tolerances: Tolerances) -> ParityRule:
        return BoxParity(tolerances)

    def render(self, image: Any, prediction: dict[str, Any], palette: Any = None,
               id2label: dict[int, str] | None = None) -> Any:
        from recipes.draw.render import draw_boxes

        return draw_boxes(image, prediction, palette)

    def demo_controls(self, gr: Any, threshold: float) -> list[Any]:
        return demo.demo_controls(gr, threshold)

    def demo_outputs(self, gr: Any, config: Any) -> list[Any]:
        return demo.demo_outputs(gr)

    def demo_predict(self, pipe: Any, image: Any, scale: tuple[float, float], palette: Any, *controls: Any) -> Any:
        return demo.demo_predict(pipe, image, scale, palette, *controls)
