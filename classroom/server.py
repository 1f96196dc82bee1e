#!/usr/bin/env python3
"""A JupyterHub for a whole class on one Linux machine: set it up, start it, stop it (as root).

    python3 classroom/server.py setup --roster roster.csv   # once, and again after the roster changes
    python3 classroom/server.py start                        # the hub, in the background (log: <prefix>/hub/hub.log)
    python3 classroom/server.py stop
    python3 classroom/server.py usage                        # each user's disk, processes and memory now

(``make classroom``, ``make classroom-start`` and ``make classroom-stop`` run these.) Run ``setup`` with the
system's Python (``/usr/bin/python3``): it builds the class's environment from it, because every user must be able
to run that Python. Everything goes under ``--prefix`` (default ``/opt/ptft``):

- ``venv/``: the shared environment, readable by everyone and writable by root only: this series' package
  installed (not editable) from this clone with JupyterLab, nbgrader, JupyterHub and the idle culler;
  ``node/``: npm's ``configurable-http-proxy``, the hub's proxy.
- ``data/``: the shared, read-only ``PTFT_DATA``: Fashion-MNIST and every encoder the notebooks load
  (``python -m ptft_helpers pretrain --all``), prepared once.
- ``hub/``: the hub's configuration, its database and cookie secret, its log and PID file (root only).
- ``passwords.csv`` (root only): the initial password of each account that ``setup`` created.

Accounts come from a roster CSV with the columns ``username,role,name`` (role ``instructor`` or ``student``).
Each becomes a Unix account (PAM login), with a home that only its owner can read and a copy of the notebooks
in ``~/ptft-notebooks``. The instructor also gets the nbgrader course folder ``~/ptft-course`` (the answer keys
and the gradebook) and the formgrader; students get the assignment list only. Nobody is a hub admin unless setup
is told (``--instructor-admin``). The nbgrader exchange is ``--exchange`` (default ``/srv/nbgrader/exchange``);
its ``collect`` takes only hand-ins that their student made, dated by the file system
(``ptft_helpers/exchange.py``). Every server starts under limits that setup computes from the machine's size and
the roster's length (``--memory-limit``, ``--process-limit``, ``--cpu-hours`` override them), and first in line
for the kernel's out-of-memory killer, the hub and its proxy last. Every server gets ``OMP_NUM_THREADS=1``, the shared
``PTFT_DATA`` and the environment's ``bin/`` first on its ``PATH``; the idle culler stops servers idle for
``--cull-after`` seconds. The hub listens on ``--ip`` (default 127.0.0.1, this machine only) and ``--port``; two
more ports, on 127.0.0.1, are the class's own too: the proxy's API (``--proxy-api-port``, default ``--port`` + 1)
and the hub's own API (``--hub-port``, default ``--port`` + 2). Several classes run on one machine, each set up
with its own ``--prefix``, ports and ``--course``; ``start`` refuses a port that another program holds.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "jupyterhub_config.py"
USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ROLES = ("instructor", "student")
FIRST_PERSON_UID = 1000  # Debian's UID_MIN: accounts below it belong to the system (root, daemon, nobody...)
# nbgrader's parts that only the instructor uses: the formgrader, creating assignments, the course list.
INSTRUCTOR_SERVER_EXTENSIONS = ("nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list")
INSTRUCTOR_LAB_PLUGINS = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
)
PROXY = "configurable-http-proxy@5"
GiB = 2**30
SYSTEM_MEMORY = 2 * GiB  # kept back from the servers' memory for the system, the hub and its proxy
MEMORY_FLOOR = 6 * GiB  # no server gets less: notebook 07 in full peaked at 5.1 GB (docs/classroom.md)
MOST_PROCESSES = 256  # per user, threads included: a server running a kernel has about 18
CPU_HOURS = 4  # per process: a kernel that computes for longer is stuck (the longest notebook, 05: 8 min 42 s)
HUB_OOM_SCORE = -900  # the hub and its proxy: the kernel's out-of-memory killer takes them last (servers: +500)
# The class's ports: settings.json's key, what it is, and the setup option that sets it.
PORTS = (
    ("port", "the hub's public port", "--port"),
    ("proxy_api_port", "the proxy's API port", "--proxy-api-port"),
    ("hub_port", "the hub's own API port", "--hub-port"),
)


class SetupError(Exception):
    """A problem with the machine or the roster; the message says what and how to fix it (printed in one line)."""


STARTED = time.perf_counter()


def say(message: str) -> None:
    """One line of progress, with the seconds since the command started (the teacher's guide quotes them)."""
    print(f"classroom [{time.perf_counter() - STARTED:5.0f} s]: {message}", flush=True)


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise ``SetupError`` with its last line of output."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise SetupError(f"`{' '.join(command[:4])} ...` failed: {last}")
    return done


def as_user(user: str, *command: str, env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run a command as ``user`` (setpriv), with a plain environment of its own plus ``env``."""
    info = pwd.getpwnam(user)
    base = {"HOME": info.pw_dir, "USER": user, "LOGNAME": user, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    setpriv = ["setpriv", f"--reuid={info.pw_uid}", f"--regid={info.pw_gid}", "--init-groups", "--"]
    return run(*setpriv, *command, env={**base, **(env or {})}, cwd=cwd or info.pw_dir)


def read_roster(path: Path) -> list[dict]:
    """The roster's rows, checked: a username per row, role instructor or student, at least one instructor."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no header
            raw = list(csv.DictReader(f))
    except OSError as err:
        raise SetupError(f"cannot read the roster {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SetupError(f"the roster {path} is not UTF-8 text: save it as CSV (UTF-8)") from None
    for number, row in enumerate(raw, start=2):
        if None in row:  # more fields than the header: a name with a comma, unquoted
            raise SetupError(f'{path}, line {number}: more fields than the header; quote a name with a comma: "Doe, J"')
    rows = [{k.strip(): (v or "").strip() for k, v in row.items()} for row in raw]
    if not rows or not {"username", "role"} <= set(rows[0]):
        raise SetupError(f"the roster {path} needs a header line 'username,role,name' and one line per person")
    seen = set()
    for number, row in enumerate(rows, start=2):
        name, role = row["username"], row["role"]
        if not USERNAME.match(name):
            raise SetupError(
                f"{path}, line {number}: {name!r} is not a Unix username (lowercase letters, digits, _ or -)"
            )
        if role not in ROLES:
            raise SetupError(f"{path}, line {number}: role {role!r} must be 'instructor' or 'student'")
        if name in seen:
            raise SetupError(f"{path}, line {number}: {name} is listed twice")
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            uid = None  # a new account
        if uid is not None and uid < FIRST_PERSON_UID:
            raise SetupError(f"{path}, line {number}: {name} is a system account (UID {uid}): choose another username")
        seen.add(name)
    if not any(r["role"] == "instructor" for r in rows):
        raise SetupError(f"the roster {path} has no instructor: give one line the role 'instructor'")
    return rows


def check_machine() -> None:
    if os.geteuid() != 0:
        raise SetupError("run this as root: it creates Unix accounts and writes under /opt and /srv")
    hints = {"npm": "apt-get install nodejs npm", "bwrap": "apt-get install bubblewrap (grading's sandbox)"}
    for tool in ("useradd", "chpasswd", "setpriv", "npm", "bwrap"):
        if not shutil.which(tool):
            hint = hints.get(tool, "apt-get install passwd util-linux")
            raise SetupError(f"`{tool}` is missing: {hint}")
    if not Path("/etc/pam.d").is_dir():
        raise SetupError("PAM is not configured on this machine (/etc/pam.d is missing): the hub logs users in with it")


def build_environment(prefix: Path, python: str) -> Path:
    """The shared venv with the package (not editable) and the hub; returns the venv's python."""
    venv = prefix / "venv"
    if not (venv / "bin" / "python").is_file():
        say(f"creating the shared environment {venv} from {python}")
        run(python, "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    say("installing ptft_helpers (from this clone, not editable) with JupyterLab, nbgrader and JupyterHub")
    with_source = _source_copy(prefix / "source")
    try:
        run(*pip, f"{with_source}[classroom]")
    finally:
        shutil.rmtree(with_source, ignore_errors=True)
    if not (prefix / "node" / "node_modules" / ".bin" / "configurable-http-proxy").exists():
        say(f"installing the proxy ({PROXY}) with npm")
        run("npm", "install", "--prefix", str(prefix / "node"), "--no-audit", "--no-fund", PROXY)
    return venv / "bin" / "python"


def _source_copy(target: Path) -> Path:
    """This clone's tracked files, copied: pip builds there and leaves the clone as it was."""
    files = run("git", "-C", str(REPO_ROOT), "ls-files", "--cached", "--others", "--exclude-standard").stdout.split(
        "\n"
    )
    shutil.rmtree(target, ignore_errors=True)
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, target / name)
    return target


def configure_jupyter(venv: Path, exchange: Path, course: str) -> None:
    """System-wide settings in the environment (students cannot change them): the course and its exchange for
    nbgrader, and the instructor-only parts of nbgrader switched off (the instructor switches them on again)."""
    etc = venv / "etc" / "jupyter"
    (etc / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.course_id = {course!r}\n"
        f"c.Exchange.root = {str(exchange)!r}\n"
        "# Collect only hand-ins that their student made, dated by the file system (ptft_helpers/exchange.py)\n"
        'c.ExchangeFactory.collect = "ptft_helpers.exchange.OwnedCollect"\n'
        "# Grade each hand-in in a sandbox (ptft_helpers/sandbox.py); no grading at all if it cannot be set up\n"
        "try:\n"
        "    from ptft_helpers.sandbox import configure_nbgrader\n"
        "    configure_nbgrader(c)\n"
        "except Exception as err:\n"
        "    raise SystemExit(f'nbgrader_config.py: the grading sandbox cannot be set up ({err})') from None\n"
    )
    (etc / "jupyter_server_config.d").mkdir(parents=True, exist_ok=True)
    off = {"ServerApp": {"jpserver_extensions": {name: False for name in INSTRUCTOR_SERVER_EXTENSIONS}}}
    (etc / "jupyter_server_config.d" / "zz-ptft-classroom.json").write_text(json.dumps(off, indent=1))
    # The terminal's shell, not a login shell: Debian's /etc/profile would set PATH anew, without the environment's
    # bin/ (nbgrader). Settings other than extensions are read from this file only, not from the .d folder.
    terminal = {"ServerApp": {"terminado_settings": {"shell_command": ["/bin/bash"]}}}
    (etc / "jupyter_server_config.json").write_text(json.dumps(terminal, indent=1))
    (etc / "labconfig").mkdir(parents=True, exist_ok=True)
    (etc / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {plugin: True for plugin in INSTRUCTOR_LAB_PLUGINS}}, indent=1)
    )
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o1777)  # what nbgrader asks of its exchange (0777), sticky as /tmp: nobody removes others' files


