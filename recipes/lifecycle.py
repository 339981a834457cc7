"""The one lifecycle every task runs: data → transforms → model → Trainer → evaluate → save →
plots → card → push."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from transformers import EarlyStoppingCallback, TrainerCallback, TrainerState, set_seed

from recipes import plots
from recipes.batchnorm import batchnorm_layers
from recipes.card import build_model_card
from recipes.checkpoints import (
    FINISHED,
    STATUS_FILE,
    TRAINED,
    TRAINING,
    FingerprintWriter,
    check_checkpoint,
    existing_metrics,
    finished_run,
    foreign_contents,
    last_checkpoint,
    trained_run,
    training_fingerprint,
    write_atomically,
    write_fingerprint,
    write_run_status,
)
from recipes.config import ModelArguments, Recipe, RecipeError
from recipes.data.streaming.loader import StreamStateCallback, StreamTraining
from recipes.data.streaming.sources import check_streaming_recipe
from recipes.decode.images import set_max_image_pixels
from recipes.ema import EmaSettings, check_ema_supported
from recipes.examples import save_examples
from recipes.hub import CheckpointPusher, PublishError, download_checkpoint, hub_checkpoints, push_output_dir
from recipes.labels import named_labels, plan_labels
from recipes.modeling import LoadedModel, RecipeTrainer, build_image_processor, load_checkpoint_config
from recipes.schedule import HeadWarmup, LearningRates, RangeTest, range_test
from recipes.tasks import RunContext, StreamingMetric, Task, TaskData, get_task

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
    saved) are skipped and, by the main process, moved aside (:func:`recipes.checkpoints.last_checkpoint`)."""
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


def resume_decision(recipe: Recipe, fingerprint: dict[str, Any]) -> tuple[str, Any]:
    """What a run with ``fingerprint`` does with ``output_dir``: ``("finished", message)`` (nothing left to do),
    ``("trained", None)`` (training done, later steps redone) or ``("resume", checkpoint or None)``. Taken by the
    main process only (:func:`main_process_decides`)."""
    args = recipe.training
    finished = None if args.resume_from_checkpoint or not recipe.run.auto_resume else finished_run(
        recipe, fingerprint)
    if finished is not None:
        return "finished", finished
    if not args.resume_from_checkpoint and recipe.run.auto_resume and trained_run(args.output_dir):
        return "trained", None
    return "resume", resume_checkpoint(recipe, fingerprint)


