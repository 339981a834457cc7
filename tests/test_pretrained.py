"""Fine-tuning real pretrained checkpoints (../shared/pretrained): BatchNorm momentum, labels matched by name,
schedules. Runs in CI; skipped elsewhere when the checkpoints are absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REPO, assert_ok, libturbojpeg3, run_cli, shared_checkpoint, shared_dataset
from transformers import AutoModelForImageClassification

from recipes.config import ModelArguments, RecipeError
from recipes.decode.turbojpeg import LIBRARY_ENV
from recipes.model.batchnorm import batchnorm_layers, fix_tensorflow_momentum
from recipes.model.build import build_model
from recipes.model.labels import plan_labels
from recipes.model.schedule import layer_ranks, suggest

MOBILENET_V1 = "mobilenet_v1_0.25_224-keras-imagenet"
FOOD_ROWS = {"sushi": 10, "pizza": 963, "steak": 500}
"""A 3-class checkpoint made from ImageNet rows (which rows does not matter: the test follows them by name)."""


@pytest.fixture(scope="module")
def food_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV1 with a 3-class head whose labels are sushi, pizza, steak in that (non-alphabetical) order."""
    source = shared_checkpoint(MOBILENET_V1)
    imagenet = AutoModelForImageClassification.from_pretrained(source)
    names = list(FOOD_ROWS)
    model = AutoModelForImageClassification.from_pretrained(
        source, num_labels=3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    with torch.no_grad():
        rows = list(FOOD_ROWS.values())
        model.classifier.weight.copy_(imagenet.classifier.weight[rows])
        model.classifier.bias.copy_(imagenet.classifier.bias[rows])
    folder = tmp_path_factory.mktemp("food-mobilenet")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_bytes((source / "preprocessor_config.json").read_bytes())
    return folder


def _logits(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(pixel_values=torch.randn(2, 3, 224, 224)).logits


# ----------------------------------------------------------------------------- BatchNorm


@pytest.mark.real_data
def test_tensorflow_batchnorm_momentum_is_corrected_and_survives_a_training_step() -> None:
    args = ModelArguments(model_name_or_path=str(shared_checkpoint(MOBILENET_V1)))
    raw = AutoModelForImageClassification.from_pretrained(args.model_name_or_path)
    assert all(m.momentum == pytest.approx(0.9997) for m in batchnorm_layers(raw))  # transformers' TF decay
    model = build_model(AutoModelForImageClassification, args, {0: "pizza", 1: "steak", 2: "sushi"}).model
    layers = batchnorm_layers(model)
    assert layers and all(m.momentum == pytest.approx(0.1) for m in layers)
    before = [m.running_mean.clone() for m in layers]
    model.train()(pixel_values=torch.randn(2, 3, 224, 224))  # one tiny batch in training mode
    moved = max(float((m.running_mean - b).norm() / (b.norm() + 1e-12)) for m, b in zip(layers, before))
    assert moved < 0.2  # with 0.9997 the running statistics would become this batch's (moved ~1)
    assert fix_tensorflow_momentum(model) == 0  # idempotent
    assert model.config.classifier_dropout_prob == pytest.approx(0.001)  # the checkpoint's own, already a drop rate


def test_tensorflow_keep_probability_is_not_used_as_dropout() -> None:
    from transformers import MobileNetV1Config, MobileNetV2Config

    from recipes.model.batchnorm import fix_tensorflow_dropout

    v1, v2 = MobileNetV1Config(), MobileNetV2Config()  # transformers' defaults: 0.999 and 0.8
    assert fix_tensorflow_dropout(v1) == pytest.approx(0.001) and fix_tensorflow_dropout(v2) == pytest.approx(0.2)
    assert fix_tensorflow_dropout(v1) is None


# ----------------------------------------------------------------------------- labels by name


@pytest.mark.real_data
def test_same_names_in_another_order_keep_their_rows(food_checkpoint: Path) -> None:
    original = AutoModelForImageClassification.from_pretrained(food_checkpoint)
    data = {0: "pizza", 1: "steak", 2: "sushi"}  # alphabetical, as folder datasets number them
    loaded = build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(food_checkpoint)), data)
    assert loaded.model.config.id2label == data
    assert loaded.kept_label_rows == {"pizza": 1, "steak": 2, "sushi": 0}
    before, after = _logits(original), _logits(loaded.model)
    for new_id, name in data.items():
        assert torch.allclose(after[:, new_id], before[:, original.config.label2id[name]], atol=1e-5)


