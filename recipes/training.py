"""What surrounds the Trainer of one run: logging, resuming, stopping on SIGTERM, the checkpoint pushes, the
Trainer itself (memory format, callbacks, learning rates, train loader) and the checkpoint's labels for evaluation."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from transformers import EarlyStoppingCallback, TrainerCallback, TrainerState

from recipes.artifacts.checkpoints import check_checkpoint, existing_metrics, last_checkpoint
from recipes.artifacts.hub import CheckpointPusher
from recipes.config import ModelArguments, Recipe, RecipeError
from recipes.data.streaming.loader import StreamStateCallback, StreamTraining
from recipes.model.batchnorm import batchnorm_layers
from recipes.model.build import LoadedModel, load_checkpoint_config
from recipes.model.ema import EmaSettings
from recipes.model.labels import named_labels, plan_labels
from recipes.model.schedule import HeadWarmup, LearningRates
from recipes.model.trainer import RecipeTrainer
from recipes.tasks import RunContext, StreamingMetric, Task, TaskData

logger = logging.getLogger("recipes")


class CurrentStderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at each record (tests, notebooks and the
    modes swap it; a handler bound to the first one would write to a closed stream later)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__/setStream assign it; the property wins
        pass


def setup_logging(recipe: Recipe) -> None:
    """Route ``recipes``, ``transformers`` and ``datasets`` logs to stderr at the recipe's level."""
    level = recipe.training.get_process_log_level()
    if not logger.handlers:
        handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if level <= logging.INFO or recipe.training.should_log else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def resume_checkpoint(recipe: Recipe, fingerprint: dict[str, Any] | None = None) -> str | None:
    """The checkpoint to continue from: ``resume_from_checkpoint`` if set, else the last one in
    ``output_dir`` (so rerunning an interrupted command continues it) when it was saved by the same run
    (``fingerprint``; another run's checkpoint stops with what differs). Incomplete checkpoints (cut while being
    saved) are skipped and, by the main process, moved aside (:func:`recipes.artifacts.checkpoints.last_checkpoint`)."""
    args = recipe.training
    if args.resume_from_checkpoint:
        if fingerprint is not None:
            check_checkpoint(args.resume_from_checkpoint, fingerprint, explicit=True)
        return args.resume_from_checkpoint
    last = last_checkpoint(args.output_dir, move_aside=args.process_index == 0) if recipe.run.auto_resume else None
    if last is not None:
        if fingerprint is not None:
            check_checkpoint(last, fingerprint, explicit=False)
        logger.info("Found %s: resuming the interrupted run from it.", last)
    return last


PUSH_WAIT_AFTER_SIGTERM_S = float(os.environ.get("VISION_RECIPES_PUSH_WAIT_S", "600"))
"""After SIGTERM, how long the queued checkpoint pushes are waited for (preemption notices give a grace period
before SIGKILL: 30 s on GCP spot VMs, 120 s on AWS spot instances; set it below yours)."""
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
_preempted = threading.Event()


def preempted() -> bool:
    """Whether SIGTERM stopped the training of this process (:func:`stop_on_sigterm`)."""
    return _preempted.is_set()


class Preempted(SystemExit):
    """Training stopped by SIGTERM (:func:`stop_on_sigterm`); exits with 143, as a process killed by SIGTERM."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """During training, note SIGTERM (the usual preemption signal, which otherwise kills the process without its
    ``finally`` blocks and ``atexit``) instead of dying: :class:`StopWhenPreempted` ends training at the end of the
    current step with a checkpoint of it, on every process at the same step; then the queued checkpoint pushes are
    waited for (:data:`PUSH_WAIT_AFTER_SIGTERM_S`) and each process exits with 143. Raising at once instead would
    leave the other processes of a distributed run waiting in a collective for one that is gone. A second SIGTERM
    raises :class:`Preempted` at once (no checkpoint of the current step). The previous handler is restored
    afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _preempted.is_set():
            logger.warning("SIGTERM again: stopping now, without a checkpoint of the current step.")
            raise Preempted(SIGTERM_EXIT_CODE)
        _preempted.set()
        logger.warning("SIGTERM: stopping training at the end of this step, with a checkpoint of it; queued "
                       "checkpoint pushes are waited for, then the run exits with %d.", SIGTERM_EXIT_CODE)

    _preempted.clear()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _preempted.clear()


