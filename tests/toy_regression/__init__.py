"""A toy fourth task defined outside ``recipes/``: image regression (the brightness of synthetic images).

It proves that a task is one package plus one registration: ``tests/test_toy_task.py`` registers it as a
``vision_recipes.tasks`` entry point and runs train, predict, evaluate and export on it through the CLI."""
