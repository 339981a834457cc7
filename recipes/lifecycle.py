"""The one lifecycle every task runs, in stages each callable alone: start → prepare data → plan (resume) →
prepare model (processor, transforms, model, metric, Trainer) → fit → evaluate → write outputs → publish.

:func:`run` is the training run (its table of contents); :func:`evaluate_model` is ``vision-recipes evaluate``:
the evaluation data alone, the model evaluated as it is, nothing of a training run written."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from transformers import set_seed

from recipes.artifacts.checkpoints import (
    FINISHED,
    STATUS_FILE,
    TRAINED,
    TRAINING,
    FingerprintWriter,
    existing_metrics,
    finished_run,
    foreign_contents,
    trained_run,
    training_fingerprint,
    write_fingerprint,
    write_run_status,
)
from recipes.artifacts.hub import CheckpointPusher, download_checkpoint, hub_checkpoints
from recipes.config import Recipe, RecipeError
from recipes.data.streaming.loader import StreamTraining
from recipes.data.streaming.sources import check_streaming_recipe
from recipes.decode.images import set_max_image_pixels
from recipes.model.build import build_image_processor
from recipes.model.ema import check_ema_supported
from recipes.model.schedule import range_test
from recipes.model.trainer import RecipeTrainer
from recipes.run_outputs import (
    extra_metrics,
    log_data_summary,
    print_summary,
    push,
    redact_command,
    write_manifest,
    write_outputs,
    write_range_test,
    write_task_plots,
)
from recipes.tasks import RunContext, StreamingMetric, TaskData, get_task
from recipes.training import (
    PUSH_WAIT_AFTER_SIGTERM_S,
    SIGTERM_EXIT_CODE,
    STREAM_KEYS_ENV,
    Preempted,
    StopWhenPreempted,
    build_trainer,
    checkpoint_pusher,
    ema_settings,
    enough_log_points,
    labels_as_the_checkpoint_has_them,
    main_process_decides,
    preempted,
    restore_trained,
    resume_checkpoint,
    setup_logging,
    stop_on_sigterm,
    stream_report,
)

logger = logging.getLogger("recipes")


@dataclass
class RunState:
    """What the stages of one run hand each other (:class:`RunContext` is what the run produced, for the task's
    plots and sections and the card; the Hub token stays here, out of it)."""

    context: RunContext
    hub_token: str | None = None
    push_requested: bool = False
    fingerprint: dict[str, Any] | None = None
    """The training run's identity (``None``: nothing is trained: evaluation, LR range test)."""
    trained: bool = False
    """``output_dir`` holds this run's trained model already (its later steps are redone)."""
    finished: bool = False
    pusher: CheckpointPusher | None = None
    stream: StreamTraining | None = None
    metric: StreamingMetric | None = None
    train_dataset: Any = None
    test_dataset: Any = None

    @property
    def recipe(self) -> Recipe:
        return self.context.recipe

    @property
    def trainer(self) -> RecipeTrainer:
        return self.context.trainer


def run(recipe: Recipe) -> RunContext:
    """Train, evaluate, save, plot, write the card and push, for the recipe's task."""
    state = start(recipe)
    prepare_data(state, with_train=not recipe.run.evaluate_only)
    plan_training(state)
    if state.finished:
        return state.context
    prepare_model(state)
    if recipe.run.find_lr:
        find_learning_rate(state)
        return state.context
    fit(state)
    evaluate(state)
    if state.trainer.is_world_process_zero():
        write_outputs(state.context)
        publish(state)
    return state.context


def evaluate_model(recipe: Recipe) -> RunContext:
    """``evaluate_only``: the evaluation splits alone (labels matched to the checkpoint's), the model evaluated,
    its metrics, the task's plots and ``run_manifest.json`` written; no card, curves or examples of a training run."""
    if not recipe.run.evaluate_only:
        raise RecipeError("evaluate_model needs a recipe with evaluate_only: true.")
    state = start(recipe)
    prepare_data(state, with_train=False)
    prepare_model(state)
    evaluate(state)
    if state.trainer.is_world_process_zero():
        write_task_plots(state.context)
        write_manifest(state.context)
    return state.context


# --------------------------------------------------------------------------- stages


