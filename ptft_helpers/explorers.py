"""The two knobs that matter most, explored: the latent size and the learning rate.

Plain functions that return the numbers a figure shows (``plots.plot_latent_sizes`` and
``plots.plot_learning_rates`` draw them; ``widgets`` puts them behind sliders):

* ``explore_latent_size(latent_dim)`` trains a small autoencoder on a fixed subset of the
  training images and returns its test reconstruction error and 8 reconstructions;
* ``explore_learning_rate(lr)`` trains the same autoencoder briefly with one learning rate
  and returns every step's training loss and where (if at all) it diverged.

Training reuses ``training.pretrain`` (Adam, MSE, batches of 128). Results are cached per
argument values for the life of the Python process, so going back to a value is instant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from .data import dataset_info, load
from .models import build_autoencoder
from .seeding import seeded
from .settings import pick
from .training import TrainingDiverged, check_learning_rate, evaluate, pretrain, reconstruct
from .validation import whole_number

LATENT_SIZES: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
N_SHOWN = 8  # test images shown beside their reconstructions
DIVERGENCE_FACTOR = 20.0
"""A run counts as diverged at the first step whose loss is NaN/infinite or more than this many
times the loss of step 1 (the untrained model's loss). Measured on this model: Adam at lr = 1e-2
peaks at about 8x and recovers, lr >= 1.8e-2 jumps by 100x or more at step 2."""

_latent_cache: dict[tuple, dict] = {}
_lr_cache: dict[tuple, dict] = {}


def clear_cache() -> None:
    """Forget every cached explorer result (the next call trains again)."""
    _latent_cache.clear()
    _lr_cache.clear()


def latent_size_settings() -> dict:
    """Defaults for ``explore_latent_size``: one pass over 30,000 training images in batches of 256 (118 Adam
    steps at lr 2e-3), scored on all 10,000 test images; in fast mode 4,000 images (16 steps), 1,000 test images.

    Chosen for speed: fewer, larger steps with a larger learning rate than the pretraining recipe (batches of 128,
    lr 1e-3, 20 epochs). benchmarks/README.md has the measured update times. Every size is still undertrained;
    the test error still falls from each size to the next."""
    return {"train_size": pick(30000, 4000), "epochs": 1, "test_size": pick(10000, 1000), "lr": 2e-3, "batch_size": 256}


def learning_rate_settings() -> dict:
    """Defaults for ``explore_learning_rate``: one pass over 12,800 images (100 steps of 128 images), latent size 32;
    in fast mode 2,560 images (20 steps)."""
    return {"train_size": pick(12800, 2560), "epochs": 1, "latent_dim": 32, "batch_size": 128}


def fixed_test_images(labels: torch.Tensor, n: int = N_SHOWN) -> torch.Tensor:
    """Indices of the first test image of each of the classes 0, 1, ..., n-1 (the same every time)."""
    return torch.stack([torch.nonzero(labels == c).flatten()[0] for c in range(n)])


def _fresh_autoencoder(latent_dim: int, seed: int):
    """The untrained MLP autoencoder for ``seed``: the same weights every time, global random state untouched."""
    with seeded(seed):
        return build_autoencoder("mlp", latent_dim)


def _train_briefly(model, images: torch.Tensor, **recipe) -> dict[str, list[float]]:
    """``training.pretrain`` of ``model`` on ``images`` with ``recipe`` (epochs, lr, batch_size, seed, device), no
    progress bar; returns its history."""
    return pretrain(model, images, **recipe, progress=False)


def explore_latent_size(
    latent_dim: int,
    *,
    train_size: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    dataset: str = "fashion-mnist",
    test_size: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Train an MLP autoencoder (784-256-``latent_dim``) briefly and measure how well it reconstructs.

    It trains with Adam on the first ``train_size`` training images for ``epochs`` epochs and
    scores the first ``test_size`` test images (defaults: ``latent_size_settings()``).
    Returns ``{"latent_dim", "test_mse" (mean squared error per pixel, pixels in [0, 1]),
    "originals" (uint8 (8, 28, 28): one test image of each of the classes 0-7),
    "reconstructions" (float (8, 28, 28) in [0, 1]), "train_loss" (last epoch's mean),
    "train_size", "epochs", "seconds" (training and scoring time), "cached"}``.
    Results are cached per argument values: asking again returns them at once (``cached=True``).
    """
    defaults = latent_size_settings()
    train_size = defaults["train_size"] if train_size is None else train_size
    epochs = defaults["epochs"] if epochs is None else epochs
    test_size = defaults["test_size"] if test_size is None else test_size
    lr = check_learning_rate(defaults["lr"] if lr is None else lr)
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    name = dataset_info(dataset).name
    key = (name, latent_dim, train_size, epochs, test_size, seed, lr, batch_size)
    if key in _latent_cache:
        return {**_latent_cache[key], "cached": True}
    model = _fresh_autoencoder(latent_dim, seed)  # checks latent_dim before any data is loaded
    train, test = load(name, "train"), load(name, "test")
    whole_number(train_size, "train_size", 1, len(train))
    whole_number(test_size, "test_size", 1, len(test))
    start = time.perf_counter()
    recipe = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "device": device}
    history = _train_briefly(model, train.images[:train_size], **recipe)
    test_mse = evaluate(model, test.images[:test_size], device=device)["mse"]
    shown = test.images[fixed_test_images(test.labels)]
    result = {
        "latent_dim": latent_dim,
        "test_mse": float(test_mse),
        "originals": shown.clone(),
        "reconstructions": reconstruct(model, shown, device=device),
        "train_loss": history["train_loss"][-1],
        "train_size": train_size,
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
        "cached": False,
    }
    _latent_cache[key] = result
    return dict(result)


