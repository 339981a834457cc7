"""One process of the two-process EMA test (tests/test_ema.py), started by ``accelerate launch`` on CPU.

Runs ``scripts/train.py``'s ``main`` with the arguments it is given, and after training writes this process's
EMA of the weights to ``$EMA_DUMP_DIR/ema-rank<N>.safetensors`` (only the main process writes checkpoints, so
this is how the test sees the other process's average).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from safetensors.torch import save_model

from recipes.model.trainer import RecipeTrainer
from recipes.modes.train import main


def main_with_dump(dump: Path) -> int:
    original = RecipeTrainer.train

    def train(self: RecipeTrainer, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        dump.mkdir(parents=True, exist_ok=True)
        save_model(self.weight_average.module, str(dump / f"ema-rank{self.args.process_index}.safetensors"))
        return result

    RecipeTrainer.train = train
    return main()


if __name__ == "__main__":
    sys.exit(main_with_dump(Path(os.environ["EMA_DUMP_DIR"])))
