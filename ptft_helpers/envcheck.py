"""Checking that this machine can run the notebooks, with a fix for everything that fails.

``check_environment()`` returns one ``(name, ok, detail)`` row per check: the detail is
the version or device found when ``ok`` is True, and what is wrong plus how to fix it
when it is False. ``print_report`` prints the rows as ``[OK]`` / ``[FAIL]`` lines.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path

Check = tuple[str, bool, str]

MIN_PYTHON = (3, 11)
# pyproject.toml's dependencies, what the notebooks import (tests/test_envcheck.py keeps them in step):
# (import name, distribution, minimum). JupyterLab and nbgrader are extras: Colab brings its own notebook server.
PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("torch", "torch", "2.4"),
    ("torchvision", "torchvision", "0.19"),
    ("matplotlib", "matplotlib", "3.7"),
    ("ipywidgets", "ipywidgets", "8.0"),
    ("tqdm", "tqdm", "4.60"),
    ("transformers", "transformers", "5.0"),  # notebooks 08 and 09
    ("peft", "peft", "0.21"),  # notebook 09
)
INSTALL_HINT = "run `make lab` (or `pip install -e .` in the repository) to install the project's dependencies"


def _version_tuple(version: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1): the leading numeric release part of a version string."""
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.group() != part:  # e.g. '1rc1' or '1+cu130': stop after the number
            break
    return tuple(numbers)


def check_python(minimum: tuple[int, int] = MIN_PYTHON) -> Check:
    """Is this Python at least ``minimum``?"""
    found = ".".join(map(str, sys.version_info[:3]))
    want = ".".join(map(str, minimum))
    if sys.version_info[:2] >= minimum:
        return ("Python", True, found)
    return (
        "Python",
        False,
        f"found {found}, need {want} or newer: install Python {want}+ and recreate the virtual environment",
    )


def check_package(module: str, minimum: str | None = None, distribution: str | None = None) -> Check:
    """Can ``module`` be imported, and is its version at least ``minimum``?"""
    distribution = distribution or module
    try:
        imported = importlib.import_module(module)
    except ImportError as err:
        return (module, False, f"cannot be imported ({err}): {INSTALL_HINT}")
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(imported, "__version__", "unknown version"))
    if minimum and _version_tuple(version) < _version_tuple(minimum):
        return (
            module,
            False,
            f"version {version} is too old, need {minimum} or newer: `pip install -U '{distribution}>={minimum}'`",
        )
    return (module, True, version)


def check_device() -> Check:
    """Which device training will use (CUDA, Apple MPS or CPU).

    Fails only if ``PTFT_DEVICE`` asks for one that is missing."""
    from .devices import describe_device, pick_device

    try:
        device = pick_device()
    except ValueError as err:
        return ("device", False, str(err))
    note = "" if device.type != "cpu" else " (no GPU found: everything runs on the CPU)"
    return ("device", True, f"{device} = {describe_device(device)}{note}")


def check_data(
    dataset: str = "fashion-mnist",
    root: str | Path | None = None,
    *,
    system_dir: str | Path | None = None,
    allow_download: bool = True,
) -> Check:
    """Are the dataset's files in the data folder (fetching them if they can be, never with apt-get)? See
    ``data.prepare``."""
    from .data import prepare
    from .settings import data_folder

    name = f"data ({dataset})"
    try:
        source = prepare(dataset, root, system_dir=system_dir, allow_download=allow_download)
    except (FileNotFoundError, ValueError) as err:
        return (name, False, str(err))
    return (name, True, f"ready, from the {source}" + ("" if root is not None else f" ({data_folder().why})"))


def check_environment(
    dataset: str = "fashion-mnist",
    data_root: str | Path | None = None,
    *,
    system_dir: str | Path | None = None,
    allow_download: bool = True,
) -> list[Check]:
    """Run every check: Python, the packages, the device, the data. Returns ``(name, ok, detail)`` rows.

    The keyword arguments are passed to ``data.prepare`` (where to look for the data, and whether it may download
    it). It never installs anything: the Debian package is ``python -m ptft_helpers data``'s to install.
    """
    results = [check_python()]
    results += [check_package(module, minimum, dist) for module, dist, minimum in PACKAGES]
    torch_ok = any(name == "torch" and ok for name, ok, _ in results)
    if torch_ok:
        results.append(check_device())
        results.append(check_data(dataset, data_root, system_dir=system_dir, allow_download=allow_download))
    else:
        results.append(("device", False, "needs torch: fix the torch line above first"))
        results.append((f"data ({dataset})", False, "needs torch and torchvision: fix those lines above first"))
    return results


def print_report(results: list[Check]) -> bool:
    """Print one ``[OK] name detail`` or ``[FAIL] name: detail`` line per check; return True if all passed."""
    for name, ok, detail in results:
        first, *rest = str(detail).splitlines() or [""]
        print(f"[OK] {name} {first}" if ok else f"[FAIL] {name}: {first}")
        for line in rest:
            print(f"       {line}")
    passed = sum(ok for _, ok, _ in results)
    all_ok = passed == len(results)
    print(
        f"All {len(results)} checks passed."
        if all_ok
        else f"{len(results) - passed} of {len(results)} checks failed: see [FAIL] above."
    )
    return all_ok
