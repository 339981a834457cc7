"""The demo app in a real headless Chromium, one Gradio server per task, on the real fine-tuned checkpoints: upload
a real photo and check what the page shows against ``transformers.pipeline()`` on the same photo.

Needs Debian's ``chromium`` and the ``playwright`` Python client (no browser download): skipped without them
outside CI, a failure in CI (``.ci/run`` installs Chromium). Screenshots: ``<tmp_path>/demo-<task>.png``.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from helpers import shared_dataset
from PIL import Image
from transformers import pipeline

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

TIMEOUT_MS = 120_000  # a first prediction on a loaded 2-core CI machine


def _needed(what: str, fix: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI: {fix}")
    pytest.skip(f"{what} is not installed ({fix})")


def _import(name: str) -> ModuleType:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        _needed(f"the Python package {name.split('.')[0]}", 'pip install -e ".[dev]"')
        raise


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _needed("Chromium", "apt-get install -y chromium (.ci/run does it)")
    return str(path)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (Debian's, driven by Playwright)."""
    executable = _chromium()
    sync_api = _import("playwright.sync_api")
    _import("gradio")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``serve(app) -> url``: launch a Gradio app on 127.0.0.1 in this process; closed after the test."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    apps = []

    def launch(app: Any) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        apps.append(app)
        return app.local_url

    yield launch
    for app in apps:
        app.close()


def _photo(task: str) -> Path:
    if task == "classification":
        return sorted((shared_dataset("food101-mini") / "test" / "pizza").glob("*.jpg"))[0]
    if task == "detection":
        return shared_dataset("car-plates") / "images" / "Cars0.png"
    return shared_dataset("camseq") / "0016E5_07959.png"


def _shown_image(page: Any) -> Image.Image:
    """The output image as the browser received it (fetched from the ``src`` the page displays)."""
    page.wait_for_function(
        "() => { const i = document.querySelector('#prediction img'); return i && i.complete && i.naturalWidth > 0 }",
        timeout=TIMEOUT_MS,
    )
    source = page.locator("#prediction img").first.get_attribute("src")
    return Image.open(io.BytesIO(page.request.get(source).body())).convert("RGB")


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_demo_in_a_real_browser(task: str, fine_tuned: Any, browser: Any, serve: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from recipes.modes.demo import build_app, make_predictor
    from recipes.modes.loading import load_fine_tuned

    folder = fine_tuned(task)
    examples = sorted((folder / "examples").glob("*.jpg"))  # written by the training run
    assert len(examples) == 3 and all(max(Image.open(path).size) <= 384 for path in examples)
    photo = _photo(task)
    image = Image.open(photo).convert("RGB")
    loaded = load_fine_tuned(str(folder), device="cpu")
    reference = pipeline(loaded.task.pipeline_tag, model=str(folder))  # independent of the demo's code
    threshold, detections = 0.5, []
    if task == "detection":  # a threshold (on the slider's 0.05 steps) that keeps the top 3 boxes or more
        detections = sorted(reference(image, threshold=0.0), key=lambda found: -found["score"])
        threshold = math.floor(detections[2]["score"] / 0.05) * 0.05

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(serve(build_app(loaded, threshold=threshold)))
    expect(page.locator("#examples img")).to_have_count(3)
    page.set_input_files("#image input[type=file]", str(photo))

    if task == "classification":
        top = reference(image, top_k=3)
        expect(page.locator("#prediction [data-testid=label-output-value]")).to_have_text(top[0]["label"])
        for found in top:
            expect(page.locator("#prediction")).to_contain_text(found["label"])
    else:
        shown = _shown_image(page)
        assert shown.size == image.size
        expected = make_predictor(loaded)(image, threshold) if task == "detection" else make_predictor(loaded)(image)
        assert np.array_equal(np.asarray(shown), np.asarray(expected[0])), "the page shows another image"
        assert not np.array_equal(np.asarray(shown), np.asarray(image)), "nothing was drawn on the photo"
        if task == "detection":
            best = detections[0]
            expect(page.locator("#boxes")).to_contain_text(best["label"])
            expect(page.locator("#boxes")).to_contain_text(f"{best['score']:.3f}".rstrip("0"))
        else:
            for found in reference(image):
                expect(page.locator("#legend")).to_contain_text(found["label"])
    page.screenshot(path=str(tmp_path / f"demo-{task}.png"), full_page=True)

    if task == "classification":  # an example image runs the model as an upload does
        page.locator("#examples img").first.click()
        first = reference(Image.open(examples[0]), top_k=1)[0]["label"]
        expect(page.locator("#prediction [data-testid=label-output-value]")).to_have_text(first)
        page.screenshot(path=str(tmp_path / "demo-classification-example.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_demo_annotates_an_uploaded_video_in_a_real_browser(
    task: str, fine_tuned: Any, browser: Any, serve: Any, tmp_path: Path
) -> None:
    """A street clip made from real CamSeq frames, uploaded in Chromium: the annotated video the page shows has every
    frame drawn as the demo draws that frame uploaded as an image."""
    from playwright.sync_api import expect

    _import("av")
    from test_video import assert_drawn_like, decode, write_clip

    from recipes.decode.video import probe_video
    from recipes.modes.demo import build_app, make_predictor
    from recipes.modes.loading import load_fine_tuned

    photos = sorted(p for p in shared_dataset("camseq").glob("*.png") if not p.stem.endswith("_L"))[:4]
    clip = write_clip(tmp_path / "street.mp4", [np.asarray(Image.open(p).convert("RGB")) for p in photos], fps=5)
    loaded = load_fine_tuned(str(fine_tuned(task)), device="cpu")
    threshold = 0.0  # every box a briefly trained detector keeps: something is drawn on each frame

    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(serve(build_app(loaded, threshold=threshold)))
    page.set_input_files("#video input[type=file]", str(clip))
    expect(page.locator("#video_info")).to_contain_text("4 frames annotated", timeout=TIMEOUT_MS)
    source = page.locator("#video_prediction video").first.get_attribute("src")
    shown_path = tmp_path / "shown.mp4"
    shown_path.write_bytes(page.request.get(source).body())
    page.screenshot(path=str(tmp_path / f"demo-video-{task}.png"), full_page=True)
    page.close()

    info = probe_video(shown_path)
    assert (info.codec, info.frames, info.fps, info.width, info.height) == ("h264", 4, 5, 960, 720)
    predict = make_predictor(loaded)
    options = (threshold,) if task == "detection" else ()
    for shown, frame in zip(decode(shown_path), decode(clip), strict=True):
        assert_drawn_like(shown, np.asarray(predict(Image.fromarray(frame), *options)[0]), frame)
