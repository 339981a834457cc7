"""The Trainer of every run (:class:`RecipeTrainer`): per-parameter learning rates, the BatchNorm-aware and
streamed train loaders, device-side inputs, the EMA of the weights, and FSDP-aware checkpoint loading."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import Trainer

from recipes.config import RecipeError
from recipes.model.ema import EmaCallback, EmaSettings, WeightAverage
from recipes.model.schedule import LearningRates, parameter_groups

logger = logging.getLogger("recipes")


def cpu_records(data: Any) -> Any:
    """``data`` (nested lists, tuples and dicts) with every tensor detached and on the CPU.

    An object gather pickles what it sends, and a pickled CUDA tensor is rebuilt on the device it came from: a
    rank's label tensors would land in another rank's GPU memory on every process. CPU copies arrive as CPU tensors.
    """
    if isinstance(data, torch.Tensor):
        return data.detach().to("cpu")
    if isinstance(data, Mapping):
        return type(data)({key: cpu_records(value) for key, value in data.items()})
    if isinstance(data, (list, tuple)) and not hasattr(data, "_fields"):
        return type(data)(cpu_records(value) for value in data)
    return data


def _pretrained_class(model: torch.nn.Module) -> type:
    """The model's own ``PreTrainedModel`` class (FSDP2 swaps in a subclass ``FSDP<Name>`` when it shards)."""
    from torch.distributed.fsdp import FSDPModule

    return next(cls for cls in type(model).__mro__
                if hasattr(cls, "from_pretrained") and not issubclass(cls, FSDPModule))


