"""The checkpoint file format: saving and loading pretrained encoders (autoencoders, SimCLR, the MAE) safely.

A checkpoint holds the model's configuration, its weights and metadata: at least ``REQUIRED_METADATA`` (what it was
trained on, and how), plus the library versions. It is written atomically (a temporary file, then a rename, so a
crash never leaves half a file) and loaded with ``torch.load(weights_only=True)``, which refuses to run code hidden
in a file. ``save_checkpoint`` refuses metadata that lacks a required key, and ``load_pretrained`` (the command
line's loader) refuses a checkpoint that lacks one, as older versions wrote some.

Which checkpoint to load or train, and where it lives, is ``pretrained.py``'s job.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torchvision
from torch import nn

from . import __version__
from .contrastive import simclr_from_config
from .models import Autoencoder, autoencoder_from_config
from .vit import MaskedAutoencoder, ViTConfig

FORMAT = "ptft-checkpoint/1"
MAX_SIZE = 65_536  # the largest size (units, channels, code length) a checkpoint's configuration may give
# What every encoder's checkpoint says about its training (``pretrained.load_or_pretrain`` writes them all): the
# dataset and recipe to find it again and to evaluate it, its final loss, history and number of processes.
REQUIRED_METADATA = (
    "dataset",
    "pretext",
    "seed",
    "epochs",
    "train_size",
    "lr",
    "batch_size",
    "final_train_loss",
    "world_size",
    "history",
)


def missing_metadata(metadata: dict) -> list[str]:
    """The keys of ``REQUIRED_METADATA`` that ``metadata`` lacks, in that order."""
    return [key for key in REQUIRED_METADATA if key not in metadata]


def _cannot_save(path: Path, err: OSError) -> PermissionError:
    return PermissionError(
        f"Cannot save the checkpoint {path}: {err.strerror or err}. Save it in a folder you can write "
        "(set PTFT_CHECKPOINTS to one, or give another path)."
    )


def save_checkpoint(model: nn.Module, path: str | Path, **metadata) -> Path:
    """Write ``model`` (with its ``config``) and ``metadata`` to ``path`` atomically.

    ``metadata`` must hold every key of ``REQUIRED_METADATA`` (a ``ValueError`` names those it lacks).
    """
    path = Path(path)
    if missing := missing_metadata(metadata):
        raise ValueError(
            f"Cannot save the checkpoint {path}: its metadata lacks {', '.join(missing)}. Pass them all "
            f"({', '.join(REQUIRED_METADATA)}), as pretrained.load_or_pretrain does."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_save(path, err) from None
    payload = {
        "format": FORMAT,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": {
            **metadata,
            # str(): torch.__version__ is a TorchVersion, which torch.load(weights_only=True) refuses.
            "versions": {
                "torch": str(torch.__version__),
                "torchvision": str(torchvision.__version__),
                "ptft_helpers": __version__,
                "python": platform.python_version(),
            },
        },
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise _cannot_save(path, err) from None
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
    if problem := _malformed(payload):
        raise ValueError(f"The checkpoint {path} is damaged ({problem}). Delete it and pretrain again.")
    return payload


def _malformed(payload: dict) -> str | None:
    """What is wrong with the parts of a checkpoint's payload, or None: a file made by hand must not reach the model
    builders with a config they cannot read, or with sizes that would take all the memory."""
    parts = {"config": dict, "state_dict": dict, "metadata": dict}
    if wrong := [name for name, kind in parts.items() if not isinstance(payload.get(name), kind)]:
        return f"{', '.join(wrong)} missing or not a dictionary"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()):
        return "its weights are not named tensors"
    sizes = [v for v in payload["config"].values() if isinstance(v, int) and not isinstance(v, bool)]
    if any(not 0 <= size <= MAX_SIZE for size in sizes):
        return f"a size in its configuration is outside 0 to {MAX_SIZE:,}"
    return None


def load_weights(model: nn.Module, payload: dict, source: str = "the checkpoint") -> nn.Module:
    """Copy weights from a checkpoint payload into ``model``, naming every size that differs."""
    config = payload["config"]
    own = getattr(model, "config", None)
    if own is not None and own != config:
        diffs = [
            f"{k}: checkpoint {config.get(k)!r}, model {own.get(k)!r}"
            for k in sorted(set(own) | set(config))
            if own.get(k) != config.get(k)
        ]
        raise ValueError(
            f"{source} was saved from a different architecture ({'; '.join(diffs)}). "
            "Build the model with the checkpoint's sizes, or pretrain a new one."
        )
    state, expected = payload["state_dict"], model.state_dict()
    diffs = [
        f"{k}: checkpoint {tuple(state[k].shape) if k in state else 'missing'}, "
        f"model {tuple(expected[k].shape) if k in expected else 'missing'}"
        for k in sorted(set(state) | set(expected))
        if k not in state or k not in expected or state[k].shape != expected[k].shape
    ]
    if diffs:
        raise ValueError(f"{source} does not fit this model: {'; '.join(diffs)}.")
    model.load_state_dict(state)
    return model


def model_from_config(config: dict) -> nn.Module:
    """An untrained model for a checkpoint's ``config``: the masked autoencoder (arch "vit"), SimCLR (arch
    "smallconv") or an autoencoder."""
    try:
        if config.get("arch") == "vit":
            return MaskedAutoencoder(ViTConfig.from_dict(config))
        if config.get("arch") == "smallconv":
            return simclr_from_config(config)
        return autoencoder_from_config(config)
    except (KeyError, TypeError) as err:
        raise ValueError(f"Model configuration {config!r} cannot be read ({type(err).__name__}: {err}).") from None


def load_autoencoder(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Autoencoder, dict]:
    """Rebuild the autoencoder stored at ``path``; return it with the checkpoint's metadata."""
    payload = load_checkpoint(path, map_location)
    model = load_weights(autoencoder_from_config(payload["config"]), payload, str(path))
    return model, payload["metadata"]


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the encoder's model stored at ``path`` (an autoencoder, SimCLR or the MAE); return it with the
    checkpoint's metadata. A ``ValueError`` names the ``REQUIRED_METADATA`` that a checkpoint of an older version
    lacks."""
    payload = load_checkpoint(path, map_location)
    if missing := missing_metadata(payload["metadata"]):
        raise ValueError(
            f"The checkpoint {path} lacks the metadata {', '.join(missing)}: it was written by an older ptft. "
            "Delete it and pretrain again (python -m ptft_helpers pretrain, or the notebook that made it)."
        )
    model = load_weights(model_from_config(payload["config"]), payload, str(path))
    return model, payload["metadata"]
