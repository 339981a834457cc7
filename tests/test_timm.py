"""timm checkpoints (transformers' ``timm_wrapper``: ``TimmWrapperForImageClassification`` with timm's own
preprocessing from ``config.json``'s ``pretrained_cfg``) fine-tune, evaluate, predict, export and demo like any other
classifier. The models are built here with random weights (``timm.create_model(name, pretrained=False)``) and saved
the way the Hub serves timm checkpoints; the processor equivalence is in tests/test_preprocessing.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_ok, run_cli, shared_dataset
from transformers import AutoModelForImageClassification

from recipes.config import ModelArguments, RecipeError
from recipes.model.batchnorm import batchnorm_layers, fix_tensorflow_momentum
from recipes.model.build import build_image_processor, build_model
from recipes.model.schedule import LearningRates, parameter_groups
from recipes.transforms import ProcessorGeometry

timm = pytest.importorskip("timm")

FOOD_ROWS = ("sushi", "pizza", "steak")
"""A 3-class timm checkpoint's labels, in a non-alphabetical order."""


def save_timm_checkpoint(architecture: str, folder: Path, *, label_names: tuple[str, ...] | None = None,
                         hub_style: bool = True, **pretrained_cfg: object) -> Path:
    """``timm.create_model(architecture)`` (random weights) saved with timm's ``save_for_hf`` (config.json +
    model.safetensors). ``hub_style``: the config.json as the Hub's ``timm/...`` repositories have it (no
    ``model_args``); else as timm 1.0.31's ``save_for_hf`` writes it (``model_args`` with ``num_classes``)."""
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(architecture, pretrained=False, num_classes=len(label_names or ()) or 1000)
    model_config = {"label_names": list(label_names)} if label_names else None
    save_for_hf(model, folder, model_config=model_config, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    if hub_style:
        config.pop("model_args", None)
    config["pretrained_cfg"].update(pretrained_cfg)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's MobileNetV2-0.35 as timm 1.0.31 saves it (``model_args`` with ``num_classes``: transformers alone
    cannot load that), ImageNet-sized head."""
    return save_timm_checkpoint("mobilenetv2_035", tmp_path_factory.mktemp("timm-mnv2"), hub_style=False)


@pytest.fixture(scope="module")
def food_timm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A timm ResNet-18 whose 3-class head is labelled sushi, pizza, steak, saved with timm's ``save_for_hf``."""
    return save_timm_checkpoint("resnet18", tmp_path_factory.mktemp("timm-food"), label_names=FOOD_ROWS,
                                hub_style=False)


@pytest.fixture(scope="module")
def hub_timm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same ResNet-18 with config.json as the Hub's ``timm/...`` repositories have it (no ``model_args``)."""
    return save_timm_checkpoint("resnet18", tmp_path_factory.mktemp("timm-hub"), label_names=FOOD_ROWS)


