"""Grading in a sandbox: ``nbgrader autograde`` runs each hand-in in a Jupyter kernel inside bubblewrap (``bwrap``).

The kernel sees a read-only system (``/usr``, a few ``/etc`` files, the Python that runs it with its packages, the
package's own folder, the data folder), an empty private ``/tmp`` and home, its connection file, and one folder it
may write: its working folder, at the path of nbgrader's copy of the hand-in (``autograded/<student>/<assignment>/``)
but a private copy of that folder's plain files, discarded when the kernel stops: nbgrader, which writes and chmods
that folder and copies its files into ``feedback/``, never meets a link, FIFO or file the kernel made (what nbgrader
needs of the kernel comes over ZMQ). It does not see the answer keys, the gradebook, other students' folders, any
home, nor the grader's environment (a hub token): the environment is cleared to a few variables (``PASSED``). Its
processes, detached ones too, die with it (its own PID namespace); it has no network (its ZMQ sockets are Unix
sockets in a private folder); ``prlimit`` caps its memory, CPU time, file sizes and process count (``LIMITS``).
Python runs it with ``-P`` (``PYTHONSAFEPATH``): a hand-in's ``ipykernel_launcher.py`` or ``numpy.py`` is never
imported in place of the real one. docs/classroom.md ("What the grading sandbox protects") says what this
protects, and what not.

``nbgrader_config.py`` calls ``configure_nbgrader(c)``: autograde's Execute step becomes ``SandboxedExecute``, whose
kernels are ``SandboxedKernelManager`` s, and every hand-in is preceded by a check that bubblewrap works and that
``submitted/<student>/<assignment>/`` holds only plain files and folders (no links, FIFOs, hard links): otherwise
grading stops with one line that says how to fix it. ``PTFT_GRADE_UNSANDBOXED=1`` grades without the sandbox, and
says so. ``start_new_kernel`` starts one sandboxed kernel outside nbgrader (``data --check --kernel python3``).

The three classes need Jupyter (and nbgrader); they are made on first use (``__getattr__``), so importing this
module imports nothing heavy.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

GIB = 1024**3
# What the kernel may use (prlimit; docs/classroom.md has the measurements): address space (importing the CUDA build
# of PyTorch alone maps 3.2 GB), CPU seconds, the largest file it may write, processes and threads, open files.
LIMITS = {"as": 8 * GIB, "cpu": 300, "fsize": GIB, "nproc": 256, "nofile": 1024, "core": 0}
TMPFS_BYTES = 256 * 1024**2  # each of /tmp, the home and /dev/shm: memory, so bounded too
HOME = "/home/sandbox"
HOSTNAME = "sandbox"
OPT_OUT = "PTFT_GRADE_UNSANDBOXED"
FIX = f"install it (apt-get install bubblewrap), or set {OPT_OUT}=1 to grade without a sandbox"
# The grader's variables the kernel keeps (besides those its kernel spec sets); PATH, HOME, LANG are set anew.
PASSED = ("LC_ALL", "TZ", "MPLBACKEND", "PTFT_DATA", "PTFT_FAST", "PTFT_PROGRESS", "NBGRADER_EXECUTION")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "nsswitch.conf", "fonts")
TOP = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # links into /usr on Debian 12, else folders
SYSTEM = ("/usr", *TOP, "/etc", "/proc", "/dev")  # what the sandbox has of its own: nothing else is bound there
NAMESPACES = (
    *("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try"),
    *("--disable-userns", "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", HOSTNAME),
)


class SandboxError(RuntimeError):
    """Why a kernel cannot start in the sandbox, in one line that says how to fix it."""


def unsandboxed() -> bool:
    """Whether the grader chose to grade without the sandbox (``PTFT_GRADE_UNSANDBOXED=1``)."""
    return os.environ.get(OPT_OUT, "").strip() == "1"


@functools.cache  # once per process
def warn_unsandboxed() -> None:
    """The one warning line of a run without the sandbox."""
    print(
        f"WARNING: {OPT_OUT}=1: grading WITHOUT the sandbox; every hand-in runs as you, and can read and change "
        "your files (answer keys, gradebook) and see your environment",
        file=sys.stderr,
    )


def bwrap() -> str:
    """The path of ``bwrap``, else a SandboxError that says how to install it."""
    found = shutil.which("bwrap")
    if not found:
        raise SandboxError(f"grading runs each hand-in in a bubblewrap sandbox, but `bwrap` is not on PATH: {FIX}")
    return found


def system_mounts() -> list[str]:
    """The read-only system, the new /proc and /dev, and the private tmpfs folders (bwrap options)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in map(Path, TOP):
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for private in ("/tmp", HOME, "/dev/shm"):
        args += ["--size", str(TMPFS_BYTES), "--perms", "0700", "--tmpfs", private]
    return args