def prepare_data(python: Path, data: Path, checkpoints: bool) -> None:
    """Fashion-MNIST and (unless told not to) every encoder the notebooks load, once, then read-only."""
    env = {**os.environ, "PTFT_DATA": str(data), "PTFT_PROGRESS": "0"}
    env.pop("PTFT_CHECKPOINTS", None)
    say(f"preparing the data in {data}")
    run(str(python), "-m", "ptft_helpers", "data", env=env)
    if checkpoints:
        say("pretraining every encoder the notebooks load (python -m ptft_helpers pretrain --all)")
        run(str(python), "-m", "ptft_helpers", "pretrain", "--all", env=env)
    run("chmod", "-R", "a+rX,go-w", str(data))


def create_accounts(roster: list[dict], prefix: Path) -> list[dict]:
    """A Unix account per roster line that has none yet, with a random initial password, written to
    ``passwords.csv`` (root only) before the next account is made; homes made private."""
    created = []
    passwords = prefix / "passwords.csv"
    with open(os.open(passwords, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", newline="") as f:
        writer = csv.DictWriter(f, ["username", "role", "password"])
        if f.tell() == 0:
            writer.writeheader()
        for row in roster:
            name = row["username"]
            try:
                pwd.getpwnam(name)
            except KeyError:
                run("useradd", "--create-home", "--shell", "/bin/bash", "--comment", row.get("name") or name, name)
                password = secrets.token_urlsafe(9)
                run("chpasswd", input=f"{name}:{password}\n")
                created.append({"username": name, "role": row["role"], "password": password})
                writer.writerow(created[-1])
                f.flush()  # kept even if a later account fails
            Path(pwd.getpwnam(name).pw_dir).chmod(0o700)  # only the owner reads a home: keys, hand-ins, drafts
    if created:
        say(f"{len(created)} new account(s); their initial passwords are in {passwords} (root only)")
    return created


def give_notebooks(user: str) -> None:
    """A copy of the series' notebooks in the user's home, theirs to run and change (kept if there already)."""
    info = pwd.getpwnam(user)
    target = Path(info.pw_dir) / "ptft-notebooks"
    if not target.exists():
        shutil.copytree(REPO_ROOT / "notebooks", target)
        run("chown", "-R", f"{info.pw_uid}:{info.pw_gid}", str(target))


def set_up_course(instructor: str, students: list[str], venv: Path, course: str, exchange: Path) -> Path:
    """The instructor's nbgrader course folder with the answer keys and a gradebook listing every student, the
    instructor's own Jupyter settings that switch the formgrader on, and the course's folders in the exchange, the
    instructor's (as nbgrader makes them at the first release: made now, no student can take the names first)."""
    info = pwd.getpwnam(instructor)
    in_exchange = exchange / course
    make_instructors(in_exchange, info, 0o755)
    # Hand-ins go in, students cannot list it (as nbgrader makes it), and nobody renames or removes another's.
    make_instructors(in_exchange / "inbound", info, 0o1733)
    home = Path(info.pw_dir)
    folder = home / "ptft-course"
    if not (folder / "source").exists():
        shutil.copytree(REPO_ROOT / "nbgrader" / "source", folder / "source")
    (folder / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.root = {str(folder)!r}\n"
        f"c.CourseDirectory.course_id = {course!r}\n"
        "c.Execute.timeout = 120  # each exercise runs in seconds; a cell that takes two minutes is stuck\n"
    )
    jupyter = home / ".jupyter"
    (jupyter / "labconfig").mkdir(parents=True, exist_ok=True)
    (jupyter / "nbgrader_config.py").write_text(
        f"c = get_config()  # noqa: F821\nc.CourseDirectory.root = {str(folder)!r}\n"
    )
    on = {"ServerApp": {"jpserver_extensions": {name: True for name in INSTRUCTOR_SERVER_EXTENSIONS}}}
    (jupyter / "jupyter_server_config.json").write_text(json.dumps(on, indent=1))
    (jupyter / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {plugin: False for plugin in INSTRUCTOR_LAB_PLUGINS}}, indent=1)
    )
    run("chown", "-R", f"{info.pw_uid}:{info.pw_gid}", str(folder), str(jupyter))
    path = f"{venv / 'bin'}:/usr/bin:/bin"
    for student in students:
        as_user(
            instructor,
            str(venv / "bin" / "nbgrader"),
            "db",
            "student",
            "add",
            student,
            env={"PATH": path},
            cwd=str(folder),
        )
    return folder


