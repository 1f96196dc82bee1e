"""ptft_helpers.mae_trials: the trials of notebook 08 (proposed as tests/test_mae_trials.py by helper A2)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ptft_helpers import vit
from ptft_helpers.mae_trials import Budget, Pool, draw_rows, fixed_settings, network_trial, pooled_features
from ptft_helpers.seeding import seeded

TINY = vit.ViTConfig(width=16, depth=1, heads=2, decoder_width=8, decoder_depth=1, decoder_heads=2)


def _data(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.arange(n) % 10


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"lrs": ()}, "lrs"),
        ({"lrs": (0.0,)}, "lrs"),
        ({"steps": 0}, "steps"),
        ({"steps": 12}, "multiple"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_a_bad_budget_is_one_clear_line(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        Budget(**{"lrs": (1e-3,), "steps": 10, "batch_size": 8, "check_every": 5, **kwargs})


def test_pooled_features_are_the_cls_token_or_the_mean_of_the_patches():
    with seeded(0):
        encoder = vit.ViTEncoder(TINY).eval()
    x, _ = _data(7)
    with torch.no_grad():
        tokens = encoder(x)  # (7, 17, 16)
    assert torch.allclose(pooled_features(encoder, x, "tokens", batch_size=3), tokens, atol=1e-6)
    assert torch.allclose(pooled_features(encoder, x, "cls"), tokens[:, 0], atol=1e-6)
    assert torch.allclose(pooled_features(encoder, x, "mean"), tokens[:, 1:].mean(1), atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        pooled_features(encoder, x, "max")


def test_a_network_trial_chooses_on_validation_and_scores_the_test_set_once():
    # two classes, told apart by a bright left half; the test labels are flipped, so the rate that learns is the
    # best on validation and the worst on test: a trial that chose on the test set would choose the other rate
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 2
    x = 0.2 * torch.rand(60, 28, 28, generator=g)
    x[y == 1, :, :14] += 0.8
    x = x.reshape(60, 784)
    train, val, test = (x[:30], y[:30]), (x[30:40], y[30:40]), (x[40:], 1 - y[40:])
    budget = Budget(lrs=(1e-5, 1e-2), steps=20, batch_size=8, check_every=5)
    make = lambda: vit.ViTClassifier(TINY)  # noqa: E731
    r = network_trial(make, train, val, test, budget, seed=0)
    assert r["lr"] in budget.lrs and r["best_step"] in (5, 10, 15, 20)
    assert 0 <= r["val_acc"] <= 1 and 0 <= r["test_acc"] <= 1 and math.isfinite(r["val_loss"])
    # each rate alone (the same seed: the same run as inside the trial) reports its best check and its test score
    alone = {lr: network_trial(make, train, val, test, replace(budget, lrs=(lr,)), seed=0) for lr in budget.lrs}
    # the choice: accuracy on validation, then the lower cross-entropy, then the earlier rate
    on_val = min(budget.lrs, key=lambda lr: (-alone[lr]["val_acc"], alone[lr]["val_loss"], budget.lrs.index(lr)))
    on_test = max(budget.lrs, key=lambda lr: alone[lr]["test_acc"])
    assert on_val != on_test, alone  # the data tell a choice on validation from one on test
    assert r == alone[on_val], (r, alone)  # chosen on validation; its test score is that run's, scored once
    again = network_trial(make, train, val, test, budget, seed=0)
    assert again == r  # the same seed, the same trial


def test_without_validation_a_network_needs_a_fixed_setting():
    x, y = _data(30)
    budget = Budget(lrs=(1e-3,), steps=10, batch_size=8, check_every=5)
    empty = (x[:0], y[:0])
    make = lambda: vit.ViTClassifier(TINY)  # noqa: E731
    r = network_trial(make, (x[:20], y[:20]), empty, (x[20:], y[20:]), budget, seed=0, fixed=(1e-3, 7))
    assert (r["lr"], r["best_step"]) == (1e-3, 7) and math.isnan(r["val_acc"])
    with pytest.raises(ValueError, match="fixed"):
        network_trial(make, (x[:20], y[:20]), empty, (x[20:], y[20:]), budget, seed=0)


def test_fixed_settings_take_the_most_frequent_choice_at_20_labels():
    rows = [
        {"labels": 20, "method": "probe", "setting": 0.1},
        {"labels": 20, "method": "probe", "setting": 0.1},
        {"labels": 20, "method": "probe", "setting": 1.0},
        {"labels": 20, "method": "net", "setting": 1e-3, "best_step": 20},
        {"labels": 20, "method": "net", "setting": 1e-3, "best_step": 40},
        {"labels": 20, "method": "net", "setting": 1e-4, "best_step": 80},
        {"labels": 100, "method": "probe", "setting": 3.0},
    ]
    assert fixed_settings(rows) == {"probe": 0.1, "net": (1e-3, 30)}
    with pytest.raises(ValueError, match="No rows at 20"):
        fixed_settings(rows[-1:])


def test_draw_rows_gives_every_method_one_row_on_the_same_draw():
    x, y = _data(200)
    features = {"pixels + linear": (x, x[:50])}
    pool = Pool(x, y, x[:50], y[:50], features)
    budget = Budget(lrs=(1e-3,), steps=5, batch_size=8, check_every=5)
    rows = draw_rows(pool, 40, 10, 0, {"net": lambda: vit.ViTClassifier(TINY)}, budget, info={"pretrain_run": 0})
    assert [r["method"] for r in rows] == ["pixels + linear", "net"]
    assert all(r["labels"] == 40 and r["n_train"] == 30 and r["n_val"] == 10 and r["pretrain_run"] == 0 for r in rows)