@pytest.mark.real_data
def test_new_names_get_new_rows_and_known_names_keep_theirs(food_checkpoint: Path) -> None:
    original = AutoModelForImageClassification.from_pretrained(food_checkpoint)
    data = {0: "pizza", 1: "ramen", 2: "steak", 3: "sushi"}
    loaded = build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(food_checkpoint)), data)
    weight = loaded.model.classifier.weight
    assert weight.shape[0] == 4
    for new_id, name in data.items():
        if name == "ramen":
            assert not any(torch.equal(weight[new_id], row) for row in original.classifier.weight)
        else:
            assert torch.equal(weight[new_id], original.classifier.weight[original.config.label2id[name]])
    assert "classifier.weight" in loaded.new_parameters


@pytest.mark.real_data
def test_disjoint_names_get_a_fresh_head_even_at_the_same_size(food_checkpoint: Path) -> None:
    original = AutoModelForImageClassification.from_pretrained(food_checkpoint)
    data = {0: "apple", 1: "banana", 2: "cherry"}
    loaded = build_model(AutoModelForImageClassification, ModelArguments(model_name_or_path=str(food_checkpoint)), data)
    assert not loaded.kept_label_rows
    assert not any(torch.equal(loaded.model.classifier.weight[i], original.classifier.weight[i]) for i in range(3))


def test_evaluation_plan_maps_a_subset_and_refuses_unknown_names() -> None:
    checkpoint = {0: "sushi", 1: "pizza", 2: "steak"}
    plan = plan_labels(checkpoint, {0: "steak", 1: "sushi"}, evaluate_only=True)
    assert plan.id2label == checkpoint and plan.data_to_model == {0: 2, 1: 0}
    with pytest.raises(RecipeError, match=r"(?s)\['ramen'\].*Checkpoint labels: \['pizza', 'steak', 'sushi'\]"):
        plan_labels(checkpoint, {0: "ramen", 1: "sushi"}, evaluate_only=True)
    assert plan_labels(checkpoint, {0: "Pizza", 1: "steak"}, evaluate_only=False).rows == [1, 2]


def _subset_folder(tmp_path: Path, classes: tuple[str, ...]) -> Path:
    source = shared_dataset("food101-mini") / "test"
    root = tmp_path / "subset"
    for name in classes:
        (root / name).mkdir(parents=True)
        for image in sorted((source / name).glob("*.jpg"))[:6]:
            (root / name / image.name).symlink_to(image)
    return root


@pytest.mark.real_data
@pytest.mark.slow
def test_evaluate_only_on_a_subset_uses_the_checkpoint_rows_and_matches_the_pipeline(
    food_checkpoint: Path, tmp_path: Path
) -> None:
    import json

    from transformers import pipeline

    folder = _subset_folder(tmp_path, ("steak", "sushi"))
    out = tmp_path / "eval"
    assert_ok(run_cli("configs/food101-mobilenet.yaml", "--model_name_or_path", str(food_checkpoint),
                      "--train_dir", str(folder), "--validation_dir", str(folder), "--evaluate_only",
                      "--output_dir", str(out), "--bf16", "false", "--report_to", "none",
                      "--dataloader_num_workers", "0", "--make_plots", "false"))
    metrics = json.loads((out / "eval_results.json").read_text())
    pipe = pipeline("image-classification", model=str(food_checkpoint))
    images = sorted(folder.rglob("*.jpg"))
    correct = sum(pipe(str(image), top_k=1)[0]["label"] == image.parent.name for image in images)
    assert metrics["eval_samples"] == len(images)
    assert metrics["eval_accuracy"] == pytest.approx(correct / len(images))


@pytest.mark.real_data
def test_evaluate_only_with_an_unknown_class_names_both_label_sets(food_checkpoint: Path, tmp_path: Path) -> None:
    folder = _subset_folder(tmp_path, ("steak", "sushi"))
    (folder / "sushi").rename(folder / "ramen")
    result = run_cli("configs/food101-mobilenet.yaml", "--model_name_or_path", str(food_checkpoint),
                     "--train_dir", str(folder), "--validation_dir", str(folder), "--evaluate_only",
                     "--output_dir", str(tmp_path / "out"), "--report_to", "none", "--check_images", "false",
                     "--bf16", "false")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "['ramen']" in result.stderr and "Checkpoint labels: ['pizza', 'steak', 'sushi']" in result.stderr