@functools.cache
def check() -> str:
    """``bwrap``'s path once a trivial sandbox has run (a SandboxError with bwrap's reason if not)."""
    path = bwrap()
    done = subprocess.run([path, *NAMESPACES, *system_mounts(), "--", "/usr/bin/true"], capture_output=True, text=True)
    if done.returncode != 0:
        reason = ([line for line in done.stderr.splitlines() if line.strip()] or [f"exit code {done.returncode}"])[-1]
        raise SandboxError(
            f"bubblewrap cannot make a sandbox here ({reason.strip()}): unprivileged user namespaces must be allowed "
            f"(sysctl kernel.unprivileged_userns_clone=1; on Ubuntu, an AppArmor profile for bwrap), or set {OPT_OUT}=1"
        )
    return path


PROBE = """
import importlib.util, json, os, sys
found = {"paths": [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.realpath(sys.executable), *sys.path]}
spec = importlib.util.find_spec("ptft_helpers")
if spec is not None and spec.submodule_search_locations:
    found["package"] = list(spec.submodule_search_locations)[0]
    from ptft_helpers.settings import checkout_root, data_dir
    found["clone"] = str(checkout_root() or "")
    try:
        found["data"] = str(data_dir())
    except ValueError:
        pass
print(json.dumps(found))
"""


