"""Small synthetic datasets written in the real on-disk layouts (quickstart and tests)."""
