"""Task registry: one module per task, looked up by name."""

from __future__ import annotations

import importlib
from typing import Any

from recipes.config import RecipeError
from recipes.tasks.base import RunContext, StreamingMetric, Task, TaskData

TASK_MODULES = {
    "image-classification": "recipes.tasks.classification.task:ImageClassification",
    "object-detection": "recipes.tasks.detection.task:ObjectDetection",
    "semantic-segmentation": "recipes.tasks.segmentation.task:SemanticSegmentation",
}
ALIASES = {"classification": "image-classification", "detection": "object-detection",
           "segmentation": "semantic-segmentation", "image-segmentation": "semantic-segmentation"}


ARCHITECTURE_SUFFIXES = {
    "ForImageClassification": "image-classification",
    "ForImageClassificationWithTeacher": "image-classification",
    "ForObjectDetection": "object-detection",
    "ForSemanticSegmentation": "semantic-segmentation",
}


def task_for_config(config: Any, where: str = "the model") -> Task:
    """The task of a saved model, from its config's ``architectures`` (``…ForImageClassification`` and so on)."""
    architectures = list(getattr(config, "architectures", None) or [])
    for name in architectures:
        for suffix, task in ARCHITECTURE_SUFFIXES.items():
            if name.endswith(suffix):
                return get_task(task)
    raise RecipeError(
        f"{where} is not an image classification, object detection or semantic segmentation model "
        f"(architectures: {architectures or 'none in config.json'}). Use a folder written by `vision-recipes train` "
        "or a Hub model of one of these tasks."
    )


def get_task(name: str) -> Task:
    """Instantiate the task called ``name`` (or one of its short aliases)."""
    name = ALIASES.get(name, name)
    if name not in TASK_MODULES:
        raise RecipeError(f"Unknown task `{name}`. Choose one of: {', '.join(TASK_MODULES)}.")
    module_name, class_name = TASK_MODULES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


__all__ = ["TASK_MODULES", "RunContext", "StreamingMetric", "Task", "TaskData", "get_task", "task_for_config"]
