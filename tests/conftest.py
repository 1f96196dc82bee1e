"""Fixtures shared by several test modules (most helpers live in ``helpers_idx``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptft_helpers.settings import REPO_ROOT


@pytest.fixture
def artifacts_dir() -> Path:
    """``test-artifacts/`` at the repository root (git-ignored): screenshots and other outputs to look at."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