# ----------------------------------------------------------------------------- schedules


def test_layer_ranks_follow_the_blocks_and_put_the_head_on_top() -> None:
    names = ["m.conv_stem.w", "m.layer.0.w", "m.layer.0.b", "m.layer.1.w", "m.norm.w", "classifier.w"]
    ranks = layer_ranks(names, head={"classifier.w"})
    assert ranks == {"m.conv_stem.w": 0, "m.layer.0.w": 1, "m.layer.0.b": 1, "m.layer.1.w": 2, "m.norm.w": 3,
                     "classifier.w": 3}


def test_range_test_suggestion_is_the_steepest_descent_before_the_minimum() -> None:
    rates = [10 ** (-7 + i * 0.5) for i in range(12)]
    losses = [2.0, 2.0, 1.99, 1.95, 1.7, 1.2, 0.9, 0.8, 0.75, 0.9, 2.0, 5.0]
    steepest, minimum = suggest(rates, losses)
    assert steepest == rates[5] and minimum == rates[8]


# ----------------------------------------------------------------------------- end to end (CI evidence)

CPU_SIZE = ["--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "1", "--preprocessing_num_workers",
            "1", "--save_total_limit", "1"]


@pytest.mark.real_data
@pytest.mark.slow
def test_mobilenet_recipe_fine_tunes_food101_mini_and_matches_the_pipeline(tmp_path: Path) -> None:
    """configs/food101-mobilenet.yaml on the real MobileNetV1 (ImageNet) reaches >= 0.85 on food101-mini/test, and
    the accuracy the CLI reports is the one pipeline() gets on the same photos."""
    import json

    from transformers import pipeline

    food, out = shared_dataset("food101-mini"), tmp_path / "out"
    region = libturbojpeg3()  # in CI: the training crops decode only their box (the path of libjpeg-turbo 3 users)
    result = run_cli("configs/food101-mobilenet.yaml", "--model_name_or_path", str(shared_checkpoint(MOBILENET_V1)),
                     "--train_dir", str(food / "train"), "--validation_dir", str(food / "test"),
                     "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
                     "--num_train_epochs", "8", "--output_dir", str(out), *CPU_SIZE, timeout=900,
                     env={LIBRARY_ENV: region or "off"})
    assert_ok(result)
    assert ("Training crops decode only their box" if region else "Training crops decode each JPEG whole") in (
        result.stderr)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] >= 0.85, metrics
    pipe = pipeline("image-classification", model=str(out))
    photos = sorted((food / "test").rglob("*.jpg"))
    correct = sum(pipe(str(photo), top_k=1)[0]["label"] == photo.parent.name for photo in photos)
    assert metrics["eval_samples"] == len(photos)
    assert metrics["eval_accuracy"] == pytest.approx(correct / len(photos))
    card = (out / "README.md").read_text()
    assert "base_model:" not in card and str(REPO.parent) not in card and "github.com" not in card
    assert "a local checkpoint (`mobilenet_v1_0.25_224-keras-imagenet`)" in card