def find_divergence(step_loss: Sequence[float], factor: float = DIVERGENCE_FACTOR) -> int | None:
    """The first step (1-based) whose loss is NaN/infinite or above ``factor`` times step 1's loss; else None."""
    if not step_loss:
        return None
    limit = factor * step_loss[0] if math.isfinite(step_loss[0]) else -math.inf
    for step, loss in enumerate(step_loss, start=1):
        if not math.isfinite(loss) or loss > limit:
            return step
    return None


def _losses_until_divergence(model, images: torch.Tensor, **recipe) -> tuple[list[float], int | None, float]:
    """Train as ``_train_briefly``; return (every step's loss up to and including the divergence step, that step
    or None, the last epoch's mean loss or NaN if the run diverged)."""
    try:
        history = _train_briefly(model, images, **recipe)
        losses, final = history["step_loss"], history["train_loss"][-1]
    except TrainingDiverged as err:  # the loss became NaN/inf: pretrain stops after that epoch
        losses, final = err.history["step_loss"], math.nan
    diverged_at = find_divergence(losses)
    if diverged_at is not None:
        losses, final = losses[:diverged_at], math.nan
    return losses, diverged_at, final


def explore_learning_rate(
    lr: float,
    *,
    train_size: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    dataset: str = "fashion-mnist",
    latent_dim: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Pretrain the autoencoder briefly with learning rate ``lr`` and record the loss of every step.

    Trains on the first ``train_size`` training images for ``epochs`` epochs with Adam
    (defaults: ``learning_rate_settings()``; the same seed, so the same start, for every rate).
    Divergence: the run counts as diverged at the first step whose loss is NaN or infinite,
    or more than ``DIVERGENCE_FACTOR`` (20) times the loss at step 1; the loss curve is cut
    there, as you would stop such a run. Returns ``{"lr", "step_loss" (list, up to the
    divergence step if any), "diverged_at" (step number or None), "final_loss" (mean loss
    of the last epoch, NaN if diverged), "steps" (steps planned), "batch_size", "seconds", "cached"}``.
    Raises ``ValueError`` if ``lr`` is not a positive, finite number.
    """
    lr = check_learning_rate(lr)
    defaults = learning_rate_settings()
    train_size = defaults["train_size"] if train_size is None else train_size
    epochs = defaults["epochs"] if epochs is None else epochs
    latent_dim = defaults["latent_dim"] if latent_dim is None else latent_dim
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    name = dataset_info(dataset).name
    key = (name, float(f"{lr:.12g}"), train_size, epochs, latent_dim, batch_size, seed)
    if key in _lr_cache:
        return {**_lr_cache[key], "step_loss": list(_lr_cache[key]["step_loss"]), "cached": True}
    model = _fresh_autoencoder(latent_dim, seed)  # checks latent_dim before any data is loaded
    train = load(name, "train")
    whole_number(train_size, "train_size", 1, len(train))
    start = time.perf_counter()
    recipe = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "device": device}
    losses, diverged_at, final = _losses_until_divergence(model, train.images[:train_size], **recipe)
    result = {
        "lr": lr,
        "step_loss": [float(v) for v in losses],
        "diverged_at": diverged_at,
        "final_loss": float(final),
        "steps": epochs * -(-train_size // batch_size),
        "batch_size": batch_size,
        "seconds": time.perf_counter() - start,
        "cached": False,
    }
    _lr_cache[key] = result
    return {**result, "step_loss": list(result["step_loss"])}
