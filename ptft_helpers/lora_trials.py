"""Notebook 09's trials: fine-tune the MAE-pretrained ViT on a label draw by each method (LoRA at a rank, full
fine-tuning, LP-FT, scratch: ``trial``; the linear probe fitted exactly on frozen features, as in notebooks 05 to 08:
``probe_trial``), choose on validation, score the test set once; and what each method costs (trainable parameters,
optimizer state, memory kept for the backward pass, step time, file size).

The models are Hugging Face image classifiers (``model(pixel_values=x).logits``, head ``classifier``), built by the
caller's ``make_base()`` (a fresh copy of the pretrained one, e.g. ``from_pretrained`` of a local folder) or
``make_scratch()`` (random weights); LoRA goes on through ``peft``. Training runs through ``engine.fit``; the label
split is ``experiments.split_labelled``'s, so the draws are notebook 05's.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from . import engine
from .experiments import split_labelled
from .lora import optimizer_state_bytes, peft_lora, trainable_count
from .probes import WEIGHT_DECAYS, fit_linear_probe, standardizer
from .probes import accuracy as probe_accuracy
from .seeding import seeded

TARGETS = ("q_proj", "v_proj")  # the adapted matrices in every layer: W_q and W_v, as in Hu et al. (2021)
HEAD = "classifier"  # the Hugging Face classifier's head: trained by every method


@dataclass(frozen=True)
class Method:
    """How a method starts and what it trains: ``start`` "pretrained", "probe" (LP-FT: the chosen probe's head on
    the pretrained encoder) or "scratch"; ``trains`` "head", "lora" or "all"; its learning-rate grid."""

    name: str
    start: str
    trains: str
    lrs: tuple[float, ...]
    rank: int = 0


@dataclass(frozen=True)
class Task:
    """A classification task: the pool the label draws come from and the test images, as classifier inputs."""

    name: str
    train_x: torch.Tensor  # (N, 1, 28, 28)
    train_y: torch.Tensor  # (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class Budget:
    """The same for every method: Adam steps, batch size, steps between validation checks, validation share."""

    steps: int
    batch_size: int
    check_every: int
    val_fraction: float = 0.2

    def val_size(self, n: int) -> int:
        return max(10, round(n * self.val_fraction / 10) * 10)


def alpha(rank: int) -> float:
    """LoRA's alpha for ``rank``: 2 x rank, so that the scale alpha / rank is 2 at every rank (not tuned)."""
    return 2.0 * rank