def _timm_logits(folder: Path) -> torch.Tensor:
    """The saved timm model's logits, computed by timm alone (no transformers)."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return _logits(model, wrapped=False)


def _logits(model: torch.nn.Module, wrapped: bool = True) -> torch.Tensor:
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        return model.eval()(pixel_values=pixels).logits if wrapped else model.eval()(pixels)


# ----------------------------------------------------------------------------- loading, heads, labels


def test_a_checkpoint_saved_by_timm_loads_with_a_new_head(mobilenet: Path) -> None:
    """timm's ``save_for_hf`` writes ``model_args.num_classes``; transformers passes ``num_classes`` too. The head
    (``timm_model.classifier``) is new, sized for the data, and is what head warm-up trains."""
    with pytest.raises(TypeError, match="multiple values for keyword argument 'num_classes'"):
        AutoModelForImageClassification.from_pretrained(mobilenet)  # transformers alone
    loaded = build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(mobilenet),
                                                                         ignore_mismatched_sizes=True),
                         {0: "pizza", 1: "steak", 2: "sushi"})
    assert type(loaded.model).__name__ == "TimmWrapperForImageClassification"
    assert loaded.model.timm_model.get_classifier().out_features == 3
    assert loaded.new_parameters == ["timm_model.classifier.bias", "timm_model.classifier.weight"]
    assert "num_classes" not in (loaded.model.config.model_args or {})  # saved so that pipeline() can load it


def test_a_headless_timm_checkpoint_gets_a_new_head(tmp_path: Path) -> None:
    """A feature checkpoint (``num_classes: 0``, as MAE/DINO-style timm checkpoints are) gets a new head."""
    folder = save_timm_checkpoint("resnet18", tmp_path / "headless", hub_style=False)
    config = json.loads((folder / "config.json").read_text())
    config["num_classes"] = config["model_args"]["num_classes"] = config["pretrained_cfg"]["num_classes"] = 0
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    weights = {k: v for k, v in load_file(folder / "model.safetensors").items() if not k.startswith("fc.")}
    save_file(weights, folder / "model.safetensors")
    loaded = build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(folder)),
                         {0: "pizza", 1: "steak"})
    assert loaded.new_parameters == ["timm_model.fc.bias", "timm_model.fc.weight"]
    assert loaded.model.timm_model.fc.out_features == 2


def test_labels_by_name_keep_the_timm_head_rows(food_timm: Path) -> None:
    """timm's ``label_names`` become ``id2label``; each known class keeps its row (moved), a new class gets a new one
    (the head is rebuilt for 4 classes, as ``reset_classifier`` would, through transformers' ``num_labels``)."""
    data = {0: "pizza", 1: "ramen", 2: "steak", 3: "sushi"}  # alphabetical, one class the checkpoint lacks
    loaded = build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(food_timm),
                                                                         ignore_mismatched_sizes=True), data)
    assert loaded.kept_label_rows == {"pizza": 1, "steak": 2, "sushi": 0}
    assert set(loaded.new_parameters) == {"timm_model.fc.weight", "timm_model.fc.bias"}
    assert loaded.model.timm_model.get_classifier().out_features == 4
    before, after = _timm_logits(food_timm), _logits(loaded.model)
    for new_id, name in data.items():
        if name != "ramen":
            assert torch.allclose(after[:, new_id], before[:, FOOD_ROWS.index(name)], atol=1e-5)
    checkpoint = timm.create_model("resnet18", pretrained=False, num_classes=3)
    from safetensors.torch import load_file

    checkpoint.load_state_dict(load_file(food_timm / "model.safetensors"))
    assert not any(torch.equal(loaded.model.timm_model.fc.weight[1], row) for row in checkpoint.fc.weight)


def test_an_architecture_timm_does_not_know_is_a_clear_early_error(food_timm: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(food_timm, bad)
    config = json.loads((bad / "config.json").read_text())
    config["architecture"] = "resnet18x"
    (bad / "config.json").write_text(json.dumps(config))
    pattern = r"(?s)architecture `resnet18x`, which timm .* does not know \(closest names: resnet18.*pip install -U"
    with pytest.raises(RecipeError, match=pattern):  # the processor is built first, before the data is read
        build_image_processor(ModelArguments(model_name_or_path=str(bad)))
    with pytest.raises(RecipeError, match=pattern):
        build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(bad)), {0: "pizza"})
    del config["pretrained_cfg"]
    config["architecture"] = "resnet18"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecipeError, match=r"(?s)names the timm architecture `resnet18` but has no `pretrained_cfg`"):
        build_image_processor(ModelArguments(model_name_or_path=str(bad)))


def test_image_processor_overrides_change_timm_data_config_and_the_saved_config(hub_timm: Path) -> None:
    args = ModelArguments(model_name_or_path=str(hub_timm), image_processor_overrides={
        "input_size": [160, 160], "crop_pct": 1.0, "crop_mode": "squash"})
    processor = build_image_processor(args)
    geometry = ProcessorGeometry.from_processor(processor)
    assert (geometry.height, geometry.width) == (160, 160)
    assert processor.data_config["crop_mode"] == "squash"
    model = build_model(AutoModelForImageClassification, args, dict(enumerate(FOOD_ROWS))).model
    assert model.config.pretrained_cfg["input_size"] == [3, 160, 160]  # what pipeline() will use
    with pytest.raises(RecipeError, match=r"(?s)\['size'\].*timm's data config"):
        build_image_processor(ModelArguments(model_name_or_path=str(hub_timm),
                                             image_processor_overrides={"size": {"height": 160, "width": 160}}))


# ----------------------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("architecture", ["mobilenetv2_035", "tf_efficientnet_b0", "resnet18",
                                          "ghostnet_100", "regnetx_002"])
