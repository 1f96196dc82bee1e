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
import datetime
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from venvs import REPO_ROOT, as_user, files_under, seeded_venv

if os.geteuid() != 0 or not shutil.which("npm") or not Path("/usr/bin/python3").is_file():
    pytest.skip("needs root (Unix accounts), npm (the hub's proxy) and /usr/bin/python3", allow_module_level=True)

from tornado.websocket import websocket_connect  # noqa: E402  (tornado comes with JupyterLab)

INSTRUCTOR, STUDENTS = "ptft-teach", ("ptft-ann", "ptft-bob")
ENVIRONMENT = ["torch", "torchvision", "matplotlib", "ipywidgets", "tqdm", "jupyterlab", "nbgrader", "jupyterhub",
               "jupyterhub-idle-culler"]
SERVER = ["/usr/bin/python3", str(REPO_ROOT / "classroom" / "server.py")]
ASSIGNMENT = "01_loss_math"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_users() -> None:
    for user in (INSTRUCTOR, *STUDENTS):
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
        subprocess.run(["userdel", "-r", user], capture_output=True)


class Hub:
    """The running hub: its URL and prefix, and a logged-in HTTP session with an API token per user."""

    def __init__(self, prefix: Path, url: str, passwords: dict[str, str]):
        self.prefix, self.url, self.passwords = prefix, url, passwords
        self.sessions: dict[str, requests.Session] = {}
        self.tokens: dict[str, str] = {}
        self.spawn_seconds: dict[str, float] = {}

    def log_in(self, user: str) -> requests.Session:
        """The login form, as a browser sends it (with its XSRF cookie), then the spawn it redirects to."""
        s = requests.Session()
        s.get(f"{self.url}/hub/login", timeout=30).raise_for_status()
        start = time.perf_counter()
        r = s.post(f"{self.url}/hub/login?next=/hub/spawn", timeout=120, allow_redirects=True,
                   data={"username": user, "password": self.passwords[user], "_xsrf": s.cookies["_xsrf"]})
        r.raise_for_status()
        headers = {"X-XSRFToken": s.cookies["_xsrf"]}
        made = s.post(f"{self.url}/hub/api/users/{user}/tokens", json={"note": "test"}, headers=headers, timeout=30)
        made.raise_for_status()
        self.tokens[user] = made.json()["token"]
        for _ in range(600):
            model = self.api("GET", f"users/{user}").json()
            if model["servers"].get("", {}).get("ready"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"{user}'s server did not become ready")
        self.spawn_seconds[user] = time.perf_counter() - start
        self.sessions[user] = s
        return s

    def api(self, method: str, path: str, user: str = INSTRUCTOR, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api/{path}", timeout=30,
                                headers={"Authorization": f"token {self.tokens[user]}"}, **kwargs)

    def server(self, owner: str, path: str, token_of: str | None = None, **kwargs) -> requests.Response:
        """A request to ``owner``'s single-user server, with ``token_of``'s token (default: the owner's)."""
        token = self.tokens[token_of or owner]
        return requests.get(f"{self.url}/user/{owner}/{path}", headers={"Authorization": f"token {token}"},
                            timeout=30, allow_redirects=False, **kwargs)