def build(method: Method, seed: int, make_base: Callable, make_scratch: Callable, head: Mapping | None = None):
    """``method``'s model for label draw ``seed``: the draw's head initialisation (the same for every method), the
    probe's trained ``head`` for LP-FT, and only what the method trains left trainable."""
    with seeded(seed):
        model = make_scratch() if method.start == "scratch" else make_base()
        getattr(model, HEAD).reset_parameters()
        if method.start == "probe":
            if head is None:
                raise ValueError(f"{method.name!r} starts from a trained probe: give the probe's head.")
            getattr(model, HEAD).load_state_dict(head)
        if method.trains == "head":
            model.requires_grad_(False)
            getattr(model, HEAD).requires_grad_(True)
        elif method.trains == "lora":
            model = peft_lora(model, method.rank, alpha(method.rank), TARGETS, modules_to_save=(HEAD,))
        elif method.trains != "all":
            raise ValueError(f"Unknown trains={method.trains!r}: choose 'head', 'lora' or 'all'.")
    return model


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).logits  # (B, 1, 28, 28) -> (B, classes)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """The share of ``x`` classified as ``y``, in eval mode, ``batch`` images at a time."""
    model.eval()
    right = sum(int((logits(model, xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch)))
    return right / len(y)


def train_run(model, task: Task, fit_idx, val_idx, lr: float, seed: int, budget: Budget, device="cpu"):
    """Adam at ``lr`` on the fitting images for ``budget.steps`` steps through ``engine.fit``, validation before the
    first step and every ``check_every`` steps; keeps the best check (validation accuracy, ties: the lower validation
    cross-entropy, then the earlier). Returns (history, optimizer)."""
    x_fit, y_fit = task.train_x[fit_idx].to(device), task.train_y[fit_idx].to(device)
    x_val, y_val = task.train_x[val_idx].to(device), task.train_y[val_idx].to(device)
    optimizer = engine.adam([p for p in model.parameters() if p.requires_grad], lr, device)

    def check() -> dict[str, float]:
        out = logits(model, x_val)
        right = float((out.argmax(1) == y_val).float().mean())
        return {"val_acc": right, "val_loss": float(F.cross_entropy(out, y_val))}

    history = engine.fit(
        model,
        lambda idx: F.cross_entropy(logits(model, x_fit[idx]), y_fit[idx]),
        len(fit_idx),
        optimizer,
        batch_size=min(budget.batch_size, len(fit_idx)),
        generator=torch.Generator().manual_seed(seed),
        device=device,
        steps=budget.steps,
        check=check,
        check_every=budget.check_every,
        check_first=True,  # step 0 counts: LP-FT may keep its probe as it is
        keep_best=lambda s: (-s["val_acc"], s["val_loss"]),
        progress=False,
    )
    return history, optimizer


def trial(method: Method, task: Task, n: int, seed: int, budget: Budget, make_base, make_scratch, *, head=None):
    """One trial: ``method`` at every learning rate of its grid on draw ``seed`` of ``n`` labels (of which
    ``budget.val_size(n)`` validate); the best on validation (accuracy, then cross-entropy, then the smaller rate)
    is scored on the test set once. The trainable share is of the base model's parameters (without the adapters).
    Returns (row, the chosen model)."""
    fit_idx, val_idx = split_labelled(task.train_y, n, budget.val_size(n), seed)
    runs, start = [], time.perf_counter()
    for lr in method.lrs:
        model = build(method, seed, make_base, make_scratch, head)
        history, optimizer = train_run(model, task, fit_idx, val_idx, lr, seed, budget)
        best = history["step"].index(history["best_step"][0])
        runs.append((-history["val_acc"][best], history["val_loss"][best], lr, history, optimizer, model))
    val_acc, val_loss, lr, history, optimizer, model = min(runs, key=lambda r: r[:3])
    trainable = trainable_count(model)
    row = {
        "task": task.name, "labels": n, "seed": seed, "n_train": len(fit_idx), "n_val": len(val_idx),
        "method": method.name, "rank": method.rank, "lr": lr, "steps": budget.steps,
        "batch_size": min(budget.batch_size, len(fit_idx)), "best_step": history["best_step"][0],
        "val_acc": -val_acc, "val_loss": val_loss, "test_acc": accuracy(model, task.test_x, task.test_y),
        "trainable": trainable, "trainable_pct": 100 * trainable / sum(p.numel() for p in make_base().parameters()),
        "optimizer_state_bytes": optimizer_state_bytes(optimizer), "file_bytes": file_bytes(model, method),
        "seconds_per_step": statistics.fmean(sum(r[3]["seconds"]) / budget.steps for r in runs),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    return row, model


class ProbeFeatures(NamedTuple):
    """What the exact linear probe reads: the frozen ``base``'s CLS token after its final LayerNorm (the feature its
    head reads), standardised with the ``mean`` and ``std`` of unlabelled training images; the test images' too."""

    base: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    test: torch.Tensor  # (N_test, width), standardised


@torch.no_grad()
def cls_features(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """A Hugging Face ViT classifier's CLS token after its final LayerNorm, what its head reads: (N, width)."""
    model.eval()
    return torch.cat([model.vit(pixel_values=xb).last_hidden_state[:, 0] for xb in x.split(batch)])


def probe_features(base: nn.Module, task: Task, unlabelled: int) -> ProbeFeatures:
    """``ProbeFeatures`` of ``task`` on ``base``, standardised with the first ``unlabelled`` training images."""
    mean, std = standardizer(cls_features(base, task.train_x[:unlabelled]))
    return ProbeFeatures(base, mean, std, (cls_features(base, task.test_x) - mean) / std)


def probe_trial(method: Method, task: Task, n: int, seed: int, budget: Budget, features: ProbeFeatures):
    """The series' linear probe on draw ``seed`` of ``n`` labels: logistic regression fitted exactly (L-BFGS) on the
    standardised features at every weight decay of ``probes.WEIGHT_DECAYS``, the best on validation (accuracy, then
    cross-entropy, then the earlier weight decay) scored on the test set once. Returns (row, the chosen head as the
    state of the classifier's ``nn.Linear`` on unstandardised features: what LP-FT starts from)."""
    fit_idx, val_idx = split_labelled(task.train_y, n, budget.val_size(n), seed)
    start = time.perf_counter()
    f_fit, f_val = (
        (cls_features(features.base, task.train_x[i]) - features.mean) / features.std for i in (fit_idx, val_idx)
    )
    y_fit, y_val = task.train_y[fit_idx], task.train_y[val_idx]
    scored = []
    for wd in WEIGHT_DECAYS:
        head = fit_linear_probe(f_fit, y_fit, wd)
        out = head(f_val)
        scored.append((-probe_accuracy(out, y_val), float(F.cross_entropy(out, y_val)), wd, head))
    val_acc, val_loss, wd, head = min(scored, key=lambda s: s[:2])
    weight = head.weight / features.std  # W (f - mean) / std + b = (W / std) f + (b - (W / std) mean)
    state = {"weight": weight, "bias": head.bias - weight @ features.mean}
    trained = sum(v.numel() for v in state.values())
    row = {
        "task": task.name, "labels": n, "seed": seed, "n_train": len(fit_idx), "n_val": len(val_idx),
        "method": method.name, "rank": 0, "weight_decay": wd, "val_acc": -val_acc, "val_loss": val_loss,
        "test_acc": probe_accuracy(head(features.test), task.test_y), "trainable": trained,
        "trainable_pct": 100 * trained / sum(p.numel() for p in features.base.parameters()),
        "file_bytes": safetensors_bytes(state), "seconds": time.perf_counter() - start,
    }  # fmt: skip
    return row, state


def safetensors_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """The size of ``tensors`` saved as one safetensors file."""
    with tempfile.TemporaryDirectory() as folder:
        save_file({k: v.contiguous() for k, v in tensors.items()}, f"{folder}/weights.safetensors")
        return Path(folder, "weights.safetensors").stat().st_size


def sweep(methods: Sequence[Method], task: Task, draws: Mapping[int, Sequence[int]], budget: Budget, make_base,
          make_scratch, *, probe: ProbeFeatures | None = None, keep: Callable[[dict], bool] = lambda row: False,
          progress=None):  # fmt: skip
    """Every method's trial on every draw (``draws[n]``: the seeds at ``n`` labels): a head-only method is the exact
    probe on ``probe``'s features (``probe_trial``), the others ``trial``; LP-FT starts from the same draw's chosen
    probe. Returns (rows, {(method, n, seed): model} for the network rows that ``keep`` accepts)."""
    rows, kept = [], {}
    for n, seeds in draws.items():
        for seed in seeds:
            probe_head = None
            for method in methods:
                if method.trains == "head":
                    if probe is None:
                        raise ValueError(f"{method.name!r} is a linear probe: give probe=probe_features(...).")
                    row, probe_head = probe_trial(method, task, n, seed, budget, probe)
                else:
                    row, model = trial(method, task, n, seed, budget, make_base, make_scratch, head=probe_head)
                    if keep(row):
                        kept[method.name, n, seed] = model
                rows.append(row)
                if progress is not None:
                    progress.update(1)
    return rows, kept


def saved_tensor_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes that autograd keeps from one forward pass for the backward pass: every saved tensor's storage, once,
    not counting the parameters themselves (they are kept anyway)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(logits(model, x), y)
    return sum(kept.values())


def file_bytes(model: nn.Module, method: Method) -> int:
    """The size of what must be saved to keep a trained ``method``: the head alone for a probe, the adapter (with
    its head) for LoRA, else the whole model; safetensors files written by ``save_pretrained`` (``save_file``)."""
    if method.trains == "head":
        return safetensors_bytes(getattr(model, HEAD).state_dict())
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def step_seconds(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *, steps: int, rounds: int):
    """Seconds per training step (forward, backward, Adam) of each model on the same batch, side by side: in each of
    ``rounds`` rounds every model runs ``steps`` steps in turn, starting one model later each round (so no model
    always runs first); each model's fastest round counts (load on the machine can only slow a round down). Each
    model first takes one untimed step, where Adam makes its state."""
    optimizers = {name: engine.adam([p for p in m.parameters() if p.requires_grad], 1e-5, x.device)
                  for name, m in models.items()}  # fmt: skip

    def run(name: str, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            engine.optimizer_step(F.cross_entropy(logits(models[name], x), y), optimizers[name])
        return (time.perf_counter() - start) / max(count, 1)

    names = list(models)
    for name in names:
        models[name].train()
        run(name, 1)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(run(name, steps))
    return {name: min(times[name]) for name in names}
