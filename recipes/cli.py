"""The ``vision-recipes`` console script: one command, one mode per use of a model.

    vision-recipes train    CONFIG.yaml [--key value ...]     fine-tune (also: vision-recipes CONFIG.yaml ...)
    vision-recipes predict  MODEL INPUTS... --output PATH      labels / boxes / masks for images and videos
    vision-recipes evaluate MODEL --validation_dir DIR         metrics, plots and a report on new data
    vision-recipes export   MODEL --output DIR                 ONNX + parity check + throughput table
    vision-recipes demo     MODEL                              Gradio app in the browser
    vision-recipes push     OUTPUT_DIR --repo-id USER/NAME     publish an output folder to the Hub
    vision-recipes space    MODEL --repo_id USER/NAME          create or update a Gradio Space demoing the model

Each mode is a module of :mod:`recipes.modes` with ``main(argv) -> exit code``; ``scripts/<mode>.py`` call the same.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

MODES = {
    "train": "recipes.modes.train",
    "predict": "recipes.modes.predict",
    "evaluate": "recipes.modes.evaluate",
    "export": "recipes.modes.export",
    "demo": "recipes.modes.demo",
    "push": "recipes.modes.push",
    "space": "recipes.modes.space",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``MODE [args...]`` to its module; a first argument that is no mode is a recipe (``train``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    mode, rest = (argv[0], argv[1:]) if argv[0] in MODES else ("train", argv)
    return importlib.import_module(MODES[mode]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
