"""PCA and the linear autoencoder, for Baldi & Hornik (1989).

Their result: a *linear* autoencoder trained with squared error has no bad local minima,
and at its optimum the decoder spans the same k-dimensional subspace as the top k
principal components, so it reconstructs exactly as well as rank-k PCA. Its weights are
not the principal components themselves: any invertible k x k mixing of the code gives
the same reconstructions. So we compare *errors* and *subspaces* (principal angles),
never weights.

All data here are float tensors ``x`` of shape (N, D), e.g. images in [0, 1] with D = 784.
PCA centres the data first (subtracts the mean image), which matches an autoencoder with
biases. Errors are mean squared errors per pixel, like ``F.mse_loss``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .seeding import seeded
from .validation import positive_int, whole_number


def _check_data(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(
            f"x must be a float tensor of shape (N, D), got {type(x).__name__} "
            f"{tuple(getattr(x, 'shape', ()))}. Use data.to_inputs(images) for images."
        )
    if len(x) < 2:
        raise ValueError(f"PCA needs at least 2 examples, got {len(x)}.")
    return x


def _check_k(k: int, dim: int) -> int:
    return whole_number(k, "k", 0, dim)


def _eigen(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, >= 0) and eigenvectors (columns) of the covariance of ``x``, in float64."""
    xc = x.double() - x.double().mean(0)
    cov = xc.T @ xc / len(x)  # (D, D), divided by N: eigenvalues are variances per direction
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    # Fix each vector's sign (largest entry positive) so that results repeat exactly.
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))
    return values, vectors * signs


def explained_variances(x: torch.Tensor) -> torch.Tensor:
    """The variance of ``x`` along each principal direction (covariance eigenvalues), largest first, float64 (D,)."""
    return _eigen(_check_data(x))[0]


def pca_error_curve(x: torch.Tensor, ks: Sequence[int]) -> list[float]:
    """``pca_reconstruction_error(x, k)`` for every k in ``ks``, from one eigendecomposition."""
    x = _check_data(x)
    values, _ = _eigen(x)
    dim = x.shape[1]
    total = float(values.sum())
    return [max(total - float(values[: _check_k(k, dim)].sum()), 0.0) / dim for k in ks]


def pca_reconstruction_error(x: torch.Tensor, k: int) -> float:
    """Mean squared error per value of the best rank-k reconstruction of centred ``x`` (rank-k PCA).

    Equals (sum of the covariance eigenvalues beyond the k-th) / D. k = 0 keeps only the
    mean image; k = D reconstructs perfectly (error 0).
    """
    return pca_error_curve(x, [k])[0]


def principal_subspace(x: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k principal directions of ``x`` as orthonormal columns, shape (D, k), in ``x``'s dtype."""
    x = _check_data(x)
    _check_k(k, x.shape[1])
    _, vectors = _eigen(x)
    return vectors[:, :k].to(x.dtype)


def pca_reconstruct(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rank-k PCA reconstructions of the rows of ``x``: mean + projection onto the top-k directions."""
    basis = principal_subspace(x, k).double()
    mean = x.double().mean(0)
    return (mean + (x.double() - mean) @ basis @ basis.T).to(x.dtype)


class LinearAutoencoder(nn.Module):
    """x (N, D) -> z = W_e x + b_e (N, k) -> x_hat = W_d z + b_d (N, D). No activation anywhere."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.encoder = nn.Linear(dim, k)
        self.decoder = nn.Linear(k, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def decoder_basis(self) -> torch.Tensor:
        """The decoder's weight (D, k): its columns span the subspace that reconstructions lie in (shifted by b_d)."""
        return self.decoder.weight.detach()


def train_linear_autoencoder(
    x: torch.Tensor,
    k: int,
    steps: int = 2000,
    lr: float = 1e-2,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    mean_init: bool = True,
) -> tuple[LinearAutoencoder, float]:
    """Train a ``LinearAutoencoder`` with k code units on ``x`` with MSE and Adam; return it and its final error.

    ``batch_size=None`` uses the full batch; otherwise minibatches are drawn at random.
    ``mean_init`` starts the biases where they will end up (decoder bias = mean of ``x``,
    encoder bias = -W_e @ mean, so the code starts centred); the biases are trained like every
    other weight, this only saves the steps of finding the mean. With ``mean_init=False`` they
    start at PyTorch's default initialisation.
    The learning rate follows a cosine schedule from ``lr`` down to 0 over ``steps``, so that
    the last steps settle into the minimum instead of hovering around it. The final error is
    the MSE per value on all of ``x`` (compare it with ``pca_reconstruction_error(x, k)``).
    The model is returned on the CPU, in evaluation mode.
    """
    x = _check_data(x)
    if _check_k(k, x.shape[1]) < 1:
        raise ValueError(f"k must be at least 1 for an autoencoder, got {k!r}.")
    positive_int(steps, "steps")
    if batch_size is not None:
        positive_int(batch_size, "batch_size (or None for the full batch)")
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):
        model = LinearAutoencoder(x.shape[1], k).to(x.device)
    if mean_init:
        with torch.no_grad():
            mean = x.mean(0)
            model.decoder.bias.copy_(mean)
            model.encoder.bias.copy_(-model.encoder.weight @ mean)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for _ in range(steps):
        if batch_size is None or batch_size >= len(x):
            xb = x
        else:
            xb = x[torch.randint(len(x), (batch_size,), generator=generator).to(x.device)]
        loss = F.mse_loss(model(xb), xb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        error = float(F.mse_loss(model(x).double(), x.double()))
    return model.cpu(), error


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal angles between the column spaces of ``a`` (D, ka) and ``b`` (D, kb).

    Orthonormalise both (QR), then the singular values of Qa^T Qb are the cosines of the
    angles. Returns ``(cosines, degrees)``, each of length min(ka, kb), smallest angle first,
    in float64. 0 degrees: a shared direction; 90 degrees: orthogonal.
    """
    for name, m in (("a", a), ("b", b)):
        if not isinstance(m, torch.Tensor) or m.ndim != 2:
            raise ValueError(f"{name} must be a matrix (D, k) whose columns span a subspace.")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"The subspaces live in different spaces: a has {a.shape[0]} rows, b has {b.shape[0]}.")
    qa = torch.linalg.qr(a.detach().double().cpu()).Q
    qb = torch.linalg.qr(b.detach().double().cpu()).Q
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(0.0, 1.0)
    return cosines, torch.rad2deg(torch.arccos(cosines))