@pytest.fixture(scope="module")
def hub():
    remove_users()  # leftovers of an interrupted run
    prefix = Path(tempfile.mkdtemp(prefix="ptft-class-", dir="/tmp"))  # not /tmp/pytest-of-root (0700)
    prefix.chmod(0o755)
    roster = prefix / "roster.csv"
    roster.write_text(f"username,role,name\n{INSTRUCTOR},instructor,The Teacher\n"
                      + "".join(f"{s},student,Student {s}\n" for s in STUDENTS))
    port = free_port()
    try:
        seeded_venv(prefix / "venv", ENVIRONMENT)
        start = time.perf_counter()
        setup = subprocess.run([*SERVER, "setup", "--prefix", str(prefix), "--roster", str(roster), "--port", str(port),
                                "--exchange", str(prefix / "exchange"), "--no-checkpoints"],
                               capture_output=True, text=True, timeout=600)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        setup_seconds = time.perf_counter() - start
        started = subprocess.run([*SERVER, "start", "--prefix", str(prefix)], capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr + (prefix / "hub" / "hub.log").read_text()
        with open(prefix / "passwords.csv") as f:
            passwords = {row.split(",")[0]: row.strip().split(",")[2] for row in list(f)[1:]}
        server = Hub(prefix, f"http://127.0.0.1:{port}", passwords)
        server.setup_seconds, server.setup_output = setup_seconds, setup.stdout
        hub_pid = int((prefix / "hub" / "jupyterhub.pid").read_text())
        yield server
    finally:
        stopped = subprocess.run([*SERVER, "stop", "--prefix", str(prefix)], capture_output=True, text=True, timeout=120)
        leftovers = {u: subprocess.run(["pgrep", "-u", u], capture_output=True, text=True).stdout.split()
                     for u in (INSTRUCTOR, *STUDENTS)}
        remove_users()
        shutil.rmtree(prefix, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(leftovers.values()), f"processes left running after stop: {leftovers}"
    assert subprocess.run(["kill", "-0", str(hub_pid)], capture_output=True).returncode != 0  # the hub is gone


def test_setup_made_private_homes_and_a_read_only_environment(hub):
    for user in (INSTRUCTOR, *STUDENTS):
        home = Path(f"/home/{user}")
        assert home.stat().st_mode & 0o777 == 0o700, f"{home} must be readable by its owner only"
        assert (home / "ptft-notebooks" / "00_setup_and_data.ipynb").is_file()
    assert (hub.prefix / "passwords.csv").stat().st_mode & 0o777 == 0o600
    probe = as_user(_user(STUDENTS[0]), str(hub.prefix / "venv" / "bin" / "python"), "-c",
                    f"open({str(hub.prefix / 'venv' / 'x')!r}, 'w')")
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
    wrong = requests.post(f"{hub.url}/hub/login", data={"username": STUDENTS[0], "password": "not it"}, timeout=30)
    assert "Invalid username or password" in wrong.text


def _user(name: str):
    import pwd

    return pwd.getpwnam(name)


async def run_notebook(hub: Hub, user: str, path: str) -> list[str]:
    """Every code cell of ``path`` (relative to the user's home) in a new kernel on the user's own server, through
    the hub's proxy; returns the errors (none when the notebook ran through)."""
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    base = f"{hub.url}/user/{user}"
    kernel = requests.post(f"{base}/api/kernels", json={"name": "python3"}, headers=headers, timeout=60).json()
    cells = json.loads(requests.get(f"{base}/api/contents/{path}", headers=headers, timeout=60).text)["content"]["cells"]
    ws = await websocket_connect(
        f"{base.replace('http', 'ws')}/api/kernels/{kernel['id']}/channels?token={hub.tokens[user]}")
    session, errors = uuid.uuid4().hex, []
    try:
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            msg_id = uuid.uuid4().hex
            header = {"msg_id": msg_id, "username": user, "session": session, "msg_type": "execute_request",
                      "version": "5.3", "date": datetime.datetime.now(datetime.UTC).isoformat()}
            code = "".join(cell["source"])
            ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell",
                                         "content": {"code": code, "silent": False, "store_history": False,
                                                     "user_expressions": {}, "allow_stdin": False,
                                                     "stop_on_error": True}}))
            while True:
                reply = json.loads(await ws.read_message())
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if reply["msg_type"] == "error":
                    errors.append(f"{reply['content']['ename']}: {reply['content']['evalue']}")
                if reply["msg_type"] == "execute_reply":
                    break
    finally:
        ws.close()
        requests.delete(f"{base}/api/kernels/{kernel['id']}", headers=headers, timeout=60)
    return errors


def memory_of(users) -> dict[str, int]:
    """Resident memory (MB) of each user's processes."""
    out = {}
    for user in users:
        rss = subprocess.run(["ps", "-o", "rss=", "-u", user], capture_output=True, text=True).stdout.split()
        out[user] = sum(int(kb) for kb in rss) // 1024
    return out