def release_process_group() -> None:
    """End the distributed process group once a run is over on every process (finished, or stopped by SIGTERM at
    the same step everywhere), as PyTorch asks at the end of a program: without it, Gloo's threads can abort the
    interpreter's exit ("terminate called without an active exception", SIGABRT) and fail a run that succeeded.
    Not called after an error, where another process may still wait in a collective. No barrier first: the main
    process may still be pushing to the Hub for longer than a collective's timeout, with no collective left."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def preempted_anywhere(args: Any) -> bool:
    """Whether SIGTERM reached this process or, in a distributed run, any other (one small all-reduce, so that
    every process stops at the same step)."""
    flag = _preempted.is_set()
    if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        votes = torch.tensor([int(flag)], device=args.device)
        torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MAX)
        flag = bool(votes.item())
    return flag


class StopWhenPreempted(TrainerCallback):
    """After SIGTERM (:func:`stop_on_sigterm`) on any process: save a checkpoint of the step just finished and stop
    training, on every process at the same step (the step's evaluation, when one is due, runs first, as in an
    uninterrupted run, so resuming from the checkpoint continues that run exactly)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if preempted_anywhere(args):
            _preempted.set()  # the processes that did not get the signal themselves exit with 143 too
            control.should_save = True
            control.should_training_stop = True
        return control


def main_process_decides(args: Any, decide: Any, *call_args: Any) -> Any:
    """``decide(*call_args)`` on the main process, its answer (or its :class:`RecipeError`) given to every process:
    one answer for all even when what it reads changes between two calls (the Hub's checkpoints while the run of
    another machine pushes)."""
    answer: list[Any] = [None]
    if args.process_index == 0:
        try:
            answer = [("ok", decide(*call_args))]
        except RecipeError as err:
            answer = [("error", str(err))]
    if args.world_size > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(answer, from_process=0)
    outcome, value = answer[0]
    if outcome == "error":
        raise RecipeError(value)
    return value


def restore_trained(trainer: RecipeTrainer, context: RunContext) -> None:
    """For a rerun of a run that trained to its end (:func:`recipes.artifacts.checkpoints.trained_run`): the final
    model saved in ``output_dir`` (the best one with ``load_best_model_at_end``), its trainer state (log history for
    the plots and card) and training metrics, instead of training again."""
    output_dir = context.output_dir
    trainer._load_from_checkpoint(str(output_dir))
    trainer.state = TrainerState.load_from_json(str(output_dir / "trainer_state.json"))
    train_metrics = existing_metrics(output_dir).get("train")
    if train_metrics is not None:
        context.metrics["train"] = train_metrics


def checkpoint_pusher(recipe: Recipe, push_requested: bool, hub_token: str | None) -> CheckpointPusher | None:
    """The callback pushing checkpoints during training (``push_checkpoints``, or ``push_to_hub`` with
    ``hub_strategy`` ``checkpoint``/``all_checkpoints``), on the main process; its repository is created now."""
    args = recipe.training
    wanted = recipe.run.push_checkpoints or (push_requested and args.hub_strategy in ("checkpoint", "all_checkpoints"))
    if not wanted or args.process_index != 0:
        return None
    if args.save_strategy == "no":
        logger.warning("push_checkpoints: save_strategy is `no`, so no checkpoint is saved or pushed.")
        return None
    repo_id = args.hub_model_id or Path(args.output_dir).name
    pusher = CheckpointPusher.start(repo_id, hub_token, private=args.hub_private_repo)
    logger.info("Checkpoints are pushed to %s/%s as they are saved.", pusher.repo_id, "checkpoints")
    return pusher


def build_trainer(
    context: RunContext,
    loaded: LoadedModel,
    train_dataset: Any,
    eval_dataset: Any,
    metric: StreamingMetric,
    stream: StreamTraining | None = None,
) -> RecipeTrainer:
    """The Trainer with the run's model (memory format), callbacks (early stopping, head warm-up), learning
    rates per parameter, and the BatchNorm-aware train loader."""
    recipe, task, processor, args = context.recipe, context.task, context.image_processor, context.recipe.training
    model = loaded.model
    if use_channels_last(recipe.model, model):
        model = model.to(memory_format=torch.channels_last)
    callbacks: list[TrainerCallback] = []
    if recipe.run.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.run.early_stopping_patience))
    warm_up_head = recipe.model.head_warmup_epochs > 0 and not recipe.run.evaluate_only
    if warm_up_head and not loaded.new_parameters:
        logger.warning("head_warmup_epochs: every parameter came from the checkpoint (no new head); training all.")
        warm_up_head = False
    if warm_up_head:
        callbacks.append(HeadWarmup(recipe.model.head_warmup_epochs))
    if stream is not None:
        callbacks.append(StreamStateCallback(stream.progress))
    has_batchnorm = bool(batchnorm_layers(model)) and not recipe.model.freeze_batchnorm
    return RecipeTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=task.collator(processor, context.data, recipe.data, model.config),
        compute_metrics=metric,
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(processor, model.config),
        processing_class=processor,
        callbacks=callbacks,
        learning_rates=LearningRates(
            base=args.learning_rate,
            backbone=recipe.model.backbone_learning_rate,
            layer_decay=recipe.model.layer_decay,
            head=set(loaded.new_parameters) if warm_up_head else set(),
        ),
        drop_incomplete_batch=has_batchnorm
        and train_dataset is not None
        and (stream is not None or len(train_dataset) > args.train_batch_size * args.world_size),
        train_loader=stream.make_loader if stream is not None else None,
        device_transform=task.device_transform(processor, recipe.data),
        ema=ema_settings(recipe),
    )


