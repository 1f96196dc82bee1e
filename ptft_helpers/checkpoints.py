"""Saving and loading pretrained autoencoders safely.

A checkpoint holds the model's configuration, its weights and metadata (dataset, epochs,
final loss, library versions). It is written atomically (a temporary file, then a rename,
so a crash never leaves half a file) and loaded with ``torch.load(weights_only=True)``,
which refuses to run code hidden in a file.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torchvision
from torch import nn

from . import __version__
from .data import dataset_info, load
from .models import Autoencoder, autoencoder_from_config, build_autoencoder
from .settings import checkpoint_dir, pick
from .training import pretrain

FORMAT = "ptft-checkpoint/1"


def save_checkpoint(model: nn.Module, path: str | Path, **metadata) -> Path:
    """Write ``model`` (with its ``config``) and ``metadata`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": {
            **metadata,
            # str(): torch.__version__ is a TorchVersion, which torch.load(weights_only=True) refuses.
            "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
                         "ptft_helpers": __version__, "python": platform.python_version()},
        },
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint; return ``{"format", "config", "state_dict", "metadata"}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Pretrain one first (notebook 03, or `python -m ptft_helpers pretrain`)."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"The checkpoint {path} is corrupt, truncated or not a ptft checkpoint ({type(err).__name__}). "
            "Delete it and pretrain again."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ptft checkpoint (expected format {FORMAT!r}). Delete it and pretrain again.")
    return payload


def load_weights(model: nn.Module, payload: dict, source: str = "the checkpoint") -> nn.Module:
    """Copy weights from a checkpoint payload into ``model``, naming every size that differs."""
    config = payload["config"]
    own = getattr(model, "config", None)
    if own is not None and own != config:
        diffs = [f"{k}: checkpoint {config.get(k)!r}, model {own.get(k)!r}"
                 for k in sorted(set(own) | set(config)) if own.get(k) != config.get(k)]
        raise ValueError(f"{source} was saved from a different architecture ({'; '.join(diffs)}). "
                         "Build the model with the checkpoint's sizes, or pretrain a new one.")
    state, expected = payload["state_dict"], model.state_dict()
    diffs = [f"{k}: checkpoint {tuple(state[k].shape) if k in state else 'missing'}, "
             f"model {tuple(expected[k].shape) if k in expected else 'missing'}"
             for k in sorted(set(state) | set(expected))
             if k not in state or k not in expected or state[k].shape != expected[k].shape]
    if diffs:
        raise ValueError(f"{source} does not fit this model: {'; '.join(diffs)}.")
    model.load_state_dict(state)
    return model


def load_autoencoder(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Autoencoder, dict]:
    """Rebuild the autoencoder stored at ``path``; return it with the checkpoint's metadata."""
    payload = load_checkpoint(path, map_location)
    model = load_weights(autoencoder_from_config(payload["config"]), payload, str(path))
    return model, payload["metadata"]


def pretrain_settings() -> dict:
    """The pretraining recipe the notebooks share (smaller in fast mode, same code path)."""
    return {"epochs": pick(20, 2), "train_size": pick(60000, 6000), "lr": 1e-3, "batch_size": 128}


def default_checkpoint_path(dataset: str, arch: str, hidden_dim: int, latent_dim: int, pretext: str,
                            epochs: int, train_size: int, seed: int) -> Path:
    """Where ``load_or_pretrain`` keeps the encoder for these settings."""
    name = f"{dataset_info(dataset).name}-{arch}-{hidden_dim}-{latent_dim}-{pretext}-e{epochs}-n{train_size}-s{seed}.pt"
    return checkpoint_dir() / name


def load_or_pretrain(
    dataset: str = "fashion-mnist",
    *,
    arch: str = "mlp",
    latent_dim: int = 32,
    hidden_dim: int | None = None,
    pretext: str = "plain",
    seed: int = 0,
    path: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    retrain: bool = False,
    **recipe,
) -> tuple[Autoencoder, dict]:
    """Return a pretrained autoencoder: loaded if a matching checkpoint exists, else trained and saved.

    ``retrain=True`` trains (and saves) even when a matching checkpoint exists.
    ``recipe`` overrides ``pretrain_settings()`` (epochs, train_size, lr, batch_size).
    The metadata holds the training history, so plots work whether it was loaded or trained.
    """
    settings = {**pretrain_settings(), **recipe}
    unknown = set(settings) - set(pretrain_settings())
    if unknown:
        raise ValueError(f"Unknown pretraining setting(s) {sorted(unknown)}; use {sorted(pretrain_settings())}.")
    dataset = dataset_info(dataset).name
    model = build_autoencoder(arch, latent_dim, hidden_dim)
    hidden_dim = model.config["hidden_dim"]  # the architecture's default when not given
    path = Path(path) if path is not None else default_checkpoint_path(
        dataset, arch, hidden_dim, latent_dim, pretext, settings["epochs"], settings["train_size"], seed)
    wanted = {"dataset": dataset, "pretext": pretext, "seed": seed, **settings}
    if path.is_file() and not retrain:
        payload = load_checkpoint(path)
        if all(payload["metadata"].get(k) == v for k, v in wanted.items()) and payload["config"] == model.config:
            return load_weights(model, payload, str(path)), payload["metadata"]
    train, test = load(dataset, "train"), load(dataset, "test")
    if not 1 <= settings["train_size"] <= len(train):
        raise ValueError(f"train_size must be between 1 and {len(train)}, got {settings['train_size']!r}.")
    torch.manual_seed(seed)
    model = build_autoencoder(arch, latent_dim, hidden_dim)
    history = pretrain(model, train.images[: settings["train_size"]], epochs=settings["epochs"], lr=settings["lr"],
                       batch_size=settings["batch_size"], pretext=pretext, seed=seed, device=device,
                       test_images=test.images, progress=progress)
    history.pop("step_loss")
    metadata = {**wanted, "final_train_loss": history["train_loss"][-1], "final_test_loss": history["test_loss"][-1],
                "history": history}
    save_checkpoint(model, path, **metadata)
    return model.cpu(), load_checkpoint(path)["metadata"]  # read back: the file is known to load
