"""Crop distribution of the training input path: torchvision's ``RandomResizedCrop`` (the previous path) vs the
boxes the current path actually cuts (drawn from the JPEG header, cut from a DCT-scaled decode), on the image
sizes of food101-mini and of a 12-megapixel photo. Saves overlaid histograms of the crop scale (area fraction)
and aspect ratio with two-sample KS-test p-values.

    python -m benchmarks.crop_distribution crops.png [--samples 20000]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import ks_2samp

from recipes.decode.crop import crop_box, effective_box
from recipes.tasks.classification.transforms import build_train_augmentation

SIZES = ((384, 512), (512, 384), (512, 512), (3000, 4000))


def previous_boxes(crop, height: int, width: int, count: int) -> np.ndarray:
    """(area fraction, aspect ratio w/h) of torchvision's own draws."""
    placeholder = torch.empty((1, 1, 1), dtype=torch.uint8).expand(1, height, width)
    params = [crop.make_params([placeholder]) for _ in range(count)]
    return np.array([(p["height"] * p["width"] / (height * width), p["width"] / p["height"]) for p in params])


def current_boxes(crop, height: int, width: int, count: int) -> np.ndarray:
    """(area fraction, aspect ratio w/h) of the boxes the current path cuts out of the reduced decode."""
    boxes = [effective_box(crop_box(crop, height, width), height, width, tuple(crop.size)) for _ in range(count)]
    return np.array([(box_h * box_w / (height * width), box_w / box_h) for _, _, box_h, box_w in boxes])


def write_crop_histograms(path: Path, samples: int = 4000, seed: int = 0) -> dict[str, float]:
    """Sample, plot and test; returns the KS p-values (all sizes pooled, and the smallest per size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    crop = build_train_augmentation("basic", 224, 224).transforms[0]
    previous = [previous_boxes(crop, h, w, samples) for h, w in SIZES]
    current = [current_boxes(crop, h, w, samples) for h, w in SIZES]
    per_size = [min(ks_2samp(a[:, i], b[:, i]).pvalue for i in (0, 1)) for a, b in zip(previous, current)]
    old, new = np.concatenate(previous), np.concatenate(current)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    result = {}
    for axis, column, name in zip(axes, (0, 1), ("crop scale (area fraction)", "aspect ratio (w/h)")):
        bins = np.linspace(0, 1, 41) if column == 0 else np.geomspace(0.6, 1.5, 41)
        pvalue = ks_2samp(old[:, column], new[:, column]).pvalue
        result[f"ks_pvalue_{'scale' if column == 0 else 'aspect'}"] = float(pvalue)
        axis.hist(old[:, column], bins=bins, histtype="step", linewidth=2, label="previous: torchvision RRC")
        axis.hist(new[:, column], bins=bins, histtype="step", linewidth=2, linestyle="--",
                  label="current: header box, DCT-scaled cut")
        axis.set(title=f"{name}: KS p = {pvalue:.3f}", xlabel=name, ylabel="crops")
        if column == 1:
            axis.set_xscale("log")
        axis.legend(loc="lower center")
    figure.suptitle(f"{samples} crops per image size {', '.join(f'{h}x{w}' for h, w in SIZES)} (224x224 output)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    result["ks_pvalue_min_per_size"] = float(min(per_size))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("png", type=Path)
    parser.add_argument("--samples", type=int, default=4000, help="crops per image size and path")
    args = parser.parse_args(argv)
    print(write_crop_histograms(args.png, args.samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