def make_instructors(folder: Path, instructor: pwd.struct_passwd, mode: int) -> None:
    """``folder``, the instructor's, with ``mode``; one that someone else made first, or a link (in the exchange,
    which anyone can write, a link to the instructor's home would be the instructor's by ``stat``), is an error.
    Changed through a descriptor opened without following a link: what is changed is what was checked."""
    try:
        folder.mkdir()  # root's until given away below (in the sticky exchange no one else may rename it meanwhile)
        made = True
    except FileExistsError:
        made = False
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        what = "a link" if folder.is_symlink() else "not a folder" if err.errno == errno.ENOTDIR else err.strerror
        raise SetupError(f"{folder} is {what}: remove it (someone else may have made it), and rerun") from None
    try:
        owner = os.fstat(fd).st_uid
        if made:
            os.fchown(fd, instructor.pw_uid, instructor.pw_gid)
        elif owner != instructor.pw_uid:
            raise SetupError(
                f"{folder} belongs to {_user_name(owner)}, not the instructor {instructor.pw_name}: move it, and rerun"
            )
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"UID {uid}"


def write_hub_config(prefix: Path, settings: dict) -> Path:
    hub = prefix / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    hub.chmod(0o700)
    shutil.copy(TEMPLATE, hub / "jupyterhub_config.py")
    (hub / "settings.json").write_text(json.dumps(settings, indent=1))
    return hub


