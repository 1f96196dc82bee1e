"""The notebook-05 experiment: batched training, the labelled split, the jobs, the paired gains."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ptft_helpers import experiments as ex
from ptft_helpers import probes, protocol
from ptft_helpers.data import balanced_subset, to_inputs
from ptft_helpers.models import Classifier, build_autoencoder
from ptft_helpers.probes import WEIGHT_DECAYS, accuracy, fit_linear_probe
from ptft_helpers.seeding import seeded
from ptft_helpers.sweep import Job, score_on_test, train_stack
from ptft_helpers.training import corrupt, evaluate, finetune

# A model trained in a stack must be the model trained alone. The stack runs the same arithmetic in another
# order (batched matrix products, Adam written out), so the weights differ in their last bits, and Adam, which
# divides by the root of each weight's squared gradients, can enlarge that in weights whose gradients are near
# zero. Measured after 20 steps on AVX-512, AVX2 and plain (ATEN_CPU_CAPABILITY=default) kernels: test logits
# within 5e-6 of each other. We allow LOGIT_TOLERANCE, 20 times that. Predictions can then differ only on test
# images whose two largest logits are within twice the gap (near-ties), and the accuracies by no more than those.
LOGIT_TOLERANCE = 1e-4


def agree_up_to_ties(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, int]:
    """(largest logit difference, accuracy difference, near-tie images) of two classifiers' logits (N, C)."""
    gap = float((a - b).abs().max())
    top2 = a.topk(2, dim=1).values
    near_ties = int((top2[:, 0] - top2[:, 1] <= 2 * gap).sum())
    return gap, abs(accuracy(a, labels) - accuracy(b, labels)), near_ties


@pytest.fixture(scope="module")
def small(fashion):
    train, test = fashion["train"], fashion["test"]
    idx = balanced_subset(train.labels, 200, seed=3)
    return train.images[idx], train.labels[idx], test.images[:2000], test.labels[:2000]


def test_a_batched_run_scores_what_it_scores_trained_alone(small):
    images, labels, test_images, test_labels = small
    x, xt = to_inputs(images), to_inputs(test_images)
    setups = [(0, 1e-3), (1, 3e-3), (2, 3e-4)]
    models = []
    for seed, _ in setups:
        with seeded(seed):
            models.append(Classifier(build_autoencoder().encoder))
    alone, alone_logits = [], []
    for model, (seed, lr) in zip(models, setups):
        clf = copy.deepcopy(model)
        finetune(clf, images, labels, epochs=5, lr=lr, batch_size=64, seed=seed, progress=False)  # 4 steps/epoch
        alone.append(evaluate(clf, test_images, test_labels)["accuracy"])
        with torch.no_grad():
            alone_logits.append(clf.eval()(xt))
    jobs = [
        Job(copy.deepcopy(m), x, labels, x[:20], labels[:20], xt, test_labels, lr, seed)
        for m, (seed, lr) in zip(models, setups)
    ]
    trained = train_stack(jobs, steps=20, batch_size=64, check_every=20)
    batched = score_on_test(jobs, trained)
    for model, result, logits, a, b in zip(models, trained, alone_logits, alone, batched):
        twin = copy.deepcopy(model)
        twin.load_state_dict(result.params)
        with torch.no_grad():
            gap, accuracy_gap, near_ties = agree_up_to_ties(logits, twin.eval()(xt), test_labels)
        assert gap <= LOGIT_TOLERANCE, gap
        assert abs(a - b) == pytest.approx(accuracy_gap, abs=1e-9) and accuracy_gap * len(xt) <= near_ties
    assert len(set(alone)) == 3  # three different runs, not one result three times


def test_agreement_up_to_ties_sees_a_real_difference():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 1.001]])
    labels = torch.tensor([0, 1, 1])
    assert agree_up_to_ties(logits, logits.clone(), labels) == (0.0, 0.0, 0)
    other = logits + torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.002, 0.0]])  # flips the near-tie only
    gap, accuracy_gap, near_ties = agree_up_to_ties(logits, other, labels)
    assert gap == pytest.approx(0.002, rel=1e-4) and accuracy_gap == pytest.approx(1 / 3) and near_ties == 1
    assert agree_up_to_ties(logits, -logits, labels)[0] > LOGIT_TOLERANCE


