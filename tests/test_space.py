"""``vision-recipes space``: the Space's files against the local fake Hub (Space repo, card, requirements, model
card link, bundled model, examples only when asked, errors), the app template's drawing against the demo's, and
the real thing: the generated Space downloaded from the fake Hub, its ``app.py`` run as a Space runs it (a clean
process with only the Space's files, ``HF_ENDPOINT`` at the fake Hub, this project not importable) and driven by
headless Chromium on a real photo per task, the page checked against ``transformers.pipeline()``."""

from __future__ import annotations

import ast
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hub_server import FakeHubServer
from PIL import Image
from test_demo import RECIPES, _save_tiny_model
from test_demo_browser import TIMEOUT_MS, _photo, _shown_image, browser  # noqa: F401  (Chromium fixture)

from recipes.artifacts.hub import push_output_dir
from recipes.cli import main as cli_main
from recipes.config import RecipeError

REPO = Path(__file__).resolve().parents[1]
TRAINED_WITH = {"python": "3.11.7", "transformers": "5.0.1", "torch": "2.5.0+cu124", "torchvision": "0.20.0"}
SPACE_PACKAGES = {"gradio", "torch", "torchvision", "transformers", "PIL", "numpy"}  # numpy: a dependency of all


def _front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---\n")[1])


def _model(tmp_path: Path, task: str = "image-classification", hub_model_id: str | None = None) -> Path:
    """A tiny saved model as `vision-recipes train` leaves it: weights, processor, card, run_manifest, examples."""
    folder = _save_tiny_model(RECIPES[task], tmp_path / "model")
    manifest = {"versions": TRAINED_WITH, "recipe": {"training": {"hub_model_id": hub_model_id},
                                                     "run": {"license": "apache-2.0"}}}
    (folder / "run_manifest.json").write_text(json.dumps(manifest))
    versions = "".join(f"- {name} {version}\n" for name, version in TRAINED_WITH.items())
    (folder / "README.md").write_text("---\nlicense: mit\npipeline_tag: x\n---\n\n# tiny\n\n## How to use\n\nx\n\n"
                                      f"## Framework versions\n\n{versions}")  # as the card has them (pushed)
    (folder / "examples").mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (60 * i, 90, 20)).save(folder / "examples" / f"example_{i + 1}.jpg")
    return folder


def _space(fake_hub: FakeHubServer, repo_id: str) -> dict[str, bytes]:
    return fake_hub.files(repo_id, repo_type="space")


def test_space_of_a_hub_model(tmp_path: Path, fake_hub: FakeHubServer, capsys: pytest.CaptureFixture[str]) -> None:
    from recipes.modes.space import publish_space

    folder = _model(tmp_path, "object-detection")
    push_output_dir(folder, "user/tiny-detr", token=fake_hub.token, endpoint=fake_hub.url)
    url = publish_space("user/tiny-detr", "user/tiny-demo", token=fake_hub.token, endpoint=fake_hub.url,
                        threshold=0.3)
    assert url.endswith("/spaces/user/tiny-demo")
    files = _space(fake_hub, "user/tiny-demo")
    assert set(files) == {".gitattributes", "README.md", "app.py", "requirements.txt", "space_config.json"}
    assert files["app.py"] == (REPO / "recipes" / "modes" / "space_app.py").read_bytes()
    card = files["README.md"].decode()
    meta = _front_matter(card)
    import gradio

    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__ and meta["app_file"] == "app.py"
    assert meta["models"] == ["user/tiny-detr"] and meta["title"] == "tiny-demo" and meta["license"] == "mit"
    assert "(https://huggingface.co/user/tiny-detr)" in card
    requirements = files["requirements.txt"].decode().splitlines()
    assert requirements[1:4] == ["transformers==5.0.1", "torch==2.5.0", "torchvision==0.20.0"]  # trained with
    assert any(line.startswith("pillow==") for line in requirements)
    assert not any(line.startswith("gradio") for line in requirements)  # the sdk_version installs it
    settings = json.loads(files["space_config.json"])
    assert settings["task"] == "object-detection" and settings["model_id"] == "user/tiny-detr"
    assert settings["model_path"] is None and settings["threshold"] == 0.3 and len(settings["palette"]) == 3
    # the model card links the Space back, once
    model_card = fake_hub.files("user/tiny-detr")["README.md"].decode()
    assert "[user/tiny-demo](https://huggingface.co/spaces/user/tiny-demo)" in model_card
    assert "Linked the Space" in capsys.readouterr().out
    commits = len(fake_hub.commits("user/tiny-detr"))
    publish_space("user/tiny-detr", "user/tiny-demo", token=fake_hub.token, endpoint=fake_hub.url)  # an update
    assert len(fake_hub.commits("user/tiny-detr")) == commits
    assert "already links the Space" in capsys.readouterr().out
    assert len(fake_hub.commits("user/tiny-demo", repo_type="space")) == 3  # initial, created, updated


