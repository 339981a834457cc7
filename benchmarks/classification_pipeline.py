"""Benchmark the image-classification data pipeline against the Hugging Face docs baseline.

Runs on the real Food-101 JPEGs of ``food101-mini`` (every image of every split) and measures, in
the same process and interleaved round by round so that the noise of a shared machine hits every
variant alike:

1. train-transform throughput (images/s through a ``DataLoader``, collate included) with one
   worker (and in the main process on one thread), for
   - ``naive``: the HF-docs pipeline: ``datasets`` PIL decode -> ``.convert("RGB")`` ->
     ``Compose([RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize])`` per image,
     default collate;
   - ``ours-before``: the previous default: undecoded records -> ``decode_to_tensor`` (full
     libjpeg-turbo decode) -> torchvision v2 ``basic`` preset on ``uint8`` tensors ->
     ``collate_images_and_labels`` (processor pixel steps once per batch);
   - ``ours``: the default (``transform_classification_batch`` via ``with_transform``): the crop
     box is drawn from the JPEG header, the JPEG decoded at the smallest DCT scale that keeps the
     box's resolution (``recipes.decode.crop``), crop+resize and flip through the functional
     kernels -> the same collate;
   - ``ours+cache``: the same on the decode cache (``cache_decoded_images``: raw RGB records
     built once by ``decode_into_cache``; its one-time build cost is reported on its own);
2. where the time goes: milliseconds per image and per stage (read, decode, crop+resize, flip,
   to-tensor, normalise, collate), single-threaded like a ``DataLoader`` worker;
3. end-to-end training throughput (images/s through ``Trainer.train``, a tiny ViT built from a
   config so that data loading, not compute, dominates, one ``DataLoader`` worker, the training
   process on ``--train-threads`` threads), plus the same run on pre-made batches ("no data cost":
   the ceiling that data loading cannot beat on this machine).

Augmentation is equivalent in every variant: RandomResizedCrop(224, scale (0.08, 1), ratio
(3/4, 4/3), bilinear with antialiasing) + horizontal flip (p=0.5) + normalisation with the image
processor's mean/std, giving float32 (B, 3, 224, 224) batches.

    python -m benchmarks.classification_pipeline [--quick] [--json results.json] [--data-dir DIR]
        [--crop-histograms crops.png]  (crop-scale / aspect-ratio histograms, previous vs current path)

Each timed round of [1] makes ``--passes`` (default 3) reshuffled passes over the photos through one loader
iterator: at every round's start the training process waits for the worker's first batch and at its end the
worker idles while the training process finishes the last one; in a 283-photo epoch that weighs far more than in
a real Food-101 epoch (75,750 photos). Figures are medians over the rounds; ratios are medians of the per-round
ratios (each round runs every variant back to back, so slow drifts of the machine's load cancel out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from torch.utils.data import DataLoader, RandomSampler, default_collate
from transformers import (
    PrinterCallback,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from benchmarks.food101_pipelines import (
    BEFORE,
    CACHED,
    DEFAULT_DATA_DIR,
    DESCRIPTIONS,
    LABEL_COLUMN,
    NAIVE,
    OURS,
    STAGES,
    VARIANTS,
    Settings,
    Variant,
    benchmark_processor,
    build_variants,
    environment,
    load_food101,
    log,
    median_ratios,
    resolve_data_dir,
    rotated,
    torch_threads,
)
from benchmarks.pipeline_stages import measure_stages
from recipes.model.trainer import RecipeTrainer
from recipes.transforms import ProcessorGeometry, processor_pixel_values


def make_loader(variant: Variant, num_workers: int, batch_size: int, seed: int, passes: int = 1) -> DataLoader:
    """A shuffling loader like the Trainer's over ``passes`` reshuffled passes of the dataset per iteration (one
    timed round), so that the pipeline's start and end of each round (the worker's first batch, the consuming
    process's last one) weigh as little as in a real epoch; workers persist between rounds."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        variant.dataset,
        batch_size=batch_size,
        sampler=RandomSampler(variant.dataset, num_samples=passes * len(variant.dataset), generator=generator),
        num_workers=num_workers,
        collate_fn=variant.collate,
        persistent_workers=num_workers > 0,
    )


def run_epoch(loader: DataLoader, consume: Callable[[dict], dict]) -> tuple[int, float, dict[str, Any]]:
    """Iterate once over ``loader``, each batch made ready for the model by ``consume`` (the training process's
    share of the pipeline): (images, seconds, description of the first ready batch)."""
    images, first = 0, {}
    start = time.perf_counter()
    for batch in loader:
        pixels = consume(batch)["pixel_values"]
        if not first:
            first = {"shape": list(pixels.shape), "dtype": str(pixels.dtype).removeprefix("torch.")}
        images += pixels.shape[0]
    return images, time.perf_counter() - start, first


