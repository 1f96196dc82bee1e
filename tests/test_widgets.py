"""The latent-size and learning-rate explorers: the plain functions, the figures, and the widgets
driven from Python (set a slider, check the output area and the numbers)."""

from __future__ import annotations

import base64
import math

import ipywidgets
import pytest
import torch

from ptft_helpers import widgets as w
from ptft_helpers.training import TrainingDiverged

# Small runs: about a second each on a laptop CPU, whatever PTFT_FAST says.
LATENT = {"train_size": 1000, "epochs": 1, "test_size": 500}
LR = {"train_size": 512, "epochs": 1}


@pytest.fixture(autouse=True, scope="module")
def fresh_cache():
    """Results are shared between these tests (as in a notebook); tests about the cache clear it first."""
    w.clear_cache()
    yield
    w.clear_cache()


def figure_png(explorer: w._Explorer) -> bytes:
    """The PNG shown in an explorer's output area (exactly one output: the figure)."""
    (output,) = explorer.output.outputs
    return base64.b64decode(output["data"]["image/png"])


def figure_texts(fig) -> list[str]:
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in texts if t]


# --- explore_latent_size -------------------------------------------------------------------------


def test_explore_latent_size_returns_what_it_plots():
    w.clear_cache()
    rng_before = torch.random.get_rng_state()
    small, large = w.explore_latent_size(2, **LATENT), w.explore_latent_size(32, **LATENT)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "the global random state must not change"
    for result, dim in ((small, 2), (large, 32)):
        assert result["latent_dim"] == dim
        assert result["originals"].dtype == torch.uint8 and result["originals"].shape == (8, 28, 28)
        recon = result["reconstructions"]
        assert recon.dtype == torch.float32 and recon.shape == (8, 28, 28)
        assert 0 <= float(recon.min()) and float(recon.max()) <= 1
        assert math.isfinite(result["test_mse"]) and 0 < result["test_mse"] < 0.25
        assert result["seconds"] > 0 and result["cached"] is False
    assert torch.equal(small["originals"], large["originals"]), "the same fixed test images for every size"
    assert large["test_mse"] < small["test_mse"], "a 32-number code should reconstruct better than a 2-number one"


def test_explore_latent_size_caches_per_arguments():
    first = w.explore_latent_size(4, **LATENT, seed=2)  # seeds no other test uses: not cached yet
    again = w.explore_latent_size(4, **LATENT, seed=2)
    assert first["cached"] is False
    assert again["cached"] is True and again["test_mse"] == first["test_mse"]
    assert torch.equal(again["reconstructions"], first["reconstructions"])
    other_seed = w.explore_latent_size(4, **LATENT, seed=3)
    assert other_seed["cached"] is False and other_seed["test_mse"] != first["test_mse"]


@pytest.mark.parametrize("bad", [{"latent_dim": 0}, {"latent_dim": 1000}, {"latent_dim": 2.5},
                                 {"latent_dim": 8, "train_size": 0}, {"latent_dim": 8, "train_size": 10**6},
                                 {"latent_dim": 8, "dataset": "cifar"}])
def test_explore_latent_size_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        w.explore_latent_size(**{**LATENT, **bad})


def test_latent_defaults_follow_fast_mode(monkeypatch):
    monkeypatch.setenv("PTFT_FAST", "1")
    fast = w.latent_size_settings()
    monkeypatch.delenv("PTFT_FAST")
    full = w.latent_size_settings()
    assert fast["train_size"] * fast["epochs"] < full["train_size"] * full["epochs"]


# --- explore_learning_rate -----------------------------------------------------------------------


def test_explore_learning_rate_records_every_step():
    w.clear_cache()
    result = w.explore_learning_rate(1e-3, **LR)
    assert result["lr"] == 1e-3 and result["diverged_at"] is None
    assert len(result["step_loss"]) == result["steps"] == 4  # 512 images in batches of 128, one epoch
    assert all(math.isfinite(v) for v in result["step_loss"])
    assert result["step_loss"][-1] < result["step_loss"][0]
    assert math.isfinite(result["final_loss"])
    assert w.explore_learning_rate(1e-3, **LR)["cached"] is True


def test_an_extreme_learning_rate_diverges_without_a_traceback():
    result = w.explore_learning_rate(1.0, **LR)
    assert result["diverged_at"] == 2  # Adam's first step with lr=1 throws the loss up by ~1e15
    assert len(result["step_loss"]) == 2
    assert math.isnan(result["final_loss"])
    fig = w.plot_learning_rates({1.0: result})
    assert "lr = 1: diverged at step 2" in figure_texts(fig)


def test_a_nan_loss_counts_as_divergence(monkeypatch):
    def fake_pretrain(model, images, **kwargs):
        raise TrainingDiverged(1, 3, kwargs["lr"], {"step_loss": [0.2, 0.3, math.nan, math.nan]})

    monkeypatch.setattr(w, "pretrain", fake_pretrain)
    result = w.explore_learning_rate(0.5, **LR)
    assert result["diverged_at"] == 3 and math.isnan(result["final_loss"])
    assert result["step_loss"][:2] == [0.2, 0.3]


