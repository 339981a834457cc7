"""Try a fine-tuned model in the browser (same as `vision-recipes demo`).

    python scripts/demo.py outputs/food101-vit            # or a Hub id: your-name/vit-base-food101
"""

import sys

from recipes.modes.demo import main

if __name__ == "__main__":
    sys.exit(main())
