"""Fine-tune a vision model from a YAML recipe.

    python scripts/train.py configs/food101-vit.yaml [--learning_rate 1e-4 ...]
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/train.py configs/food101-vit.yaml
"""

import sys

from recipes.modes.train import main

if __name__ == "__main__":
    sys.exit(main())
