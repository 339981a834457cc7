"""The demo app's predictors work on a saved model of every task (tiny models from the quickstart recipes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recipes.demo import build_app, make_predictor
from recipes.modeling import build_image_processor
from recipes.parse import parse_recipe
from recipes.tasks import get_task
from recipes.tasks.segmentation.data import SegmentationData

RECIPES = {
    "image-classification": "configs/quickstart/classification.yaml",
    "object-detection": "configs/quickstart/detection.yaml",
    "image-segmentation": "configs/quickstart/segmentation.yaml",
}


def _save_tiny_model(recipe_path: str, folder: Path) -> Path:
    recipe = parse_recipe([recipe_path, "--output_dir", str(folder)])
    task = get_task(recipe.run.task)
    # SegmentationData is TaskData plus the ignore_index that segmentation configs need.
    data = SegmentationData(train=None, validation=None, id2label={0: "alpha", 1: "beta", 2: "gamma"})  # type: ignore[arg-type]
    task.build_model(recipe.model, data).model.save_pretrained(folder)
    build_image_processor(recipe.model, task.image_processor_kwargs(recipe.data)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("pipeline_task", list(RECIPES))
def test_predictor_for_every_task(pipeline_task: str, tmp_path: Path) -> None:
    folder = _save_tiny_model(RECIPES[pipeline_task], tmp_path / "model")
    task, predict = make_predictor(str(folder), threshold=0.0)
    assert task == pipeline_task
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    result = predict(image)
    if task == "image-classification":
        assert set(result) <= {"alpha", "beta", "gamma"} and abs(sum(result.values()) - 1) < 1e-4
    else:
        assert isinstance(result, Image.Image) and result.size == (80, 60)


def test_gradio_app_builds(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason='the demo extra is not installed (pip install -e ".[demo]")')
    folder = _save_tiny_model(RECIPES["image-classification"], tmp_path / "model")
    app = build_app(str(folder))
    assert app.title.endswith("(image-classification)")