def start(recipe: Recipe) -> RunState:
    """Logging, seed, the task; the push and the Hub token kept aside (out of what the Trainer pickles); a
    streaming recipe and ``output_dir`` checked before any work."""
    setup_logging(recipe)
    task = get_task(recipe.run.task)
    args = recipe.training
    set_seed(args.seed)
    state = RunState(RunContext(recipe=recipe, task=task), hub_token=args.hub_token, push_requested=args.push_to_hub)
    args.push_to_hub = False  # we push once, at the end, ourselves
    args.hub_token = None
    check_streaming_recipe(recipe.data, args, task.name, task.supports_streaming)
    if ema_settings(recipe) is not None:
        check_ema_supported(args)
    foreign = [] if recipe.run.evaluate_only or recipe.run.overwrite else foreign_contents(args.output_dir)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise RecipeError(
            f"--output_dir {args.output_dir} holds files vision-recipes did not write ({shown}); the run would "
            "overwrite its README.md, config.json and the like. Fix: a new or empty --output_dir, or --overwrite "
            "true to write into this one anyway (files of the same names are replaced, no other is removed)."
        )
    set_max_image_pixels(recipe.data.max_image_pixels)  # every decoder of this process and its workers
    return state


def prepare_data(state: RunState, with_train: bool = True) -> TaskData:
    """Load and check the data (without ``with_train``: the evaluation splits only); for ``evaluate_only`` its
    label ids translated to the checkpoint's."""
    recipe, task, args = state.recipe, state.context.task, state.recipe.training
    loading_started = time.perf_counter()
    with args.main_process_first(desc="loading and checking the data"):
        data = task.load_data(recipe.data, seed=args.seed, cache_dir=recipe.model.cache_dir, with_train=with_train)
    logger.info("Data loaded and checked in %.2fs.", time.perf_counter() - loading_started)
    if recipe.run.evaluate_only:
        data = labels_as_the_checkpoint_has_them(task, recipe, data)
    state.context.data = data
    log_data_summary(data)
    return data


def plan_training(state: RunState) -> None:
    """The resume decisions: a checkpoint from the Hub, a finished run (its metrics, nothing redone), a trained run
    (later steps redone), an interrupted run (its last checkpoint); the checkpoint pusher of a run that trains."""
    recipe, context, args = state.recipe, state.context, state.recipe.training
    if recipe.run.evaluate_only or recipe.run.find_lr:
        return
    state.fingerprint = fingerprint = training_fingerprint(recipe, context.data)
    if recipe.run.resume_from_hub:
        steps = main_process_decides(args, hub_checkpoints, recipe.run.resume_from_hub, state.hub_token)
        with args.main_process_first(desc="downloading the last checkpoint from the Hub"):
            args.resume_from_checkpoint = str(
                download_checkpoint(recipe.run.resume_from_hub, args.output_dir, token=state.hub_token, steps=steps)
            )
    # One decision for every process (the main one reads output_dir, moves incomplete checkpoints aside and
    # answers): a process deciding alone could see another folder state and train from another step.
    decision, value = main_process_decides(args, resume_decision, recipe, fingerprint)
    if decision == "finished":
        context.metrics = existing_metrics(args.output_dir)
        if args.should_log:
            print(value, flush=True)
        state.finished = True
        return
    if decision == "trained":
        state.trained = True
        logger.info(
            "%s holds this run's trained model, but its later steps did not all finish (%s: %s): training "
            "skipped; evaluating, writing the outputs%s from the saved model.",
            args.output_dir,
            STATUS_FILE,
            TRAINED,
            " and pushing" if state.push_requested else "",
        )
        return
    context.resumed_from = value
    state.pusher = checkpoint_pusher(recipe, state.push_requested, state.hub_token)


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


def prepare_model(state: RunState) -> RecipeTrainer:
    """The image processor, the transforms (the training stream of a streamed run), the model, the metric and the
    Trainer with its callbacks."""
    recipe, context, args = state.recipe, state.context, state.recipe.training
    task, data = context.task, context.data
    processor = build_image_processor(recipe.model, task.image_processor_kwargs(recipe.data))
    task.check_image_processor(processor)
    context.image_processor = processor
    train_transform, eval_transform = task.transforms(processor, recipe.data, data)
    if data.train is not None and recipe.data.streaming:
        state.stream = StreamTraining.build(
            data.train,
            train_transform,
            task.stream_check(recipe.data, data),
            recipe.data,
            args,
            key_log_dir=os.environ.get(STREAM_KEYS_ENV),
        )
        state.train_dataset = state.stream.examples
        args.ignore_data_skip = True  # a resumed stream continues from its saved position instead
    elif data.train is not None:
        state.train_dataset = data.train.with_transform(train_transform)
    context.eval_dataset = data.validation.with_transform(eval_transform)
    state.test_dataset = data.test.with_transform(eval_transform) if data.test is not None else None

    loaded = task.build_model(recipe.model, data)
    state.metric = task.metric(data, processor)
    state.metric.keep_predictions = bool(recipe.run.extra_metrics)
    if not recipe.run.evaluate_only and state.train_dataset is not None:
        enough_log_points(args, None if state.stream is not None else len(state.train_dataset))
    trainer = build_trainer(context, loaded, state.train_dataset, context.eval_dataset, state.metric, state.stream)
    context.trainer = trainer
    if state.fingerprint is not None:
        trainer.add_callback(FingerprintWriter(state.fingerprint))
    if state.pusher is not None:
        trainer.add_callback(state.pusher)
    return trainer