@functools.cache
def python_layout(python: str, env: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """What the kernel's ``python`` reads, asked of it with the kernel's environment ``env``: its installation and
    environment, ``sys.path``, this package's folder (with the clone's ``pyproject.toml``, which marks it as a clone)
    and the data folder it would use. Existing paths only, outside the system, none inside another."""
    done = subprocess.run([python, "-s", "-P", "-c", PROBE], env=dict(env), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        last = ([line for line in done.stderr.splitlines() if line.strip()] or ["no output"])[-1]
        raise SandboxError(f"the sandbox runs Python kernels only, and {python} -c ... failed ({last.strip()})")
    found = json.loads(done.stdout)
    paths = [*found["paths"], found.get("package"), found.get("data")]
    if found.get("clone"):
        paths.append(str(Path(found["clone"]) / "pyproject.toml"))
    return outermost(p for p in paths if p and os.path.isabs(p) and os.path.exists(p))


def outermost(paths) -> tuple[str, ...]:
    """``paths`` without those under the system folders or under another of them, sorted."""
    kept: list[Path] = []
    for path in sorted({Path(os.path.normpath(p)) for p in paths}, key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(other) for other in [*map(Path, SYSTEM), *kept]):
            kept.append(path)
    return tuple(sorted(map(str, kept)))


def kernel_env(env: dict[str, str], spec_env: dict[str, str], python: str) -> dict[str, str]:
    """The kernel's whole environment: ``PASSED`` and its kernel spec's variables from ``env``, and a fixed few."""
    kept = {name: env[name] for name in (*PASSED, *spec_env) if env.get(name)}
    path = os.pathsep.join(dict.fromkeys([str(Path(python).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    user = "root" if os.getuid() == 0 else "grader"
    fixed = {"PATH": path, "HOME": HOME, "USER": user, "LOGNAME": user, "LANG": env.get("LANG") or "C.UTF-8"}
    # JPY_PARENT_PID=1: ipykernel's parent is the sandbox's PID 1 (it then neither polls it nor prints a notice)
    # PYTHONSAFEPATH=1 (and -P on the command line): the working folder, the hand-in's, is not on sys.path, so its
    # ipykernel_launcher.py, numpy.py, ... replace no module of the kernel's
    safe = {"PYTHONSAFEPATH": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return {**kept, **fixed, "OMP_NUM_THREADS": "1", **safe, "JPY_PARENT_PID": "1"}


def private_folder() -> Path:
    """A new folder only the grader reads (mode 0700): ``sockets/`` for the kernel's ZMQ sockets, ``etc/`` for the
    sandbox's passwd, group and hosts files, ``work/`` for a kernel started without a working folder."""
    base = tempfile.gettempdir()
    folder = Path(tempfile.mkdtemp(prefix="ptft-sandbox-", dir=base if len(base) < 60 else "/tmp"))
    for name in ("sockets", "etc", "work"):
        (folder / name).mkdir()
    uid, gid = os.getuid(), os.getgid()
    user = "root" if uid == 0 else "grader"
    files = {
        "passwd": f"{user}:x:{uid}:{gid}::{HOME}:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
        "group": f"{user}:x:{gid}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost\n",
    }
    for name, text in files.items():
        (folder / "etc" / name).write_text(text)
    return folder


def plain_entries(folder: Path):
    """``(path, lstat)`` of everything under ``folder``, links not followed, folders before what they hold."""
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = Path(entry.path)
            info = path.lstat()
            yield path, info
            if stat.S_ISDIR(info.st_mode):
                yield from plain_entries(path)


def unsafe(info: os.stat_result) -> str | None:
    """Why a file (its ``lstat``) is one that nbgrader must not meet: a link, a hard link, a FIFO, ...; else None."""
    if stat.S_ISDIR(info.st_mode):
        return None
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "not a plain file (a FIFO, socket or device)"
    if info.st_nlink > 1:
        return f"a hard link ({info.st_nlink} names)"
    return None


def private_copy(work: Path, private: Path) -> Path:
    """A new folder in ``private`` (mode 0700) with a copy of the plain files and folders of ``work``: what the
    kernel gets at ``work``'s path, so that nbgrader never reads back what the kernel wrote (a link to the gradebook
    in place of the notebook, a FIFO, a link to an answer key that generate_feedback would copy)."""
    copy = Path(tempfile.mkdtemp(prefix="work-", dir=private))
    if work.is_dir():
        for path, info in plain_entries(work):
            target = copy / path.relative_to(work)
            if unsafe(info):
                continue
            if stat.S_ISDIR(info.st_mode):
                target.mkdir()
            else:
                shutil.copy2(path, target, follow_symlinks=False)
    return copy


def scrub(folder: Path) -> list[str]:
    """Remove from ``folder`` everything that is not a plain file or folder (links, FIFOs, hard links), links not
    followed; the removed paths with why. The kernel never sees this folder (``private_copy``): a second lock."""
    removed = []
    try:
        found = list(plain_entries(folder))
    except OSError:
        return removed
    for path, info in found:
        if why := unsafe(info):
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(f"{path} ({why})")
    return removed


def command(
    kernel_cmd: list[str], work: Path, private: Path, readable: tuple[str, ...], env: dict, copy: Path | None = None
) -> list[str]:
    """The command line that runs ``kernel_cmd`` in the sandbox: ``readable`` and the connection file read-only,
    ``copy`` (else ``work`` itself) writable at ``work``'s path, and the socket folder; ``env`` its whole
    environment, ``LIMITS`` applied by prlimit."""
    work = work.resolve()
    for path in readable:
        if work.is_relative_to(path):
            raise SandboxError(f"the sandbox would show {path}, which holds the hand-in's own folder {work}")
    if Path.home().resolve().is_relative_to(work):
        raise SandboxError(f"the sandbox would let a hand-in write to {work}, which holds your home")
    args = [check(), *NAMESPACES, *system_mounts()]
    for name in ("passwd", "group", "hosts"):
        args += ["--ro-bind", str(private / "etc" / name), f"/etc/{name}"]
    for path in readable:
        args += ["--ro-bind", path, path]
    args += ["--bind", str(private / "sockets"), str(private / "sockets"), "--bind", str(copy or work), str(work)]
    args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", str(work), "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    limits = [f"--{name}={value}" for name, value in LIMITS.items()]
    return [*args, "--", "/usr/bin/prlimit", *limits, "--", *kernel_cmd]


def sandboxed(kernel_cmd: list[str], launch: dict, connection_file: str, private: Path, spec_env: dict):
    """``kernel_cmd`` and the launch options (``cwd``, ``env``) of jupyter_client, turned into the sandbox's: python
    with ``-P``, and a private copy of the working folder (``private_copy``) in its place."""
    python = shutil.which(kernel_cmd[0], path=launch.get("env", {}).get("PATH")) or kernel_cmd[0]
    env = kernel_env(launch.get("env") or dict(os.environ), spec_env or {}, python)
    layout = python_layout(python, tuple(sorted(env.items())))
    connection = os.path.realpath(connection_file)
    work = Path(launch.get("cwd") or private / "work").resolve()
    readable = outermost([*layout, connection])
    cmd = command([python, "-P", *kernel_cmd[1:]], work, private, readable, env, private_copy(work, private))
    return cmd, {**launch, "cwd": str(work), "env": {"PATH": "/usr/bin:/bin", "LANG": env["LANG"]}}


def kernel_said(log: Path, lines: int = 20) -> str:
    """The last ``lines`` of what the kernel (or bwrap) wrote to its log, control characters shown as ``?``."""
    try:
        with open(log, "rb") as file:  # the log may be large (up to the fsize limit): read its end only
            file.seek(max(0, file.seek(0, os.SEEK_END) - 20000))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    shown = "".join(ch if ch.isprintable() or ch == "\n" else "?" for ch in text)
    return "\n".join(shown.strip().splitlines()[-lines:])


class _Sandboxed:
    """What makes a jupyter_client kernel manager start its kernel in the sandbox (mixed into both kinds)."""

    _private: Path | None = None
    _work: Path | None = None  # the kernel's working folder on the grader's side (nbgrader's autograded/.../)

    async def _async_pre_start_kernel(self, **kw):
        if unsandboxed():
            warn_unsandboxed()
        else:
            check()
            if self._private is None:
                self._private = private_folder()
                weakref.finalize(self, shutil.rmtree, self._private, True)
            self.transport, self.ip = "ipc", str(self._private / "sockets" / "kernel")
            self.kernel_spec.interrupt_mode = "message"  # a signal would stop at bwrap
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        self._work = Path(kw["cwd"]) if kw.get("cwd") else None
        if self._private is None:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        kernel_cmd, kw = sandboxed(kernel_cmd, kw, self.connection_file, self._private, self.kernel_spec.env)
        with open(self._private / "kernel.log", "ab") as log:  # not the grader's terminal: it could read its keys
            streams = {"stdout": kw.get("stdout") or log, "stderr": kw.get("stderr") or log}
            return await super()._async_launch_kernel(kernel_cmd, **{**kw, **streams})

    async def _async_cleanup_resources(self, restart: bool = False):
        await super()._async_cleanup_resources(restart=restart)
        if not restart and self._work is not None:  # before nbgrader writes, chmods and copies in that folder
            for removed in scrub(self._work):
                self.log.warning("removed from the hand-in's folder, which nbgrader must not follow: %s", removed)
        if not restart and self._private is not None:
            if said := kernel_said(self._private / "kernel.log"):
                self.log.warning("the sandboxed kernel's own output (bwrap, ipykernel):\n%s", said)
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None


@functools.cache
def _kernel_managers() -> dict[str, type]:
    from jupyter_client.manager import AsyncKernelManager, KernelManager
    from jupyter_core.utils import run_sync

    doc = "A Jupyter kernel manager whose kernels run in the sandbox (ptft_helpers.sandbox)."
    made = {
        "SandboxedKernelManager": (AsyncKernelManager, _Sandboxed._async_cleanup_resources),
        "SandboxedBlockingKernelManager": (KernelManager, run_sync(_Sandboxed._async_cleanup_resources)),
    }
    return {
        name: type(name, (_Sandboxed, base), {"__module__": __name__, "__doc__": doc, "cleanup_resources": cleanup})
        for name, (base, cleanup) in made.items()
    }


@functools.cache
def _execute() -> type:
    from nbgrader.preprocessors import Execute

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", _kernel_managers()["SandboxedKernelManager"])
        Execute.__init__(self, *args, **kwargs)

    doc = "nbgrader's Execute step (autograde runs each notebook), with its kernel in the sandbox."
    return type("SandboxedExecute", (Execute,), {"__module__": __name__, "__doc__": doc, "__init__": __init__})


def __getattr__(name: str):
    if name in ("SandboxedKernelManager", "SandboxedBlockingKernelManager"):
        return _kernel_managers()[name]
    if name == "SandboxedExecute":
        return _execute()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def start_new_kernel(startup_timeout: float = 60, kernel_name: str = "python", **kwargs):
    """``jupyter_client.manager.start_new_kernel``, with the kernel in the sandbox: (manager, blocking client)."""
    manager = _kernel_managers()["SandboxedBlockingKernelManager"](kernel_name=kernel_name)
    manager.start_kernel(**kwargs)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=startup_timeout)
    except RuntimeError:
        client.stop_channels()
        manager.shutdown_kernel()
        raise
    return manager, client


def refused(notebooks) -> str | None:
    """Why the hand-in whose notebooks are ``notebooks`` (``submitted/<student>/<assignment>/*.ipynb``) must not be
    graded: nbgrader would follow a link in it (grading an answer key linked as the notebook, copying one linked as
    a data file), block on a FIFO, or copy a hard link. None if it holds only plain files and folders."""
    if not notebooks:
        return None
    folder = Path(os.path.abspath(next(iter(notebooks)))).parent
    for path in (folder.parent, folder):  # the student's folder and the hand-in's
        if path.is_symlink():
            return f"{path} is a symbolic link"
    try:
        for path, info in plain_entries(folder):
            if why := unsafe(info):
                return f"{path} is {why}"
    except OSError as err:
        return f"{folder} cannot be read ({err.strerror})"
    return None


def before_grading(notebooks=(), **_) -> None:
    """nbgrader's pre-convert hook, before each hand-in: exit with one line unless the sandbox works (or the grader
    opted out) and the hand-in's folder holds only plain files and folders. A SystemExit, because nbgrader logs and
    ignores the hook's exceptions (so the run stops at that hand-in: those graded before it stay graded)."""
    if unsandboxed():
        warn_unsandboxed()
    else:
        try:
            check()
        except SandboxError as err:
            raise SystemExit(f"nbgrader autograde: error: {err}") from None
    if why := refused(notebooks):
        raise SystemExit(
            f"nbgrader autograde: error: {why}; a hand-in may hold only plain files and folders (nbgrader would "
            "follow a link): remove it, or the hand-in, from submitted/ and run again"
        )


def configure_nbgrader(c) -> None:
    """Make ``nbgrader autograde`` with the configuration ``c`` grade in the sandbox (nbgrader_config.py)."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    steps = Autograde.class_traits()["autograde_preprocessors"].default()
    c.Autograde.autograde_preprocessors = [f"{__name__}.SandboxedExecute" if s is Execute else s for s in steps]
    c.Autograde.pre_convert_hook = before_grading