def test_two_students_run_notebook_00_at_the_same_time(hub, artifacts_dir):
    idle = memory_of(STUDENTS)
    peak, stop = dict(idle), threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            for user, mb in memory_of(STUDENTS).items():
                peak[user] = max(peak[user], mb)

    def cpu_seconds(user: str) -> float:
        ticks = subprocess.run(["ps", "-o", "cputimes=", "-u", user], capture_output=True, text=True).stdout.split()
        return sum(float(t) for t in ticks)

    watcher = threading.Thread(target=watch)
    watcher.start()
    before = {u: cpu_seconds(u) for u in STUDENTS}
    start = time.perf_counter()

    async def both():
        return await asyncio.gather(*(run_notebook(hub, u, "ptft-notebooks/00_setup_and_data.ipynb") for u in STUDENTS))

    errors = asyncio.run(both())
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    assert errors == [[], []], errors
    measured = {"students_at_once": len(STUDENTS), "wall_seconds": round(seconds, 1),
                "idle_server_mb": idle, "peak_mb": peak, "setup_seconds": round(hub.setup_seconds),
                "spawn_seconds": {u: round(s, 1) for u, s in hub.spawn_seconds.items()},
                "kernel_cpu_seconds": {u: round(cpu_seconds(u) - before[u], 1) for u in STUDENTS},
                "notebook": "00_setup_and_data (fast mode off: PTFT_FAST unset on the servers)",
                "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")}
    (artifacts_dir / "classroom.json").write_text(json.dumps(measured, indent=1))
    print(json.dumps(measured, indent=1))


def nbgrader(user: str, hub: Hub, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    venv_bin = hub.prefix / "venv" / "bin"
    done = as_user(_user(user), str(venv_bin / "nbgrader"), *args, env={"PATH": f"{venv_bin}:/usr/bin:/bin"},
                   cwd=cwd)
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
    answers = {c["metadata"]["nbgrader"]["grade_id"]: c["source"] for c in json.loads(
        (course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())["cells"]
        if c["metadata"].get("nbgrader", {}).get("solution")}
    handed_in = json.loads(fetched.read_text())
    for cell in handed_in["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") in answers:
            cell["source"] = answers[cell["metadata"]["nbgrader"]["grade_id"]]
    fetched.write_text(json.dumps(handed_in))
    for student in STUDENTS:
        nbgrader(student, hub, "submit", ASSIGNMENT, "--course", "ptft")
    nbgrader(INSTRUCTOR, hub, "collect", ASSIGNMENT, cwd=course)
    nbgrader(INSTRUCTOR, hub, "autograde", ASSIGNMENT, cwd=course)
    read = as_user(_user(INSTRUCTOR), str(hub.prefix / "venv" / "bin" / "python"), "-c",
                   "import json; from nbgrader.api import Gradebook\n"
                   f"with Gradebook('sqlite:///{course}/gradebook.db') as g:\n"
                   f"    print(json.dumps({{s: [g.find_submission({ASSIGNMENT!r}, s).score, "
                   f"g.find_submission({ASSIGNMENT!r}, s).max_score] for s in {list(STUDENTS)!r}}}))", cwd=course)
    assert read.returncode == 0, read.stderr
    scores = json.loads(read.stdout)
    assert scores[key][0] == scores[key][1] > 0, scores  # full marks
    assert scores[blank][0] == 0 and scores[blank][1] > 0, scores  # zero


def test_nobody_sees_anothers_work(hub):
    course = Path(f"/home/{INSTRUCTOR}/ptft-course")
    ann, bob = STUDENTS
    for target in (course / "source", Path(f"/home/{bob}")):
        peek = as_user(_user(ann), "ls", str(target))
        assert peek.returncode != 0 and "Permission denied" in peek.stderr, target
    assert hub.server(bob, "api/status", token_of=ann).status_code in (403, 404)  # ann's token on bob's server
    assert hub.server(ann, "formgrader").status_code == 404  # students have no formgrader
    assert hub.server(INSTRUCTOR, "formgrader").status_code == 200  # the instructor has, in a browser tab of its own
    assert files_under(hub.prefix / "data")  # the shared data is there ...
    write = as_user(_user(ann), "touch", str(hub.prefix / "data" / "mine"))
    assert write.returncode != 0  # ... and read-only
