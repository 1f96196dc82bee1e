"""The environment check: real conditions a user can meet, reported as [OK] or [FAIL] with a fix."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from ptft_helpers import envcheck
from ptft_helpers.envcheck import check_data, check_device, check_environment, check_package, check_python, print_report

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in


def test_this_environment_passes_and_names_every_check(capsys):
    results = check_environment()
    names = [name for name, _, _ in results]
    assert names == [
        "Python",
        "torch",
        "torchvision",
        "matplotlib",
        "ipywidgets",
        "tqdm",
        "transformers",
        "peft",
        "device",
        "data (fashion-mnist)",
    ]
    assert all(ok for _, ok, _ in results), results
    assert print_report(results) is True
    out = capsys.readouterr().out.splitlines()
    assert f"[OK] torch {importlib.metadata.version('torch')}" in out
    assert all(line.startswith("[OK] ") for line in out[:-1])
    assert out[-1] == "All 10 checks passed."


def test_missing_data_is_a_failure_with_a_fix(tmp_path, monkeypatch, capsys):
    # A fresh machine: an empty data folder, no system copy, no network.
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("PTFT_DATA", str(empty))
    results = check_environment(system_dir=tmp_path / "no-system-copy", allow_download=False)
    data_row = results[-1]
    assert data_row[0] == "data (fashion-mnist)" and data_row[1] is False
    assert str(empty) in data_row[2]
    assert "PTFT_DATA" in data_row[2] and "python -m ptft_helpers data" in data_row[2]
    assert all(ok for _, ok, _ in results[:-1])
    assert print_report(results) is False
    out = capsys.readouterr().out
    assert "[FAIL] data (fashion-mnist): Dataset 'fashion-mnist' is not available." in out
    assert "To fix it, either:" in out
    assert out.strip().endswith("1 of 10 checks failed: see [FAIL] above.")
    assert list(empty.iterdir()) == []  # nothing half-written was left behind


def test_data_found_in_a_system_copy_is_ok(tmp_path):
    system = tmp_path / "system"
    system.mkdir()
    # The Debian package's layout: gzip IDX files. Use the real ones if this machine has them.
    from ptft_helpers.data import DATASETS, IDX_FILES

    real = DATASETS["fashion-mnist"].system_dir
    if not all((real / f"{f}.gz").is_file() for f in IDX_FILES):
        pytest.skip("no system copy of Fashion-MNIST on this machine")
    for f in IDX_FILES:
        (system / f"{f}.gz").symlink_to(real / f"{f}.gz")
    name, ok, detail = check_data("fashion-mnist", tmp_path / "data", system_dir=system, allow_download=False)
    assert ok and detail == f"ready, from the system copy {system}"
    # A second call finds the files in the data folder itself.
    assert check_data("fashion-mnist", tmp_path / "data", allow_download=False)[2].startswith(
        "ready, from the data folder"
    )


def test_unknown_dataset_fails_with_the_choices():
    name, ok, detail = check_data("cifar-10", allow_download=False)
    assert not ok and "Choose one of: fashion-mnist, mnist" in detail


def test_missing_package_fails_with_install_hint():
    name, ok, detail = check_package("ptft_no_such_package_xyz", "1.0")
    assert (name, ok) == ("ptft_no_such_package_xyz", False)
    assert "cannot be imported" in detail and "pip install -e ." in detail


def test_too_old_package_fails_with_upgrade_command():
    name, ok, detail = check_package("torch", "999.0")
    assert not ok
    assert "too old" in detail and "pip install -U 'torch>=999.0'" in detail


def test_package_new_enough_is_ok():
    import matplotlib

    assert check_package("matplotlib", "3.7") == ("matplotlib", True, matplotlib.__version__)


def test_python_version():
    assert check_python((3, 10)) == ("Python", True, ".".join(map(str, sys.version_info[:3])))
    name, ok, detail = check_python((sys.version_info[0] + 1, 0))
    assert not ok and "need" in detail and "or newer" in detail


@pytest.mark.parametrize("wanted", ["tpu", "cuda:99"])
def test_device_asked_for_but_missing_fails_with_help(monkeypatch, wanted):
    monkeypatch.setenv("PTFT_DEVICE", wanted)
    name, ok, detail = check_device()
    assert name == "device" and not ok
    assert "PTFT_DEVICE" in detail


def test_device_default_is_ok_and_says_which(monkeypatch):
    monkeypatch.delenv("PTFT_DEVICE", raising=False)
    name, ok, detail = check_device()
    assert ok and detail.split(" = ")[0] in {"cpu", "cuda", "mps"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.14.1+cu130", (2, 14, 1)),
        ("8.1.9", (8, 1, 9)),
        ("0.29.1", (0, 29, 1)),
        ("3.11.0rc1", (3, 11, 0)),
        ("4.70", (4, 70)),
    ],
)
def test_version_tuple(text, expected):
    assert envcheck._version_tuple(text) == expected


def test_report_prints_multiline_details_indented(capsys):
    ok = print_report([("a", True, "1.0"), ("b", False, "first line\nsecond line")])
    assert ok is False
    assert capsys.readouterr().out.splitlines() == [
        "[OK] a 1.0",
        "[FAIL] b: first line",
        "       second line",
        "1 of 2 checks failed: see [FAIL] above.",
    ]


def test_packages_match_the_dependencies_in_pyproject():
    import re
    import tomllib

    requirements = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {}
    for requirement in requirements:
        name, minimum = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement).groups()
        declared[name.lower()] = minimum
    checked = {dist.lower(): minimum for _, dist, minimum in envcheck.PACKAGES}
    assert set(declared) == set(checked), (declared, checked)
    for name, minimum in checked.items():
        assert declared[name] == minimum, f"{name}: pyproject.toml says >={declared[name]}, envcheck >={minimum}"