def test_early_stopping_keeps_the_best_validation_check(small):
    images, labels, test_images, test_labels = small
    x = to_inputs(images)
    with seeded(0):
        model = Classifier(build_autoencoder().encoder)
    # A huge learning rate: validation accuracy goes up and down, so the best check is not always the last.
    job = Job(model, x[:100], labels[:100], x[100:], labels[100:], to_inputs(test_images), test_labels, 3e-2, 0)
    (trained,) = train_stack([job], steps=40, batch_size=100, check_every=5)
    steps = [s for s, _, _ in trained.curve]
    assert steps == list(range(5, 41, 5))
    best = max(trained.curve, key=lambda c: (c[1], -c[2]))
    assert (trained.best_step, trained.val_acc) == (best[0], pytest.approx(best[1]))
    # The kept weights are the ones from that check: rescoring them on validation gives its accuracy.
    clf = copy.deepcopy(model)
    clf.load_state_dict(trained.params)
    assert evaluate(clf, images[100:], labels[100:])["accuracy"] == pytest.approx(trained.val_acc)


def test_stack_refuses_jobs_of_different_sizes(small):
    images, labels, *_ = small
    x = to_inputs(images)
    head = torch.nn.Linear(784, 10)
    jobs = [
        Job(head, x[:50], labels[:50], x[:10], labels[:10], x, labels, 1e-3, 0),
        Job(head, x[:60], labels[:60], x[:10], labels[:10], x, labels, 1e-3, 0),
    ]
    with pytest.raises(ValueError, match="same number"):
        train_stack(jobs, steps=2, batch_size=8, check_every=1)
    with pytest.raises(ValueError, match="steps"):
        train_stack(jobs[:1], steps=0, batch_size=8, check_every=1)


def test_split_is_balanced_disjoint_and_counts_against_n(fashion):
    labels = fashion["train"].labels
    train_idx, val_idx = ex.split_labelled(labels, 100, 20, seed=4)
    assert len(train_idx) == 80 and len(val_idx) == 20
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert torch.bincount(labels[val_idx], minlength=10).tolist() == [2] * 10
    assert torch.bincount(labels[train_idx], minlength=10).tolist() == [8] * 10
    assert set(torch.cat([train_idx, val_idx]).tolist()) == set(balanced_subset(labels, 100, seed=4).tolist())
    with pytest.raises(ValueError, match="multiple of 10"):
        ex.split_labelled(labels, 100, 15, seed=0)
    with pytest.raises(ValueError, match="leaves each class a training example"):
        ex.split_labelled(labels, 20, 20, seed=0)
    one_each, none = ex.split_labelled(labels, 10, 0, seed=4)  # one label per class: nothing left to validate
    assert len(none) == 0 and torch.bincount(labels[one_each], minlength=10).tolist() == [1] * 10


def test_protocol_sizes():
    prot = ex.Protocol((20, 100, 500), 12, 6, 3, 300, 128, 15, 0.2)
    assert [len(prot.seeds(n)) for n in (20, 100, 500)] == [12, 12, 6]
    assert [prot.val_size(n) for n in (20, 50, 100, 1000)] == [10, 10, 20, 200]


def test_every_method_sees_the_same_labelled_images(fashion):
    train, test = fashion["train"].subset(torch.arange(3000)), fashion["test"].subset(torch.arange(500))
    with seeded(7):
        encoders = {"plain": [build_autoencoder().encoder, build_autoencoder().encoder]}
    jobs = ex.network_jobs(encoders, train, test, n=50, seed=3, n_val=10, cache={})
    assert {(j.info["method"], j.info["encoder"]) for j in jobs} == {("scratch", "none"), ("fine-tune", "plain")}
    assert len(jobs) == len(ex.WHOLE_LRS) * 2  # every learning rate, for each of the two networks
    assert len({tuple(j.train_y.tolist()) for j in jobs}) == 1  # every network sees the same labelled subset
    assert {j.info["pretrain_run"] for j in jobs if j.info["encoder"] == "plain"} == {1}  # seed 3 -> run 3 % 2
    assert {j.info["n_train"] for j in jobs} == {40}
    pca = ex.fit_pca(train)
    rows = ex.probe_rows(encoders, train, test, n=50, seed=3, n_val=10, pca=pca, cache={})
    assert {(r["method"], r["encoder"]) for r in rows} == {
        ("probe code", "plain"),
        ("probe code", "random"),
        ("probe hidden", "plain"),
        ("probe hidden", "random"),
        ("pixels", "none"),
        ("PCA32", "pca"),
    }
    assert {r["n_train"] for r in rows} == {40} and all(r["weight_decay"] in WEIGHT_DECAYS for r in rows)


