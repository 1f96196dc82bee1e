"""Run-wide settings: fast mode and where data and checkpoints live.

One switch, ``PTFT_FAST=1``, shrinks data, epochs and seeds so that CI can execute
every notebook quickly; the code path stays the same as in a full run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def fast_mode() -> bool:
    """True when ``PTFT_FAST`` is set to 1/true/yes (CI and ``make test`` set it)."""
    return os.environ.get("PTFT_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full: T, fast: T) -> T:
    """Return ``fast`` in fast mode and ``full`` otherwise."""
    return fast if fast_mode() else full


def data_dir() -> Path:
    """The data folder: ``$PTFT_DATA`` if set, else ``data/`` at the repository root."""
    override = os.environ.get("PTFT_DATA")
    return Path(override).expanduser() if override else REPO_ROOT / "data"


def checkpoint_dir() -> Path:
    """Where pretrained encoders are kept (a separate ``fast/`` folder in fast mode)."""
    base = data_dir() / "checkpoints"
    return base / "fast" if fast_mode() else base


def progress_enabled() -> bool:
    """Progress bars are shown unless running under CI (``CI`` set) or ``PTFT_PROGRESS=0``."""
    if os.environ.get("PTFT_PROGRESS", "").strip() == "0":
        return False
    return not os.environ.get("CI")
