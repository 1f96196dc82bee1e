"""Training loops: ``pretrain`` an autoencoder, ``finetune`` a classifier, ``evaluate`` either.

Batches are cut by index from tensors that are already in memory (and on the GPU when
there is one): no per-sample transforms and no DataLoader workers. Each function returns
a *history*: a dict of per-epoch lists that ``plots.plot_history`` draws directly.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .data import to_inputs
from .devices import autocast, grad_scaler, pick_device, synchronize
from .distributed import World
from .models import Classifier
from .settings import progress_enabled
from .validation import positive_int

History = dict[str, list[float]]
PRETEXTS = ("plain", "denoising", "masked", "masked-rescaled")


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; ``epoch`` and ``step`` (1-based, when known) say where."""

    def __init__(self, epoch: int, step: int | None, lr: float, history: History):
        self.epoch, self.step, self.lr, self.history = epoch, step, lr, history
        where = f"epoch {epoch}" + (f" (step {step} overall)" if step is not None else "")
        super().__init__(
            f"Training diverged: the loss became NaN or infinite in {where} "
            f"with learning rate {lr:g}. Try a lower learning rate, e.g. {lr / 10:g}."
        )


def check_learning_rate(lr: float, label: str = "learning rate") -> float:
    """Return ``lr`` as a float, or raise ``ValueError`` if it is not a positive, finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"The {label} must be a positive, finite number (e.g. 1e-3), got {lr!r}.")
    return float(lr)


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """A fresh random order of 0..n-1 (drawn on the CPU, so seeds repeat on any device), cut into batches."""
    order = torch.randperm(n, generator=generator).to(device)
    return list(order.split(batch_size))


def corrupt(
    x: torch.Tensor, pretext: str, generator: torch.Generator, noise_std: float = 0.3, mask_ratio: float = 0.5
) -> torch.Tensor:
    """The encoder's input for a pretext task; the target is always the clean ``x``.

    plain: x itself. denoising: x plus Gaussian noise of std ``noise_std``.
    masked: a random ``mask_ratio`` of the pixels set to 0. masked-rescaled: the same, with the kept
    pixels divided by ``1 - mask_ratio`` (inverted dropout), so the input's mean matches a clean image's.
    """
    if pretext == "plain":
        return x
    if pretext == "denoising":
        return x + noise_std * torch.randn(x.shape, generator=generator).to(x.device)
    if pretext in ("masked", "masked-rescaled"):
        kept = x * (torch.rand(x.shape, generator=generator) >= mask_ratio).to(x.device)
        return kept / (1 - mask_ratio) if pretext == "masked-rescaled" else kept
    raise ValueError(f"Unknown pretext {pretext!r}. Choose one of: {', '.join(PRETEXTS)}.")


def adam(params: Iterable, lr: float, device: torch.device, *, capturable: bool = False) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel on the CPU and CUDA: the same update, computed in one
    pass per tensor instead of a dozen small operations (on 2 CPU cores a pretraining epoch is
    ~15-20% faster at batch 128, ~5% at batch 512; see benchmarks/README.md).
    ``capturable=True`` keeps the step on the GPU, as CUDA graph capture needs (the benchmark uses it)."""
    fused = True if device.type in ("cpu", "cuda") else None  # PyTorch >= 2.4 (pyproject.toml) has both kernels
    return torch.optim.Adam(params, lr=lr, fused=fused, capturable=capturable)


def pretrain_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    target: torch.Tensor,
    amp: contextlib.AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    weight: float = 1.0,
) -> torch.Tensor:
    """One optimiser step of pretraining: MSE between ``model(inputs)`` and ``target`` (B, 784), under the
    mixed-precision context ``amp`` (``devices.autocast(device)``; none by default) and its gradient ``scaler``
    (``devices.grad_scaler``, for float16). ``weight`` scales the loss that is minimised (a data-parallel rank's
    share, ``distributed.World.loss_weight``). Returns the unweighted loss, detached."""
    with amp or contextlib.nullcontext():
        loss = F.mse_loss(model(inputs).to(target.dtype), target)  # float32 (or the float64 of a check), not bf16
    optimizer.zero_grad(set_to_none=True)
    minimised = loss * weight if weight != 1.0 else loss
    if scaler is None:
        minimised.backward()
        optimizer.step()
    else:  # a disabled scaler (float32) passes the loss and the step through unchanged
        scaler.scale(minimised).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def _progress(total: int, desc: str, show: bool | None):
    return tqdm(
        total=total, desc=desc, unit="epoch", disable=not (progress_enabled() if show is None else show), leave=False
    )