def test_timm_batchnorm_is_found_uses_pytorch_momentum_and_freezes(architecture: str, tmp_path: Path) -> None:
    """Checkpoints saved by timm, loaded as the recipes load them: timm's BatchNorm layers (``BatchNormAct2d`` and
    plain ``BatchNorm1d/2d``) subclass PyTorch's, so they are found; all use PyTorch's momentum 0.1 — TensorFlow
    ports (``tf_*``) too, only their eps is TensorFlow's 1e-3 — so nothing is corrected; ``freeze_batchnorm`` keeps
    their statistics."""
    folder = save_timm_checkpoint(architecture, tmp_path / "checkpoint", hub_style=False)
    labels = {0: "pizza", 1: "steak", 2: "sushi"}
    model = build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(folder),
                                                                        ignore_mismatched_sizes=True), labels).model
    layers = batchnorm_layers(model)
    assert layers and {m.momentum for m in layers} == {0.1}
    assert len(layers) == len(batchnorm_layers(model.timm_model))
    if architecture.startswith("tf_"):
        assert {m.eps for m in layers} == {1e-3}
    assert fix_tensorflow_momentum(model) == 0 and {m.momentum for m in layers} == {0.1}
    before = [m.running_mean.clone() for m in layers]
    model.train()(pixel_values=torch.randn(2, 3, 64, 64))
    assert any(not torch.equal(m.running_mean, b) for m, b in zip(layers, before))  # they do update in training
    frozen = build_model(AutoModelForImageClassification, ModelArguments(
        model_name_or_path=str(folder), ignore_mismatched_sizes=True, freeze_batchnorm=True), labels).model
    kept = [m.running_mean.clone() for m in batchnorm_layers(frozen)]
    frozen.train()(pixel_values=torch.randn(2, 3, 64, 64))
    assert all(torch.equal(m.running_mean, k) for m, k in zip(batchnorm_layers(frozen), kept))


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("architecture", ["convnext_atto", "mobilenetv2_035", "vit_tiny_patch16_224"])
def test_layer_decay_uses_timm_blocks_and_head(architecture: str) -> None:
    """Each parameter's rate is the scale timm's own ``param_groups_layer_decay`` gives it (timm's
    ``group_matcher``: stem, blocks, then the head); ConvNeXt's ``stem.0``/``stem.1`` are the stem, not blocks."""
    from timm.optim import param_groups_layer_decay
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture=architecture, num_labels=3))
    classifier = model.timm_model.get_classifier()
    prefix = next(name for name, module in model.timm_model.named_modules() if module is classifier)
    head = {f"timm_model.{prefix}.{name}" for name, _ in classifier.named_parameters()}  # the new head
    rates = LearningRates(base=1.0, layer_decay=0.7, head=head)
    groups = parameter_groups(model, rates, 0.0, set())
    ours = {id(p): group["lr"] for group in groups for p in group["params"]}
    names = {id(p): name for name, p in model.timm_model.named_parameters()}
    theirs = {id(p): group["lr_scale"] for group in param_groups_layer_decay(model.timm_model, layer_decay=0.7)
              for p in group["params"]}
    assert ours.keys() == theirs.keys()
    assert all(ours[key] == pytest.approx(theirs[key]) for key in ours), [
        (names[k], ours[k], theirs[k]) for k in ours if ours[k] != pytest.approx(theirs[k])][:5]
    assert len(set(ours.values())) > 4
    stem = next(p for name, p in model.named_parameters() if name.startswith("timm_model.") and ours[id(p)] < 1)
    assert ours[id(stem)] == min(ours.values())
    assert all(ours[id(p)] == 1.0 for name, p in model.named_parameters() if name in head)


# ----------------------------------------------------------------------------- end to end, through the CLI

CPU_SIZE = ["--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "0", "--preprocessing_num_workers",
            "1", "--use_cpu", "true", "--save_total_limit", "1"]