def measure_transforms(
    variants: dict[str, Variant], num_workers: int, rounds: int, warmup: int, settings: Settings
) -> dict[str, Any]:
    """Images/s per variant over ``rounds`` timed rounds (``settings.passes`` passes over the images each),
    interleaved after ``warmup`` untimed rounds."""
    loaders = {
        name: make_loader(v, num_workers, settings.batch_size, settings.seed, settings.passes)
        for name, v in variants.items()
    }
    per_round: dict[str, list[float]] = {name: [] for name in variants}
    first_batches: dict[str, Any] = {}
    # One thread in this process: with no worker it does everything, like a worker; with one worker it only
    # finishes each batch (normalize_on_device) on its own core, as the training process would on the GPU.
    with torch_threads(1):
        for name, loader in loaders.items():
            for _ in range(warmup):
                _, _, first_batches[name] = run_epoch(loader, variants[name].consume)
        for index in range(rounds):
            for name in rotated(list(variants), index):
                images, seconds, first = run_epoch(loaders[name], variants[name].consume)
                first_batches.setdefault(name, first)
                per_round[name].append(images / seconds)
            log(
                f"    round {index + 1}/{rounds}: "
                + ", ".join(f"{n} {per_round[n][-1]:.0f}" for n in variants)
            )
    del loaders  # shuts the persistent workers down
    shapes = {(tuple(b["shape"][1:]), b["dtype"]) for b in first_batches.values()}
    assert len(shapes) == 1, f"variants produce different batches: {first_batches}"
    return {
        "num_workers": num_workers,
        "epochs_images_per_s": per_round,
        "images_per_s": {name: statistics.median(values) for name, values in per_round.items()},
        "ratios": {name: median_ratios(per_round, name, NAIVE) for name in variants if name != NAIVE},
        "batch": first_batches[NAIVE],
    }


# --------------------------------------------------------------------------- 3. end to end


class PremadeBatches(torch.utils.data.Dataset):
    """Already-transformed examples: the Trainer's throughput when data costs nothing."""

    def __init__(self, examples: list[dict[str, Any]], length: int) -> None:
        self.examples, self.length = examples, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index % len(self.examples)]


def tiny_vit(num_labels: int, seed: int) -> ViTForImageClassification:
    """A randomly initialised ViT small enough that data loading, not compute, dominates."""
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=224,
        patch_size=32,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config)


def train_images_per_s(
    dataset: Any, collate: Callable, num_labels: int, settings: Settings, output_dir: Path,
    device_transform: Callable | None = None,
) -> dict[str, float]:
    """Images/s through ``Trainer.train`` (wall clock of the call, worker start-up included)."""
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=settings.batch_size,
        max_steps=settings.train_steps, learning_rate=1e-3, seed=settings.seed,
        dataloader_num_workers=1, dataloader_pin_memory=False, remove_unused_columns=False,
        report_to="none", eval_strategy="no", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=True,
    )
    trainer = RecipeTrainer(
        model=tiny_vit(num_labels, settings.seed), args=args, train_dataset=dataset, data_collator=collate,
        device_transform=device_transform,
    )
    trainer.remove_callback(PrinterCallback)  # no metrics dict printed after each run
    with torch_threads(settings.train_threads):
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    images = settings.train_steps * settings.batch_size
    return {
        "images_per_s": images / seconds,
        "trainer_samples_per_second": result.metrics["train_samples_per_second"],
    }


def measure_end_to_end(
    variants: dict[str, Variant],
    geometry: ProcessorGeometry,
    num_labels: int,
    settings: Settings,
    workdir: Path,
) -> dict[str, Any]:
    """Trainer images/s per variant (interleaved rounds), plus the ceiling with pre-made batches."""
    premade_examples = [variants[CACHED].dataset[i] for i in range(settings.batch_size)]
    processor = benchmark_processor()
    for example in premade_examples:
        example["pixel_values"] = processor_pixel_values(processor, [example["pixel_values"]], sized=True)[0]
    premade = PremadeBatches(premade_examples, len(variants[NAIVE].dataset))
    sources: dict[str, tuple[Any, Callable, Callable | None]] = {
        n: (v.dataset, v.collate, v.device_transform) for n, v in variants.items()
    }
    sources["no data cost"] = (premade, default_collate, None)
    per_round: dict[str, list[float]] = {name: [] for name in sources}
    trainer_reported: dict[str, list[float]] = {name: [] for name in sources}
    for index in range(settings.train_rounds):
        for name in rotated(list(sources), index):
            dataset, collate, device_transform = sources[name]
            run_dir = workdir / f"{index}-{name.replace('+', '-').replace(' ', '-')}"
            figures = train_images_per_s(dataset, collate, num_labels, settings, run_dir, device_transform)
            per_round[name].append(figures["images_per_s"])
            trainer_reported[name].append(figures["trainer_samples_per_second"])
        done = ", ".join(f"{n} {v[-1]:.0f}" for n, v in per_round.items())
        log(f"    round {index + 1}/{settings.train_rounds}: {done}")
    return {
        "max_steps": settings.train_steps,
        "batch_size": settings.batch_size,
        "runs_images_per_s": per_round,
        "images_per_s": {name: statistics.median(values) for name, values in per_round.items()},
        "trainer_samples_per_second": {name: statistics.median(v) for name, v in trainer_reported.items()},
        "ratios": {name: median_ratios(per_round, name, NAIVE) for name in (OURS, CACHED)},
    }


