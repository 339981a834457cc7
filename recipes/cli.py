"""Command-line entry points (``vision-recipes`` console script and ``scripts/*.py``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from recipes.config import RecipeError


def main(argv: Sequence[str] | None = None) -> int:
    """``train CONFIG.yaml [--key value ...]``: parse the recipe and run it; clear errors, no traceback."""
    from recipes.images import BadImageError
    from recipes.lifecycle import run
    from recipes.parse import parse_recipe

    try:
        recipe = parse_recipe(argv)
        context = run(recipe)
    except (RecipeError, BadImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if context.push_error else 0


if __name__ == "__main__":
    sys.exit(main())
