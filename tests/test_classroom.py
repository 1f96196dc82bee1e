"""A class on one server, as a class uses it: ``classroom/server.py`` sets up JupyterHub (PAM, real Unix users,
nbgrader's exchange) from a roster, on loopback; an instructor and two students log in over HTTP; both students
run notebook 00 at the same time in their own kernels; the instructor hands an assignment out, the students hand
it in, and the grades are read from the gradebook; feedback goes back; nobody can see another's work; and a second
class's hub on the same machine leaves this one alone. The second student is dishonest, as a probe was: he hands
in a forgery in the first one's name and a hand-in that claims the year 2000, looks for the first one's feedback,
asks for more memory and threads than his limits; the instructor's token tries a student's files. Each of these
tests fails when its protection is taken away.

The shared environment is seeded from this test run's own packages (``venvs.seeded_venv``, so that PyTorch is not
copied again); ``setup`` then installs the package into it with pip, as on a real server. Encoders are not
pretrained (``--no-checkpoints``): notebook 00 and exercise 01 need none. Memory and CPU per student are written
to ``test-artifacts/classroom.json`` (docs/classroom.md quotes a run of this test). The accounts are new, with
names nobody chose (``venvs.unused_name``), and only those that ``setup`` made are removed afterwards.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
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
import uuid
from pathlib import Path

import pytest
import requests
from nbgrader.utils import notebook_hash
from packaging.utils import canonicalize_name

from ptft_helpers.devices import cpu_name

from server_logs import server_log
from venvs import REPO_ROOT, as_user, closure, files_under, installed, remove_user, running, seeded_venv, unused_name

if os.geteuid() != 0 or not shutil.which("npm") or not Path("/usr/bin/python3").is_file():
    pytest.skip("needs root (Unix accounts), npm (the hub's proxy) and /usr/bin/python3", allow_module_level=True)

sys.path.insert(0, str(REPO_ROOT))
from classroom.client import Hub, Usage, run_cells, run_in_terminal, run_notebook  # noqa: E402
from classroom.server import write_hub_config  # noqa: E402

ENVIRONMENT = [
    "torch",
    "torchvision",
    "matplotlib",
    "ipywidgets",
    "tqdm",
    "transformers",
    "peft",
    "jupyterlab",
    "nbval",
    "nbgrader",
    "jupyterhub",
    "jupyterhub-idle-culler",
]
SERVER = ["/usr/bin/python3", str(REPO_ROOT / "classroom" / "server.py")]
ASSIGNMENT = "01_loss_math"


def free_ports(count: int) -> list[int]:
    """``count`` different ports that are free on 127.0.0.1 now."""
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


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


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def hub_log(prefix: Path) -> str:
    """The end of a hub's log (its users' servers write into it too), for a failure message."""
    log = prefix / "hub" / "hub.log"
    return f"\n--- the end of {log}:\n" + (log.read_text()[-6000:] if log.exists() else "(no log)")


def passwords_of(prefix: Path) -> dict[str, str]:
    """The accounts that ``setup`` made (it writes each one's password as it makes it), with their passwords."""
    try:
        with open(prefix / "passwords.csv", newline="") as f:
            return {row["username"]: row["password"] for row in csv.DictReader(f)}
    except FileNotFoundError:
        return {}


def set_up_class(prefix: Path, roster: Path, ports: list[int]) -> float:
    """``server.py setup`` of a class on ``ports`` (public, proxy API, hub); returns its seconds."""
    start = time.perf_counter()
    setup = subprocess.run(
        [*SERVER, "setup", "--prefix", str(prefix), "--roster", str(roster), "--exchange", str(prefix / "exchange")]
        + ["--port", str(ports[0]), "--proxy-api-port", str(ports[1]), "--hub-port", str(ports[2])]
        + ["--no-checkpoints"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    return time.perf_counter() - start


def start_hub(prefix: Path) -> None:
    started = subprocess.run([*SERVER, "start", "--prefix", str(prefix)], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr + hub_log(prefix)


@pytest.fixture(scope="module")
def hub():
    instructor, students = unused_name("ptft-teach"), (unused_name("ptft-ann"), unused_name("ptft-bob"))
    prefix = Path(tempfile.mkdtemp(prefix="ptft-class-", dir="/tmp"))  # not /tmp/pytest-of-root (0700)
    prefix.chmod(0o755)
    roster = prefix / "roster.csv"
    roster.write_text(
        f"username,role,name\n{instructor},instructor,The Teacher\n"
        + "".join(f"{s},student,Student {s}\n" for s in students)
    )
    ports = free_ports(3)
    try:
        seeded_venv(prefix / "venv", ENVIRONMENT, replace_own=True)
        seeded = installed(prefix / "venv")
        setup_seconds = set_up_class(prefix, roster, ports)
        assert set(passwords_of(prefix)) == {instructor, *students}  # new accounts, none adopted
        start_hub(prefix)
        server = Hub(f"http://127.0.0.1:{ports[0]}", passwords_of(prefix))
        server.prefix, server.setup_seconds = prefix, setup_seconds
        server.instructor, server.students = instructor, students
        server.installed_by_setup = dict(installed(prefix / "venv").items() - seeded.items())
        server.not_seeded = {canonicalize_name(d.metadata["Name"]) for d in closure(ENVIRONMENT)} - seeded.keys()
        hub_pid = int((prefix / "hub" / "jupyterhub.pid").read_text())
        with server_log("the hub", prefix / "hub" / "hub.log"):  # its users' servers write into it too
            yield server
    finally:
        stopped = subprocess.run(
            [*SERVER, "stop", "--prefix", str(prefix)], capture_output=True, text=True, timeout=120
        )
        leftovers = {u: processes_of(u) for u in (instructor, *students)}
        log = hub_log(prefix)
        for user in passwords_of(prefix):  # the accounts that this run's setup made, and no others
            remove_user(user)
        shutil.rmtree(prefix, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr + log
    assert not any(leftovers.values()), f"processes left running after stop: {leftovers}{log}"
    assert not running(hub_pid), log  # the hub is gone


def test_setup_made_private_homes_and_a_read_only_environment(hub):
    for user in (hub.instructor, *hub.students):
        assert home(user).stat().st_mode & 0o777 == 0o700, f"{home(user)} must be readable by its owner only"
        assert (home(user) / "ptft-notebooks" / "00_setup_and_data.ipynb").is_file()
    assert (hub.prefix / "passwords.csv").stat().st_mode & 0o777 == 0o600
    probe = as_user(
        pwd.getpwnam(hub.students[0]),
        str(hub.prefix / "venv" / "bin" / "python"),
        "-c",
        f"open({str(hub.prefix / 'venv' / 'x')!r}, 'w')",
    )
    assert probe.returncode != 0 and "Permission denied" in probe.stderr


def test_setup_installs_only_this_package_and_what_the_seed_could_not_give(hub):
    # Anything else, setup downloads: add it to ENVIRONMENT. The seed leaves out what does not fit Debian's Python.
    assert hub.installed_by_setup.keys() <= {"ptft-helpers", *hub.not_seeded}, hub.installed_by_setup


def test_everyone_logs_in_over_http_and_gets_a_server(hub):
    everyone = (hub.instructor, *hub.students)
    threads = [threading.Thread(target=hub.log_in, args=(u,)) for u in everyone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(hub.tokens) == set(everyone)
    for user in everyone:
        assert hub.server(user, "api/status").status_code == 200
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    wrong = s.post(
        f"{hub.url}/hub/login",
        timeout=30,
        data={"username": hub.students[0], "password": "not it", "_xsrf": s.cookies["_xsrf"]},
    )
    assert "Invalid username or password" in wrong.text


def test_two_students_run_notebook_00_at_the_same_time(hub, artifacts_dir):
    async def both():
        notebook = "ptft-notebooks/00_setup_and_data.ipynb"
        return await asyncio.gather(*(run_notebook(hub, u, notebook) for u in hub.students))

    with Usage(list(hub.students)) as usage:
        errors = asyncio.run(both())
    assert errors == [[], []], errors
    measured = {
        "students_at_once": len(hub.students),
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


def hand_in_by_hand(hub: Hub, maker: str, named: str, claimed: str) -> tuple[str, str]:
    """What a dishonest ``maker`` can write into the exchange without nbgrader: their copy of the assignment as a
    hand-in in ``named``'s name, whose folder name and ``timestamp.txt`` claim the time ``claimed``, with a secret
    of the maker's choosing (nbgrader names the feedback after it). Returns the folder's name and the secret."""
    name, secret = f"{named}+{ASSIGNMENT}+{claimed}+{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    script = 'cp -r "$1" "$2" && printf %s "$3" > "$2/timestamp.txt" && printf %s "$4" > "$2/submission_secret.txt"'
    folder = hub.prefix / "exchange" / "ptft" / "inbound" / name
    mine = home(maker) / ASSIGNMENT
    made = as_user(pwd.getpwnam(maker), "bash", "-c", script, "-", str(mine), str(folder), claimed, secret)
    assert made.returncode == 0, made.stderr
    return name, secret


def gradebook(hub: Hub) -> dict[str, dict]:
    """Each student's score, the most they could score, and the time of their hand-in, from the gradebook."""
    course = home(hub.instructor) / "ptft-course"
    read = as_user(
        pwd.getpwnam(hub.instructor),
        str(hub.prefix / "venv" / "bin" / "python"),
        "-c",
        "import json, sys; from nbgrader.api import Gradebook\n"
        f"with Gradebook('sqlite:///{course}/gradebook.db') as g:\n"
        f"    found = {{s: g.find_submission({ASSIGNMENT!r}, s) for s in sys.argv[1:]}}\n"
        "    print(json.dumps({s: {'score': f.score, 'max_score': f.max_score, 'timestamp': f.timestamp.isoformat()}"
        " for s, f in found.items()}))",
        *hub.students,
        cwd=course,
    )
    assert read.returncode == 0, read.stderr
    return json.loads(read.stdout)


def test_an_assignment_goes_out_comes_back_and_is_graded_as_its_student_made_it(hub):
    teacher, course = hub.instructor, home(hub.instructor) / "ptft-course"
    nbgrader(teacher, hub, "generate_assignment", ASSIGNMENT, "--force", cwd=course)
    nbgrader(teacher, hub, "release_assignment", ASSIGNMENT, "--force", cwd=course)
    honest, dishonest = hub.students
    for student in hub.students:
        nbgrader(student, hub, "fetch_assignment", ASSIGNMENT, "--course", "ptft")
    # The honest student hands in the answer key (the released version with the solutions filled in).
    fetched = home(honest) / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
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
    nbgrader(honest, hub, "submit", ASSIGNMENT, "--course", "ptft")
    # The dishonest one hands in the blank version by hand, claiming the year 2000, then a blank one in the honest
    # one's name that claims to be newer than the honest one's.
    before = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(seconds=1)
    hand_in_by_hand(hub, dishonest, dishonest, "2000-01-01 00:00:00.000000 UTC")
    hub.forgery, hub.forgers_secret = hand_in_by_hand(hub, dishonest, honest, "2099-01-01 00:00:00.000000 UTC")
    collected = nbgrader(teacher, hub, "collect", ASSIGNMENT, cwd=course)
    said = collected.stdout + collected.stderr
    about_the_forgery = [line for line in said.splitlines() if hub.forgery in line]
    assert len(about_the_forgery) == 1 and "Rejected" in about_the_forgery[0], said  # refused, in one line
    nbgrader(teacher, hub, "autograde", ASSIGNMENT, cwd=course)
    graded = gradebook(hub)
    assert graded[honest]["score"] == graded[honest]["max_score"] > 0, graded  # full marks: the forgery was not taken
    assert graded[dishonest]["score"] == 0 and graded[dishonest]["max_score"] > 0, graded
    assert datetime.datetime.fromisoformat(graded[dishonest]["timestamp"]) >= before, graded  # not the year 2000


def test_nobody_sees_anothers_work(hub):
    course = home(hub.instructor) / "ptft-course"
    ann, bob = hub.students
    for target in (course / "source", home(bob)):
        peek = as_user(pwd.getpwnam(ann), "ls", str(target))
        assert peek.returncode != 0 and "Permission denied" in peek.stderr, target
    assert hub.server(bob, "api/status", token_of=ann).status_code in (403, 404)  # ann's token
    assert hub.server(ann, "api/contents", token_of=hub.instructor).status_code == 403  # nor the instructor's
    assert hub.server(ann, "formgrader").status_code == 404  # students have no formgrader
    formgrader = hub.server(hub.instructor, "formgrader", allow_redirects=True)
    assert formgrader.status_code == 200 and "formgrader" in formgrader.url  # a tab of its own
    assert files_under(hub.prefix / "data")  # the shared data is there ...
    write = as_user(pwd.getpwnam(ann), "touch", str(hub.prefix / "data" / "mine"))
    assert write.returncode != 0  # ... and read-only


def test_feedback_goes_back_to_its_student_only(hub):
    """After the assignment test: the instructor generates and releases feedback in the formgrader, the honest
    student fetches it in the Assignments tab; the dishonest one, who forged a hand-in in the honest one's name
    with a secret of his own, finds nothing under that secret's name."""
    teacher, (honest, dishonest) = hub.instructor, hub.students
    graded = hub.server(teacher, f"formgrader/api/submitted_notebooks/{ASSIGNMENT}/{ASSIGNMENT}").json()
    for page in [
        f"formgrader/gradebook/{ASSIGNMENT}/{ASSIGNMENT}",
        *(f"formgrader/submissions/{n['id']}/" for n in graded),
    ]:
        shown = hub.server(teacher, page)  # the manual-grading pages: the list, and each hand-in
        assert shown.status_code == 200, f"{page}: {shown.text[-3000:]}"
    for action in ("generate_feedback", "release_feedback"):
        done = hub.post(teacher, f"formgrader/api/assignment/{ASSIGNMENT}/{action}")
        assert done.status_code == 200 and done.json()["success"], f"{action}: {done.text[-3000:]}"
    assignment = {"course_id": "ptft", "assignment_id": ASSIGNMENT}
    for student in hub.students:
        fetched = hub.post(student, "assignments/fetch_feedback", data=assignment)
        assert fetched.status_code == 200, fetched.text[-3000:]
    shared = hub.prefix / "exchange" / "ptft" / "feedback"
    listed = as_user(pwd.getpwnam(dishonest), "ls", str(shared))
    assert listed.returncode != 0 and "Permission denied" in listed.stderr, listed.stdout
    named = f"{shared}/{notebook_hash(secret=hub.forgers_secret, notebook_id=ASSIGNMENT)}.html"
    peek = as_user(pwd.getpwnam(dishonest), "cat", named)
    assert peek.returncode != 0 and "No such file" in peek.stderr, f"{dishonest} read the forgery's feedback {named}"
    found = list((home(honest) / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
    full_marks = float(gradebook(hub)[honest]["max_score"])
    assert len(found) == 1, f"{honest} fetched {found}"
    assert f"(Score: {full_marks} / {full_marks})" in found[0].read_text(), found[0].read_text()[:3000]  # hers


def oom_score(pid: int) -> int:
    """How readily the kernel's out-of-memory killer would end ``pid`` now (the highest goes first)."""
    return int(Path(f"/proc/{pid}/oom_score").read_text())


ALLOCATE_AND_SPAWN = """
import json, numpy, threading
report = {"oom_score": int(open("/proc/self/oom_score").read())}
try:
    numpy.empty(%(too_much)d, dtype=numpy.uint8)  # not written to: the machine's memory is not used either way
    report["allocated"] = True
except MemoryError:
    report["allocated"] = False
waiting, started = threading.Event(), []
try:
    for _ in range(%(threads)d):
        started.append(threading.Thread(target=waiting.wait))
        started[-1].start()
except RuntimeError:  # can't start new thread
    started.pop()
waiting.set()
report["threads"] = len(started)
print(json.dumps(report))
"""
# How far above the hub and its proxy the out-of-memory killer ranks every student's process, at least: as if the
# hub used 20% of the machine's memory less than it does (oom_score counts thousandths of the memory). Memory alone
# puts them a few points apart; the servers' +500 puts them 500 apart (about 330 on kernels that scale the score).
OOM_MARGIN = 200


def test_a_student_cannot_take_the_machine_from_the_others(hub):
    """The dishonest student's kernel asks for more memory than its limit and more threads than its user may run;
    the out-of-memory killer would end it, and the other student's server, before the hub; the hub and the other
    student go on."""
    limits = json.loads((hub.prefix / "hub" / "settings.json").read_text())["limits"]
    other, dishonest = hub.students
    tries = {"too_much": limits["memory_bytes"] + 2**30, "threads": limits["processes"] + 10}
    printed, errors = asyncio.run(run_cells(hub, dishonest, [ALLOCATE_AND_SPAWN % tries, "print('still here')"]))
    assert not errors, errors
    report = json.loads(printed.splitlines()[0])
    assert not report["allocated"], f"{tries['too_much'] / 2**30:.1f} GiB: {report}"  # a MemoryError
    assert report["threads"] < tries["threads"], report
    folder = hub.prefix / "hub"
    spared = {name: oom_score(int((folder / name).read_text())) for name in ("jupyterhub.pid", "proxy.pid")}
    students = {f"{dishonest}'s kernel": report["oom_score"]}
    students |= {f"{other}'s PID {pid}": oom_score(pid) for pid in processes_of(other)}
    assert min(students.values()) >= max(spared.values()) + OOM_MARGIN, f"{students}, {spared}"
    assert printed.splitlines()[-1] == "still here"  # the kernel goes on
    assert hub.server(other, "api/status").status_code == 200
    assert hub.api("GET", f"users/{other}", user=other).status_code == 200


def test_the_instructors_terminal_finds_nbgrader(hub):
    command = 'echo "nbgrader: $(command -v nbgrader) $((6 * 7))"'  # the terminal shows the command, not 42
    shown = asyncio.run(run_in_terminal(hub, hub.instructor, command, until=" 42"))
    assert f"nbgrader: {hub.prefix / 'venv' / 'bin' / 'nbgrader'} 42" in shown, shown


def test_usage_shows_each_users_home_and_processes(hub):
    shown = subprocess.run([*SERVER, "usage", "--prefix", str(hub.prefix)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in shown.stdout.splitlines()[1:]}
    assert rows.keys() == {hub.instructor, *hub.students}, shown.stdout
    for user in hub.students:
        disk_mb, processes, memory_mb = rows[user]
        assert disk_mb > 0 and processes > 0 and memory_mb > 0, shown.stdout  # a copy of the notebooks, a server
    print(shown.stdout)


def second_class(first: Path) -> Path:
    """A second class beside the first, as ``setup`` writes it but without accounts: a prefix, hub folder and ports
    of its own, and links to the first class's environment, proxy and data (nothing in them is written)."""
    prefix = Path(tempfile.mkdtemp(prefix="ptft-class2-", dir="/tmp"))
    for shared in ("venv", "node", "data"):
        (prefix / shared).symlink_to(first / shared)
    port, proxy_api_port, hub_port = free_ports(3)
    settings = {"prefix": str(prefix), "ip": "127.0.0.1", "port": port, "proxy_api_port": proxy_api_port}
    settings |= {"hub_port": hub_port, "users": [], "admins": [], "cull_after": 3600, "course": "second"}
    settings["limits"] = json.loads((first / "hub" / "settings.json").read_text())["limits"]
    write_hub_config(prefix, settings)
    return prefix


def proxy_routes(prefix: Path) -> dict[str, str]:
    """Each route of the class's proxy with its target, from the proxy's own API (with the token that the hub gave
    it, read from the proxy's environment)."""
    pid = int((prefix / "hub" / "proxy.pid").read_text())
    environment = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    api_port = json.loads((prefix / "hub" / "settings.json").read_text())["proxy_api_port"]
    routes = requests.get(
        f"http://127.0.0.1:{api_port}/api/routes",
        headers={"Authorization": f"token {environment['CONFIGPROXY_AUTH_TOKEN']}"},
        timeout=30,
    )
    assert routes.status_code == 200, routes.text + hub_log(prefix)
    return {path: route["target"] for path, route in routes.json().items()}


def restart_server(hub: Hub, user: str) -> None:
    """Stop ``user``'s server and start it again through the hub's API, as the hub's *Stop My Server* does."""
    assert hub.api("DELETE", f"users/{user}/server", user=user).status_code in (202, 204)
    for _ in range(600):
        if not hub.api("GET", f"users/{user}", user=user).json()["servers"]:  # stopped
            break
        time.sleep(0.1)
    assert hub.api("POST", f"users/{user}/server", user=user).status_code in (201, 202)
    hub.wait_until_ready(user)


def test_a_second_class_on_the_same_machine_leaves_this_one_alone(hub):
    ours = proxy_routes(hub.prefix)
    other = second_class(hub.prefix)
    try:
        start_hub(other)
        proxy_pid = int((other / "hub" / "proxy.pid").read_text())
        hub_port = json.loads((other / "hub" / "settings.json").read_text())["hub_port"]
        theirs = proxy_routes(other)
        assert theirs == {"/": f"http://127.0.0.1:{hub_port}"}, hub_log(other)  # its own hub, none of our users
        assert proxy_routes(hub.prefix) == ours
        restart_server(hub, hub.students[0])  # its route is made anew, on this class's proxy only
        assert proxy_routes(other) == theirs, hub_log(other)
        assert proxy_routes(hub.prefix).keys() == ours.keys()
        for user in (hub.instructor, *hub.students):
            assert hub.server(user, "api/status").status_code == 200
    finally:
        stopped = subprocess.run([*SERVER, "stop", "--prefix", str(other)], capture_output=True, text=True)
        log = hub_log(other)
        shutil.rmtree(other)
    assert stopped.returncode == 0, stopped.stderr + log
    assert not running(proxy_pid), log  # its proxy stopped with it
    assert proxy_routes(hub.prefix).keys() == ours.keys()
