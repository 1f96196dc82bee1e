"""One training loop for every model in the series: ``fit`` runs the steps, the epochs, the checks and early
stopping; the caller gives only ``batch_loss(idx)``, the loss of one batch of row indices.

Batches are cut by index from tensors that are already in memory (and on the GPU when there is one): no per-sample
transforms and no DataLoader workers. The order is drawn on the CPU from a ``torch.Generator``, so a seed repeats on
any device. Losses stay on the device during an epoch (or a check interval) and are read back once at its end, where
a NaN or infinite loss raises ``TrainingDiverged``. The notebooks write this loop out by hand before they use it.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .devices import synchronize
from .settings import progress_enabled
from .validation import positive_int

History = dict[str, list[float]]
BatchLoss = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
MakeBatches = Callable[[int, int, torch.Generator, torch.device], list[torch.Tensor]]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; ``epoch`` and ``step`` (1-based, when known) say where."""

    def __init__(self, epoch: int, step: int | None, lr: float, history: History):
        self.epoch, self.step, self.lr, self.history = epoch, step, lr, history
        where = f"epoch {epoch}" + (f" (step {step} overall)" if step is not None else "")
        super().__init__(
            f"Training diverged: the loss became NaN or infinite in {where} "
            f"with learning rate {lr:g}. Try a lower learning rate, e.g. {lr / 10:g}."
        )


