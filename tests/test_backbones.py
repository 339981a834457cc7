"""A detector built on a pretrained backbone (``backbone_name_or_path``): every backbone tensor loaded, features
equal to the source's, clear errors for what does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import shared_checkpoint
from transformers import AutoModelForObjectDetection, ResNetConfig, ResNetForImageClassification, pipeline

from recipes.config import ModelArguments, RecipeError
from recipes.model.backbones import find_backbone_module, load_backbone_source
from recipes.model.build import build_image_processor, build_model

SHARED_DETR = "conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone"
SMALL_RT_DETR = {"encoder_hidden_dim": 32, "encoder_ffn_dim": 64, "d_model": 32, "decoder_ffn_dim": 64,
                 "decoder_layers": 2, "num_queries": 10, "num_denoising": 10, "decoder_attention_heads": 4,
                 "encoder_attention_heads": 4}
SMALL_DETR = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
              "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_queries": 8}
LABELS = {0: "licence"}


def _model_args(backbone: Path | str, model_type: str, overrides: dict | None = None, **kwargs) -> ModelArguments:
    return ModelArguments(model_type=model_type, backbone_name_or_path=str(backbone),
                          config_overrides=dict(overrides if overrides is not None else SMALL_RT_DETR), **kwargs)


def _source_tensors(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k[len(prefix):]: v for k, v in load_file(folder / "model.safetensors").items() if k.startswith(prefix)}


def _features(backbone: torch.nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    backbone.eval()
    with torch.no_grad():
        out = backbone(image)
    return list(getattr(out, "feature_maps", out))  # (Conditional) DETR keeps timm's own module: a plain list


@pytest.mark.real_data
@pytest.mark.parametrize("model_type", ["rt_detr", "rt_detr_v2", "d_fine"])
def test_multi_scale_detectors_get_every_tensor_of_the_shared_mobilenet(model_type: str) -> None:
    folder = shared_checkpoint(SHARED_DETR)
    loaded = build_model(AutoModelForObjectDetection, _model_args(folder, model_type), LABELS)
    backbone = find_backbone_module(loaded.model)
    source = _source_tensors(folder, "model.backbone.conv_encoder.model.")
    state = {k.removeprefix("_backbone."): v for k, v in backbone.state_dict().items()}
    assert len(state) == len(source) == 255
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0, msg=name)
    assert loaded.model.config.encoder_in_channels == [16, 32, 112]
    assert loaded.model.config.feat_strides == [8, 16, 32]
    assert not any(name.startswith("model.backbone.") for name in loaded.new_parameters)
    assert any(name.startswith("model.decoder") for name in loaded.new_parameters)


@pytest.mark.real_data
def test_an_extra_feature_level_gives_the_rt_detr_v2_decoder_the_same_level_count() -> None:
    """A stride-64 level made from the last backbone level (``num_feature_levels`` 4): its anchors are twice the
    largest of three levels, which close-up plates need; the decoder samples every level, so it follows."""
    folder = shared_checkpoint(SHARED_DETR)
    loaded = build_model(AutoModelForObjectDetection,
                         _model_args(folder, "rt_detr_v2", {**SMALL_RT_DETR, "num_feature_levels": 4}), LABELS)
    assert loaded.model.config.decoder_n_levels == 4
    with torch.no_grad():
        out = loaded.model.eval()(pixel_values=torch.zeros(1, 3, 128, 128))
    assert out.logits.shape == (1, SMALL_RT_DETR["num_queries"], 1)
    with pytest.raises(RecipeError, match="num_feature_levels 4 but decoder_n_levels 3"):
        build_model(AutoModelForObjectDetection, _model_args(
            folder, "rt_detr_v2", {**SMALL_RT_DETR, "num_feature_levels": 4, "decoder_n_levels": 3}), LABELS)


@pytest.mark.real_data
def test_the_backbone_computes_what_the_source_detector_computes_with_relu6_kept() -> None:
    folder = shared_checkpoint(SHARED_DETR)
    source_model = AutoModelForObjectDetection.from_pretrained(folder)
    ours = build_model(AutoModelForObjectDetection, _model_args(folder, "rt_detr_v2"), LABELS).model
    image = torch.rand(1, 3, 128, 160) * 2 - 1
    theirs = _features(source_model.model.backbone.model, image)[1:]  # the source reads strides 4..32
    mine = _features(find_backbone_module(ours), image)
    assert [m.shape for m in mine] == [t.shape for t in theirs]
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b)
    relu6 = [m for m in find_backbone_module(ours).modules() if type(m).__name__ == "ReLU6"]
    assert len(relu6) > 10, "timm's BatchNormAct2d activations must survive the detector's frozen-BN swap"


@pytest.mark.real_data
def test_single_scale_detr_reads_the_last_level_and_the_processor_gets_the_backbone_normalisation() -> None:
    folder = shared_checkpoint(SHARED_DETR)
    args = _model_args(folder, "conditional_detr", SMALL_DETR)
    loaded = build_model(AutoModelForObjectDetection, args, LABELS)
    assert loaded.model.config.backbone_config.out_indices == [4]
    source = _source_tensors(folder, "model.backbone.conv_encoder.model.")
    for name, tensor in loaded.model.model.backbone.model.state_dict().items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0, msg=name)
    processor = build_image_processor(args)
    assert processor.do_normalize and list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.5] * 3


@pytest.mark.real_data
def test_a_detector_on_the_shared_backbone_saves_and_reloads_in_the_pipeline(tmp_path: Path) -> None:
    folder = shared_checkpoint(SHARED_DETR)
    args = _model_args(folder, "rt_detr_v2", image_processor_overrides={"size": {"height": 96, "width": 96}})
    model = build_model(AutoModelForObjectDetection, args, LABELS).model
    model.save_pretrained(tmp_path / "saved")
    build_image_processor(args).save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForObjectDetection.from_pretrained(tmp_path / "saved")
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    from PIL import Image

    found = pipeline("object-detection", model=str(tmp_path / "saved"))(Image.new("RGB", (120, 90)), threshold=0.0)
    assert found and {"score", "label", "box"} <= set(found[0])


def test_a_transformers_classification_checkpoint_gives_its_autobackbone(tmp_path: Path) -> None:
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic",
                          num_labels=5)
    torch.manual_seed(0)
    classifier = ResNetForImageClassification(config)
    classifier.save_pretrained(tmp_path / "resnet")
    loaded = build_model(AutoModelForObjectDetection, _model_args(tmp_path / "resnet", "rt_detr_v2"), LABELS).model
    backbone = find_backbone_module(loaded)
    assert loaded.config.encoder_in_channels == [16, 24, 32]
    source = classifier.resnet.state_dict()
    for name, tensor in backbone.state_dict().items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0, msg=name)


def test_a_timm_checkpoint_folder_gives_its_features(tmp_path: Path) -> None:
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(0)
    classifier = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="resnet10t", num_labels=3))
    classifier.save_pretrained(tmp_path / "timm")
    source = load_backbone_source(str(tmp_path / "timm"), "d_fine")
    assert source.strides == [8, 16, 32] and source.channels == [128, 256, 512]
    timm_state = classifier.timm_model.state_dict()
    for name, tensor in source.state_dict.items():
        torch.testing.assert_close(tensor, timm_state[name.removeprefix("_backbone.")], rtol=0, atol=0, msg=name)
    assert "fc.weight" in {k.removeprefix("timm_model.") for k in source.unused}


@pytest.mark.real_data
def test_a_checkpoint_without_a_backbone_class_names_the_alternatives() -> None:
    notop = shared_checkpoint("mobilenet_v2_0.35_224-keras-imagenet-notop")
    with pytest.raises(RecipeError, match=r"no backbone class for mobilenet_v2.*timm"):
        build_model(AutoModelForObjectDetection, _model_args(notop, "rt_detr_v2"), LABELS)


@pytest.mark.real_data
def test_feature_levels_that_do_not_fit_name_the_range_and_the_fix() -> None:
    folder = shared_checkpoint(SHARED_DETR)
    with pytest.raises(RecipeError, match=r"backbone_out_indices \[3, 4, 7\].*levels 0..4"):
        build_model(AutoModelForObjectDetection, _model_args(folder, "rt_detr_v2", backbone_out_indices=[3, 4, 7]),
                    LABELS)
    with pytest.raises(RecipeError, match=r"encoder_in_channels \[8, 16, 32\].*\[16, 32, 112\]"):
        build_model(AutoModelForObjectDetection,
                    _model_args(folder, "rt_detr_v2", {**SMALL_RT_DETR, "encoder_in_channels": [8, 16, 32]}), LABELS)
    with pytest.raises(RecipeError, match="reads one feature level"):
        build_model(AutoModelForObjectDetection,
                    _model_args(folder, "conditional_detr", SMALL_DETR, backbone_out_indices=[3, 4]), LABELS)


def test_a_backbone_of_another_size_or_no_checkpoint_is_refused(tmp_path: Path) -> None:
    small = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
    ResNetForImageClassification(small).save_pretrained(tmp_path / "resnet")
    # Same architecture in the config, other tensor shapes in the weights file.
    wider = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 48], depths=[1, 1, 1, 1], layer_type="basic")
    ResNetForImageClassification(wider).save_pretrained(tmp_path / "wider")
    (tmp_path / "resnet" / "model.safetensors").write_bytes((tmp_path / "wider" / "model.safetensors").read_bytes())
    with pytest.raises(RecipeError, match="other shapes than this backbone"):
        build_model(AutoModelForObjectDetection, _model_args(tmp_path / "resnet", "rt_detr_v2"), LABELS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match=r"no config\.json"):
        build_model(AutoModelForObjectDetection, _model_args(tmp_path / "empty", "rt_detr_v2"), LABELS)
    with pytest.raises(RecipeError, match="set `model_type`"):
        ModelArguments(model_name_or_path="x", backbone_name_or_path=str(tmp_path / "resnet"))


def test_a_backbone_by_hub_id_downloads_its_config_and_weights(fake_hub, tmp_path: Path, monkeypatch) -> None:
    from hub_server import patch_hub_client
    from huggingface_hub import HfApi

    patch_hub_client(monkeypatch, fake_hub, tmp_path / "hf_home")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
    torch.manual_seed(0)
    classifier = ResNetForImageClassification(config)
    classifier.save_pretrained(tmp_path / "resnet")
    HfApi().create_repo("user/tiny-resnet")
    HfApi().upload_folder(repo_id="user/tiny-resnet", folder_path=str(tmp_path / "resnet"))
    loaded = build_model(AutoModelForObjectDetection, _model_args("user/tiny-resnet", "d_fine"), LABELS).model
    source = classifier.resnet.state_dict()
    for name, tensor in find_backbone_module(loaded).state_dict().items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0, msg=name)
    with pytest.raises(RecipeError, match="Could not get the backbone checkpoint `user/missing`"):
        load_backbone_source("user/missing", "d_fine")
