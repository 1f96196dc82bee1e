"""Contrastive pretraining (SimCLR): batched augmentations, the NT-Xent loss, a small conv encoder.

SimCLR (Chen et al., 2020) shows the encoder two random *views* of each image and trains it so
that the two views of the same image get similar codes and views of different images get
dissimilar ones. Everything here works on whole batches of float tensors, on any device:
no PIL, no per-image Python loop.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .data import to_inputs
from .devices import autocast, grad_scaler, pick_device
from .distributed import World, gather_rows, global_batch_norm
from .engine import History, adam, fit, shuffled_batches
from .models import IMAGE_SHAPE, Autoencoder
from .seeding import seeded
from .settings import pick
from .training import check_labels, check_learning_rate, classifier_groups, learning_rates
from .validation import positive_int

AUGMENT_DEFAULTS = {
    "crop_scale": (0.6, 1.0),
    "max_rotation": 15.0,
    "max_shift": 0.1,
    "flip": True,
    "jitter": 0.4,
    "erase": 0.25,
}


def contrastive_settings() -> dict:
    """The SimCLR recipe of notebook 06 for ``pretrained.load_or_pretrain`` (smaller in fast mode, same code path);
    less the temperature, also the budget of 06's control, an autoencoder on the same encoder."""
    return {"epochs": pick(30, 2), "train_size": pick(60000, 512), "lr": 1e-3, "batch_size": 256, "temperature": 0.2}


def check_augmentations(augmentations: dict) -> None:
    """Refuse settings that ``augment`` does not take, in one line that lists the ones it does."""
    unknown = set(augmentations) - set(AUGMENT_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown augmentation setting(s) {sorted(unknown)}; use {sorted(AUGMENT_DEFAULTS)}.")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    crop_scale: tuple[float, float] = AUGMENT_DEFAULTS["crop_scale"],
    max_rotation: float = AUGMENT_DEFAULTS["max_rotation"],
    max_shift: float = AUGMENT_DEFAULTS["max_shift"],
    flip: bool = AUGMENT_DEFAULTS["flip"],
    jitter: float = AUGMENT_DEFAULTS["jitter"],
    erase: float = AUGMENT_DEFAULTS["erase"],
) -> torch.Tensor:
    """A random view of each image in ``x`` (floats in [0, 1], (N, 784) or (N, 1, 28, 28)) -> (N, 1, 28, 28).

    One affine warp per image does the random resized crop (zoom into a fraction ``crop_scale`` of the
    area), a rotation of up to ``max_rotation`` degrees, a shift of up to ``max_shift`` of the width and a
    horizontal flip (half the images). Then brightness and contrast are scaled by factors in
    [1 - jitter, 1 + jitter], and with probability ``erase`` a random rectangle is blanked out.
    Random numbers are drawn on the CPU from ``generator``, so a seed gives the same views on any device.
    """
    x = x.reshape(-1, *IMAGE_SHAPE)
    n, device = len(x), x.device
    scale = _uniform(n, *crop_scale, generator).sqrt()  # side of the crop, as a fraction of the image
    angle = _uniform(n, -max_rotation, max_rotation, generator) * math.pi / 180
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    shift = _uniform(2 * n, -max_shift, max_shift, generator).reshape(n, 2) * 2  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * sign, -sin, shift[:, 0]], 1), torch.stack([sin * sign, cos, shift[:, 1]], 1)], 1
    )  # (N, 2, 3)
    grid = F.affine_grid(theta.to(device, x.dtype), [n, *IMAGE_SHAPE], align_corners=False)
    views = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N, 1, 28, 28)
    contrast = _uniform(n, 1 - jitter, 1 + jitter, generator).to(device).view(n, 1, 1, 1)
    brightness = _uniform(n, -jitter / 4, jitter / 4, generator).to(device).view(n, 1, 1, 1)
    mean = views.mean((2, 3), keepdim=True)
    views = ((views - mean) * contrast + mean * (1 + 4 * brightness)).clamp(0, 1)
    if erase > 0:
        size = (_uniform(2 * n, 0.2, 0.5, generator) * 28).reshape(n, 2)  # height, width of the rectangle
        corner = torch.rand(n, 2, generator=generator) * (28 - size)
        rows, cols = torch.arange(28).view(1, 28, 1), torch.arange(28).view(1, 1, 28)
        inside = (
            (rows >= corner[:, 0, None, None])
            & (rows < (corner[:, 0] + size[:, 0])[:, None, None])
            & (cols >= corner[:, 1, None, None])
            & (cols < (corner[:, 1] + size[:, 1])[:, None, None])
        )
        inside &= (torch.rand(n, generator=generator) < erase).view(n, 1, 1)
        views = views.masked_fill(inside.unsqueeze(1).to(device), 0.0)
    return views


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy for two views ``z1``, ``z2`` of shape (N, D).

    The 2N codes are L2-normalised; for each one, the other view of the same image is the right
    answer of a (2N - 1)-way classification over all other codes, with logits cosine / temperature.
    Returns the mean over all 2N codes.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both have shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D), unit length
    logits = z @ z.T / temperature  # (2N, 2N) cosine similarities / temperature
    logits.fill_diagonal_(float("-inf"))  # a code is never its own candidate
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # i <-> i + N
    return F.cross_entropy(logits, targets)


