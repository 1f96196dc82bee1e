"""Train many small classifiers at once: one stacked model instead of a loop over models.

At a few hundred labels each classifier's matrix products are tiny, so training them one
after another leaves the CPU mostly idle. Here K models with the same layers are stacked with
``torch.func.stack_module_state`` and run with ``torch.func.vmap``: one batched matrix product
per layer for all K. Each model still has its own data, learning rate and batch order, and its
own Adam state; the update is Adam's, written out so that each model can have its own learning
rate. A test checks that a model trained in a stack scores what it scores trained alone with
``training.finetune``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .training import check_learning_rate
from .validation import positive_int


@dataclass
class Job:
    """One classifier to train: an initialised model, its data, its learning rate and seed.

    ``train_x``/``val_x``/``test_x`` are float inputs (N, d): pixels for a whole classifier,
    encoder features for a linear head. ``seed`` fixes the order of the training batches.
    ``info`` is copied into the job's result row.
    """

    model: nn.Module
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    lr: float
    seed: int
    info: dict = field(default_factory=dict)


@dataclass
class Trained:
    """What training a job left: its weights at the best validation check and the validation curve."""

    params: dict[str, torch.Tensor]
    best_step: int
    val_acc: float
    val_loss: float
    curve: list[tuple[int, float, float]]  # (step, val accuracy, val loss) at every check


def _adam_step(params, grads, state, lr: torch.Tensor, step: int, betas=(0.9, 0.999), eps=1e-8) -> None:
    """torch.optim.Adam's update, with a learning rate per stacked model (``lr`` broadcasts over dim 0)."""
    b1, b2 = betas
    bc1, bc2 = 1 - b1**step, 1 - b2**step
    for name, p in params.items():
        g = grads[name]
        m, v = state[name]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
        scale = (lr / bc1).view(-1, *([1] * (p.dim() - 1)))
        p.sub_(scale * m / denom)


def _scores(base: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096):
    """Per-model accuracy and mean cross-entropy; ``x`` is (K, N, d) or (N, d) shared by all models."""
    k = next(iter(params.values())).shape[0]
    correct = torch.zeros(k, dtype=torch.float64)
    loss = torch.zeros(k, dtype=torch.float64)
    n = x.shape[-2]
    shared = x.dim() == 2
    fn = vmap(lambda p, xb: functional_call(base, p, (xb,)), in_dims=(0, None if shared else 0))
    for start in range(0, n, chunk):
        xb = x[start : start + chunk] if shared else x[:, start : start + chunk]
        yb = y[start : start + chunk] if shared else y[:, start : start + chunk]
        logits = fn(params, xb)  # (K, B, classes)
        yk = yb.expand(k, -1) if shared else yb
        loss += F.cross_entropy(logits.flatten(0, 1), yk.flatten(), reduction="none").view(k, -1).sum(1).double()
        correct += (logits.argmax(-1) == yk).sum(1)
    return correct / n, loss / n  # float64: accuracies are exact fractions