def load_into_sharded_model(
    sharded: torch.nn.Module, model: torch.nn.Module, checkpoint: str, *, main_process: bool
) -> bool:
    """Load ``checkpoint/model.safetensors`` into an FSDP-sharded model, on every process together; ``False`` (on
    every process) when the main process finds no such file (``SHARDED_STATE_DICT`` checkpoints have none).

    The main process reads the checkpoint through ``from_pretrained`` (which converts the legacy parameter names some
    architectures, such as ViT, are saved under; a missing, unexpected or resized weight stops every process); then
    ``set_model_state_dict(full_state_dict, broadcast_from_rank0)`` (what accelerate's FSDP2 loader calls) sends every
    tensor from rank 0 into each process's shards. ``sharded`` is the wrapped model, ``model`` the unwrapped one.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full: dict[str, torch.Tensor] = {}
    problem: list[str | None] = [None]
    if main_process and not (Path(checkpoint) / "model.safetensors").is_file():
        problem[0] = "missing"
    elif main_process:
        try:
            reloaded, info = _pretrained_class(model).from_pretrained(checkpoint, config=model.config,
                                                                      output_loading_info=True)
            wrong = [*info.get("missing_keys", []), *info.get("unexpected_keys", []),
                     *(key for key, *_ in info.get("mismatched_keys", []))]
            problem[0] = f"its weights do not match the model ({sorted(wrong)[:3]})" if wrong else None
            full = reloaded.state_dict()
        except (RuntimeError, ValueError, OSError, SafetensorError) as err:
            problem[0] = str(err).splitlines()[0]
    # Every process learns rank 0's verdict, so all stop together and none waits in the broadcast below.
    torch.distributed.broadcast_object_list(problem, src=0)
    if problem[0] == "missing":
        return False
    if problem[0] is not None:
        raise RecipeError(
            f"Cannot load the best model from {checkpoint}: {problem[0]}. It was saved from another model or label "
            "set; use a new --output_dir, or --load_best_model_at_end false to keep the last model."
        )
    set_model_state_dict(sharded, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return True


class RecipeTrainer(Trainer):
    """``Trainer`` with per-parameter learning rates (:class:`recipes.model.schedule.LearningRates`: backbone rate,
    layer-wise decay, head groups for head warm-up), a train loader that drops an incomplete last batch when the
    model has BatchNorm, checkpoint reloading through ``from_pretrained``, and an optional EMA of the weights
    (``ema``: :class:`recipes.model.ema.WeightAverage`) that evaluations during training use, checkpoints hold and the
    model becomes when training ends."""

    def __init__(
        self, *args: Any, learning_rates: LearningRates | None = None, drop_incomplete_batch: bool = False,
        device_transform: Callable[[dict[str, Any], torch.device], dict[str, Any]] | None = None,
        train_loader: Callable[[Trainer, bool], Any] | None = None, ema: EmaSettings | None = None, **kwargs: Any,
    ) -> None:
        self.learning_rates = learning_rates
        self.drop_incomplete_batch = drop_incomplete_batch
        self.device_transform = device_transform
        self.train_loader = train_loader
        self.weight_average: WeightAverage | None = None
        self._evaluate_average = False  # during train(): evaluations swap the average in
        super().__init__(*args, **kwargs)
        if ema is not None:
            if self.is_fsdp_enabled or self.is_deepspeed_enabled:
                raise RecipeError(
                    "`ema: true` is not supported with FSDP or DeepSpeed (each process holds a shard of the weights); "
                    "train with DDP or set `ema: false`."
                )
            self.weight_average = WeightAverage(self.model, ema)  # after the Trainer moved the model to its device
            # Before the callbacks added later (the run fingerprint marks a checkpoint complete after the average).
            self.add_callback(EmaCallback(self.weight_average))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """With an EMA: continue the checkpoint's average when resuming, evaluate the average during training,
        and end with the model holding it (the best checkpoint's with ``load_best_model_at_end``)."""
        if self.weight_average is None:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if resume_from_checkpoint:
            self.weight_average.load(resume_from_checkpoint)
        self._evaluate_average = True
        try:
            result = super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._evaluate_average = False
        self.weight_average.copy_to(self.model)
        logger.info("The model now holds the EMA of its weights (%s).", self.weight_average.settings.describe())
        return result

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        if self.weight_average is None or not self._evaluate_average:
            return super().evaluate(*args, **kwargs)
        with self.weight_average.applied_to(self.model):
            return super().evaluate(*args, **kwargs)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return super().compute_loss(model, self.device_inputs(inputs), *args, **kwargs)

    def device_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The task's device-side transform of a batch (``gpu_decode``: encoded images → ``pixel_values``;
        ``normalize_on_device``: ``uint8`` → normalised ``pixel_values``), run here in the training process on
        the model's device; batches it has nothing to do for pass unchanged."""
        return self.device_transform(inputs, self.args.device) if self.device_transform is not None else inputs

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return super().prediction_step(model, self.device_inputs(inputs), *args, **kwargs)

    def get_train_dataloader(self) -> Any:
        if self.train_loader is not None:  # a streamed dataset brings its own loader (recipes.data.streaming)
            return self.train_loader(self, self.drop_incomplete_batch or self.args.dataloader_drop_last)
        # A last batch of 1 image gives BatchNorm the statistics of that image: drop it (training only).
        if not self.drop_incomplete_batch or self.args.dataloader_drop_last:
            return super().get_train_dataloader()
        self.args.dataloader_drop_last = True
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = False

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        # transformers resets `gather_function` to plain `gather_for_metrics` at the end of each evaluation loop,
        # which drops `eval_use_gather_object` from the second evaluation on; set it again every time.
        if self.args.eval_use_gather_object:
            self.gather_function = self._gather_objects_but_not_tensors
        return super().evaluation_loop(*args, **kwargs)

    def _gather_objects_but_not_tensors(self, data: Any) -> Any:
        """Per-image records (lists of dicts) travel as objects; plain tensors such as the per-batch losses are
        gathered as tensors, so the evaluation loss averages every process's batches correctly. Records are moved
        to the CPU first (:func:`cpu_records`)."""
        if isinstance(data, torch.Tensor):
            return self.accelerator.gather_for_metrics(data)
        return self.accelerator.gather_for_metrics(cpu_records(data), use_gather_object=True)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.learning_rates is None or self.optimizer is not None:
            return super().create_optimizer() if model is None else super().create_optimizer(model)
        model = model if model is not None else self.model
        groups = parameter_groups(model, self.learning_rates, self.args.weight_decay,
                                  set(self.get_decay_parameter_names(model)))
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    # transformers 5 saves some architectures (ViT, ...) under their legacy parameter names and
    # converts them back in `from_pretrained`; the Trainer's raw `load_state_dict` for resuming and for
    # `load_best_model_at_end` skips that conversion and silently loads nothing. Reload through
    # `from_pretrained` instead, so both paths restore the weights that were saved.
    def _reload_weights(self, checkpoint: str, model: torch.nn.Module | None = None) -> bool:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        weights = Path(checkpoint) / "model.safetensors"
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not weights.is_file():
            return False
        if not hasattr(type(target), "from_pretrained"):
            return False
        try:
            reloaded = type(target).from_pretrained(checkpoint, config=target.config)
            missing, unexpected = target.load_state_dict(reloaded.state_dict(), strict=False)
        except (RuntimeError, ValueError, OSError, SafetensorError) as err:  # SafetensorError: a cut weights file
            missing, unexpected = [str(err).splitlines()[0]], []
        if missing or unexpected:
            raise RecipeError(
                f"{checkpoint} was saved from another model or label set ({(missing or unexpected)[:3]}). "
                "Use a new --output_dir, or --auto_resume false to start over in this one."
            )
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        if not self._reload_weights(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        checkpoint = self.state.best_model_checkpoint
        if checkpoint and self.is_fsdp_enabled:
            # The Trainer's FSDP loader reads the `pytorch_model_fsdp*` files saved with the optimizer (none with
            # save_only_model); a FULL_STATE_DICT checkpoint always has model.safetensors (legacy names included).
            if load_into_sharded_model(self.model, self.accelerator.unwrap_model(self.model), checkpoint,
                                       main_process=self.accelerator.is_main_process):
                logger.info("Loaded the best model from %s (%s) into the sharded model", checkpoint,
                            self.state.best_metric)
                return
            super()._load_best_model()  # a SHARDED_STATE_DICT checkpoint: the Trainer's DCP loader
            return
        if checkpoint and self.weight_average is not None:  # the best evaluation was the average's (no FSDP)
            self.accelerator.wait_for_everyone()  # the main process has written the last checkpoint's average
            self.weight_average.load(checkpoint)
            logger.info("Loaded the best EMA of the weights from %s (%s)", checkpoint, self.state.best_metric)
            return
        if checkpoint and self._reload_weights(checkpoint):
            logger.info("Loaded the best model from %s (%s)", checkpoint, self.state.best_metric)
            return
        super()._load_best_model()
