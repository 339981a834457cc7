"""Publishing an existing output folder with scripts/push_to_hub.py, against the local fake Hub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from recipes.artifacts.hub import PublishError, push_output_dir, retry_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=16, num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(out)
    (out / "README.md").write_text("---\nlicense: apache-2.0\npipeline_tag: image-classification\n---\n# x\n")
    (out / "checkpoint-5").mkdir()
    (out / "checkpoint-5" / "optimizer.pt").write_bytes(b"0" * 100)
    return out


def _push_script(output_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "push_to_hub.py"), str(output_dir), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_push_script_uploads_the_folder_without_checkpoints(output_dir: Path, tmp_path: Path, fake_hub) -> None:
    result = _push_script(output_dir, fake_hub.client_env(tmp_path / "home"), "--repo-id", "user/pushed")
    assert result.returncode == 0, result.stderr
    files = fake_hub.files("user/pushed")
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= set(files)
    assert not any("checkpoint" in name for name in files)
    assert json.loads(files["config.json"])["id2label"] == {"0": "a", "1": "b"}


def test_missing_token_is_a_clear_error(output_dir: Path, tmp_path: Path, fake_hub) -> None:
    env = fake_hub.client_env(tmp_path / "home", token=False)
    result = _push_script(output_dir, env, "--repo-id", "user/pushed")
    assert result.returncode == 1
    assert "No Hugging Face token" in result.stderr
    assert "python scripts/push_to_hub.py" in result.stderr


def test_unreachable_hub_keeps_outputs_and_gives_the_retry_command(output_dir: Path) -> None:
    with pytest.raises(PublishError) as info:
        push_output_dir(output_dir, "user/x", token="hf_secret_value", endpoint="http://127.0.0.1:9")
    message = str(info.value)
    assert "hf_secret_value" not in message
    assert retry_command(output_dir, "user/x") in message
    assert (output_dir / "model.safetensors").is_file()


def test_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"config\.json missing"):
        push_output_dir(tmp_path, "user/x", token="t")


def test_command_line_tokens_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from recipes.lifecycle import redact_command

    monkeypatch.setenv("HF_TOKEN", "plain-secret")
    command = ["train.py", "--hub_token", "abc123", "--hub-token=xyz789", "--token", "t0k", "hf_inline", "--x",
               "value-with-plain-secret"]
    redacted = " ".join(redact_command(command))
    for secret in ("abc123", "xyz789", "t0k", "hf_inline", "plain-secret"):
        assert secret not in redacted
    assert "--x" in redacted and "--hub-token=<redacted>" in redacted


def test_a_push_publishes_no_data_photo_or_local_path_unless_photos_are_asked_for(
    output_dir: Path, tmp_path: Path, fake_hub
) -> None:
    local = str(tmp_path)
    (output_dir / "README.md").write_text(
        "---\nlicense: apache-2.0\ntags:\n- vision-recipes\n---\n# x\n\n## Plots\n\n"
        "![training_curves](training_curves.png)\n\n![top_losses](top_losses.png)\n\n![badge](https://example.com/badge.png)\n")
    for name in ("training_curves.png", "confusion_matrix.png", "top_losses.png", "examples/example_1.jpg",
                 "eval-photos/top_losses.png", "eval-photos/evaluation.md", "incomplete-checkpoint-6/model.safetensors",
                 ".run_manifest.json.partial-12", "eval_results.json"):
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / name).write_bytes(b"photo" if name.endswith((".png", ".jpg")) else b"{}")
    for name in ("run_manifest.json", "run_fingerprint.json", "trainer_state.json", "run_status.json"):
        (output_dir / name).write_text(json.dumps({"output_dir": local, "train_dir": f"{local}/data"}))
    env = fake_hub.client_env(tmp_path / "home")
    result = _push_script(output_dir, env, "--repo-id", "user/private-data")
    assert result.returncode == 0, result.stderr
    files = fake_hub.files("user/private-data")
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "confusion_matrix.png", "eval_results.json",
                             "model.safetensors", "preprocessor_config.json", "training_curves.png"]
    assert not [name for name, content in files.items() if local.encode() in content]
    card = files["README.md"].decode()
    assert "![training_curves](training_curves.png)" in card and "top_losses" not in card
    assert "https://example.com/badge.png" in card
    assert "![top_losses](top_losses.png)" in (output_dir / "README.md").read_text(), "the local card keeps it"
    # Asked for explicitly: the photos too (still no local record).
    result = _push_script(output_dir, env, "--repo-id", "user/with-photos", "--include-photos")
    assert result.returncode == 0, result.stderr
    files = fake_hub.files("user/with-photos")
    assert {"examples/example_1.jpg", "eval-photos/top_losses.png", "top_losses.png"} <= set(files)
    assert "![top_losses](top_losses.png)" in files["README.md"].decode()
    assert not {"run_manifest.json", "trainer_state.json", "run_fingerprint.json"} & set(files)


def test_the_card_shows_hyper_parameters_as_a_recipe_writes_them_and_only_metrics_as_results(tmp_path: Path) -> None:
    """Enums by their value (``cosine``, not ``SchedulerType.COSINE``); the epoch of an evaluation is not a metric."""
    from types import SimpleNamespace

    from recipes.artifacts.card import build_model_card
    from recipes.parse import parse_recipe
    from recipes.tasks import RunContext, get_task

    recipe = parse_recipe([str(REPO / "configs" / "quickstart" / "classification.yaml"), "--output_dir",
                           str(tmp_path / "out"), "--optim", "adamw_torch_fused", "--use_cpu", "true"])
    data = SimpleNamespace(summary={"train_examples": 8, "validation_examples": 4}, id2label={0: "a", 1: "b"})
    context = RunContext(recipe=recipe, task=get_task("image-classification"), data=data, metrics={
        "eval": {"eval_accuracy": 0.75, "eval_loss": 0.5, "eval_epoch": 3.0, "eval_runtime": 1.2,
                 "eval_samples_per_second": 3.3}})
    card = str(build_model_card(context))
    assert "| lr_scheduler_type | cosine |" in card and "| optim | adamw_torch_fused |" in card
    assert "SchedulerType" not in card and "OptimizerNames" not in card
    results = card.split("## Results")[1].split("\n## ")[0]
    assert "| validation | accuracy | 0.7500 |" in results and "| validation | loss | 0.5000 |" in results
    assert "epoch" not in results and "runtime" not in results
