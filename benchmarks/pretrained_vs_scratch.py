"""Fine-tune a real pretrained checkpoint and the same architecture from random initialisation, same recipe and
steps, and print both validation scores side by side: what pretraining buys, measured in one run.

    python -m benchmarks.pretrained_vs_scratch classification   # MobileNetV1-0.25 (ImageNet) on food101-mini
    python -m benchmarks.pretrained_vs_scratch segmentation     # DeepLabV3-MobileNetV2-0.35 on CamSeq
    python -m benchmarks.pretrained_vs_scratch detection        # Conditional DETR, MobileNetV2 backbone, car plates
    python -m benchmarks.pretrained_vs_scratch detection --quick --json results.json

Both runs go through the real lifecycle (:func:`recipes.lifecycle.run`) with the task's real recipe and CPU-size
overrides. "Scratch" builds the checkpoint's own config (``model_type`` + its config as ``config_overrides``,
pretrained timm backbones off) and uses the checkpoint's image processor, so only the weights differ.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFIG_KEYS_NOT_OVERRIDDEN = ("architectures", "id2label", "label2id", "num_labels", "model_type",
                              "transformers_version", "dtype", "torch_dtype", "_name_or_path")


@dataclass
class Setup:
    recipe: str
    checkpoint: str
    metric: str
    data: list[str]
    overrides: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)


SMALL_DEEPLAB = '{"size": {"shortest_edge": 256}, "crop_size": {"height": 256, "width": 256}}'
SMALL_DETR = '{"size": {"shortest_edge": 320, "longest_edge": 512}}'
SETUPS = {
    "classification": Setup(
        "configs/food101-mobilenet.yaml", "mobilenet_v1_0.25_224-keras-imagenet", "eval_accuracy",
        data=["--train_dir", "datasets/food101-mini/train", "--validation_dir", "datasets/food101-mini/test"],
        overrides=["--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
                   "--num_train_epochs", "8"],
        quick=["--num_train_epochs", "3"],
    ),
    "segmentation": Setup(
        "configs/camseq-segformer.yaml", "deeplabv3_mobilenet_v2_0.35-keras-imagenet-backbone", "eval_mean_iou",
        data=["--train_dir", "datasets/camseq"],
        quick=["--num_train_epochs", "2", "--max_train_samples", "48", "--max_eval_samples", "12"],
        overrides=["--image_processor_overrides", SMALL_DEEPLAB, "--learning_rate", "1e-3",
                   "--num_train_epochs", "8", "--per_device_train_batch_size", "8"],
    ),
    "detection": Setup(
        "configs/plates-detr.yaml", "conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone", "eval_map_50",
        data=["--train_dir", "datasets/car-plates"],
        overrides=["--image_processor_overrides", SMALL_DETR, "--num_train_epochs", "8",
                   "--per_device_train_batch_size", "8", "--learning_rate", "2e-4", "--backbone_learning_rate", "2e-5",
                   "--early_stopping_patience", "100"],
        quick=["--num_train_epochs", "2", "--max_train_samples", "32", "--max_eval_samples", "16"],
    ),
}
CPU_SIZE = ["--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "1", "--save_strategy", "no",
            "--load_best_model_at_end", "false", "--make_plots", "false", "--auto_resume", "false",
            "--preprocessing_num_workers", "1", "--logging_steps", "5"]


def scratch_overrides(checkpoint: Path) -> list[str]:
    """Arguments that build ``checkpoint``'s architecture from its config, randomly initialised."""
    config = json.loads((checkpoint / "config.json").read_text())
    overrides = {k: v for k, v in config.items() if k not in CONFIG_KEYS_NOT_OVERRIDDEN}
    if "use_pretrained_backbone" in overrides:
        overrides["use_pretrained_backbone"] = False
    return ["--model_type", config["model_type"], "--config_overrides", json.dumps(overrides),
            "--image_processor_name", str(checkpoint), "--model_name_or_path", ""]


def train(arguments: list[str]) -> tuple[dict[str, float], float]:
    from recipes.lifecycle import run
    from recipes.parse import parse_recipe

    started = time.perf_counter()
    context = run(parse_recipe(arguments))
    return context.metrics["eval"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=sorted(SETUPS))
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder holding datasets/ and pretrained/")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    setup = SETUPS[options.task]
    checkpoint = options.shared / "pretrained" / setup.checkpoint
    data = [str(options.shared / value) if value.startswith("datasets/") else value for value in setup.data]
    common = [setup.recipe, *data, *CPU_SIZE, *setup.overrides, *(setup.quick if options.quick else [])]
    results = {}
    with tempfile.TemporaryDirectory() as scratch_dir:
        for name, model in (("pretrained", ["--model_name_or_path", str(checkpoint)]),
                            ("random init", scratch_overrides(checkpoint))):
            metrics, seconds = train([*common, *model, "--output_dir", str(Path(scratch_dir) / name)])
            results[name] = {"metrics": metrics, "seconds": round(seconds, 1)}
    pretrained, scratch = (results[k]["metrics"][setup.metric] for k in ("pretrained", "random init"))
    print(f"\n{options.task}: {setup.checkpoint}, same recipe and steps ({' '.join(setup.overrides)})")
    print(f"  {'run':<12} {setup.metric:>16} {'eval_loss':>10} {'time':>8}")
    for name, result in results.items():
        metrics = result["metrics"]
        print(f"  {name:<12} {metrics[setup.metric]:>16.4f} {metrics.get('eval_loss', float('nan')):>10.4f} "
              f"{result['seconds']:>7.0f}s")
    print(f"  pretrained - random init: {pretrained - scratch:+.4f}")
    if options.json:
        options.json.write_text(json.dumps({"task": options.task, "metric": setup.metric, **results}, indent=2))


if __name__ == "__main__":
    main()
