"""Figures for the notebooks. Each function returns its matplotlib ``Figure``.

In a notebook, end the line with ``;`` so the figure is shown once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

LABELS = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
}


def _as_images(images: torch.Tensor) -> torch.Tensor:
    x = images.detach().cpu().float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    return x.reshape(len(x), 28, 28)


def show_images(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    title: str | None = None,
) -> Figure:
    """A grid of 28x28 images, each captioned with its class name when labels are given."""
    x = _as_images(images)
    nrows = -(-len(x) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(x):
            ax.imshow(x[i], cmap="gray_r", vmin=0, vmax=1)
            if labels is not None:
                label = int(labels[i])
                ax.set_title(classes[label] if classes else str(label), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_image_rows(rows: Mapping[str, torch.Tensor], *, title: str | None = None) -> Figure:
    """One row of images per entry, e.g. {"original": x, "reconstruction": x_hat}."""
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.2 * ncols, 1.35 * len(rows) + 0.4), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        x = _as_images(images)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(x):
                ax.imshow(x[c], cmap="gray_r", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(
    histories: Mapping[str, Mapping[str, list[float]]] | Mapping[str, list[float]],
    keys: Sequence[str] = ("train_loss", "test_loss"),
    *,
    ylabel: str = "MSE per pixel",
    title: str = "Training history",
    logy: bool = False,
) -> Figure:
    """Per-epoch curves of one history, or of several ({"name": history, ...}) for comparison."""
    if "epoch" in histories:
        histories = {"": histories}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, history in histories.items():
        for key in keys:
            if key in history:
                label = " ".join(s for s in (name, LABELS.get(key, key)) if s)
                style = "--" if key.startswith("train") and len(keys) > 1 else "-"
                ax.plot(history["epoch"], history[key], style, marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_label_efficiency(summary: Sequence[Mapping], *, title: str = "Test accuracy vs number of labels") -> Figure:
    """Mean test accuracy (error bars: one standard deviation over seeds) per method vs labels (log x)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(dict.fromkeys(row["method"] for row in summary))
    for i, method in enumerate(methods):
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["labels"])
        x = [r["labels"] * (1 + 0.04 * (i - len(methods) / 2)) for r in rows]  # small offsets: bars stay visible
        ax.errorbar(x, [100 * r["mean"] for r in rows], yerr=[100 * r["std"] for r in rows],
                    marker="o", ms=4, capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("number of labelled training images (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