def end_epoch(
    history: History, epoch: int, step_losses: torch.Tensor, lr: float, start: float, device: torch.device
) -> float:
    """Record a finished epoch in ``history`` (its step losses, mean loss and seconds since ``start``); return the
    seconds. Raises ``TrainingDiverged`` at the epoch's first non-finite step loss. Shared by every pretraining loop.
    """
    step_losses = step_losses.cpu()
    synchronize(device)
    done_before = len(history["step_loss"])
    history["step_loss"].extend(step_losses.tolist())
    if not torch.isfinite(step_losses).all():
        first_bad = int(torch.nonzero(~torch.isfinite(step_losses))[0])
        raise TrainingDiverged(epoch, done_before + first_bad + 1, lr, history)
    seconds = time.perf_counter() - start
    history["epoch"].append(epoch)
    history["train_loss"].append(float(step_losses.mean()))
    history["seconds"].append(seconds)
    return seconds


def pretrain(
    model: nn.Module,
    images: torch.Tensor,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    pretext: str = "plain",
    seed: int = 0,
    device: torch.device | str | None = None,
    test_images: torch.Tensor | None = None,
    progress: bool | None = None,
    world: World | None = None,
) -> History:
    """Train an autoencoder to reconstruct ``images`` (uint8 or float, N x 28 x 28) with MSE and Adam.

    Returns a history with per-epoch ``train_loss`` (mean MSE per pixel), ``test_loss`` when
    ``test_images`` is given, ``seconds`` per epoch, and every step's loss in ``step_loss``.
    Raises ``TrainingDiverged`` if the loss becomes NaN or infinite.
    ``world`` (``distributed.World``, under torchrun): train this rank's shard of every global batch, with the
    gradients averaged over the ranks by ``DistributedDataParallel``; the history is the whole batch's.
    The inputs take the model's dtype (float32, or float64 for an exact comparison).
    """
    positive_int(epochs, "epochs")
    positive_int(batch_size, "batch_size")
    lr = check_learning_rate(lr)
    if pretext not in PRETEXTS:
        raise ValueError(f"Unknown pretext {pretext!r}. Choose one of: {', '.join(PRETEXTS)}.")
    if len(images) == 0:
        raise ValueError("No images to train on.")
    device = world.device if world else pick_device(device)
    if world:
        world.check_batch(batch_size)
    model.to(device).train()
    dtype = next(model.parameters()).dtype
    x = to_inputs(images, device).to(dtype)  # (N, 784) floats in [0, 1], moved to the device once
    net = DistributedDataParallel(model) if world else model
    optimizer = adam(model.parameters(), lr, device)
    amp, scaler = autocast(device), grad_scaler(device)
    generator = torch.Generator().manual_seed(seed)
    history: History = {"epoch": [], "train_loss": [], "seconds": [], "step_loss": []}
    if test_images is not None:
        history["test_loss"] = []
    with _progress(epochs, "pretrain", progress if not world or world.rank == 0 else False) as bar:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            batches = _batches(len(x), batch_size, generator, device)
            step_losses = torch.empty(len(batches), device=device, dtype=dtype)
            for i, idx in enumerate(batches):
                target = x.index_select(0, idx)  # (B, 784): the global batch
                inputs = corrupt(target, pretext, generator)  # noise and masks drawn for the whole global batch
                if world is None:
                    step_losses[i] = pretrain_step(net, optimizer, inputs, target, amp, scaler)
                    continue
                part, weight = world.shard(len(idx)), world.loss_weight(len(idx))
                loss = pretrain_step(net, optimizer, inputs[part], target[part], amp, scaler, weight)
                share = part.stop - part.start  # 0 where a last batch has fewer images than there are ranks
                step_losses[i] = loss * share / len(idx) if share else 0.0  # this rank's share of the batch mean
            if world:
                world.sum_(step_losses)  # the whole batch's mean loss per step, on every rank
            end_epoch(history, epoch, step_losses, lr, start, device)
            if test_images is not None:
                history["test_loss"].append(evaluate(model, test_images, device=device)["mse"])
                model.train()
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.4f}")
            bar.update()
    return history


