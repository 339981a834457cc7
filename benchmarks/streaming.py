"""Training throughput with streamed data against the usual map-style data, same images, model and steps, in one
run: the Food-101 photos of ``../shared/datasets/food101-mini/train`` (synthetic shapes when it is absent) read as an
image folder (map-style: listed, checked and cached by ``datasets`` first) and as 4 parquet shards of the same
photos (``streaming: true``: read, shuffled and decoded while training). Both train the quickstart's tiny ResNet
through the whole lifecycle; the figure is training examples per second of the Trainer's loop (``train_runtime``),
plus the wall time of the run including data preparation.

    python -m benchmarks.streaming [--quick] [--steps 40] [--rounds 2] [--workers 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "food101-mini"
QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart" / "classification.yaml")


def write_shards(folder: Path, out: Path, shards: int = 4) -> int:
    """The image folder's photos (bytes embedded) as ``shards`` parquet files with a ClassLabel column."""
    from datasets import Image

    from recipes.tasks.classification.data import class_folder_splits

    listed = class_folder_splits({"train": folder})["train"]
    embedded = listed.map(lambda row: {"image": {"bytes": Path(row["image"]["path"]).read_bytes(),
                                                 "path": Path(row["image"]["path"]).name}})
    embedded = embedded.cast_column("image", Image()).shuffle(seed=0)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(shards):
        embedded.shard(shards, k, contiguous=True).to_parquet(str(out / f"train-{k:05d}-of-{shards:05d}.parquet"))
    return len(embedded)


def train_once(data: list[str], output_dir: Path, steps: int, batch: int, workers: int) -> dict[str, float]:
    """One run of the lifecycle; training examples per second of the Trainer's loop and the run's wall time."""
    from recipes.lifecycle import run
    from recipes.parse import parse_recipe

    started = time.perf_counter()
    context = run(parse_recipe([
        QUICKSTART, *data, "--output_dir", str(output_dir), "--max_steps", str(steps),
        "--per_device_train_batch_size", str(batch), "--dataloader_num_workers", str(workers),
        "--image_processor_overrides", '{"size": {"shortest_edge": 64}}', "--augmentation", "basic",
        "--eval_strategy", "no", "--save_strategy", "no", "--make_plots", "false", "--use_cpu", "true",
        "--report_to", "none", "--max_eval_samples", "16", "--logging_steps", "1000",
    ]))
    wall = time.perf_counter() - started
    train = context.metrics["train"]
    examples = steps * batch
    return {"examples_per_s": examples / train["train_runtime"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 12 steps")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SHARED / "train")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    steps, rounds = (12, 1) if options.quick else (options.steps, options.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = options.data
        if not folder.is_dir():
            from recipes.sample_data.shapes import make_shapes_dataset

            folder = tmp_path / "shapes"
            make_shapes_dataset(folder, images_per_class=40, size=96, seed=0)
        count = write_shards(folder, tmp_path / "shards")
        sources = {
            "map-style (image folder)": ["--train_dir", str(folder)],
            "streaming (4 parquet shards)": ["--streaming", "true", "--shuffle_buffer_size", "256",
                                             "--train_file", str(tmp_path / "shards" / "*.parquet")],
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
        for round_ in range(rounds):  # interleaved, so both see the same machine load
            for name, data in sources.items():
                output_dir = tmp_path / f"run-{round_}-{name[:3]}"
                results[name].append(train_once(data, output_dir, steps, options.batch, options.workers))
    medians = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
               for name, runs in results.items()}
    baseline = medians["map-style (image folder)"]["examples_per_s"]
    print(f"\n{count} photos from {folder}; {steps} steps x batch {options.batch}, {options.workers} loader workers, "
          f"median of {rounds} round(s)")
    print(f"  {'data':<30} {'train examples/s':>17} {'x map-style':>12} {'run wall s':>11}")
    for name, median in medians.items():
        print(f"  {name:<30} {median['examples_per_s']:>17.1f} {median['examples_per_s'] / baseline:>12.2f} "
              f"{median['wall_s']:>11.1f}")
    if options.json:
        options.json.write_text(json.dumps({"steps": steps, "batch": options.batch, "results": results}, indent=1))


if __name__ == "__main__":
    main()