@pytest.mark.real_data
@pytest.mark.slow
def test_deeplabv3_pretrained_backbone_beats_random_init_on_camseq(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    figures = tmp_path / "segmentation.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.pretrained_vs_scratch", "segmentation", "--quick",
                             "--json", str(figures)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert_ok(result)
    report = json.loads(figures.read_text())
    pretrained, scratch = (report[k]["metrics"]["eval_mean_iou"] for k in ("pretrained", "random init"))
    assert pretrained > scratch + 0.05, report


@pytest.mark.real_data
@pytest.mark.slow
def test_deeplabv3_through_the_cli_and_the_pipeline(fine_tuned) -> None:
    """The real DeepLabV3 fine-tuned on CamSeq through the CLI (the session's `fine_tuned` run) serves pipeline()."""
    from transformers import pipeline

    segmenter = pipeline("image-segmentation", model=str(fine_tuned("segmentation")))
    frame = sorted(p for p in shared_dataset("camseq").glob("*.png") if not p.stem.endswith("_L"))[0]
    segments = segmenter(str(frame))
    assert segments and segments[0]["mask"].size == (960, 720)


@pytest.mark.real_data
@pytest.mark.slow
def test_conditional_detr_with_a_pretrained_timm_backbone_trains_and_the_pipeline_returns_boxes(fine_tuned) -> None:
    """The real Conditional DETR (timm backbone) fine-tuned on car plates through the CLI serves pipeline()."""
    from transformers import pipeline

    detector = pipeline("object-detection", model=str(fine_tuned("detection")))
    image = sorted((shared_dataset("car-plates") / "images").glob("*.png"))[0]
    found = detector(str(image), threshold=0.0)
    assert found and {"score", "label", "box"} <= set(found[0])


@pytest.mark.real_data
@pytest.mark.slow
def test_find_lr_writes_the_curve_and_suggests_a_rate(tmp_path: Path) -> None:
    """docs/fine-tuning.md's --find_lr command on the real checkpoint (30 sweep steps of 16 photos, not 100 of 32)."""
    import json

    out = tmp_path / "lr-find"
    result = run_cli("configs/food101-mobilenet.yaml", "--model_name_or_path", str(shared_checkpoint(MOBILENET_V1)),
                     "--train_dir", str(shared_dataset("food101-mini") / "train"), "--find_lr", "--max_steps", "30",
                     "--per_device_train_batch_size", "16", "--output_dir", str(out), *CPU_SIZE)
    assert_ok(result)
    curve = json.loads((out / "lr_find.json").read_text())
    assert len(curve["learning_rates"]) >= 10 and curve["suggested"] is not None
    assert curve["learning_rates"] == sorted(curve["learning_rates"])
    assert (out / "lr_find.png").is_file() and "suggested learning_rate" in result.stdout
    assert not (out / "model.safetensors").exists()  # a range test trains nothing it keeps


@pytest.mark.real_data
def test_a_checkpoint_folder_without_a_processor_names_the_fix(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "no-processor"
    shutil.copytree(shared_checkpoint(MOBILENET_V1), folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(RecipeError, match=r"no preprocessor_config\.json.*image_processor_name"):
        from recipes.model.build import build_image_processor

        build_image_processor(ModelArguments(model_name_or_path=str(folder)))


def test_a_processor_without_a_fixed_size_cannot_feed_classification() -> None:
    from transformers import ConditionalDetrImageProcessor

    from recipes.tasks import get_task

    with pytest.raises(RecipeError, match="outputs a size that depends on the input"):
        get_task("image-classification").check_image_processor(ConditionalDetrImageProcessor())
    with pytest.raises(RecipeError, match="post_process_object_detection"):
        from transformers import ViTImageProcessor

        get_task("object-detection").check_image_processor(ViTImageProcessor())


@pytest.mark.real_data
def test_a_timm_backbone_without_timm_says_pip_install_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.utils.import_utils as import_utils
    from transformers import AutoModelForObjectDetection

    _, message = import_utils.BACKENDS_MAPPING["timm"]
    monkeypatch.setitem(import_utils.BACKENDS_MAPPING, "timm", (lambda: False, message))  # as if not installed
    checkpoint = shared_checkpoint("conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone")
    with pytest.raises(RecipeError, match=r"(?s)Cannot build .*pip install timm"):
        build_model(AutoModelForObjectDetection, ModelArguments(model_name_or_path=str(checkpoint)), {0: "licence"})


def test_layer_decay_and_backbone_rates_per_parameter() -> None:
    from recipes.model.schedule import LearningRates

    names = ["m.stem.w", "m.layer.0.w", "m.layer.1.w", "backbone.x.w", "classifier.w"]
    rates = LearningRates(base=1.0, layer_decay=0.5, head={"classifier.w"}).per_parameter(names)
    assert rates == {"m.stem.w": 0.125, "m.layer.0.w": 0.25, "m.layer.1.w": 0.5, "backbone.x.w": 1.0,
                     "classifier.w": 1.0}
    assert LearningRates(base=1.0, backbone=0.1).per_parameter(names)["backbone.x.w"] == 0.1


def test_head_warmup_zeroes_the_body_rate_then_restores_it() -> None:
    from types import SimpleNamespace

    from recipes.model.schedule import HeadWarmup

    body, head = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [body], "lr": 0.1, "is_head": False},
                                   {"params": [head], "lr": 0.1, "is_head": True}], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = HeadWarmup(epochs=1)
    warmup.on_train_begin(None, SimpleNamespace(epoch=0.0), None, optimizer=optimizer, lr_scheduler=scheduler)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.1]
    warmup.on_step_begin(None, SimpleNamespace(epoch=1.0), None, optimizer=optimizer, lr_scheduler=scheduler)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.1]