def run(recipe: Recipe) -> RunContext:
    """Train, evaluate, save, plot, write the card and push, for the recipe's task."""
    setup_logging(recipe)
    task = get_task(recipe.run.task)
    context = RunContext(recipe=recipe, task=task)
    args = recipe.training
    set_seed(args.seed)
    push_requested, args.push_to_hub = args.push_to_hub, False  # we push once, at the end, ourselves
    # The token stays out of the arguments the Trainer pickles into training_args.bin and checkpoints.
    hub_token, args.hub_token = args.hub_token, None
    check_streaming_recipe(recipe.data, args, task.name, task.supports_streaming)
    if recipe.model.ema and not (recipe.run.evaluate_only or recipe.run.find_lr):
        check_ema_supported(args)
    trained = False  # the run in output_dir trained to its end already (its later steps are redone)
    foreign = [] if recipe.run.evaluate_only or recipe.run.overwrite else foreign_contents(args.output_dir)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise RecipeError(
            f"--output_dir {args.output_dir} holds files vision-recipes did not write ({shown}); the run would "
            "overwrite its README.md, config.json and the like. Fix: a new or empty --output_dir, or --overwrite "
            "true to write into this one anyway (files of the same names are replaced, no other is removed)."
        )
    set_max_image_pixels(recipe.data.max_image_pixels)  # every decoder of this process and its workers

    loading_started = time.perf_counter()
    with args.main_process_first(desc="loading and checking the data"):
        data = task.load_data(recipe.data, seed=args.seed, cache_dir=recipe.model.cache_dir)
    logger.info("Data loaded and checked in %.2fs.", time.perf_counter() - loading_started)
    if recipe.run.evaluate_only:
        data = labels_as_the_checkpoint_has_them(task, recipe, data)
    context.data = data
    _log_data_summary(data)
    fingerprint = None if recipe.run.evaluate_only or recipe.run.find_lr else training_fingerprint(recipe, data)
    if fingerprint is not None:
        if recipe.run.resume_from_hub:
            steps = main_process_decides(args, hub_checkpoints, recipe.run.resume_from_hub, hub_token)
            with args.main_process_first(desc="downloading the last checkpoint from the Hub"):
                args.resume_from_checkpoint = str(download_checkpoint(recipe.run.resume_from_hub, args.output_dir,
                                                                      token=hub_token, steps=steps))
        # One decision for every process (the main one reads output_dir, moves incomplete checkpoints aside and
        # answers): a process deciding alone could see another folder state and train from another step.
        decision, value = main_process_decides(args, resume_decision, recipe, fingerprint)
        if decision == "finished":
            context.metrics = existing_metrics(args.output_dir)
            if args.should_log:
                print(value, flush=True)
            return context
        if decision == "trained":
            trained = True
            logger.info("%s holds this run's trained model, but its later steps did not all finish (%s: %s): "
                        "training skipped; evaluating, writing the outputs%s from the saved model.", args.output_dir,
                        STATUS_FILE, TRAINED, " and pushing" if push_requested else "")
        else:
            context.resumed_from = value
    train_now = fingerprint is not None and not trained
    pusher = _checkpoint_pusher(recipe, push_requested, hub_token) if train_now else None

    processor = build_image_processor(recipe.model, task.image_processor_kwargs(recipe.data))
    task.check_image_processor(processor)
    context.image_processor = processor
    train_transform, eval_transform = task.transforms(processor, recipe.data, data)
    stream = None
    if recipe.data.streaming:
        stream = StreamTraining.build(data.train, train_transform, task.stream_check(recipe.data, data), recipe.data,
                                      args, key_log_dir=os.environ.get(STREAM_KEYS_ENV))
        train_dataset = stream.examples
        args.ignore_data_skip = True  # a resumed stream continues from its saved position instead
    else:
        train_dataset = data.train.with_transform(train_transform)
    eval_dataset = data.validation.with_transform(eval_transform)
    test_dataset = data.test.with_transform(eval_transform) if data.test is not None else None
    context.eval_dataset = eval_dataset

    loaded = task.build_model(recipe.model, data)
    metric = task.metric(data, processor)
    metric.keep_predictions = bool(recipe.run.extra_metrics)
    if not recipe.run.evaluate_only:
        enough_log_points(args, None if stream is not None else len(train_dataset))
    trainer = build_trainer(context, loaded, train_dataset, eval_dataset, metric, stream)
    context.trainer = trainer
    if fingerprint is not None:
        trainer.add_callback(FingerprintWriter(fingerprint))
    if pusher is not None:
        trainer.add_callback(pusher)

    if recipe.run.find_lr:
        if trainer.is_world_process_zero():
            steps = args.max_steps if args.max_steps and args.max_steps > 0 else 100
            context.plots["lr_find"] = write_range_test(range_test(trainer, steps=steps), context.output_dir)
        return context

    if trained:
        restore_trained(trainer, context)
    elif not recipe.run.evaluate_only:
        if stream is not None:
            stream.restore(context.resumed_from, trainer)
        if trainer.is_world_process_zero():
            write_run_status(context.output_dir, TRAINING)
        trainer.add_callback(StopWhenPreempted())
        with stop_on_sigterm():
            try:
                result = trainer.train(resume_from_checkpoint=context.resumed_from)
            finally:  # the last checkpoint reaches the Hub even when training stops with an error or SIGTERM
                if pusher is not None:
                    pusher.wait(timeout=PUSH_WAIT_AFTER_SIGTERM_S if _preempted.is_set() else None)
            if _preempted.is_set():  # every process stopped at the same step, its checkpoint saved
                logger.warning("Preempted: stopped at step %d with its checkpoint saved; exiting with %d. Rerun the "
                               "same command to continue from it.", trainer.state.global_step, SIGTERM_EXIT_CODE)
                raise Preempted(SIGTERM_EXIT_CODE)
        trainer.save_model()
        trainer.save_state()
        if trainer.is_world_process_zero():
            write_fingerprint(context.output_dir, fingerprint)
        if pusher is not None and pusher.last_failed:
            context.push_error = f"checkpoint push to {pusher.repo_id} failed"
        train_metrics = dict(result.metrics)
        if stream is None:
            train_metrics["train_samples"] = len(train_dataset)
        else:
            data.summary["streaming"] = _stream_report(stream)
            train_metrics["train_samples"] = data.summary["streaming"]["examples_seen"]
        context.metrics["train"] = train_metrics
        trainer.save_metrics("train", train_metrics)
        if trainer.is_world_process_zero():
            write_run_status(context.output_dir, TRAINED)  # a failure from here on redoes only what follows

    context.metrics["eval"] = trainer.evaluate()
    context.eval_details = metric.details
    if test_dataset is not None:
        context.metrics["test"] = trainer.evaluate(test_dataset, metric_key_prefix="test")
    for split in ("eval", "test"):
        if split in context.metrics:
            trainer.save_metrics(split, context.metrics[split])
    if recipe.run.extra_metrics:
        context.metrics["eval"].update(_extra_metrics(recipe.run.extra_metrics, context.eval_details))
        trainer.save_metrics("eval", context.metrics["eval"])

    if trainer.is_world_process_zero():
        _write_outputs(context)
        if push_requested:
            _push(context, hub_token)
        if fingerprint is not None and (context.push_url or not push_requested):
            write_run_status(context.output_dir, FINISHED)  # after the last output (a failed push is redone)
        print_summary(context)
    return context


