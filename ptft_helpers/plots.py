"""Figures for the notebooks. Each function returns its matplotlib ``Figure``.

In a notebook, end the line with ``;`` so the figure is shown once. Every figure uses
matplotlib's constrained layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .explorers import DIVERGENCE_FACTOR
from .stats import t_interval

LABELS = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
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
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows + 0.4), squeeze=False, layout="constrained"
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(x):
            ax.imshow(x[i].numpy(), cmap="gray_r", vmin=0, vmax=1)
            if labels is not None:
                label = int(labels[i])
                ax.set_title(classes[label] if classes else str(label), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def show_image_rows(rows: Mapping[str, torch.Tensor], *, title: str | None = None) -> Figure:
    """One row of images per entry, e.g. {"original": x, "reconstruction": x_hat}."""
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.2 * ncols, 1.35 * len(rows) + 0.4), squeeze=False, layout="constrained"
    )
    for r, (name, images) in enumerate(rows.items()):
        x = _as_images(images)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(x):
                ax.imshow(x[c].numpy(), cmap="gray_r", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
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
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
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
    return fig


def plot_label_efficiency(
    curves: Mapping[str, Mapping[int, Sequence[float]]], *, title: str = "Test accuracy against the number of labels"
) -> Figure:
    """One line per method: mean test accuracy against the number of labels (log axis), with its t-based 95%
    confidence interval over label draws as a band. ``curves[method][n]`` holds the accuracies in % (one per draw)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    for method, by_n in curves.items():
        counts = sorted(by_n)
        cis = [t_interval(by_n[n]) for n in counts]
        (line,) = ax.plot(counts, [ci.mean for ci in cis], marker="o", ms=4, label=method)
        ax.fill_between(counts, [ci.low for ci in cis], [ci.high for ci in cis], color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("labels n (validation included; log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def _mosaic(rows: Sequence[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """Rows of images (n, 28, 28) in [0, 1] as one array: side by side, rows stacked, ``gap`` blank pixels apart."""
    n = max(len(r) for r in rows)
    out = torch.zeros(len(rows) * (28 + gap) - gap, n * (28 + gap) - gap)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            out[r * (28 + gap) : r * (28 + gap) + 28, c * (28 + gap) : c * (28 + gap) + 28] = image
    return out


def plot_latent_sizes(results: Mapping[int, dict], current: int | None = None) -> Figure:
    """Originals above their reconstructions for ``current`` (default: the last result), beside
    the test error of every latent size in ``results`` ({latent_dim: explore_latent_size(...)})."""
    if not results:
        raise ValueError("No results to plot yet: call explore_latent_size first.")
    current = list(results)[-1] if current is None else current
    shown = results[current]
    rows = {"original": _as_images(shown["originals"]), "reconstruction": _as_images(shown["reconstructions"])}
    fig, (left, ax) = plt.subplots(1, 2, figsize=(12, 2.9), width_ratios=[2, 1], layout="constrained")
    # One image for all 16 panels: one imshow is several times quicker to draw than 16 axes (the explorer redraws it).
    left.imshow(_mosaic(list(rows.values())).numpy(), cmap="gray_r", vmin=0, vmax=1)
    left.set_xticks([])
    left.set_yticks([14 + 30 * r for r in range(len(rows))], list(rows), fontsize=9)
    left.set_title(
        f"Test images and their reconstructions, latent size {current} (test MSE {shown['test_mse']:.4f})", fontsize=11
    )
    sizes = sorted(results)
    errors = [results[s]["test_mse"] for s in sizes]
    ax.plot(sizes, errors, "-o", color="tab:blue", ms=5, label="sizes tried")
    ax.plot([current], [shown["test_mse"]], "o", color="tab:red", ms=9, label=f"latent size {current}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("latent size (length of the code z)")
    ax.set_ylabel("test MSE per pixel")
    ax.set_title("Test error vs latent size", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_learning_rates(results: Mapping[float, dict], current: float | None = None) -> Figure:
    """Every tried rate's training-loss curve on a log scale ({lr: explore_learning_rate(...)}).

    A diverged run ends in a cross labelled "diverged at step N"; the dotted line is the
    divergence threshold (``DIVERGENCE_FACTOR`` times the loss at step 1).
    """
    if not results:
        raise ValueError("No results to plot yet: call explore_learning_rate first.")
    current = list(results)[-1] if current is None else current
    fig, ax = plt.subplots(figsize=(10, 4.2), layout="constrained")
    threshold, bottom, top = _loss_scale(results)
    notes = [_draw_rate(ax, lr, results[lr], highlighted=lr == current, top=top) for lr in sorted(results)]
    _draw_threshold(ax, threshold, [note for note in notes if note is not None])
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    batch = {r.get("batch_size") for r in results.values()}
    ax.set_xlabel(
        f"training step (one batch of {batch.pop()} images)"
        if len(batch) == 1 and None not in batch
        else "training step (one batch of images)"
    )
    ax.set_ylabel("training loss (MSE per pixel, log scale)")
    ax.set_title("Training loss for each learning rate tried (Adam)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _loss_scale(results: Mapping[float, dict]) -> tuple[float, float, float]:
    """(divergence threshold, bottom, top) of the loss axis: the threshold is ``DIVERGENCE_FACTOR`` times the median
    loss at step 1; the axis runs from below the lowest finite loss to 10 times the threshold."""
    finite = [v for r in results.values() for v in r["step_loss"] if math.isfinite(v)]
    starts = sorted(r["step_loss"][0] for r in results.values() if r["step_loss"] and math.isfinite(r["step_loss"][0]))
    threshold = DIVERGENCE_FACTOR * (starts[len(starts) // 2] if starts else 0.25)
    top = threshold * 10
    bottom = min(finite) / 1.5 if finite else threshold / 1000
    return threshold, bottom, top


def _draw_rate(ax, lr: float, result: dict, *, highlighted: bool, top: float) -> str | None:
    """Draw one rate's loss curve (bold when ``highlighted``), ending in a cross at ``top / 2`` at most if it
    diverged; return the note "lr = ...: diverged at step N", or None if it did not diverge."""
    losses, at = result["step_loss"], result["diverged_at"]
    color = plt.get_cmap("viridis")(min(max((math.log10(lr) + 5) / 5, 0.0), 1.0) * 0.9)
    width, alpha = (2.6, 1.0) if highlighted else (1.3, 0.75)
    label = f"lr = {lr:.2g}" + (f": diverged at step {at}" if at is not None else "")
    ok = losses[:-1] if at is not None else losses
    ax.plot(range(1, len(ok) + 1), ok, color=color, lw=width, alpha=alpha, label=label)
    if at is None:
        return None
    bad = losses[-1]
    y = min(bad, top / 2) if math.isfinite(bad) else top / 2
    if ok:
        ax.plot([at - 1, at], [ok[-1], y], ":", color=color, lw=width, alpha=alpha)
    ax.plot([at], [y], "x", color=color, ms=10, mew=2.5, clip_on=False)
    return f"lr = {lr:.2g}: diverged at step {at}"


def _draw_threshold(ax, threshold: float, notes: Sequence[str]) -> None:
    """The dotted divergence threshold with its caption, and below it the ``notes`` of the runs that diverged."""
    ax.axhline(threshold, ls=":", color="gray", lw=1)
    ax.text(
        0.99,
        threshold * 1.15,
        f"divergence threshold: {DIVERGENCE_FACTOR:g}x the loss at step 1",
        transform=ax.get_yaxis_transform(),
        ha="right",
        va="bottom",
        fontsize=8,
        color="gray",
    )
    if notes:
        ax.text(
            0.99,
            threshold / 1.4,
            "\n".join(notes),
            transform=ax.get_yaxis_transform(),
            ha="right",
            va="top",
            fontsize=9,
            color="tab:red",
            linespacing=1.3,
        )