def find_learning_rate(state: RunState) -> None:
    """``find_lr``: the LR range test instead of training (``lr_find.png``, a suggested rate)."""
    trainer, args = state.trainer, state.recipe.training
    if trainer.is_world_process_zero():
        steps = args.max_steps if args.max_steps and args.max_steps > 0 else 100
        state.context.plots["lr_find"] = write_range_test(range_test(trainer, steps=steps), state.context.output_dir)


def fit(state: RunState) -> None:
    """Train (continuing a stream or checkpoint where it stopped), save the model, state and training metrics; a
    trained run's saved model is restored instead; nothing for ``evaluate_only``."""
    context, trainer, stream, pusher = state.context, state.trainer, state.stream, state.pusher
    if state.trained:
        restore_trained(trainer, context)
        return
    if state.recipe.run.evaluate_only:
        return
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
                pusher.wait(timeout=PUSH_WAIT_AFTER_SIGTERM_S if preempted() else None)
        if preempted():  # every process stopped at the same step, its checkpoint saved
            logger.warning("Preempted: stopped at step %d with its checkpoint saved; exiting with %d. Rerun the "
                           "same command to continue from it.", trainer.state.global_step, SIGTERM_EXIT_CODE)
            raise Preempted(SIGTERM_EXIT_CODE)
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        write_fingerprint(context.output_dir, state.fingerprint)
    if pusher is not None and pusher.last_failed:
        context.push_error = f"checkpoint push to {pusher.repo_id} failed"
    train_metrics = dict(result.metrics)
    if stream is None:
        train_metrics["train_samples"] = len(state.train_dataset)
    else:
        context.data.summary["streaming"] = stream_report(stream)
        train_metrics["train_samples"] = context.data.summary["streaming"]["examples_seen"]
    context.metrics["train"] = train_metrics
    trainer.save_metrics("train", train_metrics)
    if trainer.is_world_process_zero():
        write_run_status(context.output_dir, TRAINED)  # a failure from here on redoes only what follows


def evaluate(state: RunState) -> dict[str, Any]:
    """Validation (and test) metrics, saved as ``eval_results.json`` (``test_results.json``); ``extra_metrics``
    computed on the validation predictions."""
    context, trainer, recipe = state.context, state.trainer, state.recipe
    context.metrics["eval"] = trainer.evaluate()
    context.eval_details = state.metric.details
    if state.test_dataset is not None:
        context.metrics["test"] = trainer.evaluate(state.test_dataset, metric_key_prefix="test")
    for split in ("eval", "test"):
        if split in context.metrics:
            trainer.save_metrics(split, context.metrics[split])
    if recipe.run.extra_metrics:
        context.metrics["eval"].update(extra_metrics(recipe.run.extra_metrics, context.eval_details))
        trainer.save_metrics("eval", context.metrics["eval"])
    return context.metrics["eval"]


def publish(state: RunState) -> None:
    """On the main process: push the output folder when asked, mark the run finished (after its last output; a
    failed push is redone by a rerun), print the summary."""
    context = state.context
    if state.push_requested:
        push(context, state.hub_token)
    if state.fingerprint is not None and (context.push_url or not state.push_requested):
        write_run_status(context.output_dir, FINISHED)
    print_summary(context)


__all__ = [
    "STREAM_KEYS_ENV",
    "Preempted",
    "RunState",
    "evaluate",
    "evaluate_model",
    "fit",
    "main_process_decides",
    "plan_training",
    "prepare_data",
    "prepare_model",
    "publish",
    "redact_command",
    "run",
    "start",
    "stop_on_sigterm",
    "write_outputs",
]
