"""Labels by name between a checkpoint and a dataset.

A pretrained head's rows are classes, and only their names say which. When fine-tuning, the model takes the
dataset's label order; each class the checkpoint already knows (same name, compared case-insensitively with
``_`` as a space) keeps its trained row, moved to its new index, and only unknown classes get new rows. When
evaluating, the model is left as it is and the dataset's label ids are translated to the checkpoint's; a class
the checkpoint does not know stops the run.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from typing import Any

import torch

from recipes.config import RecipeError

logger = logging.getLogger("recipes")

DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")
PROBE_EXTRA_LABELS = 7
"""Labels added to a config to find the parameters whose first dimension follows ``num_labels``."""


def name_key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").casefold().split())


def named_labels(config: Any) -> dict[int, str] | None:
    """The config's ``id2label`` when it names real classes (not transformers' ``LABEL_0``… placeholders)."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if not id2label or all(DEFAULT_LABEL.match(name) for name in id2label.values()):
        return None
    return id2label


@dataclass
class LabelPlan:
    """How a checkpoint's head meets a dataset's labels."""

    id2label: dict[int, str]
    """The model's labels after loading."""
    rows: list[int | None]
    """For each model label, the checkpoint row it keeps (``None``: a new row)."""
    data_to_model: dict[int, int] | None = None
    """Dataset label id → model label id, when the dataset's ids must be translated (evaluation)."""

    @property
    def keeps_rows(self) -> bool:
        return any(row is not None for row in self.rows)

    @property
    def is_identity(self) -> bool:
        return self.rows == list(range(len(self.rows)))


def plan_labels(checkpoint: dict[int, str] | None, data: dict[int, str], *, evaluate_only: bool) -> LabelPlan:
    """Match the dataset's class names to the checkpoint's (see the module docstring)."""
    data_names = [data[i] for i in range(len(data))]
    if checkpoint is None:
        return LabelPlan(dict(data), [None] * len(data_names))
    index = {name_key(name): i for i, name in checkpoint.items()}
    if evaluate_only:
        unknown = [name for name in data_names if name_key(name) not in index]
        if unknown:
            raise RecipeError(
                f"The data has class(es) {unknown} that the checkpoint does not know, so it cannot be evaluated "
                f"on them. Checkpoint labels: {sorted(checkpoint.values())}. Data labels: {data_names}. Evaluate "
                "on data with the checkpoint's classes, or fine-tune on the new ones first."
            )
        mapping = {i: index[name_key(name)] for i, name in enumerate(data_names)}
        return LabelPlan(dict(checkpoint), list(range(len(checkpoint))), data_to_model=mapping)
    rows = [index.get(name_key(name)) for name in data_names]
    return LabelPlan(dict(data), rows)


def label_parameter_rows(auto_model_class: Any, config: Any) -> dict[str, int]:
    """Parameters whose first dimension is ``num_labels + k`` (the head), with their ``k`` (e.g. DETR's extra
    "no object" row). Found by building the architecture on the meta device with more labels and comparing."""
    larger = copy.deepcopy(config)
    extra = {config.num_labels + i: f"probe_{i}" for i in range(PROBE_EXTRA_LABELS)}
    larger.id2label = {**{int(k): v for k, v in config.id2label.items()}, **extra}
    larger.label2id = {v: k for k, v in larger.id2label.items()}
    with torch.device("meta"):
        base = auto_model_class.from_config(config).state_dict()
        probe = auto_model_class.from_config(larger).state_dict()
    return {
        name: tensor.shape[0] - config.num_labels
        for name, tensor in base.items()
        if tensor.dim() and name in probe and probe[name].shape[0] - tensor.shape[0] == PROBE_EXTRA_LABELS
    }


@torch.no_grad()
def move_head_rows(
    model: torch.nn.Module, checkpoint_model: torch.nn.Module, parameters: dict[str, int], plan: LabelPlan
) -> None:
    """Give each of ``model``'s label rows the checkpoint row ``plan.rows`` names; new rows are re-initialised
    (weights ~ N(0, initializer_range), biases 0) and trailing non-label rows are copied."""
    old_state, new_state = checkpoint_model.state_dict(), model.state_dict()
    old_count = checkpoint_model.config.num_labels
    new_count = len(plan.rows)
    std = float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    for name, extra in parameters.items():
        old, new = old_state[name], new_state[name]
        for index, row in enumerate(plan.rows):
            if row is not None:
                new[index] = old[row]
            elif new.dim() > 1:
                new[index].normal_(0.0, std)
            else:
                new[index].zero_()
        if extra:
            new[new_count:] = old[old_count : old_count + extra]