# --------------------------------------------------------------------------- report


def throughput_table(title: str, result: dict[str, Any]) -> list[str]:
    """Rows of images/s (median, min-max over rounds) and ratio to the naive baseline."""
    lines = [title, f"  {'variant':<14}{'images/s':>10}{'(min-max)':>16}{'x naive':>10}"]
    for name, median in result["images_per_s"].items():
        runs = result.get("epochs_images_per_s", result.get("runs_images_per_s"))[name]
        ratio = (
            result["ratios"].get(name, 1.0) if name in VARIANTS else median / result["images_per_s"][NAIVE]
        )
        spread = f"({min(runs):.0f}-{max(runs):.0f})"
        lines.append(f"  {name:<14}{median:>10.1f}{spread:>16}{ratio:>9.2f}x")
    return lines


def stage_table(stages: dict[str, dict[str, float]]) -> list[str]:
    """Milliseconds per image for each stage and pipeline."""
    lines = [f"  {'stage (ms/image)':<18}" + "".join(f"{name:>12}" for name in VARIANTS)]
    for stage in (*STAGES, "total"):
        lines.append(f"  {stage:<18}" + "".join(f"{stages[name][stage]:>12.3f}" for name in VARIANTS))
    lines.append(
        f"  {'=> images/s':<18}" + "".join(f"{1000 / stages[name]['total']:>12.1f}" for name in VARIANTS)
    )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="food101-mini image folder")
    parser.add_argument("--quick", action="store_true", help="shortened run (about a minute) for smoke tests")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, help="timed rounds per variant (default 7, quick 2)")
    parser.add_argument("--passes", type=int, help="passes over the images per timed round (default 3, quick 1): "
                        "food101-mini is 283 photos, a real epoch is thousands, so the pipeline's fill and drain "
                        "at the ends of a round should not weigh as much as in one tiny epoch")
    parser.add_argument("--train-steps", type=int, help="Trainer max_steps per run (default 30, quick 6)")
    parser.add_argument("--train-rounds", type=int, help="Trainer runs per variant (default 3, quick 1)")
    parser.add_argument("--no-main-process", action="store_true", help="skip the num_workers=0 measurement")
    parser.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="torch threads of the training process (default 1: the DataLoader worker gets the other core "
        "of a 2-core machine; on a loaded machine more threads make the tiny model's steps erratic)",
    )
    parser.add_argument("--crop-histograms", type=Path, help="save crop-scale/aspect histograms (previous vs "
                        "current crop path) to this PNG, with their KS-test p-values")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the tables and the ratios, and optionally write the JSON."""
    args = parse_args(argv)
    settings = Settings.from_args(args)
    data_dir = resolve_data_dir(args.data_dir)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    env = environment()
    report: dict[str, Any] = {"data_dir": str(data_dir), "settings": vars(settings), "environment": env}

    with tempfile.TemporaryDirectory(prefix="bench-classification-") as workdir:
        dataset = load_food101(data_dir, cache_dir=str(Path(workdir) / "hf-cache"))
        num_labels = dataset.features[LABEL_COLUMN].num_classes
        log(f"Food-101 JPEGs: {len(dataset)} images, {num_labels} classes, from {data_dir}")
        log(f"load average (1/5/15 min): {env['load_average']}, {env['cpu_count']} CPUs")
        log("region decoding (ours): " + (f"libjpeg-turbo 3 at {env['region_decoding']}" if env["region_decoding"]
                                          else "none (no libjpeg-turbo >= 3: the box's JPEG is decoded whole)"))
        geometry = ProcessorGeometry.from_processor(benchmark_processor())
        variants, sources, cache = build_variants(dataset, geometry)
        report["augmentation"] = cache.pop("augmentation")
        report["decode_cache"] = cache
        log(f"augmentation (all variants): {report['augmentation']}")
        for name in VARIANTS:
            log(f"  {name:<11} {DESCRIPTIONS[name]}")
        log(
            f"decode cache: built once in {cache['build_seconds']:.2f} s "
            f"({cache['build_images_per_s']:.0f} images/s), {cache['disk_mib']:.0f} MiB on disk"
        )

        log(f"\n[1] train-transform throughput, num_workers=1, {settings.rounds} rounds of {settings.passes} "
            "pass(es) per variant")
        one_worker = measure_transforms(variants, 1, settings.rounds, settings.warmup_epochs, settings)
        transforms = {"workers_1": one_worker}
        if settings.rounds_main_process:
            rounds = settings.rounds_main_process
            log(f"    num_workers=0 (main process, 1 thread), {rounds} epochs per variant")
            transforms["workers_0"] = measure_transforms(variants, 0, rounds, 0, settings)
        report["transform_throughput"] = transforms

        log("\n[2] stage breakdown (single thread, in process)")
        report["stages_ms_per_image"] = measure_stages(sources, geometry, settings)

        log(
            f"\n[3] end-to-end Trainer throughput, tiny ViT, {settings.train_steps} steps x "
            f"{settings.batch_size}, {settings.train_rounds} run(s) per variant"
        )
        runs_dir = Path(workdir) / "runs"
        trained = {name: variant for name, variant in variants.items() if name != BEFORE}
        report["end_to_end"] = measure_end_to_end(trained, geometry, num_labels, settings, runs_dir)
    if args.crop_histograms:
        from benchmarks.crop_distribution import write_crop_histograms

        report["crop_distribution"] = write_crop_histograms(args.crop_histograms, seed=settings.seed)
        log(f"crop histograms written to {args.crop_histograms}: {report['crop_distribution']}")

    env["load_average_end"] = list(os.getloadavg())
    report["seconds"] = time.perf_counter() - started
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
        log(f"figures written to {args.json}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    """The summary tables and both headline ratios."""
    transforms, e2e, cache = report["transform_throughput"], report["end_to_end"], report["decode_cache"]
    lines = ["", "=" * 78, "Image-classification data pipeline benchmark (food101-mini, medians)"]
    lines += throughput_table("train-transform throughput, num_workers=1:", transforms["workers_1"])
    if "workers_0" in transforms:
        lines += throughput_table("train-transform throughput, num_workers=0:", transforms["workers_0"])
    lines.append(
        f"  decode cache, one-time build: {cache['build_seconds']:.2f} s "
        f"({cache['build_images_per_s']:.0f} images/s, {cache['disk_mib']:.0f} MiB)"
    )
    lines.append("stage breakdown (ms per image, single thread, transfer to the main process excluded):")
    lines += stage_table(report["stages_ms_per_image"])
    steps = f"{e2e['max_steps']} steps x {e2e['batch_size']}"
    lines += throughput_table(f"end-to-end Trainer throughput (tiny ViT, {steps}, 1 worker):", e2e)
    transform_ratios = transforms["workers_1"]["ratios"]
    headline = (("TRANSFORM  (1 worker)", transform_ratios), ("END-TO-END (Trainer) ", e2e["ratios"]))
    for label, ratios in headline:
        lines.append(
            f"{label} ratio ours/naive: {ratios[OURS]:.2f}x default, {ratios[CACHED]:.2f}x with decode cache"
        )
    lines.append(f"TRANSFORM  (1 worker) ratio ours/ours-before: "
                 f"{transform_ratios[OURS] / transform_ratios[BEFORE]:.2f}x (previous default: "
                 f"{transform_ratios[BEFORE]:.2f}x naive)")
    reached = [name for name in (OURS, CACHED) if transforms["workers_1"]["ratios"][name] >= 2.5]
    verdict = f"reached by {', '.join(reached)}" if reached else "not reached"
    per_round = transforms["workers_1"]["epochs_images_per_s"]
    rounds = [ours / naive for ours, naive in zip(per_round[OURS], per_round[NAIVE])]
    lines.append(f"target >= 2.5x train-transform throughput: {verdict} (default: {sum(r >= 2.5 for r in rounds)} "
                 f"of {len(rounds)} rounds at or above it, per round {min(rounds):.2f}-{max(rounds):.2f}x)")
    env = report["environment"]
    lines.append(f"region decoding (ours): {env['region_decoding'] or 'none'}; load average at start "
                 f"{env['load_average']}, at end {env['load_average_end']}")
    lines.append("=" * 78)
    log("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
