"""Fault injection: kill a short training run at random moments (SIGKILL and SIGTERM; half of the kills right as a
checkpoint folder appears, that is while the Trainer writes it, a quarter as soon as training has ended), rerun
the same command into the same output folder each time, and count the reruns that finish with the metrics of an
uninterrupted run (the goal: all).

    python -m benchmarks.faults [--kills 8] [--seed 0] [--quick] [--json results.json]

The run is the classification quickstart (a tiny ResNet on the synthetic shapes, 3 epochs of 2 steps, a checkpoint
per epoch), launched as a user does (``scripts/train.py``) with one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recipes.artifacts.checkpoints import read_run_status

REPO = Path(__file__).resolve().parents[1]
RECIPE = "configs/quickstart/classification.yaml"


def command(data: Path, output_dir: Path) -> list[str]:
    # 77 training images, batches of 32 (the incomplete one dropped for BatchNorm): 2 steps and a checkpoint per epoch
    return [sys.executable, str(REPO / "scripts" / "train.py"), RECIPE, "--train_dir", str(data), "--output_dir",
            str(output_dir), "--augmentation", "none", "--dataloader_num_workers", "0", "--per_device_train_batch_size",
            "32", "--num_train_epochs", "3", "--make_plots", "false", "--logging_steps", "1", "--report_to", "none"]


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def finish(data: Path, output_dir: Path) -> tuple[dict | None, str]:
    """Run to the end; the evaluation metrics (None when the run failed) and the end of its log."""
    result = subprocess.run(command(data, output_dir), cwd=REPO, env=environment(), capture_output=True, text=True,
                            timeout=900)
    results = output_dir / "eval_results.json"
    if result.returncode != 0 or not results.is_file():
        return None, (result.stdout + result.stderr)[-3000:]
    return json.loads(results.read_text()), result.stderr


def checkpoints_seen(output_dir: Path, seen: set[str]) -> int:
    """How many ``checkpoint-N`` folders have appeared in ``output_dir`` so far (``seen`` keeps their names)."""
    if output_dir.is_dir():
        seen |= {path.name for path in output_dir.glob("checkpoint-*")}
    return len(seen)


def killed_run(data: Path, output_dir: Path, signum: int, at: float | int | str, rng: random.Random) -> str:
    """Start the run and kill it ``at`` seconds in (an ``int``: just after the ``at``-th checkpoint folder appears,
    in the middle of its writing; ``"trained"``: as soon as training has ended, during the evaluation and outputs
    that follow); what the kill interrupted, for the report."""
    process = subprocess.Popen(command(data, output_dir), cwd=REPO, env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    started, seen, moment = time.perf_counter(), set(), "finished before the kill"
    while process.poll() is None:
        elapsed = time.perf_counter() - started
        if isinstance(at, float) and elapsed >= at:
            moment = f"at {elapsed:.1f}s"
            break
        if at == "trained" and read_run_status(output_dir) == "trained":
            moment = "after training (evaluating, writing outputs)"
            break
        if isinstance(at, int) and checkpoints_seen(output_dir, seen) >= at:
            time.sleep(rng.uniform(0.0, 0.05))
            moment = f"writing {max(seen, key=lambda name: int(name.split('-')[1]))}"
            break
        time.sleep(0.005)
    if process.poll() is None:
        os.killpg(process.pid, signum)
    process.wait()
    return moment


def equal(metrics: dict | None, reference: dict) -> bool:
    if metrics is None:
        return False
    return (metrics["eval_accuracy"] == reference["eval_accuracy"]
            and abs(metrics["eval_loss"] - reference["eval_loss"]) <= 1e-4 * abs(reference["eval_loss"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 kills (a smoke run)")
    parser.add_argument("--json", default=None, help="Write the figures here")
    args = parser.parse_args()
    kills = 2 if args.quick else args.kills
    rng = random.Random(args.seed)
    from recipes.sample_data.shapes import make_shapes_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = make_shapes_dataset(Path(tmp) / "data", images_per_class=24, size=32, seed=0)
        reference, log = finish(data, Path(tmp) / "uninterrupted")
        if reference is None:
            sys.exit(f"the uninterrupted run failed:\n{log}")
        started = time.perf_counter()  # a second one, with the data checks cached as in the kills: its duration
        again, log = finish(data, Path(tmp) / "uninterrupted-again")
        duration = time.perf_counter() - started
        if not equal(again, reference):
            sys.exit(f"two uninterrupted runs differ ({reference} vs {again}): the comparison means nothing\n{log}")
        print(f"uninterrupted run: {duration:.1f}s, eval_accuracy {reference['eval_accuracy']:.4f}, eval_loss "
              f"{reference['eval_loss']:.6f} (twice)", flush=True)
        rows = []
        for k in range(kills):
            signum = signal.SIGKILL if k % 2 == 0 else signal.SIGTERM
            at = (rng.randint(1, 3) if k % 4 in (1, 2) else "trained" if k % 4 == 3
                  else rng.uniform(0.1 * duration, 0.95 * duration))
            output_dir = Path(tmp) / f"killed-{k}"
            moment = killed_run(data, output_dir, signum, at, rng)
            metrics, log = finish(data, output_dir)
            same = equal(metrics, reference)
            rows.append({"signal": signal.Signals(signum).name, "moment": moment, "equal": same,
                         "skipped_incomplete": "an incomplete checkpoint" in log})
            print(f"kill {k + 1}/{kills}: {signal.Signals(signum).name} {moment} → rerun "
                  f"{'finished with equal metrics' if same else 'DIFFERS OR FAILED'}"
                  + (" (an incomplete checkpoint skipped)" if rows[-1]["skipped_incomplete"] else "")
                  + (" (training skipped)" if "training skipped" in log else ""), flush=True)
            if not same:
                print(log[-2000:], flush=True)
    finished = sum(row["equal"] for row in rows)
    during = sum(row["moment"].startswith("writing") for row in rows)
    after = sum(row["moment"].startswith("after training") for row in rows)
    print(f"faults: {kills} kills ({sum(r['signal'] == 'SIGKILL' for r in rows)} SIGKILL, "
          f"{sum(r['signal'] == 'SIGTERM' for r in rows)} SIGTERM; {during} while a checkpoint was being written, "
          f"{after} after training): "
          f"{finished} of {kills} reruns finished with the metrics of the uninterrupted run", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"kills": kills, "equal": finished, "runs": rows}, indent=1))
    if finished != kills:
        sys.exit(1)


if __name__ == "__main__":
    main()
