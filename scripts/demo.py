"""Try a fine-tuned model in the browser.

    python scripts/demo.py outputs/food101-vit            # or a Hub id: your-name/vit-base-food101
"""

import argparse
import sys

from recipes.demo import build_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Output folder of scripts/train.py or a Hub model id")
    parser.add_argument("--threshold", type=float, default=0.5, help="Detection score threshold")
    parser.add_argument("--share", action="store_true", help="Create a public Gradio link")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    build_app(args.model, args.threshold).launch(share=args.share, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
