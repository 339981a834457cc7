"""A few validation images saved beside the model (``examples/``), so a demo of the folder has inputs to try.

The validation split of detection and segmentation runs is often held out of ``train_dir`` at load time, so only
the training run knows which images the model never trained on; the run manifest records folders, not files.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from datasets import Dataset, Image

from recipes.decode.images import BadImageError, load_rgb

logger = logging.getLogger("recipes")

EXAMPLES_DIR = "examples"
EXAMPLE_NAME = re.compile(r"^example_\d+\.jpg$")


def image_column(dataset: Dataset, preferred: str = "image") -> str | None:
    """The dataset's image column: ``preferred`` if it holds images, else the first image column."""
    columns = [name for name, feature in dataset.features.items() if isinstance(feature, Image)]
    return preferred if preferred in columns else next(iter(columns), None)


def save_examples(dataset: Dataset | None, output_dir: Path, column: str = "image", count: int = 3,
                  max_side: int = 384) -> list[Path]:
    """Save ``count`` images spread evenly over ``dataset`` as ``output_dir/examples/example_N.jpg``, no side
    longer than ``max_side`` (tens of KB each). Replaces the examples of an earlier run in the same folder (its
    ``example_N.jpg`` files; any other file there is left alone)."""
    folder = output_dir / EXAMPLES_DIR
    for earlier in folder.glob("example_*.jpg"):
        if EXAMPLE_NAME.match(earlier.name):
            earlier.unlink(missing_ok=True)
    column = image_column(dataset, column) if dataset is not None and len(dataset) else None
    if column is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)):
        record = dataset[int(index)][column]
        try:
            image = load_rgb(record)
        except BadImageError as err:  # the data checks keep bad files out; never fail a finished run for this
            logger.warning("Demo example skipped: %s", err)
            continue
        image.thumbnail((max_side, max_side))
        path = folder / f"example_{len(written) + 1}.jpg"
        image.save(path, quality=85)
        written.append(path)
    return written
