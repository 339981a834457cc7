"""Benchmarks: programs that measure a baseline and our implementation in the same run and print the ratio.

Run from the repository root, e.g. ``python -m benchmarks.classification_pipeline --quick``. They are not
part of the installed package; tests run them as subprocesses.
"""
