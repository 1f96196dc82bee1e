"""Classifiers on fixed features: an L2-regularised linear probe (logistic regression), and label spreading over a
k-NN graph of the unlabelled images (notebook 07).

With 100 labels, a classifier on frozen features trains in well under a second, so its settings (the weight
decay, or the spreading's k and alpha) are chosen on a validation set in every trial: ``select_and_score`` for
the probe, ``spread_and_score`` for spreading over a ``SpreadingGraph``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .seeding import seeded
from .validation import positive_int

WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)  # the linear probe's grid, the same in every notebook
SPREAD_SETTINGS = ((10, 0.9), (10, 0.99), (20, 0.9), (20, 0.99))  # label spreading's grid: (neighbours k, alpha)


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


def select_and_score(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
) -> dict:
    """Fit the linear probe at every weight decay, keep the one with the best validation accuracy (ties: the lower
    validation cross-entropy, then the earlier weight decay in the grid), score it on the test set once. Every
    argument is a ``(features, labels)`` pair. Returns the chosen ``weight_decay`` with its ``val_acc``,
    ``val_loss`` and ``test_acc``. With no validation images (one label per class), give one weight decay: it is
    used as it is, and ``val_acc`` and ``val_loss`` are NaN."""
    if not weight_decays:
        raise ValueError("Give at least one weight decay to choose from.")
    if len(val[1]) == 0 and len(weight_decays) != 1:
        raise ValueError("Without validation images nothing can be chosen: give a single weight decay.")
    scored = []
    for wd in weight_decays:
        probe = fit_linear_probe(*train, wd)
        if len(val[1]):
            logits = probe(val[0])
            scored.append((accuracy(logits, val[1]), float(F.cross_entropy(logits, val[1])), wd, probe))
        else:
            scored.append((math.nan, math.nan, wd, probe))
    best_val, best_loss, wd, probe = min(scored, key=lambda s: (-s[0], s[1])) if len(val[1]) else scored[0]
    test_acc = accuracy(probe(test[0]), test[1])
    return {"weight_decay": wd, "val_acc": best_val, "val_loss": best_loss, "test_acc": test_acc}


def knn_graph(
    features: torch.Tensor, k: int, *, queries: torch.Tensor | None = None, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most cosine-similar rows of ``features`` (N, D) for each row of ``queries`` (default: ``features``
    itself, leaving each row out of its own list). Returns ``(neighbours, similarities)``, both (M, k).

    Computed ``chunk`` query rows at a time, so the (M, N) similarity matrix is never held whole.
    """
    positive_int(k, "k")
    z = F.normalize(features.float(), dim=1)
    own = queries is None
    q = z if own else F.normalize(queries.float(), dim=1)
    if k > len(z) - own:
        raise ValueError(f"k={k} neighbours asked for, but only {len(z) - own} candidate rows exist.")
    neighbours, similarities = [], []
    for start in range(0, len(q), chunk):
        sims = q[start : start + chunk] @ z.T  # (chunk, N) cosines
        if own:
            rows = torch.arange(len(sims))
            sims[rows, rows + start] = -2.0  # below any cosine: a row is never its own neighbour
        top, idx = sims.topk(k, dim=1)
        neighbours.append(idx)
        similarities.append(top)
    return torch.cat(neighbours), torch.cat(similarities)


def graph_weights(neighbours: torch.Tensor, similarities: torch.Tensor, power: float = 3.0) -> torch.Tensor:
    """The symmetric, normalised affinity matrix D^-1/2 W D^-1/2 of a k-NN graph, as a sparse (N, N) CSR tensor.

    W links each row to its neighbours with weight max(cosine, 0) ** ``power`` (Iscen et al., 2019), made
    symmetric (W + W^T); D is the diagonal of W's row sums.
    """
    n, k = neighbours.shape
    rows = torch.arange(n).repeat_interleave(k)
    w = torch.sparse_coo_tensor(
        torch.stack([rows, neighbours.flatten()]),
        similarities.clamp_min(0).pow(power).flatten(),
        (n, n),
        check_invariants=True,
    )
    w = (w + w.t()).coalesce()
    d = torch.sparse.sum(w, 1).to_dense().clamp_min(1e-12).rsqrt()  # D^-1/2
    i, j = w.indices()
    s = torch.sparse_coo_tensor(w.indices(), d[i] * w.values() * d[j], (n, n), check_invariants=True).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is used for one product only
        warnings.simplefilter("ignore", UserWarning)
        return s.to_sparse_csr()  # row-compressed: S @ F is about 9 times faster than with COO on a CPU


