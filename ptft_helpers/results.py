"""Every run's row, saved: the CSV and machine record that notebooks 05, 06, 07 and 11 build their tables from.

``save_results(rows, name, machine)`` writes ``<name>.csv`` (one line per run) and ``<name>.json`` (the code
version, the CPU, the protocol) into the results folder (``settings.results_folder``: ``$PTFT_RESULTS``, else the
clone's ``results/``, else ``results/`` in the current folder, else ``~/.cache/ptft/results`` when that cannot be
written; a ``fast/`` subfolder in fast mode), atomically, so an interrupted run never leaves half a file.
``full_run_rows(name)`` reads a full run back: your own, else the one stored in the clone; ``latest_rows(name)``
prefers this mode's own run (a fast one in fast mode).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .settings import checkout_root, display_path, results_folder


def _umask() -> int:
    """This process's umask, read without changing it where Linux shows it (``os.umask`` sets it process-wide, and
    a Jupyter kernel has other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _cannot_save(path: Path, err: OSError) -> OSError:
    """One line saying why ``path`` could not be written and what to do (a ``PermissionError`` where permission was
    the cause)."""
    message = f"Cannot save {display_path(path)}: {err.strerror or err}. Set PTFT_RESULTS to a folder you can write."
    return (PermissionError if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else OSError)(message)


def _write_atomically(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place; on any failure the
    temporary file is removed and ``path`` is as it was."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False, newline="")
    except OSError as err:
        raise _cannot_save(path, err) from None
    try:
        with f:
            write(f)
        os.chmod(f.name, 0o666 & ~_umask())  # a temporary file is private (0600); the result gets the usual mode
        os.replace(f.name, path)
    except BaseException as err:
        Path(f.name).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _cannot_save(path, err) from None
        raise


def save_rows(rows: Sequence[Mapping], path: str | Path) -> None:
    """Write one CSV line per run (columns: the union of the rows' keys, in first-seen order), atomically."""
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def write(f) -> None:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)

    _write_atomically(Path(path), write)


def load_rows(path: str | Path) -> list[dict]:
    """Read ``save_rows``' CSV back, with numbers as numbers and booleans as booleans (empty cells dropped)."""

    def value(text: str):
        if text in ("True", "False"):
            return text == "True"
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def save_results(rows: Sequence[Mapping], name: str, machine: Mapping) -> Path:
    """Save ``rows`` as ``<name>.csv`` and ``machine`` as ``<name>.json`` in the results folder; return the CSV."""
    folder = results_folder().path
    csv_path = folder / f"{name}.csv"
    save_rows(rows, csv_path)
    _write_atomically(folder / f"{name}.json", lambda f: json.dump(machine, f, indent=1, default=list))
    return csv_path


def full_run_rows(name: str) -> list[dict] | None:
    """The rows of a full run of ``<name>``: yours (the results folder outside fast mode), else the clone's stored
    ``results/``; None when neither has it (an installed package whose user has not run it in full)."""
    folders = [results_folder(fast=False).path]
    if (root := checkout_root()) is not None:
        folders.append(root / "results")
    for folder in dict.fromkeys(folders):
        if (folder / f"{name}.csv").is_file():
            return load_rows(folder / f"{name}.csv")
    return None


def latest_rows(name: str) -> list[dict] | None:
    """The rows of ``<name>`` for this mode: this mode's results folder (a fast run's in fast mode), else a full
    run's (``full_run_rows``); None when there are none."""
    path = results_folder().path / f"{name}.csv"
    return load_rows(path) if path.is_file() else full_run_rows(name)
