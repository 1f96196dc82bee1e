"""Servers' logs in failure reports: a test or fixture that starts a server (JupyterLab, the hub, the proxy)
registers its log with ``server_log(name, path)``; while it is registered, and until the end of the test in which
it was released, a failing test's report (``conftest.py``) ends with the log's last lines, so that CI's output says
why the test failed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

LOG_TAIL = 6000  # characters of each server log in a failure report
_REGISTERED: dict[str, Path] = {}
_RELEASED: set[str] = set()  # left the ``with`` during the current test (maybe by its failure): shown until its end


@contextlib.contextmanager
def server_log(name: str, path: Path) -> Iterator[Path]:
    """While inside, a failing test's report shows the end of the log at ``path`` under ``name``."""
    _REGISTERED[name] = path
    _RELEASED.discard(name)
    try:
        yield path
    finally:
        _RELEASED.add(name)


def registered_logs() -> list[tuple[str, Path]]:
    return list(_REGISTERED.items())


def forget_released() -> None:
    """Forget the logs released during the test that just ended."""
    for name in _RELEASED:
        _REGISTERED.pop(name, None)
    _RELEASED.clear()


def log_tail(path: Path, chars: int = LOG_TAIL) -> str:
    """The last ``chars`` characters of a log (or why there are none)."""
    try:
        return path.read_text(errors="replace")[-chars:] or "(empty)"
    except OSError as err:
        return f"(cannot read {path}: {err.strerror or err})"