def label_spreading(
    weights: torch.Tensor,
    labelled: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 0.99,
    iterations: int = 20,
    num_classes: int = 10,
) -> torch.Tensor:
    """Label spreading (Zhou et al., 2004) over a graph from ``graph_weights``: class scores (N, C) for every node.

    Starts from Y, one-hot rows for the ``labelled`` nodes and zeros elsewhere, and repeats
    F <- alpha * S F + (1 - alpha) * Y: each node takes the weighted mean of its neighbours' scores, while the
    labelled nodes keep pulling towards their labels. Rows are returned normalised to sum to 1 (0 where nothing
    reached a node).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}.")
    positive_int(iterations, "iterations")
    if len(labelled) != len(labels):
        raise ValueError(f"{len(labelled)} labelled nodes but {len(labels)} labels: they must match one to one.")
    y = torch.zeros(weights.shape[0], num_classes)
    y[labelled, labels] = 1.0
    scores = y.clone()
    for _ in range(iterations):
        scores = alpha * (weights @ scores) + (1 - alpha) * y
    return scores / scores.sum(1, keepdim=True).clamp_min(1e-12)


def spread_predict(
    scores: torch.Tensor, neighbours: torch.Tensor, similarities: torch.Tensor, power: float = 3.0
) -> torch.Tensor:
    """Classes for new rows (test images, not in the graph): their graph neighbours' spread scores, weighted as
    in ``graph_weights``. ``neighbours``/``similarities`` come from ``knn_graph(graph_features, k, queries=new)``."""
    weights = similarities.clamp_min(0).pow(power).unsqueeze(2)  # (M, k, 1)
    return (scores[neighbours] * weights).sum(1).argmax(1)


@dataclass(frozen=True)
class SpreadingGraph:
    """A k-NN graph of the unlabelled images, ready for ``spread_and_score``: ``weights[k]`` is S for k neighbours;
    each test image's ``test_neighbours`` / ``test_similarities`` (its largest k) classify it from the spread scores."""

    weights: dict[int, torch.Tensor]
    test_neighbours: torch.Tensor
    test_similarities: torch.Tensor


def spreading_graph(
    pool: torch.Tensor, test: torch.Tensor, *, ks: Sequence[int] = (10, 20), dims: int = 256
) -> SpreadingGraph:
    """The graph of ``pool`` (N, D) features for each k in ``ks``, and the test rows' neighbours in it.

    Features with more than ``dims`` numbers are first projected on their top ``dims`` principal components (fitted
    on the pool, by the randomised ``torch.pca_lowrank``, seeded so that a rerun builds the same graph; the features
    are assumed centred, e.g. standardised).
    """
    if pool.shape[1] > dims:
        with seeded(0):  # pca_lowrank draws its random projection from the global generator
            _, _, v = torch.pca_lowrank(pool, q=dims, center=False)
        pool, test = pool @ v, test @ v
    neighbours, similarities = knn_graph(pool, max(ks))
    test_neighbours, test_similarities = knn_graph(pool, max(ks), queries=test)
    weights = {k: graph_weights(neighbours[:, :k], similarities[:, :k]) for k in ks}
    return SpreadingGraph(weights, test_neighbours, test_similarities)


def spread_and_score(
    graph: SpreadingGraph,
    labelled: torch.Tensor,
    val: torch.Tensor,
    pool_labels: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    settings: Sequence[tuple[int, float]] = SPREAD_SETTINGS,
) -> dict:
    """Label spreading from the ``labelled`` pool images at each (k, alpha) of ``settings``; the one with the best
    accuracy on the ``val`` pool images (which are unlabelled to the spreading) is scored on the test set once.
    Only the labels of ``labelled`` and ``val`` are read. With no validation images give one setting (``val_acc``
    is then NaN). Returns the chosen ``k``, ``alpha``, ``val_acc`` and ``test_acc``."""
    if len(val) == 0 and len(settings) != 1:
        raise ValueError("Without validation images nothing can be chosen: give a single (k, alpha).")
    if not settings:
        raise ValueError("No settings to try: give at least one (k, alpha).")
    missing = sorted({k for k, _ in settings} - set(graph.weights))
    if missing:
        raise ValueError(f"The graph has no k = {missing}: build it with spreading_graph(..., ks=...) including them.")
    best = None
    for k, alpha in settings:
        scores = label_spreading(graph.weights[k], labelled, pool_labels[labelled], alpha=alpha)
        val_acc = accuracy(scores[val], pool_labels[val]) if len(val) else math.nan
        if best is None or val_acc > best[0]:  # first best on ties: the grid's order decides
            best = (val_acc, k, alpha, scores)
    val_acc, k, alpha, scores = best
    predicted = spread_predict(scores, graph.test_neighbours[:, :k], graph.test_similarities[:, :k])
    return {"k": k, "alpha": alpha, "val_acc": val_acc, "test_acc": accuracy(predicted, test_labels)}
