"""PNG plots written next to the model (matplotlib ``Figure`` objects: no pyplot state, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def training_curves(log_history: Sequence[dict[str, Any]], main_metric: str, path: Path) -> Path | None:
    """Training/validation loss and the main validation metric against the step."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    metric_key = f"eval_{main_metric}"
    metric = [(h["step"], h[metric_key]) for h in log_history if metric_key in h]
    if not (train or evals or metric):
        return None
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for points, label in ((train, "train loss"), (evals, "validation loss")):
        if points:
            axes[0].plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
    axes[0].set(xlabel="step", ylabel="loss", title="Loss")
    axes[0].legend()
    if metric:
        axes[1].plot(*zip(*metric), marker="o", color="tab:green")
    axes[1].set(xlabel="step", ylabel=main_metric, title=f"Validation {main_metric}")
    return save_figure(fig, path)


def confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path, max_classes: int = 40) -> Path:
    """Row-normalised confusion matrix (the ``max_classes`` most frequent classes when there are many)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    labels = list(labels)
    if len(labels) > max_classes:
        keep = np.argsort(-matrix.sum(axis=1))[:max_classes]
        matrix, labels = matrix[np.ix_(keep, keep)], [labels[i] for i in keep]
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.35 * len(labels) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalised)")
    if len(labels) <= 15:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, int(count), ha="center", va="center", fontsize=8,
                    color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def image_grid(
    images: Sequence[np.ndarray], titles: Sequence[str], path: Path, columns: int = 4, suptitle: str = ""
) -> Path:
    """A grid of RGB images (H, W, 3 ``uint8``) with a title each."""
    rows = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(3 * columns, 3.2 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return save_figure(fig, path)


def bar_chart(values: dict[str, float], path: Path, title: str, xlabel: str) -> Path:
    """Horizontal bar chart, e.g. per-class IoU."""
    names = list(values)
    fig = Figure(figsize=(7, max(3.0, 0.3 * len(names) + 1)))
    ax = fig.subplots()
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title, xlim=(0, 1))
    return save_figure(fig, path)


def range_test(rates: Sequence[float], losses: Sequence[float], suggested: float | None, path: Path) -> Path:
    """Smoothed training loss against the learning rate (log scale), the suggested rate marked."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(rates, losses, color="tab:blue")
    if suggested is not None:
        ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested {suggested:.1e}")
        ax.legend()
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="Learning-rate range test")
    return save_figure(fig, path)
