"""The plain explorer functions: what they train, return and cache."""

from __future__ import annotations

import math

import pytest
import torch

from ptft_helpers import explorers, plots
from ptft_helpers.training import TrainingDiverged

# Small runs: about a second each on a laptop CPU, whatever PTFT_FAST says.
LATENT = {"train_size": 1000, "epochs": 1, "test_size": 500}
LR = {"train_size": 512, "epochs": 1}


@pytest.fixture(autouse=True, scope="module")
def fresh_cache():
    """Results are shared between these tests (as in a notebook); tests about the cache clear it first."""
    explorers.clear_cache()
    yield
    explorers.clear_cache()


def figure_texts(fig) -> list[str]:
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in texts if t]


# --- explore_latent_size -------------------------------------------------------------------------


def test_explore_latent_size_returns_what_it_plots():
    explorers.clear_cache()
    rng_before = torch.random.get_rng_state()
    small, large = explorers.explore_latent_size(2, **LATENT), explorers.explore_latent_size(32, **LATENT)
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
    first = explorers.explore_latent_size(4, **LATENT, seed=2)  # seeds no other test uses: not cached yet
    again = explorers.explore_latent_size(4, **LATENT, seed=2)
    assert first["cached"] is False
    assert again["cached"] is True and again["test_mse"] == first["test_mse"]
    assert torch.equal(again["reconstructions"], first["reconstructions"])
    other_seed = explorers.explore_latent_size(4, **LATENT, seed=3)
    assert other_seed["cached"] is False and other_seed["test_mse"] != first["test_mse"]


@pytest.mark.parametrize(
    "bad",
    [
        {"latent_dim": 0},
        {"latent_dim": 1000},
        {"latent_dim": 2.5},
        {"latent_dim": 8, "train_size": 0},
        {"latent_dim": 8, "train_size": 10**6},
        {"latent_dim": 8, "dataset": "cifar"},
    ],
)
def test_explore_latent_size_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        explorers.explore_latent_size(**{**LATENT, **bad})


def test_latent_defaults_follow_fast_mode(monkeypatch):
    monkeypatch.setenv("PTFT_FAST", "1")
    fast = explorers.latent_size_settings()
    monkeypatch.delenv("PTFT_FAST")
    full = explorers.latent_size_settings()
    assert fast["train_size"] * fast["epochs"] < full["train_size"] * full["epochs"]


# --- explore_learning_rate -----------------------------------------------------------------------


def test_explore_learning_rate_records_every_step():
    explorers.clear_cache()
    result = explorers.explore_learning_rate(1e-3, **LR)
    assert result["lr"] == 1e-3 and result["diverged_at"] is None
    assert len(result["step_loss"]) == result["steps"] == 4  # 512 images in batches of 128, one epoch
    assert all(math.isfinite(v) for v in result["step_loss"])
    assert result["step_loss"][-1] < result["step_loss"][0]
    assert math.isfinite(result["final_loss"])
    assert explorers.explore_learning_rate(1e-3, **LR)["cached"] is True


def test_an_extreme_learning_rate_diverges_without_a_traceback():
    result = explorers.explore_learning_rate(1.0, **LR)
    assert result["diverged_at"] == 2  # Adam's first step with lr=1 throws the loss up by ~1e15
    assert len(result["step_loss"]) == 2
    assert math.isnan(result["final_loss"])
    fig = plots.plot_learning_rates({1.0: result})
    assert "lr = 1: diverged at step 2" in figure_texts(fig)


def test_a_nan_loss_counts_as_divergence(monkeypatch):
    def fake_pretrain(model, images, **kwargs):
        raise TrainingDiverged(1, 3, kwargs["lr"], {"step_loss": [0.2, 0.3, math.nan, math.nan]})

    monkeypatch.setattr(explorers, "pretrain", fake_pretrain)
    result = explorers.explore_learning_rate(0.5, **LR)
    assert result["diverged_at"] == 3 and math.isnan(result["final_loss"])
    assert result["step_loss"][:2] == [0.2, 0.3]


@pytest.mark.parametrize("lr", [0, -1e-3, math.nan, math.inf, True, "0.1", None])
def test_explore_learning_rate_rejects_bad_rates(lr):
    with pytest.raises(ValueError, match="learning rate"):
        explorers.explore_learning_rate(lr, **LR)


@pytest.mark.parametrize(
    "losses, expected",
    [
        ([], None),
        ([0.2, 0.1, 0.05], None),
        ([0.2, 3.9, 0.1], None),  # 3.9 < 20 x 0.2
        ([0.2, 0.1, 4.1], 3),
        ([0.2, math.inf], 2),
        ([0.2, 0.1, math.nan], 3),
        ([math.nan], 1),
    ],
)
def test_find_divergence(losses, expected):
    assert explorers.find_divergence(losses) == expected
