"""Checking arguments: one "whole number" check for every count the package takes, and errors meant for people.

``True`` is not a count (Python treats it as 1), and neither is ``2.0``: both are refused, so a
typo fails loudly with a one-line ``ValueError`` that names the argument and what it got.

``ShownError`` marks an error whose message is the whole story (what is wrong and how to fix it): Jupyter shows
its message alone, without the traceback through the package's internals.
"""

from __future__ import annotations


class ShownError(Exception):
    """Mixed into errors whose message names the problem and the fix; Jupyter (IPython) shows just the message."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for exceptions that render themselves
        return f"{type(self).__name__}: {self}".splitlines()


def is_whole_number(value: object, minimum: int = 1, maximum: int | None = None) -> bool:
    """Is ``value`` an ``int`` (not a bool) with ``minimum <= value <= maximum``?"""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return minimum <= value and (maximum is None or value <= maximum)


def whole_number(value: object, label: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` if ``is_whole_number(value, minimum, maximum)``; else raise a one-line ``ValueError``."""
    if not is_whole_number(value, minimum, maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{label} must be a whole number {bounds}, got {value!r}.")
    return value


def positive_int(value: object, label: str) -> int:
    """Return ``value`` if it is a whole number >= 1 (not a bool); else raise a one-line ``ValueError``."""
    return whole_number(value, label, 1)
