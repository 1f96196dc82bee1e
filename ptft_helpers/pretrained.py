"""The shared pretrained encoders: train one once, then load it everywhere (notebooks 03-09, the CLI).

``load_or_pretrain`` returns ``Pretrained(model, metadata, path)``: the autoencoder (or SimCLR model, or the masked
autoencoder, ``arch="vit", pretext="mae"``), its
checkpoint's metadata (with the training history) and the checkpoint file it loaded or saved. It is the one writer of
encoder checkpoints (notebook 09's subset encoders, ``experiments.load_or_pretrain_on_subset``, come through it too),
so every checkpoint holds the same metadata (``checkpoints.REQUIRED_METADATA``) and loads everywhere: in the
notebooks, and in ``python -m ptft_helpers evaluate`` and ``finetune``.

Where checkpoints are looked for, in order (``settings.checkpoint_dirs``; ``fast/`` subfolders in fast mode):

1. ``$PTFT_CHECKPOINTS``, when set;
2. ``checkpoints/`` in the data folder (``data/`` or ``$PTFT_DATA``), even when it is read-only, so a
   teacher's shared, pretrained encoders are found by every student;
3. the per-user cache ``$XDG_CACHE_HOME/ptft/checkpoints`` (default ``~/.cache/ptft/checkpoints``).

A checkpoint that is not found is trained and saved in the first writable place: ``$PTFT_CHECKPOINTS``
when set, else the data folder's ``checkpoints/`` when it can be written, else the per-user cache.

Two processes that need the same missing checkpoint (two students, two notebooks) do not both write
it half-way: training happens under a file lock (``.<name>.lock`` beside the checkpoint); the second
process waits, then loads what the first one saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from .checkpoints import load_checkpoint, load_weights, model_from_config, save_checkpoint
from .contrastive import build_conv_autoencoder, build_simclr, contrastive_settings, pretrain_contrastive
from .data import dataset_info, load
from .distributed import RankError, World
from .mae import mae_settings, pretrain_mae
from .models import Autoencoder, build_autoencoder
from .protocol import protocol
from .seeding import seeded
from .settings import checkpoint_dirs, is_writable, pick, user_cache_dir, writable_checkpoint_dir
from .training import PRETEXTS, pretrain
from .validation import whole_number
from .vit import MaskedAutoencoder, ViTConfig

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a race can then only cost a second training run
    fcntl = None


class Pretrained(NamedTuple):
    """What ``load_or_pretrain`` returns: ``model, metadata, path = load_or_pretrain(...)``."""

    model: Autoencoder  # a contrastive.SimCLR model for pretext="simclr", a vit.MaskedAutoencoder for "mae"
    metadata: dict
    path: Path


def series_encoders() -> list[dict]:
    """Every encoder the notebooks load with ``load_or_pretrain``, as its options, in this mode (fast mode: the
    notebooks' fast-mode encoders). ``python -m ptft_helpers pretrain --all`` and ``make checkpoints`` pretrain them
    ahead of a class. Not here: notebook 09's encoders pretrained on 1,000 and 6,000 images, which 09 trains itself
    (``experiments.load_or_pretrain_on_subset``), and 08's one-epoch demonstration. Add one when a notebook loads a
    new encoder."""
    return [
        {"pretext": "plain"},  # 03 and 04: 20 epochs
        *(
            {"pretext": p, "seed": run, "epochs": pick(10, 2)}
            for p in PRETEXTS
            for run in range(protocol().pretrain_runs)
        ),  # 05 and 09: each pretext's runs; 06 and 07 load masked-rescaled run 0 too
        {"pretext": "simclr", "arch": "smallconv", "channels": 32, "projection_dim": 64},  # 06 and 07: 30 epochs
        {"pretext": "plain", "arch": "smallconv", "channels": 32},  # 06's control: SimCLR's encoder and budget
        *({"pretext": "mae", "arch": "vit", "seed": run} for run in range(protocol().pretrain_runs)),  # 08 and 09
    ]


def pretrain_settings() -> dict:
    """The pretraining recipe the notebooks share (smaller in fast mode, same code path)."""
    return {"epochs": pick(20, 2), "train_size": pick(60000, 6000), "lr": 1e-3, "batch_size": 128}


def _build(arch: str, latent_dim: int | None, hidden_dim: int | None, pretext: str) -> torch.nn.Module:
    """An untrained model for ``pretext``: the masked autoencoder (arch "vit", sized by ``vit.ViTConfig()``) for
    "mae"; SimCLR (arch "smallconv", hidden_dim = channels, latent_dim = projection size) for "simclr"; else an
    autoencoder, on SimCLR's encoder for arch "smallconv" (its code: 64 x channels numbers, so no latent_dim)."""
    if (pretext == "mae") != (arch == "vit"):
        raise ValueError("The 'mae' pretext trains the 'vit' architecture and only it: pass arch='vit', pretext='mae'.")
    if pretext == "mae":
        if (latent_dim, hidden_dim) != (None, None):
            raise ValueError("The ViT's sizes are vit.ViTConfig()'s: leave latent_dim, hidden_dim and channels out.")
        return MaskedAutoencoder(ViTConfig())
    if pretext == "simclr":
        if arch != "smallconv":
            raise ValueError(f"The simclr pretext trains the 'smallconv' encoder, not {arch!r}: pass arch='smallconv'.")
        return build_simclr(32 if hidden_dim is None else hidden_dim, 64 if latent_dim is None else latent_dim)
    if arch == "smallconv":
        model = build_conv_autoencoder(32 if hidden_dim is None else hidden_dim)
        if latent_dim not in (None, model.encoder.latent_dim):
            raise ValueError(
                f"The 'smallconv' autoencoder's code is 64 x channels = {model.encoder.latent_dim} numbers, not "
                f"{latent_dim}: leave latent_dim out and choose channels."
            )
        return model
    return build_autoencoder(arch, 32 if latent_dim is None else latent_dim, hidden_dim)


def checkpoint_name(
    dataset: str,
    arch: str,
    hidden_dim: int,
    latent_dim: int,
    pretext: str,
    epochs: int,
    train_size: int,
    seed: int,
    *,
    test_every_epoch: bool = True,
) -> str:
    """The file name that ``load_or_pretrain`` gives the checkpoint for these settings (ending in ``-subset`` when
    it was trained without a test pass after each epoch, as notebook 09's encoders on subsets of the images are).
    A ViT's sizes are its width (hidden_dim) and patch size (latent_dim): ``...-vit-w128-p7-mae-...``."""
    name = dataset_info(dataset).name
    if arch == "vit":
        arch, hidden_dim, latent_dim = "vit", f"w{hidden_dim}", f"p{latent_dim}"
    suffix = "" if test_every_epoch else "-subset"
    return f"{name}-{arch}-{hidden_dim}-{latent_dim}-{pretext}-e{epochs}-n{train_size}-s{seed}{suffix}.pt"


def default_checkpoint_path(
    dataset: str, arch: str, hidden_dim: int, latent_dim: int, pretext: str, epochs: int, train_size: int, seed: int
) -> Path:
    """Where the checkpoint for these settings is: the first existing one in the lookup order (module
    docstring), else where ``load_or_pretrain`` would save it."""
    name = checkpoint_name(dataset, arch, hidden_dim, latent_dim, pretext, epochs, train_size, seed)
    for folder in checkpoint_dirs():
        if (folder / name).is_file():
            return folder / name
    return writable_checkpoint_dir() / name


def _lock_file(path: Path) -> Path:
    """``.<name>.lock`` beside the checkpoint, or in the per-user cache when that folder cannot be written."""
    if is_writable(path.parent):
        return path.parent / f".{path.name}.lock"
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return user_cache_dir() / "locks" / f"{path.name}.{digest}.lock"


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for the checkpoint ``path`` (waiting, with a note, while another process has it)."""
    if fcntl is None:
        yield
        return
    lock = _lock_file(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process that is training {path.name}...", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_matching(path: Path, wanted: dict, config: dict) -> Pretrained | None:
    """The checkpoint at ``path`` if it exists and was trained with ``wanted`` settings and ``config``; else None."""
    if not path.is_file():
        return None
    payload = load_checkpoint(path)
    meta = payload["metadata"]
    if payload["config"] != config or any(meta.get(k) != v for k, v in wanted.items()):
        return None
    with seeded(0):  # its weights are overwritten; only the caller's random state must stay as it was
        model = model_from_config(config)
    load_weights(model, payload, str(path))
    return Pretrained(model, meta, path)


def _recipe(pretext: str, arch: str, recipe: dict) -> dict:
    """``pretrain_settings()`` with ``recipe``'s overrides; for SimCLR's encoder (arch "smallconv"),
    ``contrastive_settings()``: SimCLR's own recipe, and the same budget (epochs, images, batch, learning rate) for
    an autoencoder on that encoder, less the temperature it has no use for."""
    if arch == "vit":
        defaults = mae_settings()
    elif arch == "smallconv":
        defaults = contrastive_settings()
        if pretext != "simclr":
            defaults.pop("temperature")
    else:
        defaults = pretrain_settings()
    if unknown := set(recipe) - set(defaults):
        raise ValueError(f"Unknown pretraining setting(s) {sorted(unknown)}; use {sorted(defaults)}.")
    return {**defaults, **recipe}


def load_or_pretrain(
    dataset: str = "fashion-mnist",
    *,
    arch: str = "mlp",
    latent_dim: int | None = None,
    hidden_dim: int | None = None,
    channels: int | None = None,
    projection_dim: int | None = None,
    pretext: str = "plain",
    seed: int = 0,
    path: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    retrain: bool = False,
    world: World | None = None,
    test_every_epoch: bool = True,
    **recipe,
) -> Pretrained:
    """Return a pretrained encoder's model: loaded if a matching checkpoint exists, else trained and saved.

    Sizes: ``latent_dim`` (default 32) is the code's length and ``hidden_dim`` the hidden units (mlp) or first
    channels (conv). SimCLR's encoder (arch "smallconv") is sized by ``channels`` (default 32; its code, the one a
    probe reads, is the 4 x 4 map of 4 x channels, 64 x channels numbers) and, for SimCLR, ``projection_dim``
    (default 64), the length of the projection head's output that NT-Xent compares. Their checkpoint names keep the
    order arch-hidden-latent: channels, then the projection size (SimCLR) or the code's length (an autoencoder).
    ``path`` pins the checkpoint file; by default it is looked for, and saved, as the module docstring says.
    ``retrain=True`` trains (and saves) even when a matching checkpoint exists.
    ``recipe`` overrides ``pretrain_settings()`` (epochs, train_size, lr, batch_size); for ``pretext="simclr"``
    (``arch="smallconv"``, notebook 06) it overrides ``contrastive.contrastive_settings()`` (also temperature), the
    recipe an autoencoder on that encoder shares (less the temperature). ``arch="vit", pretext="mae"``: the masked
    autoencoder (``vit.MaskedAutoencoder(vit.ViTConfig())``, notebooks 08 and 09), trained by ``mae.pretrain_mae``
    with ``mae.mae_settings()`` (epochs, train_size, lr, batch_size, weight_decay), in one process.
    Returns ``Pretrained(model, metadata, path)``; the metadata holds the training history, so plots
    work whether it was loaded or trained. Safe with a read-only data folder and with several processes.
    ``world`` (``distributed.World``, under torchrun): every rank trains its shard of each batch; only rank 0 takes
    the lock and writes the checkpoint, the others wait for it and load it.
    ``test_every_epoch=False`` (an autoencoder trained for many epochs on few images, as notebook 09's through
    ``experiments.load_or_pretrain_on_subset``) skips the test pass after each epoch: no test loss in the history.
    Every checkpoint gets the same metadata (``checkpoints.REQUIRED_METADATA``), whichever way it was trained.
    """
    hidden_dim, latent_dim = _named_sizes(arch, pretext, hidden_dim, latent_dim, channels, projection_dim)
    settings = _recipe(pretext, arch, recipe)
    dataset = dataset_info(dataset).name
    with seeded(seed):  # checks the sizes before anything is loaded; the caller's random state stays as it was
        model = _build(arch, latent_dim, hidden_dim, pretext)
    hidden_dim, latent_dim = _sizes_in_name(model)
    config = model.config
    wanted = {"dataset": dataset, "pretext": pretext, "seed": seed, **settings}
    epochs, size = settings["epochs"], settings["train_size"]
    name = checkpoint_name(
        dataset, arch, hidden_dim, latent_dim, pretext, epochs, size, seed, test_every_epoch=test_every_epoch
    )
    candidates = [Path(path)] if path is not None else [folder / name for folder in checkpoint_dirs()]
    if not retrain and (found := _find(candidates, wanted, config, world)):
        return found
    target = candidates[0] if path is not None else writable_checkpoint_dir() / name
    training = {"device": device, "progress": progress, "test_every_epoch": test_every_epoch}
    return _train_and_save(target, wanted, config, world, retrain, **training)


def _sizes_in_name(model: torch.nn.Module) -> tuple[int, int]:
    """The two sizes a checkpoint's name gives: hidden units or channels and the code's (or projection's) length;
    a ViT's width and patch size. The architecture's defaults where none was given."""
    config = model.config
    if config["arch"] == "vit":
        return config["width"], config["patch_size"]
    hidden_dim = config.get("hidden_dim", config.get("channels"))
    return hidden_dim, config.get("latent_dim", config.get("projection_dim", model.encoder.latent_dim))


def _named_sizes(
    arch: str,
    pretext: str,
    hidden_dim: int | None,
    latent_dim: int | None,
    channels: int | None,
    projection_dim: int | None,
) -> tuple[int | None, int | None]:
    """``hidden_dim`` and ``latent_dim`` as ``_build`` and the checkpoint names take them: ``channels`` is the
    first convolution's channels (conv, smallconv), ``projection_dim`` SimCLR's projection size."""
    if channels is not None:
        if arch in ("mlp", "vit") or hidden_dim is not None:
            raise ValueError("channels size a conv encoder ('conv' or 'smallconv'), and replace hidden_dim: give one.")
        hidden_dim = channels
    if projection_dim is not None:
        if pretext != "simclr" or latent_dim is not None:
            raise ValueError("projection_dim sizes SimCLR's projection head (pretext 'simclr'): not with latent_dim.")
        latent_dim = projection_dim
    return hidden_dim, latent_dim


def _find(candidates: list[Path], wanted: dict, config: dict, world: World | None) -> Pretrained | None:
    """The first of ``candidates`` that holds a matching checkpoint, or None. Under torchrun rank 0 looks, and every
    rank loads what it found (so that all take the same branch, even while another process is saving one)."""
    found, index = None, -1  # the first candidate that holds a matching checkpoint, and its place in the list
    if world is None or world.rank == 0:
        found, index = next(
            ((f, i) for i, c in enumerate(candidates) if (f := _load_matching(c, wanted, config))), (None, -1)
        )
    if world is not None:
        index = world.from_leader(index)
        found = found or (_leaders_checkpoint(candidates[index], wanted, config, world) if index >= 0 else None)
    return found


def _train_and_save(
    target: Path, wanted: dict, config: dict, world: World | None, retrain: bool, **training
) -> Pretrained:
    """Train the model ``config`` as ``wanted`` says and save it at ``target`` (rank 0 only, under the file lock),
    unless another process saved a matching one there meanwhile."""
    leader = world is None or world.rank == 0  # under torchrun only rank 0 takes the lock and writes
    train = load(wanted["dataset"], "train")
    whole_number(wanted["train_size"], "train_size", 1, len(train))
    with _exclusive(target) if leader else contextlib.nullcontext():
        found = leader and not retrain and _load_matching(target, wanted, config)  # another process just saved it
        if world is not None and world.from_leader(int(bool(found))):
            found = found or _leaders_checkpoint(target, wanted, config, world)
        if found:
            return found
        model, results = _train(config, wanted, train.images[: wanted["train_size"]], world=world, **training)
        if leader:
            save_checkpoint(model, target, **wanted, **results)
    if world is not None:
        world.barrier()  # the others wait for rank 0's checkpoint, then load it
        if not target.is_file():
            raise _not_shared(target, world)
    return Pretrained(model.cpu(), load_checkpoint(target)["metadata"], target)  # read back: the file loads


def _train(
    config: dict, wanted: dict, images: torch.Tensor, *, test_every_epoch: bool, world: World | None, **common
) -> tuple[torch.nn.Module, dict]:
    """A new model ``config`` trained on ``images`` with ``wanted``'s pretext, seed and recipe; return it with what
    its training adds to the metadata: the final losses, the history (without each step's loss), the processes."""
    pretext, seed = wanted["pretext"], wanted["seed"]
    with seeded(seed):
        model = model_from_config(config)
    own = {"mae": ("weight_decay",), "simclr": ("temperature",)}.get(pretext, ())  # the pretext's own settings
    recipe = {k: wanted[k] for k in ("epochs", "lr", "batch_size", *own)}
    test = load(wanted["dataset"], "test").images if test_every_epoch and pretext != "simclr" else None
    if pretext == "mae":
        if world is not None:
            raise ValueError("The MAE trains in one process: run `python -m ptft_helpers pretrain` without torchrun.")
        history = pretrain_mae(model, images, **recipe, seed=seed, test_images=test, **common)
    elif pretext == "simclr":
        history = pretrain_contrastive(model, images, **recipe, seed=seed, world=world, **common)
    else:
        history = pretrain(model, images, **recipe, pretext=pretext, test_images=test, seed=seed, world=world, **common)
    history.pop("step_loss")
    final = {f"final_{key}": history[key][-1] for key in ("train_loss", "test_loss") if key in history}
    return model, {**final, "world_size": world.size if world else 1, "history": history}


def _leaders_checkpoint(path: Path, wanted: dict, config: dict, world: World) -> Pretrained:
    """The checkpoint rank 0 found or saved at ``path``, loaded on this rank; a ``RankError`` if this rank cannot
    see it (torchrun over several machines without a shared file system)."""
    found = _load_matching(path, wanted, config)
    if not found:
        raise _not_shared(path, world)
    return found


def _not_shared(path: Path, world: World) -> RankError:
    return RankError(
        f"rank {world.rank} cannot load the checkpoint that rank 0 has at {path}: every process must see the same"
        " files (on several machines, set PTFT_CHECKPOINTS to a folder on a shared file system)"
    )