def finetune(
    classifier: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``classifier`` on labelled images with cross-entropy and Adam.

    ``lr`` is the head's learning rate; ``encoder_lr`` (default: ``lr``) the encoder's.
    A frozen encoder (``classifier.freeze_encoder()``) is not trained at all.
    Returns per-epoch ``train_loss`` and ``train_acc``, plus ``val_loss`` and ``val_acc`` when
    ``val=(images, labels)`` is given: validation data held out from the *training* split, for
    choosing settings. (There is no per-epoch test score: choosing by it would tune on the test set.)
    """
    positive_int(epochs, "epochs")
    positive_int(batch_size, "batch_size")
    lr = check_learning_rate(lr)
    encoder_lr = lr if encoder_lr is None else check_learning_rate(encoder_lr, "encoder learning rate")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they must match one to one.")
    if len(images) == 0:
        raise ValueError("No labelled images to train on.")
    device = pick_device(device)
    classifier.to(device).train()
    x = to_inputs(images, device)
    y = labels.to(device)
    groups = [{"params": list(classifier.head.parameters()), "lr": lr}]
    if not classifier.encoder_frozen:
        groups.append({"params": list(classifier.encoder.parameters()), "lr": encoder_lr})
    optimizer = adam(groups, lr, device)
    amp, scaler = autocast(device), grad_scaler(device)
    generator = torch.Generator().manual_seed(seed)
    history: History = {"epoch": [], "train_loss": [], "train_acc": [], "seconds": []}
    if val is not None:
        if len(val[0]) != len(val[1]) or len(val[0]) == 0:
            raise ValueError(
                f"val must be (images, labels) of the same, non-zero length; got {len(val[0])} and {len(val[1])}."
            )
        history.update(val_loss=[], val_acc=[])
    with _progress(epochs, "finetune", progress) as bar:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            batches = _batches(len(x), batch_size, generator, device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for idx in batches:
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                with amp:
                    logits = classifier(xb).float()
                loss = F.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(1) == yb).sum()
            mean_loss = float(loss_sum) / len(x)
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(epoch, None, lr, history)
            history["epoch"].append(epoch)
            history["train_loss"].append(mean_loss)
            history["train_acc"].append(float(correct) / len(x))
            history["seconds"].append(time.perf_counter() - start)
            if val is not None:
                scores = evaluate(classifier, val[0], val[1], device=device)
                history["val_loss"].append(scores["loss"])
                history["val_acc"].append(scores["accuracy"])
                classifier.train()
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            bar.update()
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Score a model on a whole split, in large batches without gradients.

    Classifier (with ``labels``): ``{"loss": mean cross-entropy, "accuracy": fraction correct}``.
    Autoencoder: ``{"mse": mean squared error per pixel}``.
    """
    device = pick_device(device)
    model.to(device).eval()
    is_classifier = isinstance(model, Classifier)
    if is_classifier and labels is None:
        raise ValueError("Evaluating a classifier needs the labels too: evaluate(model, images, labels).")
    total, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        xb = to_inputs(images[start : start + batch_size], device)
        with autocast(device):
            out = model(xb).float()
        if is_classifier:
            yb = labels[start : start + batch_size].to(device)
            total += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
        else:
            total += float(F.mse_loss(out, xb, reduction="sum")) / xb.shape[1]
    if is_classifier:
        return {"loss": total / len(images), "accuracy": correct / len(images)}
    return {"mse": total / len(images)}


@torch.no_grad()
def reconstruct(model: nn.Module, images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Reconstructions of ``images`` as float images (N, 28, 28) in [0, 1], on the CPU."""
    device = pick_device(device)
    model.to(device).eval()
    out = model(to_inputs(images, device)).float().clamp(0, 1)
    return out.reshape(len(images), 28, 28).cpu()
