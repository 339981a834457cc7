"""Evaluate a fine-tuned model on data it never saw: metrics, plots and a report.

    python scripts/evaluate_model.py outputs/food101-vit --validation_dir food/test [--update_card]
"""

import sys

from recipes.modes.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