def test_a_linear_head_row_is_logistic_regression_chosen_on_validation(fashion):
    """probe_rows' pixels row, by hand: standardise with the training images, fit every weight decay, keep the
    best on the 10 validation images, score the test set once."""
    train, test = fashion["train"].subset(torch.arange(3000)), fashion["test"].subset(torch.arange(500))
    (row,) = ex.probe_rows({}, train, test, n=50, seed=1, n_val=10, methods=("pixels",))
    tr, va = ex.split_labelled(train.labels, 50, 10, seed=1)
    x, x_test = to_inputs(train.images), to_inputs(test.images)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x, x_test = (x - mean) / std, (x_test - mean) / std
    scored = []
    for wd in WEIGHT_DECAYS:
        logits = fit_linear_probe(x[tr], train.labels[tr], wd)(x[va])
        scored.append((accuracy(logits, train.labels[va]), float(F.cross_entropy(logits, train.labels[va])), wd))
    best_val, best_loss, best_wd = max(scored, key=lambda s: (s[0], -s[1]))  # ties: the lower cross-entropy
    probe = fit_linear_probe(x[tr], train.labels[tr], best_wd)
    assert (row["weight_decay"], row["val_acc"], row["val_loss"]) == (best_wd, best_val, best_loss)
    assert row["test_acc"] == accuracy(probe(x_test), test.labels)


def test_select_and_score_breaks_accuracy_ties_by_validation_cross_entropy():
    """Two classes, one feature: every weight decay classifies the validation points alike (equal accuracy), but a
    smaller weight decay gives larger weights, hence more confident and here lower cross-entropy, so the tie goes to
    the smallest; with a validation point on the wrong side, too much confidence costs, and the tie goes to 0.1
    (cross-entropies measured: 0.45, 0.34, 0.37), neither the grid's first nor its last."""
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    y = torch.tensor([0, 0, 1, 1])
    decays = (1.0, 0.1, 0.01)
    clean = probes.select_and_score((x, y), (x, y), (x, y), weight_decays=decays)
    flipped_val = (torch.tensor([[-1.5], [1.5], [0.2]]), torch.tensor([0, 1, 0]))
    noisy = probes.select_and_score((x, y), flipped_val, (x, y), weight_decays=decays)
    assert clean["val_acc"] == 1.0 and noisy["val_acc"] == pytest.approx(2 / 3)
    assert (clean["weight_decay"], noisy["weight_decay"]) == (0.01, 0.1)


def test_paired_gains_by_hand():
    rows = []
    for seed, (base, method) in enumerate([(0.50, 0.52), (0.60, 0.61), (0.70, 0.73)]):
        common = {"labels": 100, "seed": seed, "val_counts": True}
        rows += [
            {**common, "method": "scratch", "encoder": "none", "test_acc": base},
            {**common, "method": "fine-tune", "encoder": "plain", "test_acc": method},
        ]
    (gain,) = ex.paired_gains(rows)
    # Differences 2, 1, 3 points: mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.303.
    assert gain["gain_pp"] == pytest.approx(2.0)
    assert gain["high"] - gain["gain_pp"] == pytest.approx(4.302653 / 3**0.5, abs=1e-4)
    assert gain["p_holm"] == pytest.approx(gain["p"])  # a family of one


def test_masked_rescaled_keeps_the_mean_input():
    x = torch.full((200, 784), 0.5)
    out = corrupt(x, "masked-rescaled", torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) == {0.0, 1.0}  # kept pixels doubled (mask ratio 0.5)
    assert out.mean().item() == pytest.approx(0.5, abs=0.01)
    masked = corrupt(x, "masked", torch.Generator().manual_seed(0))
    assert torch.equal(out, masked * 2)  # the same mask


def test_probe_features_are_the_frozen_encoder_layers():
    with seeded(0):
        encoder = build_autoencoder().encoder
    x = torch.rand(5, 784)
    assert torch.equal(ex.features(encoder, x, "code"), encoder(x))
    assert ex.features(encoder, x, "hidden").shape == (5, 256)
    with pytest.raises(ValueError, match="layer"):
        ex.features(encoder, x, "middle")


def test_edge_shares_count_each_end_of_the_grid():
    grid = (1e-3, 1e-2, 0.1)
    shares = protocol.edge_shares({"a": [1e-3, 1e-3, 1e-2, 0.1], "b": [1e-2]}, grid)
    assert shares == {"a": (0.5, 0.25), "b": (0.0, 0.0)}
    with pytest.raises(ValueError, match="outside the grid"):
        protocol.edge_shares({"a": [1.0]}, grid)
    with pytest.raises(ValueError, match="no trials"):
        protocol.edge_shares({"a": []}, grid)


def test_grid_edge_report_flags_only_a_pile_up(capsys):
    grid = (1, 2, 3, 4)
    at_limit = [1] * round(100 * protocol.EDGE_LIMIT) + [2] * (100 - round(100 * protocol.EDGE_LIMIT))
    piled = [4] * (round(100 * protocol.EDGE_LIMIT) + 1) + [3] * (99 - round(100 * protocol.EDGE_LIMIT))
    assert protocol.grid_edge_report({"inside": at_limit, "piled": piled}, grid, "x") == ["piled"]
    printed = capsys.readouterr().out
    assert "piles up" in printed and printed.count("piles up") == 1
