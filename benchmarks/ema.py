"""Fine-tune the same pretrained classifier with and without an EMA of the weights (``ema: true``), same recipe,
steps and seeds, and print the accuracy of each run and the means: what the EMA buys.

    python -m benchmarks.ema                      # MobileNetV1-0.25 (ImageNet) on food101-mini, seeds 0 1 2
    python -m benchmarks.ema --seeds 0 --quick    # one seed, 3 epochs (smoke test)
    python -m benchmarks.ema --json ema.json      # also write the figures (after each run: a cut run keeps them)

The recipe is ``benchmarks.pretrained_vs_scratch``'s classification one (``configs/food101-mobilenet.yaml``,
food101-mini train → test, 8 epochs, batch 32, CPU-size settings); the two arms differ only in ``--ema``. Each
run goes through the real lifecycle (:func:`recipes.lifecycle.run`); the figure is the final model's accuracy on
the test photos (no best-checkpoint choice: ``load_best_model_at_end false``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.pretrained_vs_scratch import CPU_SIZE, SETUPS, SHARED, train

ARMS = {"no EMA": ["--ema", "false"], "EMA": ["--ema", "true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="3 epochs instead of 8 (smoke test)")
    parser.add_argument("--epochs", type=int, help="epochs of both arms (default: the recipe's 8)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder holding datasets/ and pretrained/")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    setup = SETUPS["classification"]
    checkpoint = options.shared / "pretrained" / setup.checkpoint
    data = [str(options.shared / value) if value.startswith("datasets/") else value for value in setup.data]
    epochs = ["--num_train_epochs", str(options.epochs)] if options.epochs else []
    common = [
        setup.recipe,
        *data,
        *CPU_SIZE,
        *setup.overrides,
        *(setup.quick if options.quick else []),
        *epochs,
        "--model_name_or_path",
        str(checkpoint),
    ]
    results: dict[str, dict[str, dict[str, float]]] = {arm: {} for arm in ARMS}
    with tempfile.TemporaryDirectory() as scratch_dir:
        for seed in options.seeds:
            for arm, flags in ARMS.items():
                output_dir = Path(scratch_dir) / f"{arm.replace(' ', '-')}-{seed}"
                metrics, seconds = train([*common, *flags, "--seed", str(seed), "--output_dir", str(output_dir)])
                results[arm][str(seed)] = {
                    "accuracy": metrics[setup.metric],
                    "loss": metrics["eval_loss"],
                    "seconds": round(seconds, 1),
                }
                print(f"seed {seed} {arm}: accuracy {metrics[setup.metric]:.4f} ({seconds:.0f}s)", flush=True)
                if options.json:
                    options.json.write_text(json.dumps({"command": common, "results": results}, indent=2))
    print(f"\nEMA of the weights, {setup.checkpoint} on food101-mini (test photos), same recipe, steps and seeds")
    print(f"  {'seed':<6} " + " ".join(f"{arm:>10}" for arm in ARMS))
    for seed in options.seeds:
        print(f"  {seed:<6} " + " ".join(f"{results[arm][str(seed)]['accuracy']:>10.4f}" for arm in ARMS))
    means = {arm: statistics.mean(run["accuracy"] for run in results[arm].values()) for arm in ARMS}
    print(f"  {'mean':<6} " + " ".join(f"{means[arm]:>10.4f}" for arm in ARMS))
    print(f"  EMA - no EMA: {means['EMA'] - means['no EMA']:+.4f}")


if __name__ == "__main__":
    main()
