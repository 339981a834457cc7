"""``vision-recipes push OUTPUT_DIR --repo-id USER/NAME``: publish an existing output folder (model, processor,
card, metrics, plots of metrics; data photos only with --include-photos) to the Hugging Face Hub. The token comes
from --token, else HF_TOKEN, else `hf auth login`; it is never printed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recipes.artifacts.hub import PublishError, push_output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vision-recipes push", description=__doc__)
    parser.add_argument("output_dir", help="Folder written by `vision-recipes train`")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. user/model-name")
    parser.add_argument("--private", action="store_true", help="Create the repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--commit-message", default="Upload fine-tuned model with Vision Recipes")
    parser.add_argument("--include-photos", action="store_true",
                        help="Also push data photos: examples/, eval-*/ folders, plots drawn on validation photos")
    args = parser.parse_args(argv)
    try:
        url = push_output_dir(args.output_dir, args.repo_id, token=args.token, private=args.private or None,
                              commit_message=args.commit_message, include_photos=args.include_photos)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Pushed {args.output_dir} to {url}")
    return 0