class SmallConvEncoder(nn.Module):
    """x (N, 1, 28, 28) -> map (N, 64C): three strided convolutions with batch norm; the output is the final
    (4C, 4, 4) feature map, flattened, C = ``channels``.

    About 2 million multiply-adds per image (C = 32), so a 2-core CPU pretrains on thousands of views per second.
    The map keeps *where* each feature is (a 4 x 4 grid); SimCLR's usual code averages it over the positions (4C
    numbers, as large networks do). Notebook 06 probes both: it chose the map after a draft run's results.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        positive_int(channels, "channels")
        c = channels
        self.config = {"arch": "smallconv", "channels": c}
        self.channels = 4 * c
        self.latent_dim = 4 * c * 16

        def block(cin: int, cout: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, stride=2, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, c, 5),  # (N, 1, 28, 28) -> (N, C, 14, 14)
            *block(c, 2 * c, 3),  # -> (N, 2C, 7, 7)
            *block(2 * c, 4 * c, 3),  # -> (N, 4C, 4, 4)
            nn.Flatten(),  # -> (N, 64C): the code
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.reshape(-1, *IMAGE_SHAPE))


class SimCLR(nn.Module):
    """An encoder plus a projection head; the loss sees the projection, the downstream task the encoder's code.

    The head averages the code's 4 x 4 map over positions, then applies Linear-ReLU-Linear (SimCLR's MLP head).
    """

    def __init__(self, encoder: SmallConvEncoder, projection_dim: int = 64):
        super().__init__()
        positive_int(projection_dim, "projection_dim")
        self.encoder = encoder
        d = encoder.channels
        self.config = {**encoder.config, "projection_dim": projection_dim}
        self.head = nn.Sequential(
            nn.Unflatten(1, (d, 4, 4)),  # (N, 64C) -> (N, 4C, 4, 4)
            nn.AdaptiveAvgPool2d(1),  # -> (N, 4C, 1, 1)
            nn.Flatten(),  # -> (N, 4C)
            nn.Linear(d, d),
            nn.ReLU(),
            nn.Linear(d, projection_dim),  # -> (N, p)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class SmallConvDecoder(nn.Module):
    """code (N, 64C) -> x_hat (N, 784): the ``SmallConvEncoder`` mirrored, three transposed convolutions
    (4 x 4 -> 7 x 7 -> 14 x 14 -> 28 x 28). The decoder of notebook 06's control, an autoencoder on SimCLR's encoder."""

    def __init__(self, channels: int = 32):
        super().__init__()
        positive_int(channels, "channels")
        c = channels
        self.config = {"arch": "smallconv", "channels": c}
        self.upsample = nn.Sequential(
            nn.Unflatten(1, (4 * c, 4, 4)),  # (N, 64C) -> (N, 4C, 4, 4)
            nn.ConvTranspose2d(4 * c, 2 * c, 3, stride=2, padding=1, bias=False),  # -> (N, 2C, 7, 7)
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False),  # -> (N, C, 14, 14)
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1),  # -> (N, 1, 28, 28)
            nn.Flatten(),  # -> (N, 784)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(z)


def build_simclr(channels: int = 32, projection_dim: int = 64) -> SimCLR:
    """An untrained SimCLR model around a ``SmallConvEncoder``."""
    return SimCLR(SmallConvEncoder(channels), projection_dim)


def build_conv_autoencoder(channels: int = 32) -> Autoencoder:
    """An untrained autoencoder on SimCLR's own encoder (``SmallConvEncoder``, code of 64C numbers) and a mirrored
    decoder: notebook 06's control, the same architecture and code as SimCLR with a reconstruction pretext."""
    return Autoencoder(SmallConvEncoder(channels), SmallConvDecoder(channels))


