"""Push an existing output folder (model, processor, card, plots, metrics) to the Hugging Face Hub.

    python scripts/push_to_hub.py outputs/food101-vit --repo-id user/vit-base-food101 [--private]

The token comes from --token, else HF_TOKEN, else `hf auth login`; it is never printed.
"""

import argparse
import sys

from recipes.hub import PublishError, push_output_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="Folder written by scripts/train.py")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. user/model-name")
    parser.add_argument("--private", action="store_true", help="Create the repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--commit-message", default="Upload fine-tuned model with Vision Recipes")
    args = parser.parse_args()
    try:
        url = push_output_dir(args.output_dir, args.repo_id, token=args.token, private=args.private or None,
                              commit_message=args.commit_message)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Pushed {args.output_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
