"""Label spreading over a k-NN graph (probes.knn_graph, graph_weights, label_spreading, spread_predict)."""

import math

import pytest
import torch

from ptft_helpers.probes import (
    SpreadingGraph,
    graph_weights,
    knn_graph,
    label_spreading,
    spread_and_score,
    spread_predict,
    spreading_graph,
)


def two_clusters(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points near (1, 0, 0) (class 0) and near (0, 1, 0) (class 1), interleaved."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return centres[labels] + 0.1 * torch.randn(n, 3, generator=g), labels


def test_knn_graph_matches_a_brute_force_search_and_leaves_each_row_out():
    x, _ = two_clusters(30)
    neighbours, sims = knn_graph(x, 4, chunk=7)  # chunks that do not divide 30
    z = torch.nn.functional.normalize(x, dim=1)
    full = z @ z.T
    full.fill_diagonal_(-2)
    top, idx = full.topk(4, dim=1)
    # Chunks round differently from the full product: a cosine of unit 3-vectors moves by up to about 3 * 2^-24
    # (float32's bound for 3 products and their sum), so two that differ by less than 1e-6 could swap places. This
    # data has no such near-ties among each row's 5 nearest (checked here), so the lists must be identical.
    five = full.topk(5, dim=1).values
    assert (five[:, :-1] - five[:, 1:]).min() > 1e-6
    assert torch.equal(neighbours, idx)
    assert torch.allclose(sims, top, rtol=0, atol=1e-6)
    assert not (neighbours == torch.arange(30)[:, None]).any()


def test_knn_graph_for_queries_keeps_identical_rows():
    x, _ = two_clusters(20)
    neighbours, sims = knn_graph(x, 1, queries=x[:5])
    assert torch.equal(neighbours.flatten(), torch.arange(5))
    assert torch.allclose(sims, torch.ones(5, 1))


def test_knn_graph_rejects_more_neighbours_than_rows():
    with pytest.raises(ValueError, match="only 4 candidate rows"):
        knn_graph(torch.randn(5, 3), 5)


def test_spreading_equals_the_dense_formula():
    x, labels = two_clusters(24)
    neighbours, sims = knn_graph(x, 5)
    w = torch.zeros(24, 24)
    for i in range(24):
        for j, s in zip(neighbours[i], sims[i]):
            w[i, j] += max(float(s), 0.0) ** 3
    w = w + w.T
    d = w.sum(1).rsqrt()
    s_dense = d[:, None] * w * d[None, :]
    assert torch.allclose(graph_weights(neighbours, sims).to_dense(), s_dense, atol=1e-6)

    labelled = torch.tensor([0, 1])
    y = torch.zeros(24, 10)
    y[labelled, labels[labelled]] = 1
    f = y.clone()
    for _ in range(15):
        f = 0.9 * s_dense @ f + 0.1 * y
    f = f / f.sum(1, keepdim=True)
    spread = label_spreading(graph_weights(neighbours, sims), labelled, labels[labelled], alpha=0.9, iterations=15)
    assert torch.allclose(spread, f, atol=1e-5)


def test_two_labels_spread_to_their_whole_clusters_and_to_new_points():
    x, labels = two_clusters(60)
    neighbours, sims = knn_graph(x, 6)
    scores = label_spreading(graph_weights(neighbours, sims), torch.tensor([0, 1]), labels[:2])
    assert torch.equal(scores.argmax(1), labels)
    new, new_labels = two_clusters(20, seed=1)
    q_neighbours, q_sims = knn_graph(x, 6, queries=new)
    assert torch.equal(spread_predict(scores, q_neighbours, q_sims), new_labels)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
def test_spreading_rejects_an_alpha_outside_zero_one(alpha):
    x, labels = two_clusters(10)
    with pytest.raises(ValueError, match="alpha"):
        label_spreading(graph_weights(*knn_graph(x, 3)), torch.tensor([0]), labels[:1], alpha=alpha)


def test_spread_and_score_chooses_on_validation_and_reads_no_other_label():
    x, labels = two_clusters(60)
    new, new_labels = two_clusters(20, seed=1)
    graph = spreading_graph(x, new, ks=(3, 6), dims=2)  # 3 features: projected on their top 2 directions first
    assert set(graph.weights) == {3, 6} and graph.test_neighbours.shape == (20, 6)
    labelled, val = torch.tensor([0, 1]), torch.arange(2, 20)
    hidden = labels.clone()
    hidden[20:] = 7  # labels that the spreading must not read: neither labelled nor validation
    settings = ((3, 0.9), (6, 0.9), (6, 0.99))
    out = spread_and_score(graph, labelled, val, hidden, new_labels, settings=settings)
    each = [spread_and_score(graph, labelled, val, hidden, new_labels, settings=(s,))["val_acc"] for s in settings]
    assert (out["k"], out["alpha"]) == settings[each.index(max(each))]  # the first of the best on validation
    assert out["val_acc"] == max(each) == 1.0 and out["test_acc"] == 1.0
    alone = spread_and_score(graph, labelled, val[:0], hidden, new_labels, settings=((6, 0.99),))
    assert math.isnan(alone["val_acc"]) and alone["test_acc"] == 1.0
    with pytest.raises(ValueError, match="single"):
        spread_and_score(graph, labelled, val[:0], hidden, new_labels)


def test_spread_and_score_takes_the_setting_that_is_best_on_validation_wherever_it_is_in_the_grid():
    # Pool nodes 0 and 1 are labelled (classes 0 and 1); 2 and 3 validate (classes 0 and 1). With k = 1 each
    # validation node hangs on the wrong labelled node, with k = 2 on the right one.
    def graph(pairs):
        weights = torch.zeros(4, 4)
        for a, b in pairs:
            weights[a, b] = weights[b, a] = 1.0
        return weights

    built = SpreadingGraph(
        weights={1: graph([(2, 1), (3, 0)]), 2: graph([(2, 0), (3, 1)])},
        test_neighbours=torch.tensor([[0, 0], [1, 1]]),
        test_similarities=torch.ones(2, 2),
    )
    labels, labelled, val = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3])
    for settings in (((1, 0.5), (2, 0.5)), ((2, 0.5), (1, 0.5))):
        out = spread_and_score(built, labelled, val, labels, torch.tensor([0, 1]), settings=settings)
        assert (out["k"], out["val_acc"], out["test_acc"]) == (2, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"The graph has no k = \[5\]"):
        spread_and_score(built, labelled, val, labels, torch.tensor([0, 1]), settings=((5, 0.5),))
    with pytest.raises(ValueError, match="No settings to try"):
        spread_and_score(built, labelled, val, labels, torch.tensor([0, 1]), settings=())


def test_a_graph_on_reduced_features_is_the_same_whatever_the_random_state():
    # Features longer than `dims` are reduced by the randomised torch.pca_lowrank: seeded, so that a rerun of a
    # notebook builds the same graph, whatever random numbers were drawn before.
    gen = torch.Generator().manual_seed(0)
    pool, test = torch.randn(300, 40, generator=gen), torch.randn(20, 40, generator=gen)
    graphs = []
    for state in (1, 2):
        torch.manual_seed(state)
        graphs.append(spreading_graph(pool, test, ks=(5,), dims=8))
    assert torch.equal(graphs[0].test_neighbours, graphs[1].test_neighbours)
    assert torch.equal(graphs[0].weights[5].to_dense(), graphs[1].weights[5].to_dense())
