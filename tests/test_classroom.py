"""A class on one server, as a class uses it: ``classroom/server.py`` sets up JupyterHub (PAM, real Unix users,
nbgrader's exchange) from a roster, on loopback; an instructor and two students log in over HTTP; both students
run notebook 00 at the same time in their own kernels; the instructor hands an assignment out, the students hand
it in, and the grades are read from the gradebook; and nobody can see another's work.

The shared environment is seeded from this test run's own packages (``venvs.seeded_venv``, so that PyTorch is not
copied again); ``setup`` then installs the package into it with pip, as on a real server. Encoders are not
pretrained (``--no-checkpoints``): notebook 00 and exercise 01 need none. Memory and CPU per student are written
to ``test-artifacts/classroom.json`` (docs/teaching.md quotes a run of this test).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from ptft_helpers.devices import cpu_name

from venvs import REPO_ROOT, as_user, files_under, seeded_venv

if os.geteuid() != 0 or not shutil.which("npm") or not Path("/usr/bin/python3").is_file():
    pytest.skip("needs root (Unix accounts), npm (the hub's proxy) and /usr/bin/python3", allow_module_level=True)

sys.path.insert(0, str(REPO_ROOT))
from classroom.client import Hub, Usage, run_notebook  # noqa: E402

INSTRUCTOR, STUDENTS = "ptft-teach", ("ptft-ann", "ptft-bob")
ENVIRONMENT = [
    "torch",
    "torchvision",
    "matplotlib",
    "ipywidgets",
    "tqdm",
    "jupyterlab",
    "nbgrader",
    "jupyterhub",
    "jupyterhub-idle-culler",
]
SERVER = ["/usr/bin/python3", str(REPO_ROOT / "classroom" / "server.py")]
ASSIGNMENT = "01_loss_math"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process, not a zombie that its new parent has not reaped (yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_of(user: str) -> list[int]:
    """The live processes of ``user``."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.stat().st_uid == uid and running(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def remove_users() -> None:
    for user in (INSTRUCTOR, *STUDENTS):
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
        subprocess.run(["userdel", "-r", user], capture_output=True)


