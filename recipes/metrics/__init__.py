"""Metrics shared across tasks (one module per family)."""
