"""Fresh virtual environments for the tests that run the series as an installed package (Colab, a read-only
environment, other users), and Unix users to run it as: new accounts with names nobody chose (``unused_name``),
removed afterwards; a test never removes an account that it did not make.

``seeded_venv(path, ["torch", ...])`` makes a venv with ``/usr/bin/python3`` (which every user can run; the test
run's own Python may live under ``/root``, mode 0700) and gives it exactly the named distributions and what they
depend on, taken from the test run's own environment: every file that pip's ``RECORD`` lists for them is
hard-linked (copied where links cannot cross file systems) into the new ``site-packages``. Those are the files
that ``pip install`` would unpack from the same wheels, so pip sees them as installed; it takes seconds instead of
copying PyTorch's 5.5 GB again. ``ptft_helpers`` itself is then installed for real, with pip, from a copy of the
clone (``source_copy``), never in editable mode.
"""

from __future__ import annotations

import contextlib
import grp
import importlib.metadata as metadata
import os
import pwd
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
# What Colab ships and the notebooks import (transformers and peft for 08 and 09), with the kernel that runs them.
COLAB = ("torch", "torchvision", "matplotlib", "ipywidgets", "ipykernel", "numpy", "tqdm", "transformers", "peft")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and everything they require here (markers evaluated, with the extras
    that each requirement asks for, e.g. torch's ``cuda-toolkit[cublas, ...]``)."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [(_canonical(n), "") for n in names]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        dist = found.setdefault(name, metadata.distribution(name))
        environment = {**default_environment(), "extra": extra}
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                wanted = _canonical(requirement.name)
                todo += [(wanted, "")] + [(wanted, e) for e in requirement.extras]
    return list(found.values())


def _site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy is the same file
        shutil.copy2(source, target)


def seeded_venv(path: Path, names: Iterable[str], replace_own: bool = False) -> Path:
    """A venv at ``path`` from ``/usr/bin/python3``, holding ``names`` and their dependencies; returns its python.
    A distribution that does not support the venv's Python (its ``Requires-Python``) is left out, as pip would
    leave it out. The venv's own pip and setuptools stay, unless ``replace_own``: then a copy of another version
    than the one wanted (torch wants a newer setuptools than Debian's venv brings) is uninstalled and the wanted
    one linked, so that a later ``pip install`` downloads nothing that is here.

    Files inside ``site-packages`` are linked, their compiled ``__pycache__`` too (where PYTHONDONTWRITEBYTECODE is
    set, as on our CI machines, nothing would compile them, and every process would compile PyTorch again), and so
    are the data files beside it (``share/``, ``etc/``: JupyterLab's pages, the server extensions' settings); the
    console scripts (``bin/jupyter``, ...) are written anew from the distributions' entry points, with this venv's
    python, as pip writes them."""
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(path)], check=True, capture_output=True, timeout=300)
    site = _site_packages(path)
    own = installed(path)  # pip, setuptools
    python = _python_version(path)
    for dist in closure(names):
        name = _canonical(dist.metadata["Name"])
        if python not in SpecifierSet(dist.metadata["Requires-Python"] or ""):
            continue  # pip would not install it for this Python (a later `pip install` downloads one that fits)
        if name in own and (not replace_own or own[name] == dist.version):
            continue  # the new venv's own copy stays: mixing two versions' files would break both
        if name in own:
            pip = [str(path / "bin" / "python"), "-m", "pip", "uninstall", "--yes", "--quiet", name]
            subprocess.run(pip, check=True, capture_output=True, timeout=300)
        base = Path(dist.locate_file(""))
        for entry in dist.files or []:
            source = (base / entry).resolve()
            if entry.parts[0] == "..":  # beside site-packages: data files in share/ and etc/, scripts in bin/
                inside = source.relative_to(base.resolve().parent.parent.parent)  # relative to the other venv
                if inside.parts[0] not in ("share", "etc"):
                    continue
                target = path / inside
            else:
                target = site / entry
            if source.is_file() and not target.exists():
                _place(source, target)
        for script in dist.entry_points.select(group="console_scripts"):
            module, _, function = script.value.partition(":")
            launcher = path / "bin" / script.name
            launcher.write_text(
                f"#!{path / 'bin' / 'python'}\nimport sys\nfrom {module} import {function.split('.')[0]}\n"
                f"sys.exit({function}())\n"
            )
            launcher.chmod(0o755)
    return path / "bin" / "python"


def _python_version(venv: Path) -> str:
    """The version of the venv's Python (``pyvenv.cfg``'s ``version``, as ``venv`` writes it)."""
    config = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    return config["version"]


def installed(venv: Path) -> dict[str, str]:
    """The distributions installed in ``venv``, each with its version."""
    found = metadata.distributions(path=[str(_site_packages(venv))])
    return {_canonical(dist.metadata["Name"]): dist.version for dist in found}


def source_copy(target: Path) -> Path:
    """The clone's tracked files (what `git clone` gives), copied to ``target``: pip builds there, not in the clone."""
    files = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        if (REPO_ROOT / name).is_file():
            _place(REPO_ROOT / name, target / name)
    return target


def pip_install(python: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m pip install --quiet ...``, with the output kept for the assertion message."""
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def files_under(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size (a snapshot, to see that nothing was written)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def random_suffix() -> str:
    """Eight random hex digits: what makes a test's account name one that nobody has chosen."""
    return secrets.token_hex(4)


def unused_name(stem: str) -> str:
    """``stem-<random hex>`` that is no user's, no group's and no folder's in /home or /var/mail here: ``useradd``
    makes all three, and ``userdel -r`` removes them, so a test removes only what it made."""
    while True:
        name = f"{stem}-{random_suffix()}"
        taken = _user_exists(name) or name in {g.gr_name for g in grp.getgrall()}
        if not taken and not (Path("/home") / name).exists() and not (Path("/var/mail") / name).exists():
            return name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def remove_user(name: str) -> None:
    """Remove an account that this test run made: its processes, the account, its group, home and mail."""
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    subprocess.run(["userdel", "-r", name], capture_output=True)


@contextlib.contextmanager
def unix_user(stem: str) -> Iterator[pwd.struct_passwd]:
    """A new Unix user for the duration, named ``stem-<random hex>`` (``unused_name``; created with ``useradd``,
    home mode 0700; removed afterwards, with its processes)."""
    if os.geteuid() != 0:
        raise RuntimeError("creating users needs root")
    name = unused_name(stem)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True, capture_output=True)
    try:
        user = pwd.getpwnam(name)
        Path(user.pw_dir).chmod(0o700)
        yield user
    finally:
        remove_user(name)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process, not a zombie that its new parent has not reaped (yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def as_user(user: pwd.struct_passwd, *command: str, env: dict | None = None, cwd: Path | None = None, timeout=600):
    """Run ``command`` as ``user`` (``setpriv``), with a clean environment of its own plus ``env``."""
    base = {"HOME": user.pw_dir, "USER": user.pw_name, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    setpriv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    return subprocess.run(
        [*setpriv, *command],
        env={**base, **(env or {})},
        cwd=cwd or user.pw_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