def test_bundled_model_and_examples_only_when_asked(tmp_path: Path, fake_hub: FakeHubServer) -> None:
    from recipes.modes.space import publish_space

    folder = _model(tmp_path, "image-segmentation")
    publish_space(str(folder), "user/seg", token=fake_hub.token, endpoint=fake_hub.url, bundle=True, examples="2")
    files = _space(fake_hub, "user/seg")
    assert {"model/config.json", "model/model.safetensors", "model/preprocessor_config.json"} <= set(files)
    assert sorted(name for name in files if name.startswith("examples/")) == ["examples/example_1.jpg",
                                                                               "examples/example_2.jpg"]
    settings = json.loads(files["space_config.json"])
    assert settings["model_path"] == "model" and settings["model_id"] is None
    assert "models" not in _front_matter(files["README.md"].decode())  # no Hub repo to name
    # the bundled Space's app loads the model from its own model/ folder and predicts what the demo predicts
    pytest.importorskip("gradio")
    from recipes.modes import space_app
    from recipes.modes.demo import make_predictor
    from recipes.modes.loading import load_fine_tuned

    space = tmp_path / "space"
    for name, data in files.items():
        (space / name).parent.mkdir(parents=True, exist_ok=True)
        (space / name).write_bytes(data)
    app = space_app.build_app(space_app.load_settings(space), space)
    assert sum(component["type"] == "dataset" for component in app.get_config_file()["components"]) == 1
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    overlay, legend = space_app.Predictor(space_app.load_settings(space), str(space / "model")).segment(photo)
    expected = make_predictor(load_fine_tuned(str(folder), device="cpu"))(photo)
    assert np.array_equal(np.asarray(overlay), np.asarray(expected[0])) and legend == expected[1]
    # an update without --examples or --bundle_model removes them (pushed under hub_model_id meanwhile)
    push_output_dir(folder, "user/seg-model", token=fake_hub.token, endpoint=fake_hub.url)
    publish_space(str(folder), "user/seg", token=fake_hub.token, endpoint=fake_hub.url, model_repo="user/seg-model")
    files = _space(fake_hub, "user/seg")
    assert not any(name.startswith(("examples/", "model/")) for name in files)
    assert json.loads(files["space_config.json"])["model_id"] == "user/seg-model"
    # --examples DIR
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "street.png")
    (photos / "notes.txt").write_text("not an image")
    publish_space(str(folder), "user/seg", token=fake_hub.token, endpoint=fake_hub.url, model_repo="user/seg-model",
                  examples=str(photos))
    assert [name for name in _space(fake_hub, "user/seg") if name.startswith("examples/")] == ["examples/street.png"]


