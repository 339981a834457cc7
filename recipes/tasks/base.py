"""The contract between the shared lifecycle and one vision task.

The lifecycle (:mod:`recipes.lifecycle`) runs data → transforms → model → Trainer →
evaluate → save → plots → card → push for every task; a task package only supplies
the pieces below, and what the modes need (ONNX outputs and parity rule, demo, rendering, card name,
quickstart data). A new task is one package that subclasses :class:`Task`, registered once
(:mod:`recipes.tasks`: the built-in table or the ``vision_recipes.tasks`` entry-point group).
"""

from __future__ import annotations

import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from datasets import Dataset
from transformers import EvalPrediction

from recipes.config import DataArguments, ModelArguments, Recipe, RecipeError
from recipes.model.build import LoadedModel, build_model
from recipes.model.trainer import RecipeTrainer
from recipes.transforms import ProcessorGeometry

if TYPE_CHECKING:
    from PIL import Image

    from recipes.tasks.parity import ParityRule, Tolerances


@dataclass
class TaskData:
    """The splits of one run plus what the model, the card and the plots need to know about them."""

    train: Dataset | None
    """``None`` when only evaluation data was prepared (``evaluate``; ``load_data(..., with_train=False)``)."""
    validation: Dataset
    id2label: dict[int, str]
    test: Dataset | None = None
    dataset_id: str | None = None
    """Hub dataset id, written into the model card (``datasets:``)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Data-check report: counts, skipped files, class statistics (saved in the run manifest)."""

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in self.id2label.items()}


class StreamingMetric(ABC):
    """A ``compute_metrics`` for ``TrainingArguments(batch_eval_metrics=True)``.

    The Trainer gathers each evaluation batch across processes (each example once) and
    calls this object with it; state is accumulated and reduced when ``compute_result`` is
    true, then reset for the next evaluation. Nothing grows with the evaluation set.
    """

    keep_predictions: bool = False
    """Also keep one prediction per example (for `evaluate` modules); off unless `extra_metrics` asks."""

    def __call__(self, eval_pred: EvalPrediction, compute_result: bool = True) -> dict[str, float]:
        self.update(eval_pred.predictions, eval_pred.label_ids)
        if not compute_result:
            return {}
        try:
            return self.compute()
        finally:
            self.reset()

    @abstractmethod
    def update(self, predictions: Any, labels: Any) -> None:
        """Add one gathered batch."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Reduce the accumulated state to flat, JSON-serialisable metrics."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the accumulated state."""

    @property
    def details(self) -> dict[str, Any]:
        """Non-scalar results of the last :meth:`compute` (per-class tables, matrices) for plots and cards."""
        return getattr(self, "_details", {})


@dataclass
class PredictOptions:
    """What ``vision-recipes predict`` asked for; each task reads the keys it has a use for."""

    output: Path
    """A file (JSONL / JSON) or, for masks, a folder."""
    format: str | None = None
    """``--format``; ``None``: the task's default."""
    top_k: int = 5
    threshold: float = 0.5
    palette: Any = None
    """``(num_labels, 3)`` ``uint8`` class colours (segmentation ``--format color``)."""


@dataclass(frozen=True)
class FrameRef:
    """Where a prediction of a video frame comes from: the frame's 0-based number in the file and its time."""

    frame: int
    time_s: float


def record_head(file: str, frame: FrameRef | None = None) -> dict[str, Any]:
    """The first keys of every predict record: ``file``, then ``frame`` and ``time_s`` for a video frame."""
    return {"file": file} if frame is None else {"file": file, "frame": frame.frame, "time_s": frame.time_s}


