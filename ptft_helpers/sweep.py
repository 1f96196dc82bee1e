"""Train many small classifiers at once: one stacked model instead of a loop over models.

At a few hundred labels each classifier's matrix products are tiny, so training them one
after another leaves the CPU mostly idle. Here K models with the same layers are stacked with
``torch.func.stack_module_state`` and run with ``torch.func.vmap``: one batched matrix product
per layer for all K. Each model still has its own data, learning rate and batch order, and its
own Adam state; the update is Adam's, written out (``StackedAdam``) so that each model can have its own learning
rate. The loop is ``engine.fit``'s. A test checks that a model trained in a stack scores what it scores trained alone
with ``training.finetune``.
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

from .engine import fit, shuffled_batches
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


class StackedAdam(torch.optim.Optimizer):
    """torch.optim.Adam's update for parameters stacked over dim 0 (one model per row) with a learning rate per model
    (``rates``, shape (K,)): torch.optim's Adam takes one learning rate per parameter group, not one per row of a
    tensor, so the update is written out here. ``lr`` is the largest rate (what an error message names)."""

    def __init__(self, params, rates: torch.Tensor, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, {"lr": float(rates.max()), "rates": rates, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            (b1, b2), eps = group["betas"], group["eps"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                m, v, g = state["m"], state["v"], p.grad
                bc1, bc2 = 1 - b1 ** state["step"], 1 - b2 ** state["step"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
                scale = (group["rates"] / bc1).view(-1, *([1] * (p.dim() - 1)))
                p.sub_(scale * m / denom)


class _Stack(nn.Module):
    """K models' parameters stacked over dim 0, as one module for ``engine.fit`` and ``StackedAdam``."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        stacked, _ = stack_module_state(list(models))
        self.names = list(stacked)
        self.stacked = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in stacked.values())

    def params(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.stacked))


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


def _stacked_batches(jobs: Sequence[Job]):
    """``engine.fit``'s ``make_batches`` for a stack: each job's batches in ``engine.shuffled_batches``' order from
    its own seed (jobs with one seed share one order), as (K, B) index tensors; ``fit``'s generator is not used."""
    generators = {s: torch.Generator().manual_seed(s) for s in {j.seed for j in jobs}}

    def make_batches(n: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
        orders = {s: shuffled_batches(n, batch_size, g, device) for s, g in generators.items()}
        return [torch.stack([orders[j.seed][i] for j in jobs]) for i in range(len(orders[jobs[0].seed]))]

    return make_batches


class _BestChecks:
    """``engine.fit``'s ``check`` for a stack: scores every model on its validation split, and keeps each model's
    weights from its best check (the best accuracy; ties: the lower loss, then the earlier step)."""

    def __init__(self, stack: _Stack, base: nn.Module, jobs: Sequence[Job], steps: int, check_every: int):
        self.stack, self.base, self.steps, self.check_every, k = stack, base, steps, check_every, len(jobs)
        self.val_x, self.val_y = torch.stack([j.val_x for j in jobs]), torch.stack([j.val_y for j in jobs])
        self.best = {name: p.detach().clone() for name, p in stack.params().items()}
        self.acc, self.loss, self.step = torch.full((k,), -1.0), torch.full((k,), math.inf), torch.zeros(k).long()
        self.curves: list[list[tuple[int, float, float]]] = [[] for _ in jobs]

    def __call__(self) -> dict:
        step = min((len(self.curves[0]) + 1) * self.check_every, self.steps)  # checks: every check_every, the last
        acc, loss = _scores(self.base, self.stack.params(), self.val_x, self.val_y)
        better = (acc > self.acc) | ((acc == self.acc) & (loss < self.loss))
        for name, p in self.stack.params().items():
            self.best[name] = torch.where(better.view(-1, *([1] * (p.dim() - 1))), p, self.best[name])
        self.acc, self.loss = torch.where(better, acc, self.acc), torch.where(better, loss, self.loss)
        self.step = torch.where(better, torch.tensor(step), self.step)
        for i, curve in enumerate(self.curves):
            curve.append((step, float(acc[i]), float(loss[i])))
        return {}

    def trained(self) -> list[Trained]:
        pick = [({name: p[i] for name, p in self.best.items()}, int(self.step[i])) for i in range(len(self.curves))]
        return [Trained(p, s, float(self.acc[i]), float(self.loss[i]), self.curves[i]) for i, (p, s) in enumerate(pick)]


def train_stack(jobs: Sequence[Job], *, steps: int, batch_size: int, check_every: int, progress=None) -> list[Trained]:
    """Train every job for ``steps`` Adam steps (whole epochs of shuffled mini-batches), all at once, with
    ``engine.fit``; the optimiser is ``StackedAdam``, Adam written out, since torch.optim's Adam cannot give each
    stacked model its own learning rate.

    The validation split is scored every ``check_every`` steps and after the last; each job keeps its
    weights from the check with the best validation accuracy (ties: the lower validation loss, then the
    earlier step), i.e. early stopping chosen on validation data. ``progress`` (a tqdm bar) is advanced
    by one per model and step. All jobs must share the model's layers and the number of training and
    validation examples. Raises ``engine.TrainingDiverged`` when a step's loss is NaN or infinite.
    """
    positive_int(steps, "steps")
    positive_int(batch_size, "batch_size")
    positive_int(check_every, "check_every")
    if not jobs:
        raise ValueError("Give at least one job to train.")
    n_train, n_val = len(jobs[0].train_y), len(jobs[0].val_y)
    if any(len(j.train_y) != n_train or len(j.val_y) != n_val for j in jobs):
        raise ValueError("All jobs in one stack need the same number of training and of validation examples.")
    k, rates = len(jobs), torch.tensor([check_learning_rate(j.lr) for j in jobs])
    stack, base = _Stack([j.model for j in jobs]), copy.deepcopy(jobs[0].model).to("meta")
    forward = vmap(lambda p, xb: functional_call(base, p, (xb,)))
    train_x = torch.stack([j.train_x for j in jobs])  # (K, n_train, d)
    train_y = torch.stack([j.train_y for j in jobs])  # (K, n_train)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:  # idx (K, B): each job's rows
        xb, yb = train_x.gather(1, idx.unsqueeze(-1).expand(-1, -1, train_x.shape[-1])), train_y.gather(1, idx)
        logits = forward(stack.params(), xb)  # (K, B, classes)
        if progress is not None:
            progress.update(k)
        # Sum of each model's mean loss: each model's gradient is its own mean-loss gradient.
        return F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(k, -1).mean(1).sum()

    checks = _BestChecks(stack, base, jobs, steps, check_every)
    fit(
        stack,
        batch_loss,
        n_train,
        StackedAdam(stack.parameters(), rates),
        batch_size=min(batch_size, n_train),
        generator=torch.Generator(),
        device=train_x.device,
        steps=steps,
        check=checks,
        check_every=check_every,
        progress=False,
        make_batches=_stacked_batches(jobs),
    )
    return checks.trained()


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