PUSH_WAIT_AFTER_SIGTERM_S = float(os.environ.get("VISION_RECIPES_PUSH_WAIT_S", "600"))
"""After SIGTERM, how long the queued checkpoint pushes are waited for (preemption notices give a grace period
before SIGKILL: 30 s on GCP spot VMs, 120 s on AWS spot instances; set it below yours)."""
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
_preempted = threading.Event()


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
    """For a rerun of a run that trained to its end (:func:`recipes.checkpoints.trained_run`): the final model saved
    in ``output_dir`` (the best one with ``load_best_model_at_end``), its trainer state (log history for the plots
    and card) and training metrics, instead of training again."""
    output_dir = context.output_dir
    trainer._load_from_checkpoint(str(output_dir))
    trainer.state = TrainerState.load_from_json(str(output_dir / "trainer_state.json"))
    train_metrics = existing_metrics(output_dir).get("train")
    if train_metrics is not None:
        context.metrics["train"] = train_metrics


def _checkpoint_pusher(recipe: Recipe, push_requested: bool, hub_token: str | None) -> CheckpointPusher | None:
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


def build_trainer(
    context: RunContext, loaded: LoadedModel, train_dataset: Any, eval_dataset: Any, metric: StreamingMetric,
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
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(processor),
        processing_class=processor,
        callbacks=callbacks,
        learning_rates=LearningRates(
            base=args.learning_rate,
            backbone=recipe.model.backbone_learning_rate,
            layer_decay=recipe.model.layer_decay,
            head=set(loaded.new_parameters) if warm_up_head else set(),
        ),
        drop_incomplete_batch=has_batchnorm and (
            stream is not None or len(train_dataset) > args.train_batch_size * args.world_size),
        train_loader=stream.make_loader if stream is not None else None,
        device_transform=task.device_transform(processor, recipe.data),
        ema=ema_settings(recipe),
    )


def ema_settings(recipe: Recipe) -> EmaSettings | None:
    """The EMA of the weights the run keeps (``ema``), or ``None`` (off; nothing trained: evaluate_only, find_lr)."""
    if not recipe.model.ema or recipe.run.evaluate_only or recipe.run.find_lr:
        return None
    return EmaSettings(decay=recipe.model.ema_decay, warmup=recipe.model.ema_warmup)


