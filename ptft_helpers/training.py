"""Training: ``pretrain`` an autoencoder, ``finetune`` a classifier, ``evaluate`` either.

Both build the loss of one batch and hand it to ``engine.fit``, the one loop of the package (``adam`` and
``TrainingDiverged`` live there, and are importable from here as before). Each function returns a *history*: a dict
of per-epoch lists that ``plots.plot_history`` draws directly.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .data import to_inputs
from .devices import autocast, grad_scaler, pick_device
from .distributed import World
from .engine import History, adam, fit, optimizer_step
from .engine import TrainingDiverged as TrainingDiverged  # its home was here: the notebooks and tests import it here
from .models import Classifier
from .validation import positive_int

PRETEXTS = ("plain", "denoising", "masked", "masked-rescaled")


def check_learning_rate(lr: float, label: str = "learning rate") -> float:
    """Return ``lr`` as a float, or raise ``ValueError`` if it is not a positive, finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"The {label} must be a positive, finite number (e.g. 1e-3), got {lr!r}.")
    return float(lr)


def learning_rates(lr: float, encoder_lr: float | None) -> tuple[float, float]:
    """A classifier's head and encoder learning rates, checked (``encoder_lr`` defaults to ``lr``)."""
    lr = check_learning_rate(lr)
    return lr, lr if encoder_lr is None else check_learning_rate(encoder_lr, "encoder learning rate")


def check_labels(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Refuse images and labels that do not match one to one, in one line."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they must match one to one.")


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


def reconstruction_loss(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, amp: contextlib.AbstractContextManager | None = None
) -> torch.Tensor:
    """MSE between ``model(inputs)`` and ``target`` (B, 784), the forward pass under the mixed-precision context
    ``amp`` (``devices.autocast(device)``; none by default), the loss in ``target``'s dtype (float32, or the
    float64 of a check; not bf16)."""
    with amp or contextlib.nullcontext():
        return F.mse_loss(model(inputs).to(target.dtype), target)


def pretrain_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    target: torch.Tensor,
    amp: contextlib.AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    weight: float = 1.0,
) -> torch.Tensor:
    """One optimiser step of pretraining, as ``pretrain`` takes it: ``reconstruction_loss`` under ``amp``, then
    ``engine.optimizer_step`` through the gradient ``scaler`` (``devices.grad_scaler``, for float16). ``weight``
    scales the loss that is minimised (a data-parallel rank's share, ``distributed.World.loss_weight``). Returns the
    unweighted loss, detached."""
    loss = reconstruction_loss(model, inputs, target, amp)
    optimizer_step(loss * weight if weight != 1.0 else loss, optimizer, scaler)
    return loss.detach()


def _pretext_batch_loss(net: nn.Module, x: torch.Tensor, pretext: str, generator, amp, world: World | None):
    """``pretrain``'s ``batch_loss``: the pretext's input for the whole global batch (its noise and masks drawn
    alike on every rank), and under ``world`` this rank's shard, weighted; the recorded value is this rank's share
    of the batch's mean loss (``World.sum_`` adds the shares up at the end of each epoch)."""

    def batch_loss(idx: torch.Tensor):
        target = x.index_select(0, idx)  # (B, 784): the global batch
        inputs = corrupt(target, pretext, generator)
        if world is None:
            return reconstruction_loss(net, inputs, target, amp)
        part, weight = world.shard(len(idx)), world.loss_weight(len(idx))
        loss = reconstruction_loss(net, inputs[part], target[part], amp)
        share = part.stop - part.start  # 0 where a last batch has fewer images than there are ranks
        record = loss.detach() * share / len(idx) if share else torch.zeros((), dtype=loss.dtype, device=loss.device)
        return (loss * weight if weight != 1.0 else loss), record

    return batch_loss


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
    x = to_inputs(images, device).to(next(model.parameters()).dtype)  # (N, 784) in [0, 1], on the device once
    net = DistributedDataParallel(model) if world else model
    generator = torch.Generator().manual_seed(seed)
    batch_loss = _pretext_batch_loss(net, x, pretext, generator, autocast(device), world)
    check = None if test_images is None else lambda: {"test_loss": evaluate(model, test_images, device=device)["mse"]}
    history = fit(
        model,
        batch_loss,
        len(x),
        adam(model.parameters(), lr, device),
        batch_size=batch_size,
        generator=generator,
        device=device,
        epochs=epochs,
        check=check,
        scaler=grad_scaler(device),
        desc="pretrain",
        progress=progress if not world or world.rank == 0 else False,
        reduce_losses=world.sum_ if world else None,
    )
    return {key: history[key] for key in ("epoch", "train_loss", "seconds", "step_loss", "test_loss") if key in history}


def classifier_groups(classifier: nn.Module, lr: float, encoder_lr: float) -> list[dict]:
    """Adam's parameter groups for a classifier: the head at ``lr``, the encoder at ``encoder_lr`` (left out when
    ``classifier.encoder_frozen``: a frozen encoder is not trained at all)."""
    groups = [{"params": list(classifier.head.parameters()), "lr": lr}]
    if not getattr(classifier, "encoder_frozen", False):
        groups.append({"params": list(classifier.encoder.parameters()), "lr": encoder_lr})
    return groups


def _classification(classifier: Classifier, x, y, amp, val, device):
    """``finetune``'s ``batch_loss`` and its end-of-epoch ``check``: the epoch's mean cross-entropy per image and
    accuracy (summed on the device, read once), then the validation scores when there is ``val``."""
    totals = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device, dtype=torch.long)}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        with amp:
            logits = classifier(xb).float()
        loss = F.cross_entropy(logits, yb)
        totals["loss"] += loss.detach() * len(idx)
        totals["correct"] += (logits.argmax(1) == yb).sum()
        return loss

    def check() -> dict[str, float]:
        scores = {"mean_loss": float(totals["loss"]) / len(x), "train_acc": float(totals["correct"]) / len(x)}
        for total in totals.values():
            total.zero_()
        if val is not None:
            on_val = evaluate(classifier, val[0], val[1], device=device)
            scores.update(val_loss=on_val["loss"], val_acc=on_val["accuracy"])
        return scores

    return batch_loss, check


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
    lr, encoder_lr = learning_rates(lr, encoder_lr)
    check_labels(images, labels)
    if len(images) == 0:
        raise ValueError("No labelled images to train on.")
    if val is not None and (len(val[0]) != len(val[1]) or len(val[0]) == 0):
        raise ValueError(
            f"val must be (images, labels) of the same, non-zero length; got {len(val[0])} and {len(val[1])}."
        )
    device = pick_device(device)
    classifier.to(device).train()
    x, y = to_inputs(images, device), labels.to(device)
    batch_loss, check = _classification(classifier, x, y, autocast(device), val, device)
    history = fit(
        classifier,
        batch_loss,
        len(x),
        adam(classifier_groups(classifier, lr, encoder_lr), lr, device),
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
        device=device,
        epochs=epochs,
        check=check,
        scaler=grad_scaler(device),
        progress=progress,
        desc="finetune",
    )
    history["train_loss"] = history.pop("mean_loss")  # per image, as evaluate() scores: not the mean step loss
    keys = ("epoch", "train_loss", "train_acc", "seconds", "val_loss", "val_acc")
    return {key: history[key] for key in keys if key in history}


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
