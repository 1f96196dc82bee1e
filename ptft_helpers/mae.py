"""Pretraining the masked autoencoder (``vit.MaskedAutoencoder``) on unlabelled images, through ``engine.fit``.

``mae_settings()`` is the series' recipe (notebook 08, ``pretrained.load_or_pretrain(arch="vit", pretext="mae")``
and ``make checkpoints``); ``pretrain_mae`` trains with it; ``masked_loss`` scores a model on held-out images with
masks that repeat (drawn from a seed).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from .data import to_inputs
from .devices import autocast, grad_scaler, pick_device
from .engine import History, adam, fit
from .settings import pick
from .training import check_learning_rate
from .validation import positive_int
from .vit import MaskedAutoencoder

WARMUP_FRACTION = 0.05  # of the steps, with the learning rate rising linearly from 0 (MAE: 40 of 800 epochs)


def mae_settings() -> dict:
    """The MAE pretraining recipe the series shares (smaller in fast mode, same code path). The epochs are sized so
    that a full pretraining takes at most about 10 minutes on our 2-core CPU (benchmarks/README.md, "MAE")."""
    return {"epochs": pick(20, 2), "train_size": pick(60000, 6000), "lr": 1e-3, "batch_size": 256, "weight_decay": 0.05}


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The learning rate's factor at ``step`` (0-based) of ``total``: linear warm-up over ``warmup`` steps to 1,
    then a half cosine down to 0 at the end."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's groups as MAE's: weight decay on the matrices only, none on biases, LayerNorms and the tokens."""
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decayed = [p for name, p in trained if p.dim() >= 2 and not name.endswith("_token")]
    rest = [p for name, p in trained if p.dim() < 2 or name.endswith("_token")]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@torch.no_grad()
def masked_loss(model: MaskedAutoencoder, images: torch.Tensor, *, seed: int = 0, batch_size: int = 1000) -> float:
    """The model's mean loss (MSE on the masked patches) over ``images``, with masks drawn from ``seed``: the same
    masks on every call, so epochs and models compare on equal terms. On the model's device; leaves its mode as
    it was."""
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = to_inputs(images, parameter.device).to(parameter.dtype)  # (N, 784)
    total = sum(model(part, generator=generator)[0] * len(part) for part in x.split(batch_size))
    model.train(was_training)
    return float(total) / len(x)


def pretrain_mae(
    model: MaskedAutoencoder,
    images: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.05,
    device: torch.device | str | None = None,
    test_images: torch.Tensor | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``model`` on ``images`` (uint8 or float, N x 28 x 28 or N x 784) to fill in its masked patches.

    AdamW (``engine.adam``; no weight decay on biases, norms and tokens, as MAE), with the learning rate warmed up
    over the first 5% of the steps and then decayed along a half cosine to 0 (MAE's schedule). Why not a constant
    rate: with a budget of a few epochs, the last steps at a small rate average out the noise of the batches
    and of the masks, and the warm-up keeps the first steps of a transformer with AdamW from diverging.
    Batch order and masks come from one generator seeded with ``seed``. ``test_images``: ``test_loss`` after each
    epoch (``masked_loss``, the same masks every time). Returns ``engine.fit``'s history; the model ends in
    eval mode on ``device``."""
    positive_int(epochs, "epochs")
    positive_int(batch_size, "batch_size")
    lr = check_learning_rate(lr)
    if len(images) == 0:
        raise ValueError("No images to train on.")
    device = pick_device(device)
    model.to(device)
    x = to_inputs(images, device).to(next(model.parameters()).dtype)  # (N, 784) in [0, 1], on the device once
    optimizer = adam(_parameter_groups(model, weight_decay), lr, device, weight_decay=weight_decay)
    total, steps = epochs * math.ceil(len(x) / batch_size), itertools.count()
    warmup = max(1, round(WARMUP_FRACTION * total))
    generator = torch.Generator().manual_seed(seed)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        factor = warmup_cosine(next(steps), total, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        return model(x[idx], generator=generator)[0]

    def check() -> dict[str, float]:
        return {"test_loss": masked_loss(model, test_images)}

    checks = {"check": check if test_images is not None else None, "progress": progress, "desc": "pretrain (MAE)"}
    precision = {"amp": autocast(device), "scaler": grad_scaler(device)}
    run = {"batch_size": batch_size, "generator": generator, "device": device, "epochs": epochs}
    history = fit(model, batch_loss, len(x), optimizer, **run, **precision, **checks)
    model.eval()
    return history