@pytest.mark.parametrize("lr", [0, -1e-3, math.nan, math.inf, True, "0.1", None])
def test_explore_learning_rate_rejects_bad_rates(lr):
    with pytest.raises(ValueError, match="learning rate"):
        w.explore_learning_rate(lr, **LR)


@pytest.mark.parametrize("losses, expected", [
    ([], None), ([0.2, 0.1, 0.05], None), ([0.2, 3.9, 0.1], None),  # 3.9 < 20 x 0.2
    ([0.2, 0.1, 4.1], 3), ([0.2, math.inf], 2), ([0.2, 0.1, math.nan], 3), ([math.nan], 1),
])
def test_find_divergence(losses, expected):
    assert w.find_divergence(losses) == expected


# --- figures ---------------------------------------------------------------------------------------


def test_figures_have_titles_and_labelled_axes():
    lat = {d: w.explore_latent_size(d, **LATENT) for d in (2, 32)}
    lr = {r: w.explore_learning_rate(r, **LR) for r in (1e-3, 1.0)}
    for fig in (w.plot_latent_sizes(lat), w.plot_learning_rates(lr)):
        curve = [ax for ax in fig.get_axes() if ax.get_xlabel()][0]
        assert curve.get_title() and curve.get_ylabel()
    with pytest.raises(ValueError):
        w.plot_latent_sizes({})


# --- the widgets, driven from Python ---------------------------------------------------------------


def test_latent_size_explorer_updates_on_the_slider():
    w.clear_cache()
    explorer = w.latent_size_explorer(sizes=(2, 8, 32), value=2, **LATENT)
    assert isinstance(explorer, ipywidgets.VBox) and explorer.widget is explorer
    assert isinstance(explorer.slider, ipywidgets.SelectionSlider)
    assert explorer.slider.continuous_update is False
    assert list(explorer.slider.options) == [("2", 2), ("8", 8), ("32", 32)]
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()
    before_png, before = figure_png(explorer), explorer.results[2]

    explorer.slider.value = 8
    assert list(explorer.results) == [2, 8]
    assert explorer.results[8]["test_mse"] != before["test_mse"]
    assert figure_png(explorer) != before_png
    assert "latent size 8" in explorer.status.value and "trained in" in explorer.status.value
    assert not explorer.slider.disabled

    explorer.slider.value = 2  # back to a size already tried: from the cache
    assert "from the cache" in explorer.status.value
    assert explorer.results[2]["test_mse"] == before["test_mse"]


def test_explorer_shows_progress_while_training(monkeypatch):
    seen = []
    real = w.explore_latent_size

    def spy(latent_dim, **kwargs):
        seen.append((explorer.status.value, explorer.slider.disabled))
        return real(latent_dim, **kwargs)

    explorer = w.latent_size_explorer(sizes=(2, 4), value=2, **LATENT)
    monkeypatch.setattr(w, "explore_latent_size", spy)
    explorer.slider.value = 4
    assert seen == [("⏳ training an autoencoder with latent size 4…", True)]


def test_learning_rate_explorer_shows_divergence_not_a_traceback():
    explorer = w.learning_rate_explorer(**LR)
    slider = explorer.slider
    assert isinstance(slider, ipywidgets.FloatLogSlider) and slider.continuous_update is False
    assert (slider.base, slider.min, slider.max) == (10, -5, 0)
    assert list(explorer.results) == [1e-3]
    before = figure_png(explorer)

    slider.value = 1.0
    assert explorer.error is None
    assert explorer.results[1.0]["diverged_at"] == 2
    assert "diverged at step 2" in explorer.status.value
    assert "diverged at step 2" in explorer.output.outputs[0]["data"]["text/plain"]
    assert figure_png(explorer) != before

    slider.value = 10**-4.5  # shown and cached as 3.16e-05
    assert list(explorer.results) == [1e-3, 1.0, 3.16e-05]
    assert explorer.results[3.16e-05]["diverged_at"] is None


def test_a_failing_update_becomes_a_message(monkeypatch):
    explorer = w.learning_rate_explorer(**LR)

    def broken(lr, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(w, "explore_learning_rate", broken)
    explorer.slider.value = 0.1  # must not raise
    assert "out of memory" in explorer.status.value
    assert "out of memory" in explorer.output.outputs[0]["data"]["text/plain"]
    assert isinstance(explorer.error, RuntimeError) and not explorer.slider.disabled


def test_explorers_reject_unknown_keywords():
    with pytest.raises(TypeError):
        w.latent_size_explorer(epoch=3)  # a typo for epochs: an error now, not a message later


def test_explorers_reject_bad_starting_values():
    with pytest.raises(ValueError, match="not one of the sizes"):
        w.latent_size_explorer(sizes=(2, 4), value=3)
    with pytest.raises(ValueError, match="learning rate"):
        w.learning_rate_explorer(value=0)
