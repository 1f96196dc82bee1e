"""PCA, principal angles and the linear autoencoder (Baldi & Hornik, 1989)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ptft_helpers.pca import (
    LinearAutoencoder,
    explained_variances,
    pca_error_curve,
    pca_reconstruct,
    pca_reconstruction_error,
    principal_angles,
    principal_subspace,
    train_linear_autoencoder,
)


def low_rank_data(n: int = 400, dim: int = 20, rank: int = 3, noise: float = 0.01, seed: int = 0):
    """Image-like points (mean 0.3) near a rank-``rank`` affine subspace; returns (x, true basis (dim, rank))."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=g)).Q
    scales = torch.tensor([0.5, 0.3, 0.15, 0.1, 0.05][:rank])
    codes = torch.randn(n, rank, generator=g) * scales
    x = 0.3 + codes @ basis.T + noise * torch.randn(n, dim, generator=g)
    return x, basis


def test_pca_error_matches_an_explicit_reconstruction():
    x, _ = low_rank_data()
    for k in (0, 1, 3, 7):
        explicit = float(F.mse_loss(pca_reconstruct(x.double(), k), x.double()))
        assert pca_reconstruction_error(x, k) == pytest.approx(explicit, rel=1e-6, abs=1e-12)


def test_pca_error_at_k0_is_the_variance_and_at_k_equal_d_is_zero():
    x, _ = low_rank_data()
    assert pca_reconstruction_error(x, 0) == pytest.approx(float(x.double().var(0, unbiased=False).mean()), rel=1e-9)
    assert pca_reconstruction_error(x, x.shape[1]) == pytest.approx(0.0, abs=1e-12)


def test_pca_error_decreases_with_k():
    x, _ = low_rank_data()
    curve = pca_error_curve(x, range(x.shape[1] + 1))
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[2] > curve[3] * 5  # the third direction carries real signal, the fourth only noise
    assert curve == [pca_reconstruction_error(x, k) for k in range(x.shape[1] + 1)]


def test_explained_variances_sum_to_the_total_and_give_the_errors():
    x, _ = low_rank_data()
    values = explained_variances(x)
    assert values.shape == (x.shape[1],) and bool((values[:-1] >= values[1:]).all())
    dim = x.shape[1]
    assert float(values[3:].sum()) / dim == pytest.approx(pca_reconstruction_error(x, 3), rel=1e-9)


def test_principal_subspace_is_orthonormal_and_finds_the_true_subspace():
    x, basis = low_rank_data()
    u = principal_subspace(x, 3)
    assert u.shape == (20, 3) and u.dtype == x.dtype
    assert torch.allclose(u.T @ u, torch.eye(3), atol=1e-5)
    _, degrees = principal_angles(u, basis)
    assert float(degrees.max()) < 2.0


def test_principal_subspace_repeats_exactly():
    x, _ = low_rank_data()
    assert torch.equal(principal_subspace(x, 4), principal_subspace(x.clone(), 4))


def test_principal_angles_known_cases():
    e = torch.eye(4)
    cos, deg = principal_angles(e[:, :2], e[:, :2] @ torch.tensor([[2.0, 1.0], [1.0, 3.0]]))  # same plane, mixed
    assert torch.allclose(cos, torch.ones(2, dtype=torch.float64)) and float(deg.max()) < 1e-5
    cos, deg = principal_angles(e[:, :2], e[:, 2:])  # orthogonal planes
    assert torch.allclose(deg, torch.full((2,), 90.0, dtype=torch.float64))
    tilted = torch.tensor([[math.cos(math.radians(30))], [0.0], [math.sin(math.radians(30))], [0.0]])
    cos, deg = principal_angles(e[:, :2], tilted)  # a line 30 degrees out of the plane
    assert deg.shape == (1,) and float(deg[0]) == pytest.approx(30.0, abs=1e-6)
    _, deg = principal_angles(e[:, :1], e[:, :3])  # a line inside a 3-d subspace
    assert float(deg[0]) == pytest.approx(0.0, abs=1e-6)


def test_principal_angles_rejects_mismatched_spaces():
    with pytest.raises(ValueError, match="different spaces"):
        principal_angles(torch.eye(4)[:, :2], torch.eye(5)[:, :2])


