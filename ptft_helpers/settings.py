"""Run-wide settings from environment variables: fast mode, progress bars, and where files live.

One switch, ``PTFT_FAST=1``, shrinks data, epochs and seeds so that CI can execute
every notebook quickly; the code path stays the same as in a full run.

The switches (``PTFT_DEVICE`` is read by ``devices.pick_device``):

- ``PTFT_FAST``, ``PTFT_PROGRESS``: 1/0, true/false, yes/no, on/off (any case), or unset.
  Anything else (``maybe``) raises a one-line ``ValueError`` instead of silently meaning "off".
- ``PTFT_DATA``: the data folder. It may be read-only.
- ``PTFT_RESULTS``: where notebooks 05, 06, 07 and 11 save every run's row.
- ``PTFT_CHECKPOINTS``: where pretrained encoders are saved (see ``checkpoint_dirs``).

Nothing is ever written inside an installed package. Run from a clone of the repository (``make``, an
editable install, or the clone on ``sys.path``), the defaults are the clone's own ``data/`` and ``results/``.
Installed (``pip install``, e.g. into ``site-packages``), they are per-user places instead:
``~/.cache/ptft/data`` for the data and ``./results`` (the current folder, where a notebook runs) for results,
or ``~/.cache/ptft/results`` where the current folder cannot be written.
``data_folder()`` and ``results_folder()`` say which was chosen and why, in one line (``Folder.describe``).

Checkpoint folders, in lookup order (``checkpoint_dirs``); each has a ``fast/`` subfolder used in fast mode:

1. ``$PTFT_CHECKPOINTS``, when set;
2. ``checkpoints/`` in the data folder (a teacher's shared copy is found here even when read-only);
3. the per-user cache, ``$XDG_CACHE_HOME/ptft/checkpoints`` (default ``~/.cache/ptft/checkpoints``).

New checkpoints are written to the first of these that can be written (``writable_checkpoint_dir``):
``$PTFT_CHECKPOINTS`` when set, else the data folder's when it is writable, else the per-user cache.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import NamedTuple, TypeVar

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parent
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


@functools.cache
def checkout_root() -> Path | None:
    """The clone of the repository this package runs from, or None when the package is installed.

    A clone is recognised by its ``pyproject.toml`` naming the project, next to the package folder; an installed
    package (in ``site-packages``) has none beside it.
    """
    root = PACKAGE_DIR.parent
    try:
        name = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return root if name == "ptft-helpers" else None


class Folder(NamedTuple):
    """A folder the series uses, why it was chosen, and the variable that overrides it."""

    path: Path
    why: str
    variable: str

    def describe(self, label: str) -> str:
        """One line: ``<label> folder: <path> (<why>; set <variable> to choose another)``."""
        return f"{label} folder: {display_path(self.path)} ({self.why}; set {self.variable} to choose another)"


INSTALLED = "ptft_helpers is installed, not run from a clone of the repository"


def data_folder() -> Folder:
    """The data folder: ``$PTFT_DATA``, else the clone's ``data/``, else the per-user ``~/.cache/ptft/data``."""
    if override := env_folder("PTFT_DATA"):
        return Folder(override, "set by PTFT_DATA", "PTFT_DATA")
    if root := checkout_root():
        return Folder(root / "data", "the clone's data folder", "PTFT_DATA")
    return Folder(user_cache_dir() / "data", f"the per-user cache: {INSTALLED}", "PTFT_DATA")


def data_dir() -> Path:
    """The data folder's path (``data_folder`` says why it was chosen)."""
    return data_folder().path


def results_folder(fast: bool | None = None) -> Folder:
    """Where notebooks save their runs' rows: ``$PTFT_RESULTS``, else the clone's ``results/``, else ``results/``
    in the current folder; the per-user ``~/.cache/ptft/results`` when that default cannot be written.
    In fast mode (``fast``, default ``fast_mode()``), a ``fast/`` subfolder: a fast run never replaces a full run's."""
    fast = fast_mode() if fast is None else fast
    sub = (lambda base: base / "fast") if fast else (lambda base: base)
    if override := env_folder("PTFT_RESULTS"):
        return Folder(sub(override), "set by PTFT_RESULTS", "PTFT_RESULTS")
    if root := checkout_root():
        base, why = root / "results", "the clone's results folder"
    else:
        base, why = Path.cwd() / "results", f"the current folder: {INSTALLED}"
    if not is_writable(base):
        base, why = user_cache_dir() / "results", f"the per-user cache: {display_path(base)} cannot be written"
    return Folder(sub(base), why, "PTFT_RESULTS")


def display_path(path: str | Path) -> str:
    """``path`` as the series prints it: relative to the clone when inside it, else from ``~`` when inside the home
    folder, else absolute. Stored outputs therefore never show where one machine keeps its files."""
    path = Path(path).absolute()
    root = checkout_root()
    if root is not None and path.is_relative_to(root):
        return str(path.relative_to(root)) or "."
    home = Path.home()
    if path.is_relative_to(home):
        return str(Path("~") / path.relative_to(home))
    return str(path)


def code_version() -> str:
    """The clone's short git commit, else (installed, or no git) the package version: which code made a result."""
    from . import __version__

    root = checkout_root()
    if root is not None:
        git = ["git", "-C", str(root), "rev-parse", "--short", "HEAD"]
        try:
            commit = subprocess.run(git, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
        if commit:
            return commit
    return f"ptft_helpers {__version__}"


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
