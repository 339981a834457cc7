"""Push an existing output folder (model, processor, card, metrics, plots of metrics; data photos only with
--include-photos) to the Hugging Face Hub.

    python scripts/push_to_hub.py outputs/food101-vit --repo-id user/vit-base-food101 [--private] [--include-photos]

The token comes from --token, else HF_TOKEN, else `hf auth login`; it is never printed.
"""

import sys

from recipes.modes.push import main

if __name__ == "__main__":
    sys.exit(main())