def class_ports(args: argparse.Namespace) -> dict[str, int]:
    """The three ports from setup's options, each defaulting to the public port plus one or two; they must differ."""
    ports = {
        "port": args.port,
        "proxy_api_port": args.proxy_api_port or args.port + 1,
        "hub_port": args.hub_port or args.port + 2,
    }
    if len(set(ports.values())) < len(ports):
        raise SetupError(f"the ports must differ (given {ports}): choose --port, --proxy-api-port and --hub-port")
    return ports


def server_limits(args: argparse.Namespace, people: int) -> dict[str, int]:
    """The limits of every user's server, from setup's options or else from this machine's size and the roster's
    length: memory per process, processes (threads included) per user, CPU seconds per process."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    return {
        "memory_bytes": int(args.memory_limit * GiB) if args.memory_limit else memory_share(memory, people),
        "processes": args.process_limit or min(MOST_PROCESSES, threads_max // (people + 1)),
        "cpu_seconds": int(args.cpu_hours * 3600),
    }


def memory_share(memory: int, people: int) -> int:
    """Each server's memory: an equal share of what the system and the hub leave, but at least MEMORY_FLOOR (a
    smaller share would stop notebook 07), and never more than that whole."""
    for_servers = memory - SYSTEM_MEMORY
    return min(max(for_servers // people, MEMORY_FLOOR), for_servers)


def setup(args: argparse.Namespace) -> None:
    check_machine()
    roster = read_roster(args.roster)
    ports = class_ports(args)
    prefix = args.prefix
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    started = time.perf_counter()
    python = build_environment(prefix, args.python)
    venv = python.parent.parent
    configure_jupyter(venv, args.exchange, args.course)
    prepare_data(python, prefix / "data", checkpoints=not args.no_checkpoints)
    run("chmod", "-R", "a+rX,go-w", str(venv), str(prefix / "node"))
    say(f"accounts for the {len(roster)} people on the roster: private homes, each with a copy of the notebooks")
    create_accounts(roster, prefix)
    users = [r["username"] for r in roster]
    for user in users:
        give_notebooks(user)
    instructors = [r["username"] for r in roster if r["role"] == "instructor"]
    students = [r["username"] for r in roster if r["role"] == "student"]
    folder = set_up_course(instructors[0], students, venv, args.course, args.exchange)
    limits = server_limits(args, len(users))
    hub = write_hub_config(
        prefix,
        {
            "prefix": str(prefix),
            "ip": args.ip,
            **ports,
            "users": users,
            "admins": instructors if args.instructor_admin else [],
            "cull_after": args.cull_after,
            "course": args.course,
            "limits": limits,
        },
    )
    say(f"course folder {folder} (gradebook, answer keys) for {instructors[0]}; {len(students)} student(s)")
    say(limits_line(limits))
    say(
        f"set up in {time.perf_counter() - started:.0f} s; start the hub with `{sys.argv[0]} start --prefix {prefix}`"
        f" (configuration: {hub / 'jupyterhub_config.py'})"
    )


def limits_line(limits: dict[str, int]) -> str:
    return (
        f"each server: {limits['memory_bytes'] / GiB:.1f} GiB of memory per process, {limits['processes']} processes"
        f" and threads, {limits['cpu_seconds'] / 3600:g} CPU hours per process"
    )


def hub_url(prefix: Path) -> str:
    settings = json.loads((prefix / "hub" / "settings.json").read_text())
    host = "127.0.0.1" if settings["ip"] in ("", "0.0.0.0") else settings["ip"]
    return f"http://{host}:{settings['port']}"


def start(args: argparse.Namespace) -> None:
    hub = args.prefix / "hub"
    if not (hub / "settings.json").is_file():
        raise SetupError(f"no class server is set up in {args.prefix}: run `{sys.argv[0]} setup --roster ...` first")
    pid_file = hub / "jupyterhub.pid"
    if pid_file.exists() and _hub_alive(int(pid_file.read_text()), hub):
        raise SetupError(f"the hub is running already (PID {pid_file.read_text().strip()}); `stop` it first")
    if "limits" not in json.loads((hub / "settings.json").read_text()):
        raise SetupError(f"{hub / 'settings.json'} has no limits (it was set up by an older version): run setup again")
    _stop_proxy(hub)  # one that this class's hub left running (JupyterHub would stop it too, after the port check)
    check_ports_free(hub / "settings.json")
    env = {
        **os.environ,
        "PATH": f"{args.prefix / 'venv' / 'bin'}:{args.prefix / 'node' / 'node_modules' / '.bin'}:/usr/bin:/bin",
    }
    spare_from_oom_killer()  # this command, and so the hub and the proxy that it starts
    log = open(hub / "hub.log", "ab")
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(args.prefix / "venv" / "bin" / "jupyterhub"), "-f", "jupyterhub_config.py"],
        cwd=hub,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    pid_file.write_text(str(process.pid))
    url = hub_url(args.prefix)
    try:
        wait_for_hub(process, url, hub / "hub.log")
    except SetupError:
        _end_hub(process.pid, hub)
        _stop_proxy(hub)  # the hub starts it in a session of its own, and a hub that failed leaves it running
        pid_file.unlink()
        raise
    say(f"the hub is up at {url} (PID {process.pid}, {time.perf_counter() - started:.1f} s); log: {hub / 'hub.log'}")


def spare_from_oom_killer() -> None:
    """Make this process and those it starts the last that the kernel kills when memory runs out, where root may
    (it needs CAP_SYS_RESOURCE, which some containers take away: there the hub keeps 0, below the servers' 500)."""
    try:
        Path("/proc/self/oom_score_adj").write_text(str(HUB_OOM_SCORE))
    except PermissionError:
        say(f"this machine does not let root lower the hub's out-of-memory score to {HUB_OOM_SCORE}: it stays at 0")


def check_ports_free(settings_file: Path) -> None:
    """Each of the class's ports must be free on its address: a port that another program holds (another class's
    hub or proxy, say) would leave this hub talking to that program."""
    settings = json.loads(settings_file.read_text())
    for key, what, option in PORTS:
        if key not in settings:
            raise SetupError(f"{settings_file} has no {key} (it was set up by an older version): run setup again")
        address = settings["ip"] if key == "port" else "127.0.0.1"  # the proxy's API and the hub's: this machine only
        if not _port_free(address, settings[key]):
            raise SetupError(
                f"{what} {settings[key]} ({key} in {settings_file}) is taken by another program: stop that program,"
                f" or run setup again with {option} and a free port"
            )


def _port_free(address: str, port: int) -> bool:
    """Whether a server could listen on ``address:port`` now (as the hub and its proxy do, reusing the address:
    a port that a stopped server's connections still wait on counts as free)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        socket.create_server((address or "0.0.0.0", port), family=family).close()
    except OSError:
        return False
    return True


def wait_for_hub(process: subprocess.Popen, url: str, log: Path) -> None:
    """Wait until the hub at ``url`` answers; a SetupError if it stops or does not answer within 60 s."""
    for _ in range(600):
        if process.poll() is not None:
            raise SetupError(f"the hub stopped at once: see {log}")
        try:
            urllib.request.urlopen(f"{url}/hub/api", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SetupError(f"the hub did not answer within 60 s: see {log}")


def _hub_alive(pid: int, hub: Path) -> bool:
    """Whether ``pid`` is this class's running JupyterHub: one that runs in ``hub``, the class's hub folder (as
    ``start`` starts it). After a reboot the PID file may name some other process, or another class's hub; a hub
    that has exited but is not yet reaped (a zombie) has an empty command line."""
    command = _command_line(pid).split(b"\0")
    try:
        folder = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return any(part.endswith(b"/jupyterhub") for part in command[:2]) and folder == os.path.realpath(hub)


def _command_line(pid: int) -> bytes:
    """``pid``'s command line (NUL-separated), b"" if it has ended. For a moment in the middle of exec, and while it
    exits, a live process shows an empty one: wait up to 2 s for it to show one or to end."""
    for _ in range(20):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""
        if command or _ended(pid):
            return command
        time.sleep(0.1)
    return b""


def _ended(pid: int) -> bool:
    """Whether ``pid`` has ended: no such process, or one that has exited and waits to be reaped (a zombie). A
    process that is still exiting has lost its command line already, so an empty one does not tell."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def stop(args: argparse.Namespace) -> None:
    hub = args.prefix / "hub"
    pid_file = hub / "jupyterhub.pid"
    if not pid_file.exists():
        say("no hub is running (no PID file)")
        return
    pid = int(pid_file.read_text())
    _end_hub(pid, hub)
    _stop_proxy(hub)  # the hub stops its proxy on the way out, unless it was killed or had died
    settings = json.loads((hub / "settings.json").read_text())
    users, hub_port = settings["users"], settings.get("hub_port", 8081)  # 8081: JupyterHub's, an older set-up's
    left = _user_servers(users, hub_port)  # servers the hub did not stop (it was killed, or it had died)
    _signal(left, signal.SIGTERM)
    if not _wait_until(lambda: not _user_servers(users, hub_port), seconds=30):
        _signal(_user_servers(users, hub_port), signal.SIGKILL)
    pid_file.unlink()
    by_this = f"; {len(left)} server(s) stopped by this command" if left else ""
    say(f"the hub (PID {pid}) and the servers it started are stopped{by_this}")


def _end_hub(pid: int, hub: Path) -> None:
    """Stop the hub (it stops the users' servers and its proxy on the way out); kill it after a minute."""
    if _hub_alive(pid, hub):
        os.kill(pid, signal.SIGTERM)
        if not _wait_until(lambda: not _hub_alive(pid, hub), seconds=60):
            os.killpg(pid, signal.SIGKILL)


def _stop_proxy(hub: Path) -> None:
    """Stop the proxy named in the hub's ``proxy.pid`` if it is still running (a hub that was killed, or failed to
    start, leaves its proxy running: JupyterHub starts it in a session of its own)."""
    pid_file = hub / "proxy.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    settings = json.loads((hub / "settings.json").read_text())
    api_port = settings.get("proxy_api_port", 8001)  # JupyterHub's default: a class set up by an older version
    if _proxy_alive(pid, api_port):
        os.kill(pid, signal.SIGTERM)
        if not _wait_until(lambda: not _proxy_alive(pid, api_port), seconds=10):
            os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: not _proxy_alive(pid, api_port), seconds=10)
    pid_file.unlink()


