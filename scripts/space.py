"""Create or update a Gradio Space that demos a fine-tuned model (same as `vision-recipes space`).

    python scripts/space.py outputs/food101-vit --repo_id your-name/food101-demo [--examples 3] [--bundle_model]
    python scripts/space.py your-name/vit-base-food101 --repo_id your-name/food101-demo

The token comes from --token, else HF_TOKEN, else `hf auth login`; it is never printed.
"""

import sys

from recipes.modes.space import main

if __name__ == "__main__":
    sys.exit(main())
