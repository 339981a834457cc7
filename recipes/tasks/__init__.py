"""Task registry: one module per task, looked up by name."""

from __future__ import annotations

import importlib

from recipes.config import RecipeError
from recipes.tasks.base import RunContext, StreamingMetric, Task, TaskData

TASK_MODULES = {
    "image-classification": "recipes.tasks.classification.task:ImageClassification",
    "object-detection": "recipes.tasks.detection.task:ObjectDetection",
    "semantic-segmentation": "recipes.tasks.segmentation.task:SemanticSegmentation",
}
ALIASES = {"classification": "image-classification", "detection": "object-detection",
           "segmentation": "semantic-segmentation", "image-segmentation": "semantic-segmentation"}


def get_task(name: str) -> Task:
    """Instantiate the task called ``name`` (or one of its short aliases)."""
    name = ALIASES.get(name, name)
    if name not in TASK_MODULES:
        raise RecipeError(f"Unknown task `{name}`. Choose one of: {', '.join(TASK_MODULES)}.")
    module_name, class_name = TASK_MODULES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


__all__ = ["TASK_MODULES", "RunContext", "StreamingMetric", "Task", "TaskData", "get_task"]
