"""Colab and Binder: every notebook opens in Colab from its badge, installs the helpers there, and runs.

- Every notebook's first markdown cell has an "Open in Colab" badge that opens *this* notebook from the
  repository named in ``pyproject.toml`` (``[project.urls] Repository``); its image ships in ``notebooks/images``.
- Its first code cell is the same install cell everywhere: it installs ``ptft_helpers`` with ``%pip`` when the
  package is missing, from the repository (or from ``$PTFT_INSTALL_FROM``), and does nothing elsewhere.
- Run as Colab would: a fresh venv holding only what Colab ships (``venvs.COLAB``: PyTorch, torchvision,
  matplotlib, ipywidgets, ipykernel, NumPy, tqdm) is the kernel; ``PTFT_INSTALL_FROM`` points the install cell at
  a copy of this clone instead of GitHub; notebooks 00, 01 and 02 run under nbval in fast mode. The install must
  add the package and nothing that Colab's own notebook server would trip over (no JupyterLab, no nbgrader).
  The data then comes from a per-user folder; on Colab that is torchvision's download (no network here: here it
  is Debian's copy, so the download itself is not tested).
- Binder: ``repo2docker --no-build`` reads ``environment.yml`` and must pick Python 3.11.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from second_run import COLAB_NOTEBOOKS, OTHER_KERNELS
from venvs import COLAB, REPO_ROOT, seeded_venv, source_copy

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))
REPOSITORY = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
GITHUB_PATH = REPOSITORY.removeprefix("https://github.com/")
INSTALL_CELL = (
    "# On Colab, or in a Python without this series' helpers: install them from the repository "
    + f"""\
(elsewhere: nothing).
import importlib
import importlib.util
import os

if importlib.util.find_spec("ptft_helpers") is None:
    PTFT_SOURCE = os.environ.get("PTFT_INSTALL_FROM", "git+{REPOSITORY}")
    %pip install --quiet {{PTFT_SOURCE}}
    importlib.invalidate_caches()"""
)


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_opens_this_notebook_in_colab(path):
    first = source(cells(path)[0])
    link = f"https://colab.research.google.com/github/{GITHUB_PATH}/blob/main/notebooks/{path.name}"
    assert f"[![Open in Colab](images/open-in-colab.svg)]({link})" in first.split("\n\n")[1], first[:300]
    assert (REPO_ROOT / "notebooks" / "images" / "open-in-colab.svg").is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_install_cell(path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    assert source(code[0]) == INSTALL_CELL
    assert not any("PTFT_INSTALL_FROM" in source(c) for c in code[1:])


def test_the_package_needs_only_what_the_notebooks_import():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    needs = {re.split(r"[<>=!~ ]", r)[0].lower() for r in project["dependencies"]}
    assert needs == {"torch", "torchvision", "matplotlib", "ipywidgets", "tqdm", "transformers", "peft"}
    assert {"lab", "teach", "dev"} <= set(project["optional-dependencies"])
    imported = set()
    for path in NOTEBOOKS:
        for cell in cells(path):
            if cell["cell_type"] == "code":
                imported |= set(re.findall(r"^\s*(?:from|import) ([A-Za-z_]\w*)", source(cell), re.MULTILINE))
    # IPython is the kernel itself (and a dependency of ipywidgets): every notebook has it.
    third_party = imported - set(sys.stdlib_module_names) - {"ptft_helpers", "IPython"}
    assert third_party <= needs, third_party - needs


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A venv with only Colab's packages, as the kernel "colab" (in its own JUPYTER_PATH); a copy of the clone."""
    root = tmp_path_factory.mktemp("colab")
    python = seeded_venv(root / "venv", COLAB)
    kernels = root / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "language": "python",
        "display_name": "Colab-like",
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    return root, python, source_copy(root / "source")


def pip_list(python: Path) -> set[str]:
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    return {p["name"].lower() for p in json.loads(listed.stdout)}


def test_notebooks_install_the_helpers_and_run_as_on_colab(colab, tmp_path):
    root, python, checkout = colab
    before = pip_list(python)
    assert "ptft-helpers" not in before and "jupyterlab" not in before and "nbgrader" not in before
    work, home = tmp_path / "content", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    for name in COLAB_NOTEBOOKS:
        shutil.copy(REPO_ROOT / "notebooks" / name, work)
    shutil.copy(REPO_ROOT / "notebooks" / "sanitize.cfg", work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PTFT_", "PYTHONPATH", "XDG_", "JUPYTER"))}
    env.update(JUPYTER_PATH=str(root / "jupyter"), PTFT_INSTALL_FROM=str(checkout), PTFT_FAST="1", HOME=str(home))
    env.update(OTHER_KERNELS)  # these notebooks' second run, on other CPU kernels (tests/second_run.py)
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-kernel-name",
            "colab",
            "--nbval-sanitize-with",
            "sanitize.cfg",
            *sorted(p.name for p in work.glob("*.ipynb")),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    added = pip_list(python) - before
    assert added == {"ptft-helpers"}, added  # the install cell added the package and nothing else
    installed = subprocess.run(
        [str(python), "-c", "import ptft_helpers, sys; print(ptft_helpers.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert "site-packages" in installed.stdout and str(checkout) not in installed.stdout  # not an editable install
    assert (home / ".cache" / "ptft" / "data" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_binder_builds_python_3_11(tmp_path):
    repo2docker = Path(sys.executable).parent / "repo2docker"
    if not repo2docker.is_file():
        pytest.fail("repo2docker is not installed: pip install -e '.[dev]'")
    checkout = source_copy(tmp_path / "repository")
    done = subprocess.run(
        [str(repo2docker), "--no-build", "--debug", str(checkout)], capture_output=True, text=True, timeout=300
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Building conda environment for python=3.11" in log, log[-3000:]
    assert "Python version unspecified" not in log
