"""Grading never gives a wrong score quietly: missing data stops ``make autograde`` before anything is graded, and a
notebook whose setup cell cannot find the data says so in one error that names PTFT_DATA.

The grader's kernel is made unable to load the data the way it happens on a teacher's machine: a Jupyter kernel
spec named ``python3`` (found first on ``JUPYTER_PATH``, as a user-level one would be) that runs the right Python
with another ``PTFT_DATA``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ptft_helpers.data import DataNotFoundError

REPO_ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "/proc/ptft-no-data"  # a data folder that cannot exist or be created, even by root


def kernel_spec(folder: Path, data: str) -> Path:
    """A JUPYTER_PATH folder whose ``python3`` kernel is this Python with ``PTFT_DATA=data``."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (another PTFT_DATA)",
                "language": "python",
                "env": {"PTFT_DATA": data},
            }
        )
    )
    return folder


def check(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptft_helpers", "data", "--check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_check_loads_the_data_in_the_graders_kernel():
    env = {k: v for k, v in os.environ.items() if k not in ("PTFT_DATA", "JUPYTER_PATH")}
    done = check("--kernel", "python3", env=env)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == "fashion-mnist loads from data/FashionMNIST/raw (the clone's data folder), in the Jupyter kernel 'python3'\n"
    )


def test_the_check_stops_with_one_line_when_the_graders_kernel_has_no_data(tmp_path):
    env = {**os.environ, "JUPYTER_PATH": str(kernel_spec(tmp_path / "jupyter", NOWHERE))}
    env.pop("PTFT_DATA", None)
    assert check(env=env).returncode == 0  # this process finds the data ...
    done = check("--kernel", "python3", env=env)  # ... the grader's kernel does not
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("python -m ptft_helpers data: error: in the Jupyter kernel 'python3'")
    assert f"{NOWHERE}/FashionMNIST/raw (set by PTFT_DATA)" in done.stderr and "set PTFT_DATA to" in done.stderr


def test_make_autograde_stops_before_grading(tmp_path):
    env = {**os.environ, "JUPYTER_PATH": str(kernel_spec(tmp_path / "jupyter", NOWHERE))}
    env.pop("PTFT_DATA", None)
    gradebook = REPO_ROOT / "nbgrader" / "gradebook.db"
    before = gradebook.stat().st_mtime_ns if gradebook.exists() else None
    done = subprocess.run(["make", "autograde"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "python -m ptft_helpers data: error: in the Jupyter kernel 'python3'" in done.stderr
    assert "nbgrader autograde" not in done.stdout  # make stopped before the grader ran
    assert (gradebook.stat().st_mtime_ns if gradebook.exists() else None) == before


def test_a_setup_cell_without_data_raises_one_clear_error(monkeypatch):
    """The exercises' first cell that loads the data fails with the message alone, not a traceback."""
    monkeypatch.setenv("PTFT_DATA", NOWHERE)
    notebook = nbformat.read(REPO_ROOT / "nbgrader/source/03_pretraining/03_pretraining.ipynb", as_version=4)
    setup = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and "load(" in c.source)
    notebook.cells = notebook.cells[: setup + 1]
    with pytest.raises(CellExecutionError):
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    (error,) = [o for o in notebook.cells[setup].outputs if o.output_type == "error"]
    assert error.ename == "DataNotFoundError"
    shown = "\n".join(error.traceback)
    assert "Traceback" not in shown and "File " not in shown and "----" not in shown  # no frames, just the message
    assert shown.startswith("DataNotFoundError: Dataset 'fashion-mnist' is not available.")
    assert "PTFT_DATA" in shown and NOWHERE in shown


def test_the_error_renders_itself_in_jupyter():
    error = DataNotFoundError("Dataset 'x' is not available. Looked in:\n  - here")
    assert error._render_traceback_() == ["DataNotFoundError: Dataset 'x' is not available. Looked in:", "  - here"]
    assert isinstance(error, FileNotFoundError)  # callers that catch FileNotFoundError still do
