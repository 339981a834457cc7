"""Is GPU training data-bound? ViT-B/16 bf16 training images/s fed by the real input pipeline (DataLoader workers
decoding Food-101 JPEGs with the recipe's augmentation; and with ``gpu_decode``) against synthetic batches already
in GPU memory, plus the model FLOP utilisation (MFU). Without a CUDA GPU it says so and exits 0.

    python -m benchmarks.gpu_training [--batch 256] [--steps 200] [--workers 16] [--compile] [--json gpu.json]
    python -m benchmarks.gpu_training --device cpu --quick     # the code path on a tiny ViT (figures meaningless)

Feeds: synthetic batches already on the GPU (the model's ceiling; with ``--compile`` also under ``torch.compile``),
the DataLoader alone (no model: what the CPUs deliver), and training fed by the real pipeline, with and without
``gpu_decode``. Timed steps follow warm-up steps, and there are enough of them (default 200 x 256 images) that the
workers' prefetched batches (at most 2 per worker) weigh little against their steady rate. A feed that fails is
reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from datasets import concatenate_datasets
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

REPO = Path(__file__).resolve().parents[1]
FOOD = REPO.parent / "shared" / "datasets" / "food101-mini" / "train"
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
"""Dense bf16 tensor-core peaks (vendor datasheets, without sparsity), matched against the device name."""
QUICK_VIT = {"image_size": 64, "patch_size": 16, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 128}


def build_model(quick: bool, num_labels: int, device: torch.device) -> ViTForImageClassification:
    config = ViTConfig(**(QUICK_VIT if quick else {}), num_labels=num_labels)  # defaults: ViT-B/16 at 224
    return ViTForImageClassification(config).to(device).train()


def input_pipeline(data_dir: Path, processor: Any, batch: int, workers: int, steps: int, gpu_decode: bool) -> tuple[
        DataLoader, Callable | None]:
    """The recipe's training loader (same task code as a run): Food-101 JPEGs, ``basic`` augmentation."""
    from recipes.parse import parse_recipe

    recipe = parse_recipe([str(REPO / "configs/food101-vit.yaml"), "--train_dir", str(data_dir),
                           "--train_val_split", "0.05", "--gpu_decode", str(gpu_decode).lower(),
                           "--output_dir", "/tmp/unused", *([] if torch.cuda.is_available() else ["--bf16", "false"])])
    from recipes.tasks import get_task

    task = get_task("image-classification")
    data = task.load_data(recipe.data, seed=0)
    train_transform, _ = task.transforms(processor, recipe.data, data)
    repeats = max(1, -(-(steps + 5) * batch // len(data.train)))  # one epoch covers every step: no restarts
    dataset = concatenate_datasets([data.train] * repeats).with_transform(train_transform)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        collate_fn=task.collator(processor, data, recipe.data), pin_memory=torch.cuda.is_available(),
                        persistent_workers=workers > 0, prefetch_factor=2 if workers > 0 else None)
    return loader, task.device_transform(processor, recipe.data)


def step_batches(loader: DataLoader, device_transform: Callable | None, device: torch.device) -> Iterator[dict]:
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        yield device_transform(batch, device) if device_transform is not None else batch


def timed_images_per_second(batches: Iterator[dict], steps: int, warmup: int, device: torch.device,
                            step: Callable[[dict], object] = lambda batch: None) -> float:
    """Images/s over ``steps`` batches after ``warmup`` untimed ones, each handed to ``step`` (by default nothing:
    the input pipeline alone, batches moved to ``device`` and finished there)."""
    seen, started = 0, 0.0
    for index in range(warmup + steps):
        if index == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, seen = time.perf_counter(), 0
        batch = next(batches)
        step(batch)
        seen += len(batch["labels"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def images_per_second(model: torch.nn.Module, batches: Iterator[dict], steps: int, warmup: int,
                      device: torch.device) -> float:
    """Training images/s: forward, backward and AdamW step on each batch (bf16 autocast on CUDA)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def train_step(batch: dict) -> None:
        with autocast:
            loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed_images_per_second(batches, steps, warmup, device, train_step)


def training_flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one image, counted by torch's FLOP counter (matmuls and convolutions)."""
    pixels = torch.randn(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=pixels, labels=torch.zeros(2, dtype=torch.long, device=device)).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", type=Path, default=FOOD, help="Image folder of class folders (JPEGs)")
    parser.add_argument("--peak_tflops", type=float, help="Peak bf16 TFLOP/s of the GPU when its name is unknown")
    parser.add_argument("--compile", action="store_true", help="Also time synthetic batches under torch.compile")
    parser.add_argument("--quick", action="store_true", help="Tiny ViT, few steps (to test the code path)")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA GPU here: the GPU training benchmark measures nothing (run it on a GPU machine).")
        return 0
    if options.quick:
        options.batch, options.steps, options.warmup, options.workers = 8, 3, 1, min(options.workers, 1)
    size = QUICK_VIT["image_size"] if options.quick else 224
    processor = ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    model = build_model(options.quick, num_labels=3, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    flops = training_flops_per_image(model, size, device)
    synthetic = {"pixel_values": torch.randn(options.batch, 3, size, size, device=device),
                 "labels": torch.randint(0, 3, (options.batch,), device=device)}

    def forever(batch: dict) -> Iterator[dict]:
        while True:
            yield batch

    results: dict[str, float] = {}
    failed: list[str] = []

    def measure(name: str, rate: Callable[[], float]) -> None:
        try:
            results[name] = rate()
        except Exception:  # report the failure and measure the other feeds
            failed.append(name)
            print(f"{name}: FAILED\n{traceback.format_exc()}", flush=True)

    measure("synthetic", lambda: images_per_second(model, forever(synthetic), options.steps, options.warmup, device))
    if options.compile:
        measure("synthetic + torch.compile", lambda: images_per_second(
            torch.compile(model), forever(synthetic), options.steps, options.warmup, device))
    feeds = [("input pipeline alone (no model)", False, False), ("input pipeline", False, True),
             ("input pipeline + gpu_decode", True, True)]
    for name, gpu_decode, with_model in feeds:
        if gpu_decode and device.type != "cuda" and not options.quick:
            continue

        def pipeline_rate(gpu_decode: bool = gpu_decode, with_model: bool = with_model) -> float:
            loader, device_transform = input_pipeline(options.data, processor, options.batch, options.workers,
                                                      options.steps + options.warmup, gpu_decode)
            batches = step_batches(loader, device_transform, device)
            return (images_per_second(model, batches, options.steps, options.warmup, device) if with_model
                    else timed_images_per_second(batches, options.steps, options.warmup, device))

        measure(name, pipeline_rate)
    if "synthetic" not in results:
        return 1
    peak = peak_flops(device, options.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    from recipes.decode.turbojpeg import region_decoding_status

    print(f"{'ViT-B/16' if not options.quick else 'tiny ViT'} training, {name}, batch {options.batch}, "
          f"{options.workers} DataLoader workers, {options.steps} timed steps; {flops / 1e9:.1f} GFLOP per image; "
          f"torch {torch.__version__}")
    print(f"  JPEG decoding: {region_decoding_status()}")
    print(f"  {'feed':<34} {'images/s':>10} {'vs synthetic':>13} {'MFU':>7}")
    for feed, rate in results.items():
        mfu = f"{flops * rate / peak:.1%}" if peak and "no model" not in feed else "-"
        print(f"  {feed:<34} {rate:>10.1f} {rate / results['synthetic']:>12.2f}x {mfu:>7}")
    if "input pipeline" not in results:
        return 1
    bound = results["input pipeline"] < 0.9 * results["synthetic"]
    print("The default input pipeline is " + ("DATA-BOUND (the GPU waits for images)." if bound else
                                              "fast enough (within 10% of synthetic batches)."))
    if options.json:
        options.json.write_text(json.dumps({"device": name, "batch": options.batch, "flops_per_image": flops,
                                            "peak_flops": peak, "images_per_second": results,
                                            "data_bound": bound, "failed": failed}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