def train_stack(jobs: Sequence[Job], *, steps: int, batch_size: int, check_every: int, progress=None) -> list[Trained]:
    """Train every job for ``steps`` Adam steps (whole epochs of shuffled mini-batches), all at once.

    The validation split is scored every ``check_every`` steps and after the last; each job keeps its
    weights from the check with the best validation accuracy (ties: the lower validation loss, then the
    earlier step), i.e. early stopping chosen on validation data. ``progress`` (a tqdm bar) is advanced
    by one per model and step. All jobs must share the model's layers and the number of training and
    validation examples.
    """
    positive_int(steps, "steps")
    positive_int(batch_size, "batch_size")
    positive_int(check_every, "check_every")
    if not jobs:
        raise ValueError("Give at least one job to train.")
    n_train, n_val = len(jobs[0].train_y), len(jobs[0].val_y)
    if any(len(j.train_y) != n_train or len(j.val_y) != n_val for j in jobs):
        raise ValueError("All jobs in one stack need the same number of training and of validation examples.")
    k = len(jobs)
    lr = torch.tensor([check_learning_rate(j.lr) for j in jobs])
    params, _ = stack_module_state([j.model for j in jobs])
    params = {name: p.detach().clone() for name, p in params.items()}
    base = copy.deepcopy(jobs[0].model).to("meta")
    forward = vmap(lambda p, xb: functional_call(base, p, (xb,)))
    train_x = torch.stack([j.train_x for j in jobs])  # (K, n_train, d)
    train_y = torch.stack([j.train_y for j in jobs])  # (K, n_train)
    val_x, val_y = torch.stack([j.val_x for j in jobs]), torch.stack([j.val_y for j in jobs])
    state = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in params.items()}
    generators = {s: torch.Generator().manual_seed(s) for s in {j.seed for j in jobs}}
    best = {name: p.clone() for name, p in params.items()}
    best_acc, best_loss = torch.full((k,), -1.0), torch.full((k,), math.inf)
    best_step = torch.zeros(k, dtype=torch.long)
    curves: list[list[tuple[int, float, float]]] = [[] for _ in jobs]
    batch_size = min(batch_size, n_train)
    step = 0
    while step < steps:
        # One epoch: a fresh order per seed, drawn exactly as training.finetune draws it.
        orders = {s: torch.randperm(n_train, generator=g) for s, g in generators.items()}
        order = torch.stack([orders[j.seed] for j in jobs])  # (K, n_train)
        for idx in order.split(batch_size, dim=1):
            if step >= steps:
                break
            xb = train_x.gather(1, idx.unsqueeze(-1).expand(-1, -1, train_x.shape[-1]))
            yb = train_y.gather(1, idx)
            for p in params.values():
                p.requires_grad_(True)
            logits = forward(params, xb)  # (K, B, classes)
            # Sum of each model's mean loss: each model's gradient is its own mean-loss gradient.
            loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(k, -1).mean(1).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            if not math.isfinite(float(loss.detach())):
                raise ValueError("Training diverged (NaN or infinite loss) in a stack; lower the learning rates.")
            step += 1
            with torch.no_grad():
                for p in params.values():
                    p.requires_grad_(False)
                _adam_step(params, dict(zip(params, grads)), state, lr, step)
                if step % check_every == 0 or step == steps:
                    acc, vloss = _scores(base, params, val_x, val_y)
                    better = (acc > best_acc) | ((acc == best_acc) & (vloss < best_loss))
                    for name, p in params.items():
                        best[name] = torch.where(better.view(-1, *([1] * (p.dim() - 1))), p, best[name])
                    best_acc, best_loss = torch.where(better, acc, best_acc), torch.where(better, vloss, best_loss)
                    best_step = torch.where(better, torch.tensor(step), best_step)
                    for i in range(k):
                        curves[i].append((step, float(acc[i]), float(vloss[i])))
            if progress is not None:
                progress.update(k)
    return [
        Trained(
            {name: p[i] for name, p in best.items()},
            int(best_step[i]),
            float(best_acc[i]),
            float(best_loss[i]),
            curves[i],
        )
        for i in range(k)
    ]


@torch.no_grad()
def score_on_test(jobs: Sequence[Job], trained: Sequence[Trained], chunk: int = 16) -> list[float]:
    """Each job's test accuracy with its trained weights (jobs with the same layers and test inputs are
    scored together)."""
    out = [0.0] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        shapes = tuple((name, tuple(p.shape)) for name, p in trained[i].params.items())
        groups.setdefault((id(job.test_x), shapes), []).append(i)
    for members in groups.values():
        for start in range(0, len(members), chunk):
            part = members[start : start + chunk]
            base = copy.deepcopy(jobs[part[0]].model).to("meta")
            params = {name: torch.stack([trained[i].params[name] for i in part]) for name in trained[part[0]].params}
            acc, _ = _scores(base, params, jobs[part[0]].test_x, jobs[part[0]].test_y)
            for i, a in zip(part, acc.tolist()):
                out[i] = a
    return out