def ema_settings(recipe: Recipe) -> EmaSettings | None:
    """The EMA of the weights the run keeps (``ema``), or ``None`` (off; nothing trained: evaluate_only, find_lr)."""
    if not recipe.model.ema or recipe.run.evaluate_only or recipe.run.find_lr:
        return None
    return EmaSettings(decay=recipe.model.ema_decay, warmup=recipe.model.ema_warmup)


MIN_LOG_POINTS = 20
"""Training-loss points a run logs at least (its curve in ``training_curves.png`` and the card)."""


def enough_log_points(args: Any, train_examples: int | None) -> None:
    """Lower ``logging_steps`` (logged) when it would log the training loss fewer than :data:`MIN_LOG_POINTS` times
    in the run (a short run logging every 10 steps drew its loss curve as one dot). ``train_examples``: the size of
    a map-style training set (None for a stream, whose length is ``max_steps``)."""
    if args.logging_strategy != "steps":
        return
    if args.max_steps and args.max_steps > 0:
        total = args.max_steps
    elif train_examples:
        per_step = args.train_batch_size * args.world_size * args.gradient_accumulation_steps
        total = math.ceil(math.ceil(train_examples / per_step) * args.num_train_epochs)
    else:
        return
    every = args.logging_steps * total if args.logging_steps < 1 else args.logging_steps  # a float < 1: a ratio
    wanted = max(1, total // MIN_LOG_POINTS)
    if every > wanted:
        logger.info("logging_steps %s → %d: the run has %d optimizer steps, so the training loss is logged about "
                    "%d times (at least %d points on the curves).", args.logging_steps, wanted, total,
                    total // wanted, min(MIN_LOG_POINTS, total))
        args.logging_steps = wanted


STREAM_KEYS_ENV = "VISION_RECIPES_STREAM_KEYS"
"""Debug switch: a folder where each process of a streamed run logs the key of every training example it used."""


def stream_report(stream: StreamTraining) -> dict[str, Any]:
    """The streamed run's counts of every process (collective), logged; saved in ``run_manifest.json``."""
    report = stream.summary()
    logger.info(
        "Streamed training: %d examples trained on (per process: %s) over %d complete pass(es); %d bad "
        "record(s) skipped; %d example(s) left at pass ends to keep the processes in step.",
        report["examples_seen"],
        report["examples_seen_per_process"],
        report["passes_completed"],
        report["bad_records"],
        report["dropped_at_pass_end"],
    )
    if report["bad_records"]:
        logger.warning(
            "%d bad streamed record(s) skipped (listed in run_manifest.json, data_summary.streaming).",
            report["bad_records"],
        )
    return report


def labels_as_the_checkpoint_has_them(task: Task, recipe: Recipe, data: TaskData) -> TaskData:
    """For ``evaluate_only``: the data's label ids translated to the checkpoint's, by class name (the model is
    evaluated with its own head rows; a class it does not know stops the run)."""
    config = load_checkpoint_config(recipe.model)
    if config is None:
        return data
    checkpoint = named_labels(config)
    if checkpoint is None:
        if config.num_labels != len(data.id2label):
            raise RecipeError(
                f"The checkpoint has {config.num_labels} unnamed labels and the data {len(data.id2label)} classes "
                f"{list(data.id2label.values())}: they cannot be matched. Evaluate a checkpoint whose config.json "
                "names its labels (id2label)."
            )
        logger.warning("The checkpoint's labels have no names: its outputs are read in the data's order.")
        return data
    plan = plan_labels(checkpoint, data.id2label, evaluate_only=True)
    if plan.id2label == data.id2label:
        return data
    logger.info(
        "Evaluating with the checkpoint's %d labels; data classes map to them by name: %s",
        len(plan.id2label),
        {data.id2label[i]: j for i, j in plan.data_to_model.items()},
    )
    return task.relabel(data, recipe.data, plan.data_to_model, plan.id2label)


def use_channels_last(model_args: ModelArguments, model: torch.nn.Module) -> bool:
    """``channels_last`` if asked; by default for models with 2-D convolutions on CUDA (the layout tensor cores
    use). On CPU it measured no faster here (``python -m benchmarks.channels_last``: DeepLabV3 0.8-1.0x,
    MobileNetV1 1.0-1.2x), so it stays off there unless asked."""
    if model_args.channels_last is not None:
        return model_args.channels_last
    return torch.cuda.is_available() and any(isinstance(module, torch.nn.Conv2d) for module in model.modules())