def test_linear_autoencoder_reaches_pca_error_and_subspace():
    """Baldi & Hornik: the trained linear autoencoder is as good as PCA, in the same subspace."""
    x, _ = low_rank_data()
    pca_error = pca_reconstruction_error(x, 3)
    model, error = train_linear_autoencoder(x, 3, steps=2000, lr=5e-2, seed=0)
    assert isinstance(model, LinearAutoencoder)
    assert pca_error * (1 - 1e-4) <= error <= pca_error * 1.05
    with torch.no_grad():
        assert error == pytest.approx(float(F.mse_loss(model(x), x)), rel=1e-4)
    _, degrees = principal_angles(principal_subspace(x, 3), model.decoder_basis())
    assert float(degrees.max()) < 5.0


def test_linear_autoencoder_with_minibatches():
    x, _ = low_rank_data()
    _, error = train_linear_autoencoder(x, 3, steps=2000, lr=1e-2, seed=1, batch_size=64)
    assert error <= pca_reconstruction_error(x, 3) * 1.10


def test_linear_autoencoder_without_mean_init_gets_there_too():
    """Starting the biases at the mean only saves steps; PyTorch's default start reaches PCA as well."""
    x, _ = low_rank_data()
    _, error = train_linear_autoencoder(x, 3, steps=2000, lr=5e-2, seed=0, mean_init=False)
    assert error <= pca_reconstruction_error(x, 3) * 1.05


def test_linear_autoencoder_cannot_beat_pca():
    # Too few dimensions to capture the signal: still never below PCA's optimum.
    x, _ = low_rank_data()
    pca_error = pca_reconstruction_error(x, 1)
    _, error = train_linear_autoencoder(x, 1, steps=1000, lr=5e-2, seed=0)
    assert error >= pca_error * (1 - 1e-4)
    assert error <= pca_error * 1.05


def test_undertrained_autoencoder_is_worse_than_pca():
    x, _ = low_rank_data()
    _, error = train_linear_autoencoder(x, 3, steps=5, lr=1e-3, seed=0)
    assert error > 2 * pca_reconstruction_error(x, 3)


def test_training_is_seeded():
    x, _ = low_rank_data()
    a, err_a = train_linear_autoencoder(x, 2, steps=50, seed=3)
    b, err_b = train_linear_autoencoder(x, 2, steps=50, seed=3)
    assert err_a == err_b and torch.equal(a.decoder.weight, b.decoder.weight)


def test_mixing_the_code_changes_weights_not_reconstructions():
    x, _ = low_rank_data()
    model, _ = train_linear_autoencoder(x, 3, steps=100, lr=3e-2, seed=0)
    mix = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [0.5, 0.0, 2.0]])  # det = 4
    mixed = LinearAutoencoder(20, 3)
    with torch.no_grad():
        mixed.encoder.weight.copy_(mix @ model.encoder.weight)
        mixed.encoder.bias.copy_(mix @ model.encoder.bias)
        mixed.decoder.weight.copy_(model.decoder.weight @ torch.linalg.inv(mix))
        mixed.decoder.bias.copy_(model.decoder.bias)
        assert torch.allclose(mixed(x), model(x), atol=1e-5)
    assert not torch.allclose(mixed.decoder.weight, model.decoder.weight, atol=1e-2)
    _, degrees = principal_angles(mixed.decoder_basis(), model.decoder_basis())
    assert float(degrees.max()) < 0.01


@pytest.mark.parametrize("k", [-1, 21, 2.5, True])
def test_bad_k_is_rejected(k):
    x, _ = low_rank_data()
    with pytest.raises(ValueError, match="k must be"):
        pca_reconstruction_error(x, k)


def test_bad_data_is_rejected():
    with pytest.raises(ValueError, match="to_inputs"):
        pca_reconstruction_error(torch.zeros(10, 28, 28), 2)
    with pytest.raises(ValueError, match="to_inputs"):
        principal_subspace(torch.zeros(10, 784, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="k must be at least 1"):
        train_linear_autoencoder(torch.rand(10, 4), 0)
