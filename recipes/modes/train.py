"""``vision-recipes train CONFIG.yaml [--key value ...]``: parse the recipe and run it."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from recipes.config import RecipeError


def main(argv: Sequence[str] | None = None) -> int:
    """Train (or evaluate_only / find_lr) from a recipe; clear errors (exit 2), no traceback."""
    from recipes.decode.images import BadImageError
    from recipes.lifecycle import run
    from recipes.parse import parse_recipe
    from recipes.training import Preempted, release_process_group

    try:
        recipe = parse_recipe(argv)
        context = run(recipe)
    except Preempted:
        release_process_group()  # every process stopped at the same step
        raise
    except (RecipeError, BadImageError) as err:
        # one write, so that the lines of several processes cannot interleave even with unbuffered stderr
        # (PYTHONUNBUFFERED: print writes the text and the newline separately); on a line of its own after an
        # unfinished progress bar
        sys.stderr.write(f"\nerror: {err}\n")
        return 2
    release_process_group()
    return 1 if context.push_error else 0