@pytest.fixture(scope="module")
def hub():
    remove_users()  # leftovers of an interrupted run
    prefix = Path(tempfile.mkdtemp(prefix="ptft-class-", dir="/tmp"))  # not /tmp/pytest-of-root (0700)
    prefix.chmod(0o755)
    roster = prefix / "roster.csv"
    roster.write_text(
        f"username,role,name\n{INSTRUCTOR},instructor,The Teacher\n"
        + "".join(f"{s},student,Student {s}\n" for s in STUDENTS)
    )
    port = free_port()
    try:
        seeded_venv(prefix / "venv", ENVIRONMENT)
        start = time.perf_counter()
        setup = subprocess.run(
            [
                *SERVER,
                "setup",
                "--prefix",
                str(prefix),
                "--roster",
                str(roster),
                "--port",
                str(port),
                "--exchange",
                str(prefix / "exchange"),
                "--no-checkpoints",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        setup_seconds = time.perf_counter() - start
        started = subprocess.run(
            [*SERVER, "start", "--prefix", str(prefix)], capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stdout + started.stderr + (prefix / "hub" / "hub.log").read_text()
        with open(prefix / "passwords.csv") as f:
            passwords = {row.split(",")[0]: row.strip().split(",")[2] for row in list(f)[1:]}
        server = Hub(f"http://127.0.0.1:{port}", passwords)
        server.prefix, server.setup_seconds = prefix, setup_seconds
        hub_pid = int((prefix / "hub" / "jupyterhub.pid").read_text())
        yield server
    finally:
        stopped = subprocess.run(
            [*SERVER, "stop", "--prefix", str(prefix)], capture_output=True, text=True, timeout=120
        )
        leftovers = {u: processes_of(u) for u in (INSTRUCTOR, *STUDENTS)}
        remove_users()
        shutil.rmtree(prefix, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(leftovers.values()), f"processes left running after stop: {leftovers}"
    assert not running(hub_pid)  # the hub is gone


def test_setup_made_private_homes_and_a_read_only_environment(hub):
    for user in (INSTRUCTOR, *STUDENTS):
        home = Path(f"/home/{user}")
        assert home.stat().st_mode & 0o777 == 0o700, f"{home} must be readable by its owner only"
        assert (home / "ptft-notebooks" / "00_setup_and_data.ipynb").is_file()
    assert (hub.prefix / "passwords.csv").stat().st_mode & 0o777 == 0o600
    probe = as_user(
        pwd.getpwnam(STUDENTS[0]),
        str(hub.prefix / "venv" / "bin" / "python"),
        "-c",
        f"open({str(hub.prefix / 'venv' / 'x')!r}, 'w')",
    )
    assert probe.returncode != 0 and "Permission denied" in probe.stderr


def test_everyone_logs_in_over_http_and_gets_a_server(hub):
    threads = [threading.Thread(target=hub.log_in, args=(u,)) for u in (INSTRUCTOR, *STUDENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(hub.tokens) == {INSTRUCTOR, *STUDENTS}
    for user in (INSTRUCTOR, *STUDENTS):
        assert hub.server(user, "api/status").status_code == 200
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    wrong = s.post(
        f"{hub.url}/hub/login",
        timeout=30,
        data={"username": STUDENTS[0], "password": "not it", "_xsrf": s.cookies["_xsrf"]},
    )
    assert "Invalid username or password" in wrong.text


def test_two_students_run_notebook_00_at_the_same_time(hub, artifacts_dir):
    async def both():
        return await asyncio.gather(*(run_notebook(hub, u, "ptft-notebooks/00_setup_and_data.ipynb") for u in STUDENTS))

    with Usage(list(STUDENTS)) as usage:
        errors = asyncio.run(both())
    assert errors == [[], []], errors
    measured = {
        "students_at_once": len(STUDENTS),
        "wall_seconds": round(usage.wall_seconds, 1),
        "idle_server_mb": usage.idle_mb,
        "peak_mb": usage.peak_mb,
        "setup_seconds": round(hub.setup_seconds),
        "spawn_seconds": {u: round(s, 1) for u, s in hub.spawn_seconds.items()},
        "cpu_seconds_per_student": {u: round(s, 1) for u, s in usage.cpu_seconds.items()},
        "notebook": "00_setup_and_data, fast mode, in each student's own kernel at once",
        "cpu": cpu_name(),
    }
    (artifacts_dir / "classroom.json").write_text(json.dumps(measured, indent=1))
    print(json.dumps(measured, indent=1))


def nbgrader(user: str, hub: Hub, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    venv_bin = hub.prefix / "venv" / "bin"
    done = as_user(
        pwd.getpwnam(user), str(venv_bin / "nbgrader"), *args, env={"PATH": f"{venv_bin}:/usr/bin:/bin"}, cwd=cwd
    )
    assert done.returncode == 0, f"nbgrader {' '.join(args)} as {user}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


def test_an_assignment_goes_out_comes_back_and_is_graded(hub):
    course = Path(f"/home/{INSTRUCTOR}/ptft-course")
    nbgrader(INSTRUCTOR, hub, "generate_assignment", ASSIGNMENT, "--force", cwd=course)
    nbgrader(INSTRUCTOR, hub, "release_assignment", ASSIGNMENT, "--force", cwd=course)
    key, blank = STUDENTS
    for student in STUDENTS:
        nbgrader(student, hub, "fetch_assignment", ASSIGNMENT, "--course", "ptft")
    # The first student hands in the answer key (the released version with the solutions filled in).
    fetched = Path(f"/home/{key}/{ASSIGNMENT}/{ASSIGNMENT}.ipynb")
    answers = {
        c["metadata"]["nbgrader"]["grade_id"]: c["source"]
        for c in json.loads((course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())["cells"]
        if c["metadata"].get("nbgrader", {}).get("solution")
    }
    handed_in = json.loads(fetched.read_text())
    for cell in handed_in["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") in answers:
            cell["source"] = answers[cell["metadata"]["nbgrader"]["grade_id"]]
    fetched.write_text(json.dumps(handed_in))
    for student in STUDENTS:
        nbgrader(student, hub, "submit", ASSIGNMENT, "--course", "ptft")
    nbgrader(INSTRUCTOR, hub, "collect", ASSIGNMENT, cwd=course)
    nbgrader(INSTRUCTOR, hub, "autograde", ASSIGNMENT, cwd=course)
    read = as_user(
        pwd.getpwnam(INSTRUCTOR),
        str(hub.prefix / "venv" / "bin" / "python"),
        "-c",
        "import json; from nbgrader.api import Gradebook\n"
        f"with Gradebook('sqlite:///{course}/gradebook.db') as g:\n"
        f"    print(json.dumps({{s: [g.find_submission({ASSIGNMENT!r}, s).score, "
        f"g.find_submission({ASSIGNMENT!r}, s).max_score] for s in {list(STUDENTS)!r}}}))",
        cwd=course,
    )
    assert read.returncode == 0, read.stderr
    scores = json.loads(read.stdout)
    assert scores[key][0] == scores[key][1] > 0, scores  # full marks
    assert scores[blank][0] == 0 and scores[blank][1] > 0, scores  # zero


def test_nobody_sees_anothers_work(hub):
    course = Path(f"/home/{INSTRUCTOR}/ptft-course")
    ann, bob = STUDENTS
    for target in (course / "source", Path(f"/home/{bob}")):
        peek = as_user(pwd.getpwnam(ann), "ls", str(target))
        assert peek.returncode != 0 and "Permission denied" in peek.stderr, target
    assert hub.server(bob, "api/status", token_of=ann).status_code in (403, 404)  # ann's token on bob's server
    assert hub.server(ann, "formgrader").status_code == 404  # students have no formgrader
    formgrader = hub.server(INSTRUCTOR, "formgrader", allow_redirects=True)
    assert formgrader.status_code == 200 and "formgrader" in formgrader.url  # the instructor's, in a tab of its own
    assert files_under(hub.prefix / "data")  # the shared data is there ...
    write = as_user(pwd.getpwnam(ann), "touch", str(hub.prefix / "data" / "mine"))
    assert write.returncode != 0  # ... and read-only
