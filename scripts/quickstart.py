"""Offline quickstart: sample data + a tiny model for each task, every output of a real run.

    python scripts/quickstart.py                      # all three tasks, ~5 minutes on 2 CPU cores
    python scripts/quickstart.py --tasks classification
"""

import argparse
import json
import sys
import time
from pathlib import Path

from recipes.quickstart import format_rows, quickstart_tasks, run_quickstart

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = list(quickstart_tasks())
    parser.add_argument("--tasks", nargs="+", default=names, choices=names)
    parser.add_argument("--data-dir", type=Path, default=REPO / "quickstart_data", help="Where sample data goes")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "quickstart")
    args, extra = parser.parse_known_args()
    started = time.perf_counter()
    rows = run_quickstart(args.tasks, args.data_dir, args.output_dir, REPO, extra)
    total = time.perf_counter() - started
    print("\nQuickstart results\n" + format_rows(rows) + f"\ntotal: {total:.0f}s", flush=True)
    (args.output_dir / "quickstart_results.json").write_text(json.dumps({"rows": rows, "seconds": total}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
