"""The arguments of a run and the error every bad input becomes.

A recipe names its ``task`` and sets any field of :class:`RunArguments`, the task's data
arguments (a subclass of :class:`DataArguments`), :class:`ModelArguments` and
:class:`transformers.TrainingArguments`; :mod:`recipes.parse` reads it from YAML and the command line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments


class RecipeError(ValueError):
    """A recipe, a data folder or a command line that cannot be used; the message says how to fix it."""


@dataclass
class RunArguments:
    """What the run does around training: task, early stopping, extra metrics, plots and the model card."""

    task: str = field(
        default="image-classification",
        metadata={"help": "image-classification, object-detection or semantic-segmentation."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement."}
    )
    extra_metrics: list[str] = field(
        default_factory=list,
        metadata={"help": "`evaluate` metric ids or local metric-module paths computed at the end. Their Python "
                  "code runs: needs `trust_remote_code: true`."},
    )
    license: str = field(default="apache-2.0", metadata={"help": "License written into the model card."})
    card_tags: list[str] = field(default_factory=list, metadata={"help": "Extra tags for the model card."})
    auto_resume: bool = field(
        default=True,
        metadata={"help": "Continue from the last checkpoint in output_dir when there is one (false: start over)."},
    )
    push_checkpoints: bool = field(
        default=False,
        metadata={"help": "Push every saved checkpoint to checkpoints/checkpoint-N of the Hub repo `hub_model_id`, "
                  "in the background (also on with push_to_hub and hub_strategy checkpoint/all_checkpoints)."},
    )
    resume_from_hub: str | None = field(
        default=None,
        metadata={"help": "Hub repo (user/name) whose last pushed checkpoint this run continues, e.g. on a new "
                  "machine."},
    )
    evaluate_only: bool = field(
        default=False,
        metadata={"help": "Skip training: evaluate `model_name_or_path` and write the outputs (labels matched by "
                  "name)."},
    )
    find_lr: bool = field(
        default=False,
        metadata={"help": "LR range test instead of training: a sweep of 100 steps (or max_steps), lr_find.png and "
                  "a suggested rate."},
    )
    make_plots: bool = field(default=True, metadata={"help": "Write PNG plots next to the model."})
    max_plot_images: int = field(default=16, metadata={"help": "Images shown in prediction grids."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Write into an output_dir that holds files vision-recipes did not write (its README.md, "
                  "config.json... are replaced); without it such a folder stops the run (exit 2) before anything is "
                  "written."},
    )
    push_photos: bool = field(
        default=False,
        metadata={"help": "Also push data photos: examples/ (validation images for the demo), eval-*/ folders and "
                  "the prediction plots drawn on validation photos (top_losses.png, predictions.png...)."},
    )


@dataclass
class DataArguments:
    """Where the data comes from and how it is split. Tasks subclass this to add their own keys."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, e.g. ethz/food101."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_split: str = field(default="train", metadata={"help": "Split (slicing allowed: train[:5000])."})
    validation_split: str | None = field(
        default=None, metadata={"help": "Validation split; default: the dataset's validation or test split."}
    )
    test_split: str | None = field(default=None, metadata={"help": "Split evaluated once at the end."})
    train_dir: str | None = field(default=None, metadata={"help": "Local training folder."})
    validation_dir: str | None = field(default=None, metadata={"help": "Local validation folder."})
    test_dir: str | None = field(default=None, metadata={"help": "Local test folder."})
    train_file: str | None = field(default=None, metadata={"help": "CSV/JSONL listing image paths and labels."})
    validation_file: str | None = field(default=None, metadata={"help": "CSV/JSONL for validation."})
    test_file: str | None = field(default=None, metadata={"help": "CSV/JSONL for test."})
    dataset_format: str = field(default="auto", metadata={"help": "Layout of local folders; auto-detected."})
    image_column_name: str = field(default="image", metadata={"help": "Column holding the images."})
    train_val_split: float = field(
        default=0.15, metadata={"help": "Fraction of train held out when there is no validation split."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep this many training examples (seeded sample; streaming: the first ones)."}
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Keep this many validation/test examples (a seeded sample; the first frames of video "
                  "hold-outs)."},
    )
    augmentation: str = field(
        default="basic",
        metadata={"help": "Augmentation preset: none, basic or strong (object detection also hflip: flips only)."},
    )
    strict: bool = field(
        default=False, metadata={"help": "Stop on the first bad file instead of skipping and reporting it."}
    )
    check_images: bool = field(
        default=True, metadata={"help": "Decode every local image once before training to find bad files."}
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={"help": "Processes for the data checks; default: min(8, CPUs), one per 256 images at most."},
    )
    recheck_data: bool = field(
        default=False,
        metadata={"help": "Redo the data checks instead of using their cached result (kept in the datasets cache "
                  "per dataset fingerprint and file sizes/modification times)."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the training data (Hub dataset, or local *.parquet / *.tar shards) instead of "
                  "downloading and preparing it first; needs max_steps (see docs/streaming.md)."},
    )
    shuffle_buffer_size: int = field(
        default=1000, metadata={"help": "Streaming: examples in the seeded shuffle buffer (0: no shuffling)."}
    )
    normalize_on_device: bool = field(
        default=True,
        metadata={"help": "Training batches leave the DataLoader workers as uint8 and the training process "
                  "rescales and normalises them on its device (classification, segmentation; 4x less shared memory "
                  "and host-to-device traffic; "
                  "when the processor's pixel steps are exactly rescale + normalise). false: the workers do it."},
    )
    max_image_pixels: int = field(
        default=178_956_970,
        metadata={"help": "Images whose header claims more pixels (width x height) are bad images, skipped and "
                  "listed (strict: the run stops) before anything is decoded; default Pillow's limit, ~179 million."},
    )


@dataclass
class ModelArguments:
    """Which model to fine-tune (a Hub id / local checkpoint) or build from a config (random init)."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Hub id or local checkpoint."})
    model_type: str | None = field(
        default=None, metadata={"help": "Build a randomly initialised model of this type (offline)."}
    )
    config_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Config attributes to set (YAML mapping or JSON string)."}
    )
    image_processor_name: str | None = field(
        default=None, metadata={"help": "Image processor id/path; default: model_name_or_path."}
    )
    image_processor_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Image processor attributes, e.g. {size: {height: 64, width: 64}}."}
    )
    ignore_mismatched_sizes: bool = field(
        default=True, metadata={"help": "Replace a pretrained head whose size differs from the labels."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from the Hub."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models are cached."})
    backbone_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate for parameters whose name contains 'backbone' (DETR-style)."}
    )
    head_warmup_epochs: float = field(
        default=0.0,
        metadata={"help": "Train only the new head (parameters not in the checkpoint) for this many epochs first."},
    )
    layer_decay: float | None = field(
        default=None,
        metadata={"help": "Layer-wise learning-rate decay: block k of L gets lr * layer_decay**(L + 1 - k); head: lr."},
    )
    batchnorm_momentum: float | None = field(
        default=None,
        metadata={"help": "Momentum of every BatchNorm layer; default: PyTorch's 0.1 for layers that came with a "
                  "TensorFlow decay (MobileNet, EfficientNet), the others unchanged."},
    )
    freeze_batchnorm: bool = field(
        default=False,
        metadata={"help": "Keep the pretrained BatchNorm running statistics (BatchNorm in eval mode); small batches."},
    )
    backbone_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Build the `model_type` detector on this pretrained backbone: a classification checkpoint "
                  "with an AutoBackbone (ResNet, ConvNeXt, …), a timm checkpoint (timm/<name> or a folder), or a "
                  "detector whose backbone it is. Its tensors are loaded, the rest is new."},
    )
    backbone_out_indices: list[int] | None = field(
        default=None,
        metadata={"help": "Backbone feature levels the detector reads; default: the last three (RT-DETR, D-FINE, "
                  "Deformable DETR) or the last one (DETR, Conditional DETR)."},
    )
    box_nms_iou: float | None = field(
        default=None,
        metadata={"help": "Object detection: drop a box when a higher-scoring box of its class overlaps it by more "
                  "than this IoU (non-maximum suppression after the model's post-processing) in evaluation, predict, "
                  "plots and the demo. Saved in the model's config (`box_nms_iou`), so the checkpoint keeps it; "
                  "1 turns it off. Default: the model's own post-processing only (DETR-style detectors learn not to "
                  "repeat a box; one trained briefly still does). pipeline() does not apply it."},
    )
    channels_last: bool | None = field(
        default=None,
        metadata={"help": "channels_last memory format; default: on for convolutional models on CUDA, off on CPU."},
    )
    ema: bool = field(
        default=False,
        metadata={"help": "Keep an exponential moving average (EMA) of the weights, BatchNorm statistics included "
                  "(timm's ModelEmaV3), updated after every optimizer step: evaluations, the best-checkpoint "
                  "choice and the saved model are the EMA's; checkpoints hold it (ema.safetensors) for resuming. "
                  "Not with FSDP or DeepSpeed."},
    )
    ema_decay: float = field(
        default=0.999,
        metadata={"help": "EMA decay (0 < decay < 1): the average spans about 1 / (1 - decay) steps. With ema_warmup "
                  "it is the cap the warmed-up decay reaches (0.999 at about 10,000 steps)."},
    )
    ema_warmup: bool = field(
        default=True,
        metadata={"help": "Warm the EMA decay up as 1 - step ** -0.75 (capped by ema_decay; e.g. 0.95 at step "
                  "56, 0.986 at step 300), so short fine-tuning runs average their recent steps instead of staying "
                  "near the first ones. false: ema_decay from the second step."},
    )

    def __post_init__(self) -> None:
        self.config_overrides = _as_mapping(self.config_overrides, "config_overrides")
        self.image_processor_overrides = _as_mapping(self.image_processor_overrides, "image_processor_overrides")
        if self.backbone_name_or_path and (self.model_name_or_path or not self.model_type):
            raise RecipeError(
                "`backbone_name_or_path` builds a new detector around a pretrained backbone: set `model_type` (e.g. "
                "rt_detr_v2) and leave `model_name_or_path` unset (a full checkpoint already has its backbone)."
            )
        if self.box_nms_iou is not None and not 0.0 < self.box_nms_iou <= 1.0:
            raise RecipeError(
                f"`box_nms_iou: {self.box_nms_iou}` must lie in (0, 1]: the IoU above which a lower-scoring box of the "
                "same class is dropped (e.g. 0.7), or 1 to keep every box."
            )
        if not 0.0 < self.ema_decay < 1.0:
            raise RecipeError(
                f"`ema_decay: {self.ema_decay}` must lie strictly between 0 and 1 (the EMA spans about 1 / (1 - "
                "decay) steps): e.g. 0.999, or 0.99 for a run of a few hundred steps without ema_warmup."
            )
        if self.model_name_or_path is None and self.model_type is None:
            raise RecipeError(
                "Set `model_name_or_path` (a Hub id such as google/vit-base-patch16-224-in21k) "
                "or `model_type` (e.g. vit) to build a model from a config."
            )


@dataclass
class Recipe:
    """All arguments of one run."""

    run: RunArguments
    data: DataArguments
    model: ModelArguments
    training: TrainingArguments
    source: dict[str, Any]

    def __post_init__(self) -> None:
        check_extra_metrics_trust(self.run.extra_metrics, self.model.trust_remote_code)
        if self.model.box_nms_iou is not None and self.run.task != "object-detection":
            raise RecipeError(
                f"`box_nms_iou` suppresses duplicate boxes of object detection; this recipe's task is {self.run.task}. "
                "Remove it from the recipe."
            )

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, JSON-serialisable, without secrets."""
        resolved: dict[str, Any] = {}
        for part in (self.run, self.data, self.model):
            resolved.update(dataclasses.asdict(part))
        resolved.update(self.training.to_dict())
        return _redact(resolved)


def check_extra_metrics_trust(extra_metrics: list[str], trust_remote_code: bool) -> None:
    """Refuse ``extra_metrics`` unless ``trust_remote_code`` is on, before anything is downloaded or trained.

    Every ``evaluate`` module is a Python script that ``evaluate.load`` imports and runs — a Hub id (canonical
    ones such as ``accuracy`` included: they are scripts fetched from the Hub, whose content can change), a local
    ``.py`` file or a folder holding one. None is safe by construction, so there is no exception list; the
    tasks' own metrics (accuracy, F1, mAP, mIoU, ...) need no module and run without it."""
    if extra_metrics and not trust_remote_code:
        raise RecipeError(
            f"`extra_metrics: {list(extra_metrics)}` would run the Python code of these `evaluate` modules (Hub "
            "metrics are scripts downloaded and executed, local ones too). Set `trust_remote_code: true` if you "
            "trust that code, or remove `extra_metrics` (the task's own metrics are computed without it)."
        )


SECRET_KEYS = ("hub_token", "token", "push_to_hub_token")


def _redact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: ("<redacted>" if k in SECRET_KEYS and v else v) for k, v in values.items()}


def _as_mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RecipeError(f"`{name}` must be a mapping or a JSON object string, got {value!r}: {err}") from err
    if not isinstance(value, dict):
        raise RecipeError(f"`{name}` must be a mapping, got {type(value).__name__}.")
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file into a dict, with a clear error for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise RecipeError(f"{path} must hold a mapping of keys to values, got {type(values).__name__}.")
    return values