@pytest.fixture(scope="module")
def timm_fine_tuned(mobilenet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's command: configs/food101-mobilenet.yaml on the timm checkpoint, 4 steps on food101-mini."""
    food, out = shared_dataset("food101-mini"), tmp_path_factory.mktemp("timm-run") / "model"
    result = run_cli("configs/food101-mobilenet.yaml", "--model_name_or_path", str(mobilenet),
                     "--train_dir", str(food / "train"), "--validation_dir", str(food / "test"), "--max_steps", "4",
                     "--max_train_samples", "16", "--per_device_train_batch_size", "4",
                     "--per_device_eval_batch_size", "16", "--layer_decay", "0.8", "--output_dir", str(out), *CPU_SIZE)
    assert_ok(result)
    assert "New parameters (not in the checkpoint): timm_model.classifier.bias, timm_model.classifier.weight" in (
        result.stderr)
    assert "Head warm-up: only the new head trains" in result.stderr
    return out


@pytest.mark.real_data
@pytest.mark.slow
def test_timm_train_then_evaluate_equals_the_pipeline(timm_fine_tuned: Path) -> None:
    from transformers import pipeline

    metrics = json.loads((timm_fine_tuned / "eval_results.json").read_text())
    photos = sorted((shared_dataset("food101-mini") / "test").rglob("*.jpg"))
    pipe = pipeline("image-classification", model=str(timm_fine_tuned))
    assert type(pipe.image_processor).__name__ == "TimmWrapperImageProcessor"
    correct = sum(pipe(str(photo), top_k=1)[0]["label"] == photo.parent.name for photo in photos)
    assert metrics["eval_samples"] == len(photos)
    assert metrics["eval_accuracy"] == pytest.approx(correct / len(photos))


@pytest.mark.real_data
@pytest.mark.slow
def test_timm_predict_export_and_demo_equal_the_pipeline(timm_fine_tuned: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from test_export import EXPORT_ARGS, _onnxruntime
    from test_predict import food_photos, read_jsonl, run_mode
    from transformers import pipeline

    from recipes.cli import main as cli_main
    from recipes.decode.images import load_rgb
    from recipes.modes.demo import make_predictor
    from recipes.modes.loading import load_fine_tuned

    pipe, photos = pipeline("image-classification", model=str(timm_fine_tuned)), food_photos()
    out = tmp_path / "predictions.jsonl"
    assert_ok(run_mode("predict", str(timm_fine_tuned), *map(str, photos), "--output", str(out), "--top_k", "3",
                       "--batch_size", "3", "--num_workers", "1"))
    for row, photo in zip(read_jsonl(out), photos, strict=True):
        expected = pipe(str(photo), top_k=3)
        assert [t["label"] for t in row["top_k"]] == [e["label"] for e in expected]
        assert [t["score"] for t in row["top_k"]] == pytest.approx([e["score"] for e in expected], abs=1e-5)

    predict = make_predictor(load_fine_tuned(str(timm_fine_tuned), device="cpu"))  # the demo's function
    image = load_rgb(photos[0])
    scores = predict(image)
    expected = {found["label"]: found["score"] for found in pipe(image, top_k=3)}
    assert scores.keys() == expected.keys() and np.allclose(list(scores.values()), list(expected.values()))

    ort = _onnxruntime()
    onnx_dir = tmp_path / "onnx"
    code = cli_main(["export", str(timm_fine_tuned), "--output", str(onnx_dir), *EXPORT_ARGS])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-4000:]
    assert "config.json, the image processor in config.json (timm's pretrained_cfg)" in printed.out
    assert not (onnx_dir / "preprocessor_config.json").exists()
    report = json.loads((onnx_dir / "export_report.json").read_text())
    assert report["parity"]["passed"] and report["parity"]["top1_agree"] == 1.0, report["parity"]
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(onnx_dir)  # the export folder alone (timm: in config.json)
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = processor(images=[load_rgb(p) for p in photos[:2]], return_tensors="pt")
    logits = session.run(None, {"pixel_values": inputs["pixel_values"].numpy()})[0]
    reference = pipe.model(pixel_values=inputs["pixel_values"]).logits.detach().numpy()
    assert logits.shape == (2, 3) and np.abs(logits - reference).max() < 1e-3


def test_the_readme_timm_recipe_parses() -> None:
    from recipes.parse import parse_recipe

    recipe = parse_recipe(["configs/food101-convnext-timm.yaml", "--bf16", "false"])
    assert recipe.model.model_name_or_path == "timm/convnext_tiny.in12k_ft_in1k"
    assert recipe.model.ignore_mismatched_sizes and recipe.model.layer_decay == 0.8
    assert recipe.data.dataset_name == "ethz/food101"
