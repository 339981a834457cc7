"""Readers that turn on-disk annotation formats into in-memory ``datasets.Dataset`` splits."""
