"""Predict with a fine-tuned model on image files, folders or globs.

    python scripts/predict.py outputs/food101-vit photos/ --output predictions.jsonl [--visualize drawn/]
"""

import sys

from recipes.modes.predict import main

if __name__ == "__main__":
    sys.exit(main())
