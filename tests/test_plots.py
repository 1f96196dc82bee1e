"""Figures: what each one draws, from small made-up inputs (no training here)."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.layout_engine import ConstrainedLayoutEngine

from ptft_helpers import plots
from ptft_helpers.explorers import DIVERGENCE_FACTOR

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig) -> list[str]:
    found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in found if t]


def images(n: int, dtype=torch.uint8) -> torch.Tensor:
    x = torch.arange(n * 784).reshape(n, 28, 28) % 256
    return x.to(dtype) if dtype == torch.uint8 else x.float() / 255


def latent_result(dim: int, mse: float) -> dict:
    return {"latent_dim": dim, "test_mse": mse, "originals": images(8), "reconstructions": images(8, torch.float32)}


def lr_result(lr: float, losses: list[float], diverged_at: int | None = None) -> dict:
    return {"lr": lr, "step_loss": losses, "diverged_at": diverged_at, "batch_size": 128}


def test_every_figure_uses_constrained_layout():
    figures = [
        plots.show_images(images(3)),
        plots.show_image_rows({"a": images(2)}),
        plots.plot_history({"epoch": [1], "train_loss": [0.1]}),
        plots.plot_label_efficiency({"m": {10: [50.0, 52.0], 100: [60.0, 61.0]}}),
        plots.plot_latent_sizes({2: latent_result(2, 0.05)}),
        plots.plot_learning_rates({1e-3: lr_result(1e-3, [0.2, 0.1])}),
    ]
    for fig in figures:
        assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)


def test_show_images_captions_with_class_names():
    fig = plots.show_images(images(5), torch.tensor([0, 1, 2, 1, 0]), ("zero", "one", "two"), ncols=4, title="five")
    shown = [ax for ax in fig.get_axes() if ax.images]
    assert len(shown) == 5 and len(fig.get_axes()) == 8  # two rows of four, three left empty
    assert [ax.get_title() for ax in shown] == ["zero", "one", "two", "one", "zero"]
    assert fig._suptitle.get_text() == "five"
    # uint8 images are scaled to [0, 1]
    assert float(shown[0].images[0].get_array().max()) <= 1.0


def test_show_image_rows_names_each_row():
    fig = plots.show_image_rows({"original": images(3), "reconstruction": images(2, torch.float32)})
    axes = fig.get_axes()
    assert len(axes) == 6 and sum(bool(ax.images) for ax in axes) == 5
    assert axes[0].get_ylabel() == "original" and axes[3].get_ylabel() == "reconstruction"


def test_plot_history_one_or_several():
    history = {"epoch": [1, 2], "train_loss": [0.3, 0.2], "val_loss": [0.35, 0.3], "val_acc": [0.5, 0.6]}
    (ax,) = plots.plot_history(history, keys=("train_loss", "val_loss")).get_axes()
    assert [line.get_label() for line in ax.get_lines()] == ["train loss", "validation loss"]
    (ax,) = plots.plot_history({"a": history, "b": history}, keys=("val_acc",), logy=True).get_axes()
    assert [line.get_label() for line in ax.get_lines()] == ["a validation accuracy", "b validation accuracy"]
    assert ax.get_yscale() == "log"


def test_plot_label_efficiency_draws_a_line_and_a_band_per_method():
    curves = {m: {n: [50 + n / 10 + d, 51 + n / 10 - d] for n in (10, 100)} for m, d in (("a", 0.5), ("b", 2.0))}
    (ax,) = plots.plot_label_efficiency(curves).get_axes()
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert ax.get_ylabel() == "test accuracy (%)"
    (a, b) = ax.get_lines()
    assert list(a.get_xdata()) == [10, 100] and list(a.get_ydata()) == [51.5, 60.5]  # the means
    assert len(ax.collections) == 2  # one confidence band per method


def test_plot_latent_sizes_marks_the_current_size():
    results = {2: latent_result(2, 0.05), 32: latent_result(32, 0.01)}
    fig = plots.plot_latent_sizes(results, current=2)
    assert any("latent size 2 (test MSE 0.0500)" in t for t in texts(fig))
    (curve,) = [ax for ax in fig.get_axes() if ax.get_xlabel()]
    assert curve.get_title() == "Test error vs latent size" and curve.get_ylabel()
    line, marker = curve.get_lines()
    assert list(line.get_xdata()) == [2, 32] and list(line.get_ydata()) == [0.05, 0.01]
    assert list(marker.get_xdata()) == [2]
    assert any("latent size 32" in t for t in texts(plots.plot_latent_sizes(results)))  # default: the last
    with pytest.raises(ValueError, match="No results"):
        plots.plot_latent_sizes({})


def test_plot_learning_rates_marks_divergence():
    results = {1e-3: lr_result(1e-3, [0.2, 0.1, 0.05]), 1.0: lr_result(1.0, [0.2, math.inf], diverged_at=2)}
    fig = plots.plot_learning_rates(results, current=1.0)
    (ax,) = fig.get_axes()
    assert "lr = 1: diverged at step 2" in texts(fig)
    assert f"divergence threshold: {DIVERGENCE_FACTOR:g}x the loss at step 1" in texts(fig)
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "training step (one batch of 128 images)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lr = 0.001", "lr = 1: diverged at step 2"]
    with pytest.raises(ValueError, match="No results"):
        plots.plot_learning_rates({})
