"""The trials of notebook 08 (a vision transformer pretrained by masking): what the MAE's encoder is worth to a
classifier, under the protocol of notebooks 05-07.

- ``pooled_features``: a frozen encoder's features, the CLS token or the mean of the patch tokens, for a probe.
- ``network_trial``: a ``vit.ViTClassifier`` (fine-tuned from the MAE, or from scratch) trained at each learning
  rate of a grid through ``engine.fit``, checked on the validation labels every few steps and kept at its best
  check; the best rate is scored on the test set once.
- ``draw_rows``: one label draw, every method: the linear probes (``probes.select_and_score``) and the networks.
- ``fixed_settings``: the settings used where nothing is left to validate (10 labels, one per class): each method's
  most frequent choice at 20 labels, as notebook 07 does.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .engine import adam, fit
from .experiments import split_labelled
from .probes import WEIGHT_DECAYS, accuracy, select_and_score
from .seeding import seeded
from .validation import positive_int
from .vit import ViTEncoder


@torch.no_grad()
def pooled_features(encoder: ViTEncoder, inputs: torch.Tensor, pooling: str, batch_size: int = 1000) -> torch.Tensor:
    """A frozen encoder's features of ``inputs`` (N, 784) floats, after its final LayerNorm, with no masking: the CLS
    token (``"cls"``) or the mean of the patch tokens (``"mean"``), (N, width); or every token, (N, 1 + L, width)
    (``"tokens"``)."""
    if pooling not in ("cls", "mean", "tokens"):
        raise ValueError(f"pooling must be 'cls', 'mean' or 'tokens', got {pooling!r}.")
    was_training = encoder.training
    encoder.eval()
    parts = []
    for part in inputs.split(batch_size):
        tokens = encoder(part)  # (B, 1 + L, width)
        parts.append({"cls": tokens[:, 0], "mean": tokens[:, 1:].mean(dim=1), "tokens": tokens}[pooling])
    encoder.train(was_training)
    return torch.cat(parts)


@dataclass(frozen=True)
class Budget:
    """What every network gets, whatever its starting weights: the same grid of learning rates, steps, batch,
    validation checks and AdamW weight decay."""

    lrs: tuple[float, ...]
    steps: int
    batch_size: int
    check_every: int
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        if not self.lrs or not all(lr > 0 for lr in self.lrs):
            raise ValueError(f"lrs must hold at least one positive learning rate, got {self.lrs!r}.")
        for name in ("steps", "batch_size", "check_every"):
            positive_int(getattr(self, name), f"Budget's {name}")
        if self.steps % self.check_every:
            raise ValueError(f"steps {self.steps} is not a multiple of check_every {self.check_every}: make it one.")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")


def _train_one(model: nn.Module, x, y, val, lr: float, steps: int, budget: Budget, seed: int) -> dict:
    """Train ``model`` on ``x``/``y`` for ``steps`` steps at ``lr``; with ``val`` = (inputs, labels) check every
    ``budget.check_every`` steps and keep the best check (higher accuracy, then lower cross-entropy)."""

    def check() -> dict[str, float]:
        logits = model(val[0])
        return {"val_acc": accuracy(logits, val[1]), "val_loss": float(F.cross_entropy(logits, val[1]))}

    has_val = len(val[1]) > 0
    history = fit(
        model,
        lambda idx: F.cross_entropy(model(x[idx]), y[idx]),
        len(x),
        adam(model.parameters(), lr, "cpu", weight_decay=budget.weight_decay),
        batch_size=min(budget.batch_size, len(x)),
        generator=torch.Generator().manual_seed(seed),
        device="cpu",
        steps=steps,
        check=check if has_val else None,
        check_every=budget.check_every if has_val else None,
        keep_best=(lambda s: (-s["val_acc"], s["val_loss"])) if has_val else None,
        progress=False,
    )
    model.eval()
    if not has_val:
        return {"lr": lr, "best_step": steps, "val_acc": math.nan, "val_loss": math.nan}
    best = history["step"].index(history["best_step"][0])
    return {
        "lr": lr,
        "best_step": history["best_step"][0],
        "val_acc": history["val_acc"][best],
        "val_loss": history["val_loss"][best],
    }


def network_trial(
    make_classifier: Callable[[], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    budget: Budget,
    *,
    seed: int,
    fixed: tuple[float, int] | None = None,
) -> dict:
    """One trial of a network: a fresh ``make_classifier()`` (made under ``seed``) per learning rate of ``budget``,
    trained on ``train`` = (inputs (N, 784), labels) and kept at its best validation check; the rate whose check is
    best (accuracy, then the lower cross-entropy; ties: the earlier rate) is scored on ``test`` once. With no
    validation images give ``fixed`` = (lr, steps): trained that long at that rate, nothing chosen. Returns the
    chosen ``lr`` and ``best_step``, its ``val_acc`` and ``val_loss``, and ``test_acc``."""
    if (len(val[1]) == 0) != (fixed is not None):
        raise ValueError("Give fixed=(lr, steps) exactly when there are no validation images to choose with.")
    best, best_model = None, None
    for lr, steps in [fixed] if fixed else [(lr, budget.steps) for lr in budget.lrs]:
        with seeded(seed):
            model = make_classifier()
        scores = _train_one(model, *train, val, lr, steps, budget, seed)
        if best is None or (-scores["val_acc"], scores["val_loss"]) < (-best["val_acc"], best["val_loss"]):
            best, best_model = scores, model
    with torch.no_grad():
        predicted = torch.cat([best_model(part).argmax(1) for part in test[0].split(1000)])
    return {**best, "test_acc": accuracy(predicted, test[1])}


@dataclass(frozen=True)
class Pool:
    """The images the label draws come from (their labels are read only when drawn) and the test set, as float
    inputs (N, 784); ``features[name]`` = (pool, test) standardised features of each probed code."""

    inputs: torch.Tensor
    labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor
    features: Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def draw_rows(
    pool: Pool,
    n: int,
    n_val: int,
    draw: int,
    networks: Mapping[str, Callable[[], nn.Module]],
    budget: Budget,
    fixed: Mapping[str, object] | None = None,
    info: Mapping | None = None,
) -> list[dict]:
    """Every method's row for one label draw: a linear probe on each code of ``pool.features`` (keyed by the method's
    name) and each network of ``networks``. ``fixed`` (method -> setting): used as it is where ``n_val`` is 0.
    ``info`` joins every row (e.g. the pretraining run)."""
    lab, val = split_labelled(pool.labels, n, n_val, draw)
    base = {"labels": n, "n_train": len(lab), "n_val": len(val), "seed": draw, **(info or {})}
    rows = []
    for method, (fp, ft) in pool.features.items():
        start = time.perf_counter()
        wds = [fixed[method]] if fixed else WEIGHT_DECAYS
        r = select_and_score(
            (fp[lab], pool.labels[lab]), (fp[val], pool.labels[val]), (ft, pool.test_labels), weight_decays=wds
        )
        rows.append(
            {
                **base,
                "method": method,
                "setting": r["weight_decay"],
                "val_acc": r["val_acc"],
                "test_acc": r["test_acc"],
                "seconds": time.perf_counter() - start,
            }
        )
    for method, make in networks.items():
        start = time.perf_counter()
        r = network_trial(
            make,
            (pool.inputs[lab], pool.labels[lab]),
            (pool.inputs[val], pool.labels[val]),
            (pool.test_inputs, pool.test_labels),
            budget,
            seed=draw,
            fixed=fixed[method] if fixed else None,
        )
        rows.append(
            {
                **base,
                "method": method,
                "setting": r["lr"],
                "best_step": r["best_step"],
                "val_acc": r["val_acc"],
                "test_acc": r["test_acc"],
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def fixed_settings(rows: Sequence[Mapping], n: int = 20) -> dict[str, object]:
    """Each method's most frequent choice at ``n`` labels (ties: the first chosen): a probe's weight decay, a
    network's (learning rate, median best step of the trials that chose that rate)."""
    at_n = [r for r in rows if r["labels"] == n]
    if not at_n:
        raise ValueError(f"No rows at {n} labels: run that label count first, its choices fix the settings.")
    fixed = {}
    for method in dict.fromkeys(r["method"] for r in at_n):
        chosen = [r for r in at_n if r["method"] == method]
        setting = statistics.multimode(r["setting"] for r in chosen)[0]
        steps = [r["best_step"] for r in chosen if r["setting"] == setting and "best_step" in r]
        fixed[method] = (setting, round(statistics.median(steps))) if steps else setting
    return fixed
