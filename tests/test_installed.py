"""The series as an installed package (``pip install``, not editable), run from an unrelated folder: as root, and as
a student who cannot write the environment. Nothing may be written inside the installed package; data,
checkpoints and results go to per-user places, and each command says which.

The environment is a fresh venv from ``/usr/bin/python3`` with the package's dependencies and a notebook runner
(``venvs.seeded_venv``); ``ptft_helpers`` is installed into it by pip from a copy of the clone. Notebooks 05 and 06
run in fast mode under nbval, on other CPU kernels (their second run: ``second_run.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from second_run import INSTALLED_NOTEBOOKS, OTHER_KERNELS
from venvs import (
    REPO_ROOT,
    as_user,
    files_under,
    pip_install,
    seeded_venv,
    source_copy,
    unix_user,
)

if os.geteuid() != 0 or not Path("/usr/bin/python3").is_file():
    pytest.skip("needs root (to add a Unix user) and /usr/bin/python3", allow_module_level=True)

CORE = [r.split(">")[0] for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
RUNNER = ["ipykernel", "pytest", "nbval"]  # to run the notebooks; not what the package needs


@pytest.fixture(scope="module")
def installed():
    """(python, site-packages) of a root-owned venv, readable by everyone, with ptft_helpers installed by pip."""
    root = Path(tempfile.mkdtemp(prefix="ptft-installed-", dir="/tmp"))  # not under /tmp/pytest-of-root (0700)
    try:
        python = seeded_venv(root / "venv", CORE + RUNNER)
        result = pip_install(python, str(source_copy(root / "source")))
        assert result.returncode == 0, result.stdout + result.stderr
        shutil.rmtree(root / "source")
        root.chmod(0o755)  # everyone may read and run it (its files are 0644/0755); only root may write it
        (site,) = (root / "venv" / "lib").glob("python3*/site-packages")
        yield python, site
    finally:
        shutil.rmtree(root, ignore_errors=True)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No PTFT_DATA, PTFT_RESULTS or PYTHONPATH: the package's own defaults decide."""
    return {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PTFT_FAST": "1",
        "PTFT_PROGRESS": "0",
        **OTHER_KERNELS,
        **extra,
    }


def nbval(python: Path, notebook: str) -> list[str]:
    """The command that runs one of the series' notebooks under nbval with ``python`` (its own kernel)."""
    return [
        str(python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-sanitize-with",
        "sanitize.cfg",
        notebook,
    ]


def copy_notebook(name: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "notebooks" / name, folder)
    shutil.copy(REPO_ROOT / "notebooks" / "sanitize.cfg", folder)


def test_the_package_is_installed_not_linked_to_the_clone(installed):
    python, site = installed
    where = subprocess.run(
        [str(python), "-c", "import ptft_helpers; print(ptft_helpers.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        env=clean_env(Path("/tmp")),
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    assert not list(site.glob("__editable__*")) and not list(site.glob("*.egg-link"))


def test_as_root_from_another_folder_nothing_is_written_inside_the_package(installed, tmp_path):
    python, site = installed
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    copy_notebook(INSTALLED_NOTEBOOKS[0], work)
    env = clean_env(home, PYTHONDONTWRITEBYTECODE="1")  # bytecode caches are Python's, not the package's writes
    before = files_under(site)

    def run(*command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    data = run(str(python), "-m", "ptft_helpers", "data").stdout
    assert data.splitlines()[0] == (
        "data folder: ~/.cache/ptft/data (the per-user cache: ptft_helpers is installed, not run from a clone of "
        "the repository; set PTFT_DATA to choose another)"
    )
    assert (home / ".cache" / "ptft" / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    saved = run(str(python), "-m", "ptft_helpers", "pretrain").stdout.splitlines()[0]
    assert saved.startswith(f"Saved the checkpoint: {home / '.cache' / 'ptft' / 'data' / 'checkpoints' / 'fast'}/")
    run(*nbval(python, INSTALLED_NOTEBOOKS[0]))
    assert (work / "results" / "fast" / "05_label_efficiency.csv").is_file()  # the current folder's results/
    assert files_under(site) == before


def test_a_student_who_cannot_write_the_environment(installed):
    python, site = installed
    before = files_under(site)
    with unix_user("ptft-installed-student") as user:
        home = Path(user.pw_dir)
        env = clean_env(home)
        probe = as_user(user, str(python), "-c", f"open({str(site / 'x')!r}, 'w')", env=env)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr  # the environment is really read-only

        data = as_user(user, str(python), "-m", "ptft_helpers", "data", env=env)
        assert data.returncode == 0, data.stderr
        assert data.stdout.startswith("data folder: ~/.cache/ptft/data (the per-user cache")
        pretrain = as_user(user, str(python), "-m", "ptft_helpers", "pretrain", env=env)
        assert pretrain.returncode == 0, pretrain.stderr

        work = home / "ptft"
        copy_notebook(INSTALLED_NOTEBOOKS[1], work)
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(work)], check=True)
        ran = as_user(user, *nbval(python, INSTALLED_NOTEBOOKS[1]), env=env, cwd=work, timeout=900)
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        assert (work / "results" / "fast" / "06_contrastive_probe.csv").is_file()
    assert files_under(site) == before