def adam(
    params: Iterable, lr: float, device: torch.device | str, *, weight_decay: float = 0.0, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam (AdamW, decoupled weight decay, when ``weight_decay`` > 0) with PyTorch's fused kernel on the CPU and
    CUDA: the same update, computed in one pass per tensor instead of a dozen small operations (on 2 CPU cores a
    pretraining epoch is ~15-20% faster at batch 128, ~5% at batch 512; see benchmarks/README.md).
    ``capturable=True`` keeps the step on the GPU, as CUDA graph capture needs (the benchmark uses it)."""
    device = torch.device(device)
    fused = True if device.type in ("cpu", "cuda") else None  # PyTorch >= 2.4 (pyproject.toml) has both kernels
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, capturable=capturable)
    return torch.optim.Adam(params, lr=lr, fused=fused, capturable=capturable)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """A fresh random order of 0..n-1 (drawn on the CPU, so seeds repeat on any device), cut into batches."""
    order = torch.randperm(n, generator=generator).to(device)
    return list(order.split(batch_size))


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
) -> None:
    """Clear the gradients, backpropagate ``loss`` and step, through the gradient ``scaler`` when there is one
    (``devices.grad_scaler``; a disabled scaler passes the loss and the step through unchanged)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def _stream(n: int, batch_size: int, generator: torch.Generator, device, make_batches: MakeBatches) -> Iterator:
    """Batches pass after pass; each pass's order is drawn only when its first batch is needed."""
    while True:
        batches = make_batches(n, batch_size, generator, device)
        if not batches:
            raise ValueError(f"A pass over {n} rows in batches of {batch_size} gave no batch; use a smaller batch.")
        yield from batches


def _intervals(n, batch_size, generator, device, make_batches, epochs, steps, check_every) -> Iterator:
    """(start time, number, count of steps, batches) per interval: an epoch, or ``check_every`` steps (the last may
    be shorter). The batches come lazily, so random draws keep the order of a loop written out by hand."""
    if epochs is not None:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            batches = make_batches(n, batch_size, generator, device)
            yield start, epoch, len(batches), iter(batches)
        return
    stream = _stream(n, batch_size, generator, device, make_batches)
    for done in range(0, steps, check_every):
        count = min(check_every, steps - done)
        yield time.perf_counter(), done + count, count, itertools.islice(stream, count)


def _train(batch_loss: BatchLoss, batches: Iterator, optimizer, amp, scaler) -> torch.Tensor:
    """One interval's steps; returns the recorded loss of each step, still on the device."""
    records = []
    for idx in batches:
        with amp or contextlib.nullcontext():
            out = batch_loss(idx)
        loss, record = out if isinstance(out, tuple) else (out, out)
        optimizer_step(loss, optimizer, scaler)
        records.append(record.detach())
    return torch.stack(records) if records else torch.empty(0)


def _record(history: History, unit: str, number: int, records: torch.Tensor, start: float, run: dict) -> None:
    """Add a finished interval's step losses, mean loss and seconds; raise ``TrainingDiverged`` at its first
    non-finite step loss (after adding the step losses, so the error's history shows them)."""
    records = records.cpu()
    synchronize(run["device"])
    done_before = len(history["step_loss"])
    history["step_loss"].extend(records.tolist())
    if not torch.isfinite(records).all():
        step = done_before + int(torch.nonzero(~torch.isfinite(records))[0]) + 1
        epoch = number if unit == "epoch" else math.ceil(step / run["steps_per_pass"])
        raise TrainingDiverged(epoch, step, run["lr"], history)
    history[unit].append(number)
    history["train_loss"].append(float(records.mean()))
    history["seconds"].append(time.perf_counter() - start)


def _check(model: nn.Module, check: Callable[[], dict], history: History, keep_best, best: list, number: int) -> None:
    """Run ``check`` in eval mode without gradients, append its scores, and keep a copy of the weights in
    ``best`` = [score, number, state] when ``keep_best`` says they are the best so far (ties: the earliest)."""
    model.eval()
    with torch.no_grad():
        scores = check()
    model.train()
    for key, value in scores.items():
        history.setdefault(key, []).append(value)
    if isinstance(keep_best, str) and keep_best not in scores:
        raise ValueError(f"keep_best={keep_best!r} is not a score the check returns; it returns {sorted(scores)}.")
    if keep_best is not None:
        score = scores[keep_best] if isinstance(keep_best, str) else keep_best(scores)
        if not best or score < best[0] or (_is_nan(best[0]) and not _is_nan(score)):  # NaN: worse than any number
            best[:] = [score, number, copy.deepcopy(model.state_dict())]


def _is_nan(score) -> bool:
    return isinstance(score, float) and math.isnan(score)


def _check_settings(epochs, steps, check, check_every, keep_best) -> int | None:
    """Refuse a contradictory set of ``fit`` settings in one line; return the steps between checks (steps mode)."""
    if (epochs is None) == (steps is None):
        raise ValueError(f"Give exactly one of epochs and steps, got epochs={epochs!r} and steps={steps!r}.")
    if keep_best is not None and check is None:
        raise ValueError("keep_best chooses among the checks: give a check function too.")
    if epochs is not None:
        positive_int(epochs, "epochs")
        if check_every is not None:
            raise ValueError("check_every is for steps mode; with epochs, the check runs after every epoch.")
        return None
    positive_int(steps, "steps")
    return steps if check_every is None else positive_int(check_every, "check_every")


def fit(
    model: nn.Module,
    batch_loss: BatchLoss,
    n: int,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str,
    epochs: int | None = None,
    steps: int | None = None,
    check: Callable[[], dict[str, float]] | None = None,
    check_every: int | None = None,
    keep_best: str | Callable[[dict], object] | None = None,
    amp: contextlib.AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool | None = None,
    desc: str = "train",
    check_first: bool = False,
    make_batches: MakeBatches = shuffled_batches,
    reduce_losses: Callable[[torch.Tensor], object] | None = None,
    loss_digits: int = 4,
) -> History:
    """Train ``model`` on ``n`` rows for ``epochs`` passes or ``steps`` steps (exactly one), ``batch_size`` rows
    a step in a fresh ``generator``-drawn order each pass; ``batch_loss(idx)`` returns the loss to minimise (or a
    pair: that loss and the value to record), run under ``amp``; the step goes through ``scaler`` when given.

    ``check()`` runs in eval mode without gradients after each epoch, or every ``check_every`` steps and after the
    last (also before the first with ``check_first``, as step 0); its scores join the history. ``keep_best`` (a
    score's name, or a function of the scores) restores the weights of the check where it was lowest (ties: the
    earliest) and records ``best_epoch`` or ``best_step``. Returns ``epoch`` or ``step``, ``train_loss`` (mean step
    loss since the last check), ``seconds`` and every ``step_loss``; raises ``TrainingDiverged`` at an interval's
    end if a step's loss was NaN or infinite. ``make_batches`` replaces ``shuffled_batches``; ``reduce_losses`` (in
    place: ``World.sum_``) combines each interval's step losses over processes."""
    check_every = _check_settings(epochs, steps, check, check_every, keep_best)
    positive_int(batch_size, "batch_size")
    device, unit = torch.device(device), "epoch" if epochs is not None else "step"
    run = {"device": device, "lr": optimizer.param_groups[0]["lr"], "steps_per_pass": math.ceil(n / batch_size)}
    history: History = {unit: [], "train_loss": [], "seconds": [], "step_loss": []}
    best: list = []  # [score, epoch or step, weights] of the best check so far
    model.train()
    if check_first and check is not None:  # step 0: where training starts
        history.update({unit: [0], "train_loss": [math.nan], "seconds": [0.0]})
        _check(model, check, history, keep_best, best, 0)
    show = progress_enabled() if progress is None else progress
    intervals = _intervals(n, batch_size, generator, device, make_batches, epochs, steps, check_every)
    with tqdm(total=epochs or steps, desc=desc, unit=unit, disable=not show, leave=False) as bar:
        for start, number, count, batches in intervals:
            records = _train(batch_loss, batches, optimizer, amp, scaler)
            if reduce_losses is not None:
                reduce_losses(records)
            _record(history, unit, number, records, start, run)
            if check is not None:
                _check(model, check, history, keep_best, best, number)
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.{loss_digits}f}")
            bar.update(1 if unit == "epoch" else count)
    if best:
        model.load_state_dict(best[2])
        history[f"best_{unit}"] = [best[1]]
    return history
