"""Task registry: one table of task classes, looked up by name, alias or a saved model's architecture.

The built-in tasks are :data:`BUILTIN_TASKS`; a task outside this package registers itself once, as an entry point
of the ``vision_recipes.tasks`` group naming its :class:`Task` subclass (in ``pyproject.toml``:
``[project.entry-points."vision_recipes.tasks"] my-task = "my_package.task:MyTask"``). Nothing else in
``recipes/`` names a task: the modes read what they need from the class."""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from recipes.config import RecipeError
from recipes.tasks.base import Quickstart, RunContext, StreamingMetric, Task, TaskData

BUILTIN_TASKS = (
    "recipes.tasks.classification.task:ImageClassification",
    "recipes.tasks.detection.task:ObjectDetection",
    "recipes.tasks.segmentation.task:SemanticSegmentation",
)
"""``module:Class`` of the tasks that ship with the package, in the order the quickstart runs them."""
ENTRY_POINT_GROUP = "vision_recipes.tasks"


def _load(reference: str, where: str) -> type[Task]:
    module_name, _, class_name = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise RecipeError(f"The task `{reference}` ({where}) cannot be imported: {err}.") from err
    if not (isinstance(found, type) and issubclass(found, Task)):
        raise RecipeError(f"`{reference}` ({where}) is not a subclass of recipes.tasks.Task.")
    return found


def task_classes() -> dict[str, type[Task]]:
    """Every registered task class by name: the built-in ones, then the ``vision_recipes.tasks`` entry points
    (read on each call, so an installed plugin is found without a restart of anything)."""
    found: dict[str, type[Task]] = {}
    references = [(reference, "built in") for reference in BUILTIN_TASKS]
    references += [
        (entry.value, f"entry point `{entry.name}` of {ENTRY_POINT_GROUP}")
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)
    ]
    for reference, where in references:
        task_class = _load(reference, where)
        if task_class.name in found and found[task_class.name] is not task_class:
            raise RecipeError(f"Two tasks are named `{task_class.name}` ({where} and an earlier one); rename one.")
        found[task_class.name] = task_class
    return found


def task_names() -> list[str]:
    return list(task_classes())


def get_task(name: str) -> Task:
    """Instantiate the task called ``name`` (or one of its aliases)."""
    classes = task_classes()
    for task_class in classes.values():
        if name == task_class.name or name in task_class.aliases:
            return task_class()
    raise RecipeError(f"Unknown task `{name}`. Choose one of: {', '.join(classes)}.")


def task_for_config(config: Any, where: str = "the model") -> Task:
    """The task of a saved model, from its config (``architectures``: ``…ForImageClassification`` and so on;
    :meth:`Task.recognises`). Tasks of entry points are asked first: a plugin may claim a narrower kind of a
    built-in architecture (e.g. a one-output regression head on ``…ForImageClassification``)."""
    classes = task_classes()
    builtin = {_load(reference, "built in") for reference in BUILTIN_TASKS}
    ordered = sorted(classes.values(), key=lambda task_class: task_class in builtin)
    for task_class in ordered:
        if task_class.recognises(config):
            return task_class()
    architectures = list(getattr(config, "architectures", None) or [])
    kinds = ", ".join(
        f"{task_class.name} (…{'/…'.join(task_class.architecture_suffixes)})" for task_class in classes.values()
    )
    raise RecipeError(
        f"{where} is not a model of a known task (architectures: {architectures or 'none in config.json'}; known: "
        f"{kinds}). Use a folder written by `vision-recipes train` or a Hub model of one of these tasks."
    )


__all__ = [
    "BUILTIN_TASKS",
    "ENTRY_POINT_GROUP",
    "Quickstart",
    "RunContext",
    "StreamingMetric",
    "Task",
    "TaskData",
    "get_task",
    "task_classes",
    "task_for_config",
    "task_names",
]