STREAM_KEYS_ENV = "VISION_RECIPES_STREAM_KEYS"
"""Debug switch: a folder where each process of a streamed run logs the key of every training example it used."""


def _stream_report(stream: StreamTraining) -> dict[str, Any]:
    """The streamed run's counts of every process (collective), logged; saved in ``run_manifest.json``."""
    report = stream.summary()
    logger.info("Streamed training: %d examples trained on (per process: %s) over %d complete pass(es); %d bad "
                "record(s) skipped; %d example(s) left at pass ends to keep the processes in step.",
                report["examples_seen"], report["examples_seen_per_process"], report["passes_completed"],
                report["bad_records"], report["dropped_at_pass_end"])
    if report["bad_records"]:
        logger.warning("%d bad streamed record(s) skipped (listed in run_manifest.json, data_summary.streaming).",
                       report["bad_records"])
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
    logger.info("Evaluating with the checkpoint's %d labels; data classes map to them by name: %s",
                len(plan.id2label), {data.id2label[i]: j for i, j in plan.data_to_model.items()})
    return task.relabel(data, recipe.data, plan.data_to_model, plan.id2label)


def use_channels_last(model_args: ModelArguments, model: torch.nn.Module) -> bool:
    """``channels_last`` if asked; by default for models with 2-D convolutions on CUDA (the layout tensor cores
    use). On CPU it measured no faster here (``python -m benchmarks.channels_last``: DeepLabV3 0.8-1.0x,
    MobileNetV1 1.0-1.2x), so it stays off there unless asked."""
    if model_args.channels_last is not None:
        return model_args.channels_last
    return torch.cuda.is_available() and any(isinstance(module, torch.nn.Conv2d) for module in model.modules())


