"""Training-step time of the shared convolutional checkpoints in the default (contiguous) memory format and in
``channels_last``, measured in one process, interleaved, and printed as a ratio (why ``channels_last`` is on by
default for models with 2-D convolutions).

    python -m benchmarks.channels_last [--steps 3] [--batch 4] [--size 256] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageClassification, AutoModelForSemanticSegmentation

from recipes.model.batchnorm import fix_tensorflow_momentum

SHARED = Path(__file__).resolve().parents[2] / "shared" / "pretrained"
MODELS = {
    "DeepLabV3-MobileNetV2-0.35 (output stride 8)": (
        AutoModelForSemanticSegmentation, "deeplabv3_mobilenet_v2_0.35-keras-imagenet-backbone"),
    "MobileNetV1-0.25": (AutoModelForImageClassification, "mobilenet_v1_0.25_224-keras-imagenet"),
}


def step_seconds(model: torch.nn.Module, batch: int, size: int, channels_last: bool) -> float:
    """One forward + backward pass on a random batch (labels: all class 0)."""
    pixels = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)
    shape = (batch, size, size) if model.config.model_type == "mobilenet_v2" else (batch,)
    labels = torch.zeros(shape, dtype=torch.long)
    model.train()
    started = time.perf_counter()
    loss = model(pixel_values=pixels, labels=labels).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    results = {}
    print(f"threads {torch.get_num_threads()}, batch {options.batch}, {options.size}x{options.size}, "
          f"median of {options.steps} steps (after 1 warm-up)")
    print(f"  {'model':<46} {'contiguous':>11} {'channels_last':>14} {'speed-up':>9}")
    for name, (auto_class, folder) in MODELS.items():
        model = auto_class.from_pretrained(options.shared / folder, num_labels=4, ignore_mismatched_sizes=True)
        fix_tensorflow_momentum(model)
        times: dict[bool, list[float]] = {False: [], True: []}
        for layout in (False, True):
            step_seconds(model, options.batch, options.size, layout)  # warm-up
        for _ in range(options.steps):
            for layout in (False, True):
                times[layout].append(step_seconds(model, options.batch, options.size, layout))
        default, fast = (statistics.median(times[k]) for k in (False, True))
        results[name] = {"contiguous_s": default, "channels_last_s": fast, "speedup": default / fast}
        print(f"  {name:<46} {default:>10.2f}s {fast:>13.2f}s {default / fast:>8.1f}x")
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