def _proxy_alive(pid: int, api_port: int) -> bool:
    """Whether ``pid`` is a running configurable-http-proxy with this class's API port (not a process that has
    the PID since, nor another class's proxy)."""
    command = _command_line(pid)
    return b"configurable-http-proxy" in command and f"\0--api-port\0{api_port}\0".encode() in command


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:  # ended meanwhile
            pass


def _wait_until(done, seconds: float) -> bool:
    """Poll ``done()`` every 0.1 s for up to ``seconds``; whether it became true."""
    for _ in range(int(seconds * 10)):
        if done():
            return True
        time.sleep(0.1)
    return done()


def _user_servers(users: list[str], hub_port: int) -> list[int]:
    """The PIDs of the roster's running Jupyter servers (``jupyterhub-singleuser``) that this class's hub started:
    those whose hub (``JUPYTERHUB_API_URL`` in their environment) listens on ``hub_port``, not another class's."""
    uids = set()
    for user in users:
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            pass
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.stat().st_uid in uids and b"jupyterhub-singleuser" in (proc / "cmdline").read_bytes():
                if _api_port(proc / "environ") == hub_port:
                    found.append(int(proc.name))
        except OSError:  # ended meanwhile
            pass
    return found


def _api_port(environ: Path) -> int | None:
    """The port of the hub's API in a process's environment (``/proc/<pid>/environ``, which root can read)."""
    for entry in environ.read_bytes().split(b"\0"):
        if entry.startswith(b"JUPYTERHUB_API_URL="):
            try:
                return urllib.parse.urlsplit(entry.split(b"=", 1)[1].decode()).port
            except ValueError:  # not a URL, or not one with a port
                return None
    return None