def write_range_test(result: RangeTest, output_dir: Path) -> Path:
    """``lr_find.json`` and ``lr_find.png`` (loss against learning rate, suggestion marked); logs the suggestion."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "lr_find.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    path = plots.range_test(result.learning_rates, result.losses, result.suggested, output_dir / "lr_find.png")
    if result.suggested is None:
        logger.warning("LR range test: too few steps before the loss diverged; no suggestion (see %s).", path)
    else:
        print(f"LR range test: suggested learning_rate {result.suggested:.2e} (steepest descent; loss minimum at "
              f"{result.minimum:.2e}). Plot: {path}", flush=True)
    return path


def _log_data_summary(data: TaskData) -> None:
    counts = {k: v for k, v in data.summary.items() if k.endswith("_examples")}
    logger.info("Data: %s, %d classes", counts, len(data.id2label))
    skipped = data.summary.get("skipped_files") or []
    if skipped:
        logger.warning("%d file(s) skipped by the data checks (see run_manifest.json).", len(skipped))


def _extra_metrics(metric_ids: list[str], details: dict[str, Any]) -> dict[str, float]:
    """Compute ``evaluate`` modules (Hub ids or local paths) on the validation predictions."""
    import evaluate

    if not details.get("references"):
        raise RecipeError("`extra_metrics` needs per-example predictions, which this task does not provide.")
    results: dict[str, float] = {}
    for metric_id in metric_ids:
        try:
            module = evaluate.load(metric_id)
        except Exception as err:
            raise RecipeError(
                f"Could not load evaluate metric `{metric_id}`: {err}. Hub metric ids need internet; "
                "a local metric script path works offline."
            ) from err
        computed = module.compute(predictions=details["predictions"], references=details["references"])
        for key, value in (computed or {}).items():
            if isinstance(value, (int, float)):
                results[f"eval_{key}"] = float(value)
    return results


def _write_outputs(context: RunContext) -> None:
    output_dir = context.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    if context.recipe.run.make_plots:
        curves = plots.training_curves(
            context.trainer.state.log_history, context.task.main_metric, output_dir / "training_curves.png"
        )
        if curves is not None:
            context.plots["training_curves"] = curves
        if context.trainer.is_fsdp_enabled:  # prediction plots would run a sharded model on one rank only
            logger.info("FSDP run: prediction plots skipped; make them from the saved model if needed.")
        else:
            context.plots.update(context.task.make_plots(context, output_dir))
    # A few validation images for `vision-recipes demo` (held-out splits are known only here).
    save_examples(context.data.validation, output_dir, column=context.recipe.data.image_column_name)
    write_manifest(context)
    card = build_model_card(context)
    write_atomically(output_dir / "README.md", str(card))


def write_manifest(context: RunContext) -> Path:
    """``run_manifest.json``: resolved recipe, versions, dataset fingerprints, data checks, metrics."""
    data = context.data
    fingerprints = {
        split: getattr(dataset, "_fingerprint", None)
        for split, dataset in (("train", data.train), ("validation", data.validation), ("test", data.test))
        if dataset is not None
    }
    manifest = {
        "task": context.task.name,
        "command": redact_command(sys.argv),
        "recipe": context.recipe.to_dict(),
        "recipe_file_keys": sorted(context.recipe.source),
        "versions": context.versions,
        "dataset_fingerprints": fingerprints,
        "data_summary": data.summary,
        "resumed_from": context.resumed_from,
        "world_size": context.recipe.training.world_size,
        "metrics": context.metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return write_atomically(context.output_dir / "run_manifest.json", json.dumps(manifest, indent=2, default=str))


SECRET_FLAGS = ("--hub_token", "--hub-token", "--token")


def redact_command(argv: list[str]) -> list[str]:
    """The command line with every token value replaced (flag values, ``hf_…`` strings, ``HF_TOKEN``)."""
    secrets = [os.environ.get("HF_TOKEN")]
    redacted, hide_next = [], False
    for arg in argv:
        flag, has_value, value = arg.partition("=")
        if hide_next or (has_value and flag in SECRET_FLAGS):
            secrets.append(value if has_value else arg)
            arg = f"{flag}=<redacted>" if has_value else "<redacted>"
        hide_next = arg in SECRET_FLAGS
        redacted.append("<redacted>" if arg.startswith("hf_") else arg)
    for secret in filter(None, secrets):
        redacted = [arg.replace(secret, "<redacted>") for arg in redacted]
    return redacted


def _push(context: RunContext, token: str | None) -> None:
    args = context.recipe.training
    repo_id = args.hub_model_id or context.output_dir.name
    try:
        context.push_url = push_output_dir(context.output_dir, repo_id, token=token, private=args.hub_private_repo,
                                           include_photos=context.recipe.run.push_photos)
        logger.info("Pushed to %s", context.push_url)
    except PublishError as err:
        context.push_error = str(err)
        logger.error("%s", err)


def print_summary(context: RunContext) -> None:
    """A short table at the end of the run: main metrics and where everything is."""
    task = context.task
    rows = [("task", task.name), ("output_dir", str(context.output_dir))]
    for split in ("eval", "test"):
        metrics = context.metrics.get(split, {})
        for key in (task.main_metric, *task.card_metrics):
            value = metrics.get(f"{split}_{key}")
            if value is not None and (f"{split}_{key}", f"{value:.4f}") not in rows:
                rows.append((f"{split}_{key}", f"{value:.4f}"))
    rows.append(("model card", str(context.output_dir / "README.md")))
    rows.append(("plots", ", ".join(p.name for p in context.plots.values()) or "-"))
    if context.resumed_from:
        rows.append(("resumed from", context.resumed_from))
    if context.push_url:
        rows.append(("pushed to", context.push_url))
    elif context.push_error:
        rows.append(("push", "FAILED (see message above)"))
    rows.append(("time", f"{time.time() - context.started:.0f}s"))
    width = max(len(k) for k, _ in rows)
    lines = ["", "=" * 60, "Vision Recipes run summary"]
    lines += [f"  {key.ljust(width)}  {value}" for key, value in rows]
    lines.append("=" * 60)
    print("\n".join(lines), flush=True)
