"""The explorers' sliders, driven from Python: set a slider, check the output area and the numbers."""

from __future__ import annotations

import base64

import ipywidgets
import pytest

from ptft_helpers import explorers
from ptft_helpers import widgets as w

# Small runs: about a second each on a laptop CPU, whatever PTFT_FAST says.
LATENT = {"train_size": 1000, "epochs": 1, "test_size": 500}
LR = {"train_size": 512, "epochs": 1}


@pytest.fixture(autouse=True, scope="module")
def fresh_cache():
    explorers.clear_cache()
    yield
    explorers.clear_cache()


def figure_png(explorer: w.Explorer) -> bytes:
    """The PNG shown in an explorer's output area (exactly one output: the figure)."""
    (output,) = explorer.output.outputs
    return base64.b64decode(output["data"]["image/png"])


# --- the widgets, driven from Python ---------------------------------------------------------------


def test_latent_size_explorer_updates_on_the_slider():
    explorers.clear_cache()
    explorer = w.latent_size_explorer(sizes=(2, 8, 32), value=2, **LATENT)
    assert isinstance(explorer, ipywidgets.VBox)
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
    explorer = w.latent_size_explorer(sizes=(2, 4), value=2, **LATENT)
    real = explorer.explore

    def spy(latent_dim):
        seen.append((explorer.status.value, explorer.slider.disabled))
        return real(latent_dim)

    monkeypatch.setattr(explorer, "explore", spy)
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

    def broken(lr):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(explorer, "explore", broken)
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
