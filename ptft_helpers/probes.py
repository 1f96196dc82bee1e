"""Classifiers on fixed features: an L2-regularised linear probe (logistic regression) and k nearest neighbours.

With 100 labels, a classifier on frozen features trains in well under a second, so its one
hyper-parameter (the weight decay, or k) can be chosen on a validation set for every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def standardizer(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per feature of (unlabelled) ``features`` (N, D), for ``(f - mean) / std``."""
    return features.mean(0), features.std(0).clamp_min(1e-6)


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, weight_decay: float, *, num_classes: int = 10, max_iter: int = 200
) -> torch.nn.Linear:
    """Multinomial logistic regression (cross-entropy + ``weight_decay`` / 2 * ||W||^2) fitted exactly with L-BFGS."""
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels: they must match one to one.")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
    x, y = features.float(), labels.long()
    probe = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x), y) + weight_decay / 2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a problem this small only loses time to hand-offs between threads
    try:
        with torch.enable_grad():
            optimizer.step(closure)
    finally:
        torch.set_num_threads(threads)
    return probe.requires_grad_(False)


def accuracy(logits_or_predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction correct, from logits (N, C) or predicted classes (N,)."""
    pred = logits_or_predictions.argmax(1) if logits_or_predictions.ndim == 2 else logits_or_predictions
    return float((pred == labels).float().mean())


def knn_predict(
    train_features: torch.Tensor, train_labels: torch.Tensor, features: torch.Tensor, k: int, *, num_classes: int = 10
) -> torch.Tensor:
    """Class of each row of ``features``: a vote of its ``k`` most cosine-similar training rows (ties: nearest wins)."""
    k = min(k, len(train_features))
    sims = F.normalize(features.float(), dim=1) @ F.normalize(train_features.float(), dim=1).T  # (N, M)
    top, idx = sims.topk(k, dim=1)
    votes = torch.zeros(len(features), num_classes).scatter_add_(1, train_labels[idx], 1 + 1e-3 * top)
    return votes.argmax(1)


def select_and_score(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    weight_decays: Sequence[float],
    ks: Sequence[int] = (),
) -> dict:
    """Choose the probe (a weight decay, or a k for k-NN) with the best validation accuracy; score it on test once.

    Every argument is a ``(features, labels)`` pair. Returns the chosen setting, its validation and test accuracy.
    """
    candidates = []
    for wd in weight_decays:
        probe = fit_linear_probe(*train, wd)
        candidates.append(({"probe": "linear", "weight_decay": wd}, lambda f, p=probe: p(f)))
    for k in ks:
        candidates.append(({"probe": "knn", "k": k}, lambda f, k=k: knn_predict(*train, f, k)))
    if not candidates:
        raise ValueError("Give at least one weight decay or one k to choose from.")
    scored = [(accuracy(predict(val[0]), val[1]), setting, predict) for setting, predict in candidates]
    best_val, setting, predict = max(scored, key=lambda s: s[0])  # first best on ties: the grid's order decides
    return {**setting, "val_acc": best_val, "test_acc": accuracy(predict(test[0]), test[1])}