class PredictionSink(ABC):
    """One task's predict output: model outputs → one JSON-friendly prediction per image → files.

    Predictions are dicts (classification: ``label``, ``score``, ``top_k``; detection: ``boxes`` ``xyxy`` pixels,
    ``labels``, ``scores``; segmentation: ``mask`` (H, W) class ids and ``shares``); :mod:`recipes.draw.render` draws
    the same dicts."""

    formats: ClassVar[tuple[str, ...]] = ("jsonl",)
    """``--format`` values, the default first."""

    def chosen_format(self, requested: str | None) -> str:
        """``requested`` if this task writes it (default: the first of :attr:`formats`), else a clear error."""
        if not requested:
            return self.formats[0]
        if requested not in self.formats:
            raise RecipeError(f"--format {requested}: this task writes {' or '.join(self.formats)}.")
        return requested

    @abstractmethod
    def decode(
        self, outputs: Any, sizes: list[tuple[int, int]], inputs: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """One prediction per image of a batch (``sizes``: each original ``(height, width)``; ``inputs``: the
        model inputs, e.g. the ``pixel_mask`` of a padded batch)."""

    @abstractmethod
    def add(self, file: str, size: tuple[int, int], prediction: dict[str, Any], frame: FrameRef | None = None) -> None:
        """Write (or keep) one image's prediction (``frame``: which frame of the video ``file`` it is)."""

    def close(self) -> list[Path]:
        """Finish the files; return what was written."""
        return []


@dataclass(frozen=True)
class Quickstart:
    """A task's offline quickstart: its recipe, its synthetic data, the metric reported and its chance level."""

    name: str
    """The short name (``scripts/quickstart.py --tasks NAME``, the data and output folder names)."""
    recipe: str
    """Recipe path relative to the repository root."""
    make_data: Callable[[Path], Path]
    """Writes the synthetic dataset under the given folder; returns the folder to train on."""
    metric: str
    chance: str
    sample_images: Callable[[int], list[Image.Image]] | None = None
    """``count`` synthetic images (``export``'s parity images when the run's own data is gone)."""


class Task(ABC):
    """One vision task: how to load its data, transform it, build its model and score it, and what the modes
    (predict, evaluate, export, demo, the card, the quickstart) need to know about it."""

    name: ClassVar[str]
    pipeline_tag: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names a recipe's ``task:`` may use (``classification``...)."""
    architecture_suffixes: ClassVar[tuple[str, ...]] = ()
    """Ends of ``config.json`` ``architectures`` names that mark a saved model of this task."""
    display_name: ClassVar[str | None] = None
    """The model card's task name (default: the pipeline tag in title case, e.g. ``Image Classification``)."""
    onnx_outputs: ClassVar[tuple[str, ...]] = ("logits",)
    """The model outputs the ONNX graph keeps (what the task's post-processing reads)."""
    demo_description: ClassVar[str] = "its predictions"
    """What the demo (and the Space card) shows for an uploaded image, after "Upload an image to see …"."""
    demo_video: ClassVar[bool] = False
    """Whether the demo also takes a video and gives it back annotated (the first of :meth:`demo_outputs` is the
    drawn image)."""
    quickstart: ClassVar[Quickstart | None] = None
    data_arguments_class: ClassVar[type[DataArguments]] = DataArguments
    auto_model_class: ClassVar[Any]
    main_metric: ClassVar[str]
    """Metric used to pick the best checkpoint (without the ``eval_`` prefix)."""
    card_metrics: ClassVar[dict[str, str]] = {}
    """Metric key → display name for the model card's model-index and results table."""
    supports_streaming: ClassVar[bool] = False
    """Whether ``load_data`` can stream the training split (``streaming: true``; see :mod:`recipes.data.streaming`)."""

    @classmethod
    def training_defaults(cls) -> dict[str, Any]:
        """``TrainingArguments`` defaults for this task; a recipe's keys override them."""
        return {
            "eval_strategy": "epoch",
            "save_strategy": "epoch",
            "logging_strategy": "steps",
            "logging_steps": 10,
            "save_total_limit": 2,
            "load_best_model_at_end": True,
            "metric_for_best_model": cls.main_metric,
            "greater_is_better": True,
            "report_to": "none",
            "dataloader_num_workers": 2,
            "seed": 42,
        }

    def forced_training_arguments(self) -> dict[str, Any]:
        """``TrainingArguments`` this task cannot run without (applied after the recipe)."""
        return {"remove_unused_columns": False, "batch_eval_metrics": True}

    @abstractmethod
    def load_data(
        self, data_args: DataArguments, seed: int, cache_dir: str | None = None, with_train: bool = True
    ) -> TaskData:
        """Load, check and split the data (image columns left undecoded: ``Image(decode=False)``). Without
        ``with_train`` only the evaluation splits are checked and returned (``train`` is ``None``); a training
        source, when given, is still read for its hold-out."""

    @abstractmethod
    def transforms(
        self, image_processor: Any, data_args: DataArguments, data: TaskData
    ) -> tuple[Callable[[dict], dict], Callable[[dict], dict]]:
        """Batch transforms ``(train, eval)`` for ``Dataset.with_transform``."""

    @abstractmethod
    def collator(
        self, image_processor: Any, data: TaskData, data_args: DataArguments | None = None, model_config: Any = None
    ) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """The collate function that stacks transformed examples into model inputs (``data_args``: the recipe's
        data options, e.g. ``normalize_on_device``; ``None``: defaults that need no device-side step)."""

    @abstractmethod
    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        """A fresh streaming metric for ``compute_metrics``."""

    def device_transform(self, image_processor: Any, data_args: DataArguments) -> Callable | None:
        """``(inputs, device) -> inputs``: the part of a training batch's transform that runs in the main process
        on the accelerator (e.g. ``gpu_decode``, ``normalize_on_device``); it returns batches it has nothing to do
        for unchanged. ``None`` (the default) when the workers do it all."""
        return None

    def stream_check(self, data_args: DataArguments, data: TaskData) -> Callable[[dict[str, Any]], str | None] | None:
        """For streamed training records: the reason a record is unusable (checked before its transform), or None."""
        return None

    def preprocess_logits_for_metrics(self, image_processor: Any, model_config: Any = None) -> Callable | None:
        """Shrink model outputs per batch before they are gathered (e.g. logits → class indices)."""
        return None

    def build_model(self, model_args: ModelArguments, data: TaskData) -> LoadedModel:
        """The task's ``AutoModelFor…`` with the data's labels (matched by name) and :meth:`model_kwargs`."""
        return build_model(self.auto_model_class, model_args, data.id2label, self.model_kwargs(data))

    def check_image_processor(self, image_processor: Any) -> None:
        """Stop before training when the processor cannot make this task's inputs (default: a fixed input size)."""
        ProcessorGeometry.from_processor(image_processor)

    def relabel(
        self, data: TaskData, data_args: DataArguments, data_to_model: dict[int, int], id2label: dict[int, str]
    ) -> TaskData:
        """The same data with label ids translated (``data_to_model``) into ``id2label``'s (evaluation of a
        checkpoint whose labels are in another order or a superset)."""
        raise RecipeError(f"{self.name} cannot translate label ids to a checkpoint's; evaluate with the same labels.")

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        """Extra config keyword arguments for the model (beyond labels)."""
        return {}

    def image_processor_kwargs(self, data_args: DataArguments) -> dict[str, Any]:
        """Extra keyword arguments for the image processor (e.g. ``do_reduce_labels``)."""
        return {}

    def make_plots(self, context: RunContext, output_dir: Path) -> dict[str, Path]:
        """Task-specific plots (name → PNG path)."""
        return {}

    def card_sections(self, context: RunContext) -> list[tuple[str, str]]:
        """Extra model-card sections as ``(title, markdown)`` pairs."""
        return []

    def prediction_sink(self, model: Any, image_processor: Any, options: PredictOptions) -> PredictionSink:
        """How ``vision-recipes predict`` turns this task's model outputs into per-image predictions and files."""
        raise RecipeError(f"{self.name} has no prediction output format for `vision-recipes predict`.")

    @classmethod
    def recognises(cls, config: Any) -> bool:
        """Whether a saved model's config is one of this task's (default: an ``architectures`` name ends with one
        of :attr:`architecture_suffixes`)."""
        names = getattr(config, "architectures", None) or []
        return any(name.endswith(suffix) for name in names for suffix in cls.architecture_suffixes)

    @classmethod
    def card_task_name(cls) -> str:
        """The model card's ``model-index`` task name."""
        return cls.display_name or cls.pipeline_tag.replace("-", " ").title()

    def parity_rule(self, tolerances: Tolerances) -> ParityRule:
        """How ``export`` compares PyTorch and ONNX Runtime outputs after post-processing (default: every output
        within ``atol`` per image)."""
        from recipes.tasks.parity import OutputsClose

        return OutputsClose(tolerances)

    def sample_images(self, count: int) -> list[Image.Image]:
        """``count`` synthetic images of the task's quickstart data (``export`` without the run's data)."""
        if self.quickstart is None or self.quickstart.sample_images is None:
            raise RecipeError(f"{self.name} has no synthetic sample images: pass --images with a few of yours.")
        return self.quickstart.sample_images(count)

    def render(self, image: Image.Image, prediction: dict[str, Any], palette: Any = None,
               id2label: dict[int, str] | None = None) -> Image.Image:
        """``image`` with one prediction of :meth:`prediction_sink` drawn on it (``predict --visualize``)."""
        raise RecipeError(f"{self.name} cannot draw its predictions; run predict without --visualize.")

    def demo_controls(self, gr: Any, threshold: float) -> list[Any]:
        """The demo's Gradio inputs beyond the uploaded image (e.g. a score-threshold slider), made in the app."""
        return []

    def demo_outputs(self, gr: Any, config: Any) -> list[Any]:
        """The demo's Gradio outputs (made in the app), filled by :meth:`demo_predict`."""
        raise RecipeError(f"{self.name} has no demo view.")

    def demo_predict(self, pipe: Any, image: Image.Image, scale: tuple[float, float], palette: Any,
                     *controls: Any) -> Any:
        """The demo's outputs for ``image`` (already downscaled; ``scale``: upload / working pixels per axis),
        from ``transformers.pipeline`` ``pipe`` and the values of :meth:`demo_controls`."""
        raise RecipeError(f"{self.name} has no demo view.")

    def usage_snippet(self, model_id: str) -> str:
        """Python code showing how to use the fine-tuned model."""
        return (
            "from transformers import pipeline\n\n"
            f'pipe = pipeline("{self.pipeline_tag}", model="{model_id}")\n'
            'result = pipe("path/to/image.jpg")\n'
            "print(result)"
        )


VERSIONED_PACKAGES = ("transformers", "torch", "torchvision", "datasets", "accelerate", "huggingface-hub",
                      "torchmetrics", "evaluate")


@dataclass
class RunContext:
    """Everything one run produced, handed to the task's plots and card sections, the card and the summary."""

    recipe: Recipe
    task: Task
    data: TaskData | None = None
    image_processor: Any = None
    trainer: RecipeTrainer | None = None
    eval_dataset: Dataset | None = None
    """The validation split with the evaluation transform attached."""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_details: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    resumed_from: str | None = None
    push_url: str | None = None
    push_error: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def model_config(self) -> Any:
        """The trained model's config (None before a trainer exists)."""
        return getattr(getattr(self.trainer, "model", None), "config", None)

    @property
    def output_dir(self) -> Path:
        return Path(self.recipe.training.output_dir)

    @property
    def versions(self) -> dict[str, str]:
        found = {"python": platform.python_version()}
        for name in VERSIONED_PACKAGES:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return found

    def validation_outputs(
        self, indices: Sequence[int], batch_size: int = 32
    ) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any], Any]]:
        """Run the trained model on the validation examples at ``indices``, a batch at a time:
        yields ``(examples, collated batch, model outputs)`` (for the prediction plots)."""
        model = self.trainer.model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                examples = [self.eval_dataset[int(i)] for i in indices[start : start + batch_size]]
                batch = self.trainer.data_collator(examples)
                inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
                yield examples, batch, model(**inputs)