def test_a_private_hub_model_is_bundled_without_its_checkpoints(tmp_path: Path, fake_hub: FakeHubServer,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from recipes.modes.space import publish_space

    folder = _model(tmp_path)
    push_output_dir(folder, "user/secret", token=fake_hub.token, endpoint=fake_hub.url, private=True)
    fake_hub.seed("user/secret", {"checkpoints/checkpoint-4/model.safetensors": b"\0" * 64})
    publish_space("user/secret", "user/secret-demo", token=fake_hub.token, endpoint=fake_hub.url)
    assert "user/secret is private" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="bundling it into a public Space would publish it"):
        publish_space("user/secret", "user/secret-demo", token=fake_hub.token, endpoint=fake_hub.url, bundle=True)
    with pytest.raises(RecipeError, match="exists and is public"):
        publish_space("user/secret", "user/secret-demo", token=fake_hub.token, endpoint=fake_hub.url, bundle=True,
                      private=True)
    capsys.readouterr()
    publish_space("user/secret", "user/private-demo", token=fake_hub.token, endpoint=fake_hub.url, bundle=True,
                  private=True)
    assert "private" not in capsys.readouterr().err
    assert fake_hub.repo("user/private-demo", repo_type="space").private
    assert not any(name.startswith("model/") for name in _space(fake_hub, "user/secret-demo"))
    files = _space(fake_hub, "user/private-demo")
    assert sorted(name for name in files if name.startswith("model/")) == [
        "model/config.json", "model/model.safetensors", "model/preprocessor_config.json"]
    assert files["model/model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_requirements_fall_back_to_the_model_card(tmp_path: Path) -> None:
    from recipes.modes.space import SourceModel, requirements

    card = "# m\n\n## Framework versions\n\n- python 3.11.7\n- transformers 5.1.0\n- torch 2.6.0\n"
    source = SourceModel(tmp_path, "image-classification", None, None, {}, card)
    lines = requirements(source).splitlines()
    assert "the model card" in lines[0] and lines[1:3] == ["transformers==5.1.0", "torch==2.6.0"]


def test_space_command_errors(tmp_path: Path, fake_hub: FakeHubServer, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", fake_hub.url)
    (tmp_path / "data").mkdir()
    assert cli_main(["space", str(tmp_path / "data"), "--repo_id", "user/demo"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    folder = _model(tmp_path)
    assert cli_main(["space", str(folder), "--repo_id", "demo"]) == 2
    assert "'demo' is not USER/NAME" in capsys.readouterr().err
    assert cli_main(["space", str(folder), "--repo_id", "user/demo"]) == 2  # local, not on the Hub, not bundled
    assert "--bundle_model" in capsys.readouterr().err
    assert cli_main(["space", str(folder), "--repo_id", "user/demo", "--model_repo", "user/missing"]) == 2
    assert "the Hub did not serve it" in capsys.readouterr().err
    assert cli_main(["space", "user/missing", "--repo_id", "user/demo"]) == 2
    assert "neither a local folder nor a model the Hub served" in capsys.readouterr().err
    assert cli_main(["space", str(tmp_path / "missing"), "--repo_id", "user/demo"]) == 2
    assert "no such folder, and not a Hub model id" in capsys.readouterr().err
    assert cli_main(["space", str(folder), "--repo_id", "user/demo", "--bundle_model", "--examples", "x"]) == 2
    assert "a folder of images or a number" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    assert cli_main(["space", str(folder), "--repo_id", "user/demo", "--bundle_model"]) == 2
    assert "No Hugging Face token" in capsys.readouterr().err
    assert fake_hub.repo("user/demo", repo_type="space") is None


def test_app_imports_only_what_a_space_installs() -> None:
    tree = ast.parse((REPO / "recipes" / "modes" / "space_app.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == SPACE_PACKAGES


def test_app_draws_what_the_demo_draws() -> None:
    from recipes.draw import render
    from recipes.modes import space_app

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    palette = render.class_palette(None, 4)
    prediction = {"boxes": [[5.5, 10.2, 60.0, 70.9], [0, 0, 119, 89]], "labels": ["a", "b"], "scores": [0.91, 0.4],
                  "label_ids": [3, 1]}
    assert np.array_equal(np.asarray(space_app.render_detection(image, prediction, palette)),
                          np.asarray(render.draw_boxes(image, prediction, palette)))
    ids = rng.integers(0, 4, (90, 120))
    assert np.array_equal(np.asarray(space_app.blend_mask(image, ids, palette)),
                          np.asarray(render.blend_mask(image, ids, palette)))
    names = {0: "road", 1: "sky", 2: "car", 3: "tree"}
    legend = space_app.mask_legend(ids, palette, names)
    assert legend == render.mask_legend(ids, palette, names)
    assert space_app.legend_html(legend) == render.legend_html(legend)


def test_app_drops_the_duplicate_boxes_the_demo_drops() -> None:
    from transformers import AutoConfig

    from recipes.modes import space_app
    from recipes.tasks.detection.demo import without_duplicates

    config = AutoConfig.for_model("detr", id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    found = [{"score": score, "label": label, "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box))}
             for score, label, box in [(0.5, "a", (0, 0, 10, 10)), (0.9, "a", (1, 1, 10, 10)),
                                       (0.8, "b", (1, 1, 10, 10)), (0.7, "a", (30, 30, 40, 40))]]
    assert space_app.without_duplicates(found, config) == without_duplicates(found, config)
    assert len(space_app.without_duplicates(found, config)) == 4
    config.box_nms_iou = 0.7
    kept = space_app.without_duplicates(found, config)
    assert kept == without_duplicates(found, config) and [f["score"] for f in kept] == [0.9, 0.8, 0.7]


# --- the Space, run as a Space runs it, in a real browser ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def run_space(fake_hub: FakeHubServer, tmp_path: Path) -> Iterator[Any]:
    """``run_space(folder) -> url``: ``python app.py`` in ``folder`` in a clean process, as a Space runs it:
    only the Space's files in its working directory, the Hub at the fake Hub, no token (a public model), the
    ``GRADIO_SERVER_*`` address a Space sets, and this project unimportable."""
    processes: list[subprocess.Popen] = []

    def start(folder: Path) -> str:
        port = _free_port()
        env = fake_hub.client_env(tmp_path / "space-home", token=False)
        env.pop("PYTHONPATH", None)
        env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
                   PYTHONUNBUFFERED="1")
        block = "import runpy, sys; sys.modules['recipes'] = None; runpy.run_path('app.py', run_name='__main__')"
        log = (tmp_path / "space.log").open("w")
        process = subprocess.Popen([sys.executable, "-c", block], cwd=folder, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        processes.append(process)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{(tmp_path / 'space.log').read_text()[-6000:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}/"
            time.sleep(1)
        pytest.fail(f"app.py did not serve within 600 s:\n{(tmp_path / 'space.log').read_text()[-6000:]}")

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_the_space_in_a_real_browser(task: str, fine_tuned: Any, fake_hub: FakeHubServer, run_space: Any,
                                     browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from huggingface_hub import snapshot_download
    from playwright.sync_api import expect
    from transformers import pipeline

    from recipes.modes.demo import make_predictor
    from recipes.modes.loading import load_fine_tuned

    folder, model_repo, space_repo = fine_tuned(task), f"user/{task}-model", f"user/{task}-demo"
    photo = _photo(task)
    image = Image.open(photo).convert("RGB")
    loaded = load_fine_tuned(str(folder), device="cpu")
    reference = pipeline(loaded.task.pipeline_tag, model=str(folder))  # independent of the Space's code
    threshold, detections = 0.5, []
    if task == "detection":  # a start threshold (on the slider's 0.05 steps) that keeps the top 3 boxes or more
        detections = sorted(reference(image, threshold=0.0), key=lambda found: -found["score"])
        threshold = round(math.floor(detections[2]["score"] / 0.05) * 0.05, 2)
    # Validation photos reach the Hub only when asked for (push privacy); the classification Space shows two of them.
    push_output_dir(folder, model_repo, token=fake_hub.token, endpoint=fake_hub.url,
                    include_photos=task == "classification")

    started = time.monotonic()
    options = ["--examples", "2"] if task == "classification" else ["--threshold", str(threshold)]
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "space.py"), model_repo, "--repo_id", space_repo,
                           *options], env={**fake_hub.client_env(tmp_path / "home"), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-4000:]
    space = Path(snapshot_download(space_repo, repo_type="space", local_dir=tmp_path / "space",
                                   endpoint=fake_hub.url, token=fake_hub.token))
    assert sorted(p.name for p in space.iterdir() if p.is_file()) == [
        ".gitattributes", "README.md", "app.py", "requirements.txt", "space_config.json"]
    assert (space / "examples").is_dir() == (task == "classification")
    versions = json.loads((folder / "run_manifest.json").read_text())["versions"]
    pins = (space / "requirements.txt").read_text().splitlines()
    assert {f"{name}=={versions[name]}" for name in ("transformers", "torch", "torchvision")} <= set(pins)
    seen = len(fake_hub.requests)
    url = run_space(space)
    paths = [request.path for request in fake_hub.requests[seen:]]
    assert any(path.startswith(f"/{model_repo}/resolve/") and path.endswith("/model.safetensors") for path in paths), (
        f"the Space did not load the model by its Hub id: {paths}")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("#examples img")).to_have_count(2 if task == "classification" else 0)
    page.set_input_files("#image input[type=file]", str(photo))
    if task == "classification":
        top = reference(image, top_k=3)
        expect(page.locator("#prediction [data-testid=label-output-value]")).to_have_text(top[0]["label"])
        for found in top:
            expect(page.locator("#prediction")).to_contain_text(found["label"])
    else:
        shown = _shown_image(page)
        demo = make_predictor(loaded)
        expected = demo(image, threshold) if task == "detection" else demo(image)
        assert shown.size == image.size
        assert np.array_equal(np.asarray(shown), np.asarray(expected[0])), "the Space shows another image than the demo"
        assert not np.array_equal(np.asarray(shown), np.asarray(image)), "nothing was drawn on the photo"
        if task == "detection":
            kept = [found for found in detections if found["score"] >= threshold]
            assert len(kept) >= 3 and [row[0] for row in expected[1]] == [found["label"] for found in kept]
            for found in kept[:3]:
                expect(page.locator("#boxes")).to_contain_text(found["label"])
                expect(page.locator("#boxes")).to_contain_text(f"{found['score']:.3f}".rstrip("0"))
        else:
            for found in reference(image):
                expect(page.locator("#legend")).to_contain_text(found["label"])
    page.screenshot(path=str(tmp_path / f"space-{task}.png"), full_page=True)
    page.close()
    print(f"space-{task}: {time.monotonic() - started:.0f} s from `vision-recipes space` to the checked page")
