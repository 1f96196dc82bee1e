"""Fixtures shared by several test modules (the IDX-writing helpers live in ``helpers_idx``), and the servers'
logs in every failure report (``server_logs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptft_helpers import data

from helpers_idx import link_fashion
from server_logs import LOG_TAIL, forget_released, log_tail, registered_logs

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        for name, path in registered_logs():
            report.sections.append((f"{name} log ({path}), its last {LOG_TAIL} characters", log_tail(path)))
    if call.when == "teardown":
        forget_released()


@pytest.fixture
def artifacts_dir() -> Path:
    """``test-artifacts/`` at the repository root (git-ignored): screenshots and other outputs to look at."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A read-only data folder with the real Fashion-MNIST, shared by the whole session."""
    return link_fashion(tmp_path_factory.mktemp("fashion-data"))


@pytest.fixture(scope="session")
def fashion(fashion_root) -> dict:
    """The real Fashion-MNIST splits, loaded once: ``{"train": ImageData, "test": ImageData}``."""
    return {split: data.load("fashion-mnist", split, root=fashion_root) for split in ("train", "test")}


@pytest.fixture
def data_env(tmp_path, monkeypatch) -> Path:
    """A fresh data folder with the real Fashion-MNIST, set as ``PTFT_DATA``, outside fast mode."""
    root = link_fashion(tmp_path / "data")
    monkeypatch.setenv("PTFT_DATA", str(root))
    monkeypatch.delenv("PTFT_FAST", raising=False)
    return root