def usage(args: argparse.Namespace) -> None:
    """Each roster user's disk use (their home: there are no quotas), processes and resident memory, one line each."""
    settings_file = args.prefix / "hub" / "settings.json"
    if not settings_file.is_file():
        raise SetupError(f"no class server is set up in {args.prefix}: run `{sys.argv[0]} setup --roster ...` first")
    print(f"{'user':<32} {'home MB':>8} {'processes':>9} {'memory MB':>9}")
    for user in json.loads(settings_file.read_text())["users"]:
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            continue  # removed since setup
        disk_mb = run("du", "-s", "--block-size=1M", home).stdout.split()[0]
        ps = subprocess.run(["ps", "-o", "rss=", "-u", user], capture_output=True, text=True)  # exit 1: none
        rss_kb = [int(kb) for kb in ps.stdout.split()]
        print(f"{user:<32} {disk_mb:>8} {len(rss_kb):>9} {sum(rss_kb) // 1024:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="classroom/server.py", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", type=Path, default=Path("/opt/ptft"), help="where everything goes (/opt/ptft)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", parents=[common], help="build the environment, data, accounts, course and hub config")
    p.add_argument("--roster", type=Path, required=True, help="CSV: username,role,name (role instructor or student)")
    p.add_argument("--exchange", type=Path, default=Path("/srv/nbgrader/exchange"), help="nbgrader's exchange")
    p.add_argument("--course", default="ptft", help="the nbgrader course id (ptft)")
    p.add_argument("--ip", default="127.0.0.1", help="the hub's address (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="the hub's port (8000)")
    p.add_argument("--proxy-api-port", type=int, help="the proxy's API port, on 127.0.0.1 (--port + 1)")
    p.add_argument("--hub-port", type=int, help="the hub's own API port, on 127.0.0.1 (--port + 2)")
    p.add_argument("--cull-after", type=int, default=3600, help="stop servers idle this many seconds (3600)")
    p.add_argument("--python", default="/usr/bin/python3", help="the Python every user can run (/usr/bin/python3)")
    p.add_argument("--no-checkpoints", action="store_true", help="skip pretraining the encoders (tests do)")
    p.add_argument("--memory-limit", type=float, help="GiB per process of each server (the machine's share, >= 6)")
    p.add_argument("--process-limit", type=int, help=f"processes and threads per user (up to {MOST_PROCESSES})")
    p.add_argument("--cpu-hours", type=float, default=CPU_HOURS, help=f"CPU hours per process ({CPU_HOURS})")
    p.add_argument(
        "--instructor-admin", action="store_true", help="make the instructor a hub admin (opens students' servers)"
    )
    sub.add_parser("start", parents=[common], help="start the hub in the background")
    sub.add_parser("stop", parents=[common], help="stop the hub and the servers it started")
    sub.add_parser("usage", parents=[common], help="each user's disk, processes and memory now")
    args = parser.parse_args(argv)
    try:
        {"setup": setup, "start": start, "stop": stop, "usage": usage}[args.command](args)
    except SetupError as err:
        print(f"classroom: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