def simclr_from_config(config: dict) -> SimCLR | Autoencoder:
    """Rebuild an untrained model on the ``SmallConvEncoder`` from ``model.config`` (as stored in checkpoints):
    SimCLR when the config has a ``projection_dim``, else the autoencoder control (``build_conv_autoencoder``)."""
    if config.get("arch") != "smallconv":
        raise ValueError(f"Not a configuration of SimCLR's encoder: {config!r}.")
    if "projection_dim" in config:
        return build_simclr(config["channels"], config["projection_dim"])
    return build_conv_autoencoder(config["channels"])


def _batches_of_two_or_more(n: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """``engine.shuffled_batches`` less a last batch of one image, which has no negatives."""
    return [b for b in shuffled_batches(n, batch_size, generator, device) if len(b) > 1]


def _simclr_batch_loss(net: nn.Module, x: torch.Tensor, generator, temperature, amp, world, augmentations: dict):
    """``pretrain_contrastive``'s ``batch_loss``: NT-Xent on two views of each image of the global batch (drawn alike
    on every rank); under ``world`` each rank encodes its shard and the codes of all ranks are gathered. Records the
    loss in float32."""

    def batch_loss(idx: torch.Tensor):
        xb = x.index_select(0, idx)  # the global batch; its views are drawn alike on every rank
        v1, v2 = augment(xb, generator, **augmentations), augment(xb, generator, **augmentations)
        if world:
            part = world.shard(len(idx))
            v1, v2 = v1[part], v2[part]
        views = torch.cat([v1, v2]).contiguous(memory_format=torch.channels_last)  # (2b, 1, 28, 28)
        with amp:
            z = net(views).to(x.dtype)  # float32 (or a check's float64), not bf16
        z1, z2 = z[: len(v1)], z[len(v1) :]
        if world:
            sizes = world.sizes(len(idx))
            z1, z2 = gather_rows(z1, world, sizes), gather_rows(z2, world, sizes)  # every rank's codes
        loss = nt_xent(z1, z2, temperature)  # on the whole global batch, the same on every rank
        return loss, loss.detach().float()

    return batch_loss


def pretrain_contrastive(
    model: SimCLR,
    images: torch.Tensor,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 256,
    temperature: float = 0.2,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    world: World | None = None,
    **augmentations,
) -> History:
    """Train ``model`` with NT-Xent on two augmented views of every image (uint8 or float, N x 28 x 28).

    Returns per-epoch ``train_loss``, ``seconds`` and ``images_per_s`` (images, not views), and every step's loss
    in ``step_loss``. ``augmentations`` override ``AUGMENT_DEFAULTS``. Raises ``TrainingDiverged`` on NaN.
    ``world`` (``distributed.World``, under torchrun): each rank encodes its shard of every global batch's views;
    the codes of all ranks are gathered, so that the negatives are the whole global batch, and batch norm uses the
    global batch's statistics (``distributed.GlobalBatchNorm2d``, during training only): several processes train
    what one would.
    """
    positive_int(epochs, "epochs")
    positive_int(batch_size, "batch_size")
    lr = check_learning_rate(lr)
    check_augmentations(augmentations)
    if len(images) < 2:
        raise ValueError("Contrastive pretraining needs at least 2 images (the others are the negatives).")
    device = world.device if world else pick_device(device)
    if world:
        world.check_batch(batch_size)
        global_batch_norm(model)
    model.to(device, memory_format=torch.channels_last).train()  # channels last: ~2x faster convolutions on a CPU
    x = to_inputs(images, device).reshape(-1, *IMAGE_SHAPE).to(next(model.parameters()).dtype)
    net = DistributedDataParallel(model) if world else model
    generator = torch.Generator().manual_seed(seed)
    batch_loss = _simclr_batch_loss(net, x, generator, temperature, autocast(device), world, augmentations)
    history = fit(
        model,
        batch_loss,
        len(x),
        adam(model.parameters(), lr, device),
        batch_size=batch_size,
        generator=generator,
        device=device,
        epochs=epochs,
        scaler=grad_scaler(device),
        desc="pretrain (SimCLR)",
        loss_digits=3,
        progress=progress if not world or world.rank == 0 else False,
        make_batches=_batches_of_two_or_more,
    )
    if world:
        global_batch_norm(model, on=False)  # plain batch norm again: the trained model is the one a notebook loads
    full, rest = divmod(len(x), batch_size)
    trained = full * batch_size * (batch_size > 1) + rest * (rest > 1)  # images per epoch, in batches of 2 or more
    history["images_per_s"] = [trained / seconds for seconds in history["seconds"]]
    return {key: history[key] for key in ("epoch", "train_loss", "seconds", "images_per_s", "step_loss")}


@torch.no_grad()
def embed(
    encoder: nn.Module, images: torch.Tensor, *, batch_size: int = 2048, device: torch.device | str | None = None
) -> torch.Tensor:
    """The encoder's features for ``images`` (N x 28 x 28, uint8 or float), in eval mode, as a CPU tensor."""
    device = pick_device(device)
    was_training = encoder.training
    encoder.to(device).eval()
    out = [
        encoder(to_inputs(images[i : i + batch_size], device)).float().cpu() for i in range(0, len(images), batch_size)
    ]
    encoder.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def evaluate_contrastive(
    model: SimCLR,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    temperature: float = 0.2,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """SimCLR's pretext score on ``images`` (N x 28 x 28), in eval mode: the mean NT-Xent loss of two augmented views
    of each image (drawn with ``seed``), in batches of ``batch_size`` whose other images are the negatives, as in
    training; the images that do not fill a last batch are left out. Returns ``nt_xent`` and ``chance``, the loss of
    codes that tell the images apart no better than a guess, log(2 x batch - 1); a perfect encoder scores 0."""
    size = min(positive_int(batch_size, "batch_size"), len(images))
    if size < 2:
        raise ValueError("The contrastive loss needs at least 2 images (the others are the negatives).")
    device = pick_device(device)
    was_training = model.training
    model.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for start in range(0, len(images) - size + 1, size):
        x = to_inputs(images[start : start + size], device)
        z = model(torch.cat([augment(x, generator), augment(x, generator)])).float()
        losses.append(float(nt_xent(z[:size], z[size:], temperature)))
    model.train(was_training)
    return {"nt_xent": statistics.fmean(losses), "chance": math.log(2 * size - 1)}


def _last_batch_first(n: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """``engine.shuffled_batches`` taken from the end: the order ``train_augmented`` has always used."""
    return shuffled_batches(n, batch_size, generator, device)[::-1]


def train_augmented(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int = 500,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    batch_size: int = 128,
    eval_every: int = 50,
    seed: int = 0,
    device: torch.device | str | None = None,
    **augmentations,
) -> History:
    """Train a ``models.Classifier`` with cross-entropy on augmented views of the labelled ``images``.

    Before training and every ``eval_every`` steps the accuracy and cross-entropy on ``val=(images, labels)`` are
    recorded; at the end the classifier gets back the weights of its best validation check (early stopping chosen
    on validation data, never on test): the highest accuracy, ties broken by the lower cross-entropy.
    ``encoder_lr`` (default ``lr``) is the encoder's learning rate. Returns ``step``, ``val_acc``, ``val_loss`` and
    ``train_loss`` (mean over the steps since the last check; NaN at step 0) per check, and the chosen ``best_step``.
    """
    positive_int(steps, "steps")
    positive_int(eval_every, "eval_every")
    lr, encoder_lr = learning_rates(lr, encoder_lr)
    check_labels(images, labels)
    device = pick_device(device)
    classifier.to(device, memory_format=torch.channels_last).train()
    x, y = to_inputs(images, device).reshape(-1, *IMAGE_SHAPE), labels.to(device)
    val_x, val_y = to_inputs(val[0], device), val[1].to(device)
    generator = torch.Generator().manual_seed(seed)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(classifier(augment(x.index_select(0, idx), generator, **augmentations)), y[idx])

    def check() -> dict[str, float]:
        logits = classifier(val_x)
        accuracy = float((logits.argmax(1) == val_y).float().mean())
        return {"val_acc": accuracy, "val_loss": float(F.cross_entropy(logits, val_y))}

    history = fit(
        classifier,
        batch_loss,
        len(x),
        adam(classifier_groups(classifier, lr, encoder_lr), lr, device),
        batch_size=min(batch_size, len(x)),
        generator=generator,
        device=device,
        steps=steps,
        check=check,
        check_every=eval_every,
        check_first=True,
        keep_best=lambda s: (-s["val_acc"], s["val_loss"]),
        progress=False,
        make_batches=_last_batch_first,
    )
    classifier.eval()
    return {key: history[key] for key in ("step", "val_acc", "val_loss", "train_loss", "best_step")}


def augmented_trial(
    make_classifier: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    labelled: torch.Tensor,
    val: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    lrs: Sequence[float],
    steps: int,
    eval_every: int,
    seed: int,
) -> dict:
    """One trial of a network trained on augmented views: ``train_augmented`` on the ``labelled`` images at each
    learning rate (a fresh ``make_classifier()`` per rate, made under ``seed``; early stopping on the ``val``
    images); the rate with the best validation check (accuracy, ties broken by the lower cross-entropy) is scored on
    ``test = (images, labels)`` once. Returns the chosen ``lr`` and ``best_step``, its ``val_acc``, ``val_loss`` and
    ``test_acc``."""
    best = None
    for lr in lrs:
        with seeded(seed):
            classifier = make_classifier()
        history = train_augmented(
            classifier,
            images[labelled],
            labels[labelled],
            (images[val], labels[val]),
            steps=steps,
            eval_every=eval_every,
            lr=lr,
            seed=seed,
        )
        chosen = history["step"].index(history["best_step"][0])
        score = (history["val_acc"][chosen], -history["val_loss"][chosen])  # equal scores: the earlier rate
        if best is None or score > best[0]:
            best = (score, lr, history["best_step"][0], classifier)
    (val_acc, minus_loss), lr, step, classifier = best
    device = next(classifier.parameters()).device  # where train_augmented put it: a GPU when there is one
    with torch.no_grad():
        predicted = classifier(to_inputs(test[0], device)).argmax(1).cpu()
    test_acc = float((predicted == test[1]).float().mean())
    return {"lr": lr, "best_step": step, "val_acc": val_acc, "val_loss": -minus_loss, "test_acc": test_acc}
