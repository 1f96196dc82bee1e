"""Run-wide settings from environment variables: fast mode, progress bars, where data and checkpoints live.

One switch, ``PTFT_FAST=1``, shrinks data, epochs and seeds so that CI can execute
every notebook quickly; the code path stays the same as in a full run.

The switches (``PTFT_DEVICE`` is read by ``devices.pick_device``):

- ``PTFT_FAST``, ``PTFT_PROGRESS``: 1/0, true/false, yes/no, on/off (any case), or unset.
  Anything else (``maybe``) raises a one-line ``ValueError`` instead of silently meaning "off".
- ``PTFT_DATA``: the data folder (default ``data/`` in the repository). It may be read-only.
- ``PTFT_CHECKPOINTS``: where pretrained encoders are saved (see ``checkpoint_dirs``).

Checkpoint folders, in lookup order (``checkpoint_dirs``); each has a ``fast/`` subfolder used in fast mode:

1. ``$PTFT_CHECKPOINTS``, when set;
2. ``checkpoints/`` in the data folder (a teacher's shared copy is found here even when read-only);
3. the per-user cache, ``$XDG_CACHE_HOME/ptft/checkpoints`` (default ``~/.cache/ptft/checkpoints``).

New checkpoints are written to the first of these that can be written (``writable_checkpoint_dir``):
``$PTFT_CHECKPOINTS`` when set, else the data folder's when it is writable, else the per-user cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool = False) -> bool:
    """The on/off switch ``$name``: ``default`` when unset or empty, else one of 1/0/true/false/yes/no/on/off."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(
        f"{name}={raw!r} is not a switch value: set it to 1 or 0 (or true/false, yes/no, on/off), or unset it."
    )


def env_folder(name: str) -> Path | None:
    """The folder named by ``$name`` (``~`` expanded), or None when unset or empty; a file there is refused."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}={raw!r} is a file, not a folder: point {name} at a folder, or unset it.")
    return path


def fast_mode() -> bool:
    """True when ``PTFT_FAST`` is on (CI and ``make test`` set ``PTFT_FAST=1``)."""
    return env_flag("PTFT_FAST")


def pick(full: T, fast: T) -> T:
    """Return ``fast`` in fast mode and ``full`` otherwise."""
    return fast if fast_mode() else full


def data_dir() -> Path:
    """The data folder: ``$PTFT_DATA`` if set, else ``data/`` at the repository root."""
    return env_folder("PTFT_DATA") or REPO_ROOT / "data"


def user_cache_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/ptft`` (default ``~/.cache/ptft``)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "ptft"


def _mode_folder(base: Path) -> Path:
    return base / "fast" if fast_mode() else base


def checkpoint_dirs() -> list[Path]:
    """Where pretrained encoders are looked for, in order (module docstring); ``fast/`` subfolders in fast mode."""
    override = env_folder("PTFT_CHECKPOINTS")
    bases = ([override] if override else []) + [data_dir() / "checkpoints", user_cache_dir() / "checkpoints"]
    return [_mode_folder(base) for base in dict.fromkeys(bases)]


def is_writable(folder: Path) -> bool:
    """Could files be created in ``folder``? Tried for real in it (or, if it does not exist yet, in its nearest
    existing parent), so read-only mounts and permissions both count, for root too. Creates nothing that stays."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".ptft-write-test-"):
            pass
    except OSError:
        return False
    return True


def writable_checkpoint_dir() -> Path:
    """Where new checkpoints are saved: ``$PTFT_CHECKPOINTS`` if set, else the data folder's ``checkpoints/``
    when it can be written, else the per-user cache (``fast/`` subfolders in fast mode)."""
    dirs = checkpoint_dirs()
    if env_folder("PTFT_CHECKPOINTS"):
        return dirs[0]
    return dirs[0] if is_writable(dirs[0]) else dirs[-1]


def progress_enabled() -> bool:
    """Progress bars are shown unless ``PTFT_PROGRESS`` is off, or it is unset and ``CI`` is set."""
    return env_flag("PTFT_PROGRESS", default=not os.environ.get("CI"))
