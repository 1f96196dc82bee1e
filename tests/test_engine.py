"""The training engine (``engine.fit``) on a tiny regression: steps and epochs, checks, early stopping, divergence,
and the batch order a seed gives."""

import copy
import math

import pytest
import torch
from torch import nn

from ptft_helpers import training
from ptft_helpers.engine import TrainingDiverged, adam, fit, shuffled_batches

N = 10


def problem(seed=0):
    """A linear model, 10 rows of linear data and a ``batch_loss`` that records every batch of indices it is given."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, generator=gen)
    y = x @ torch.randn(3, 1, generator=gen) + 1.0  # a linear model fits it exactly
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    seen = []

    def batch_loss(idx):
        seen.append(idx.clone())
        return nn.functional.mse_loss(model(x[idx]), y[idx])

    return model, batch_loss, seen


def run(seed=0, wrap=None, make_check=None, **kwargs):
    """``fit`` on ``problem()``; ``wrap(batch_loss, seen)`` replaces the batch loss, ``make_check(model)`` gives the
    check."""
    model, batch_loss, seen = problem()
    if wrap is not None:
        batch_loss = wrap(batch_loss, seen)
    if make_check is not None:
        kwargs["check"] = make_check(model)
    settings = {"batch_size": 4, "generator": torch.Generator().manual_seed(seed), "device": "cpu", "progress": False}
    history = fit(model, batch_loss, N, adam(model.parameters(), 1e-2, "cpu"), **{**settings, **kwargs})
    return history, model, seen


def test_epochs_mode_records_every_step_and_the_mean_per_epoch():
    history, _, seen = run(epochs=3)
    assert history["epoch"] == [1, 2, 3] and len(history["seconds"]) == 3
    assert [len(idx) for idx in seen] == [4, 4, 2] * 3  # 10 rows in batches of 4
    assert len(history["step_loss"]) == 9
    for epoch in range(3):
        steps = torch.tensor(history["step_loss"][3 * epoch : 3 * epoch + 3])
        assert history["train_loss"][epoch] == pytest.approx(float(steps.mean()), rel=1e-6)


def test_steps_mode_cycles_passes_and_checks_every_few_steps():
    calls = []
    history, _, seen = run(steps=7, check=lambda: calls.append(1) or {"score": float(len(calls))}, check_every=3)
    assert history["step"] == [3, 6, 7] and history["score"] == [1.0, 2.0, 3.0]
    assert len(seen) == len(history["step_loss"]) == 7
    means = [sum(history["step_loss"][a:b]) / (b - a) for a, b in ((0, 3), (3, 6), (6, 7))]
    assert history["train_loss"] == pytest.approx(means, rel=1e-6)


def test_fit_trains_and_checks_in_eval_mode_without_gradients():
    states = []

    def make_check(model):
        return lambda: states.append((model.training, torch.is_grad_enabled())) or {}

    history, model, _ = run(steps=60, check_every=20, make_check=make_check)
    assert states == [(False, False)] * 3 and model.training
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]


def test_the_batch_order_is_a_fresh_permutation_per_pass_and_repeats_under_a_seed():
    _, _, seen = run(seed=5, steps=6)
    gen = torch.Generator().manual_seed(5)
    expected = [idx for _ in range(2) for idx in torch.randperm(N, generator=gen).split(4)]
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(seen, run(seed=5, steps=6)[2], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(seen, run(seed=6, steps=6)[2]))
    assert all(
        torch.equal(a, b) for a, b in zip(seen[:3], shuffled_batches(N, 4, torch.Generator().manual_seed(5), "cpu"))
    )


@pytest.mark.parametrize(
    "scores,best",
    [
        ([3.0, 1.0, 2.0, 1.5], 2),
        ([3.0, 1.0, 1.0, 2.0], 2),
        ([1.0, 1.0, 1.0, 1.0], 1),
        ([math.nan, 2.0, 1.0, 3.0], 3),  # a NaN score is worse than any number, first or not
        ([2.0, math.nan, 1.0, math.nan], 3),
    ],
)
def test_keep_best_restores_the_weights_of_the_lowest_check_ties_to_the_earliest(scores, best):
    states = []

    def make_check(model):
        def check():
            states.append(copy.deepcopy(model.state_dict()))
            return {"val_loss": scores[len(states) - 1]}

        return check

    history, model, _ = run(epochs=4, make_check=make_check, keep_best="val_loss")
    assert history["best_epoch"] == [best] and history["val_loss"] == pytest.approx(scores, nan_ok=True)
    assert all(torch.equal(v, states[best - 1][k]) for k, v in model.state_dict().items())
    assert best == 4 or not all(torch.equal(v, states[-1][k]) for k, v in model.state_dict().items())


def test_a_check_before_the_first_step_can_win():
    start = copy.deepcopy(problem()[0].state_dict())
    scores = iter([0.0, 1.0, 2.0])
    history, model, _ = run(
        steps=4,
        check=lambda: {"val_loss": next(scores)},
        check_every=2,
        check_first=True,
        keep_best=lambda s: s["val_loss"],
    )
    assert history["step"] == [0, 2, 4] and history["best_step"] == [0] and math.isnan(history["train_loss"][0])
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_a_non_finite_loss_raises_training_diverged_where_it_happened():
    def poison(batch_loss, seen):
        def poisoned(idx):
            loss = batch_loss(idx)
            return loss * math.nan if len(seen) == 5 else loss  # step 5: epoch 2's second step

        return poisoned

    with pytest.raises(TrainingDiverged, match=r"in epoch 2 \(step 5 overall\) with learning rate 0.01") as info:
        run(epochs=3, wrap=poison)
    history = info.value.history
    assert history["epoch"] == [1] and len(history["step_loss"]) == 6 and math.isnan(history["step_loss"][4])
    assert training.TrainingDiverged is TrainingDiverged  # the name the notebooks and older code import


def test_a_pair_records_its_second_value_and_reduce_losses_sees_each_interval():
    def halve(batch_loss, seen):
        def halved(idx):
            loss = batch_loss(idx)
            return loss, loss.detach() / 2

        return halved

    reduced = []
    history, _, _ = run(steps=5, check_every=2, wrap=halve, reduce_losses=lambda t: reduced.append(len(t)))
    assert reduced == [2, 2, 1]
    plain, _, _ = run(steps=5)
    assert history["step_loss"] == pytest.approx([v / 2 for v in plain["step_loss"]], rel=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one of epochs and steps"),
        ({"epochs": 1, "steps": 1}, "exactly one of epochs and steps"),
        ({"epochs": 0}, "epochs must be"),
        ({"steps": 2, "check_every": 0, "check": dict}, "check_every must be"),
        ({"epochs": 1, "check_every": 2}, "check_every is for steps mode"),
        ({"epochs": 1, "keep_best": "val_loss"}, "give a check function"),
        ({"epochs": 1, "keep_best": "val_loss", "check": lambda: {"val_acc": 0.5}}, r"returns \['val_acc'\]"),
        ({"epochs": 1, "batch_size": 0}, "batch_size must be"),
    ],
)
def test_fit_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run(**kwargs)


def test_adam_is_fused_and_decoupled_weight_decay_makes_it_adamw():
    params = [nn.Parameter(torch.zeros(2))]
    plain, decayed = adam(params, 1e-3, "cpu"), adam(params, 1e-3, torch.device("cpu"), weight_decay=0.1)
    assert type(plain) is torch.optim.Adam and plain.defaults["fused"]
    assert type(decayed) is torch.optim.AdamW and decayed.defaults["weight_decay"] == 0.1
