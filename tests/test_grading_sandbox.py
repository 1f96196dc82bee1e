"""Grading runs each hand-in in a sandbox (``ptft_helpers/sandbox.py``, set up by the repository's
``nbgrader_config.py``): a dishonest hand-in, graded by ``nbgrader autograde`` as a real instructor account (not
root), can neither read the answer key, the gradebook or another student's hand-in, nor write outside its own
folder (the instructor's ``~/.bashrc``, a world-readable folder in /tmp), nor leave a process behind, nor see the
instructor's hub token, nor reach the network. Nor can it make nbgrader, which runs unsandboxed after it, follow a
link it planted in its folder (the notebook replaced by a link to the gradebook, a link to ``~/.bashrc`` that
nbgrader would chmod, a FIFO), nor replace the kernel by an ``ipykernel_launcher.py`` of its own. A hand-in whose
submitted folder holds a link (to the answer key), a FIFO or a hard link stops grading with one line. The honest
hand-in, which writes and reads back a file in its folder, still gets full marks, the dishonest ones their own
score. Without ``bwrap``, grading stops before it starts, with one line that says how to fix it.

The instructor's Python is a venv seeded from this run's packages (``venvs.seeded_venv``); the course is a one-task
assignment in the instructor's home, so that no kernel imports PyTorch and the whole module takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptft_helpers import sandbox

from venvs import REPO_ROOT, files_under, random_suffix, seeded_venv, unix_user

nbformat = pytest.importorskip("nbformat", reason="nbgrader is not installed (pip install -e '.[dev]')")
nbgrader_api = pytest.importorskip("nbgrader.api", reason="nbgrader is not installed (pip install -e '.[dev]')")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating the instructor's account needs root"),
    pytest.mark.skipif(
        shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
    ),
]

ASSIGNMENT = "probe"
SOLUTION = "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b  # {marker}\n    ### END SOLUTION\n"
TESTS = "assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\nassert add(-5, 5) == 0\n### END HIDDEN TESTS\n"
# The dishonest answer: a wrong solution, replaced by the key's if it can read it; each attempt is reported as DONE or
# FAILED in the cell's output.
ATTEMPTS = """
import json, os, shutil, socket, subprocess, sys
course, home, leak, port = {course!r}, {home!r}, {leak!r}, {port}
report = {{}}
def attempt(name, action):
    try:
        report[name] = "DONE " + repr(action())[:300]
    except BaseException as err:
        report[name] = "FAILED " + type(err).__name__
attempt("read the answer key", lambda: open(f"{{course}}/source/probe/probe.ipynb").read())
attempt("read the gradebook", lambda: open(f"{{course}}/gradebook.db", "rb").read())
attempt("read the other hand-in", lambda: open(f"{{course}}/submitted/honest/probe/probe.ipynb").read())
attempt("list the course", lambda: sorted(os.listdir(course)))
attempt("list the home", lambda: sorted(os.listdir(home)))
attempt("copy the key to /tmp", lambda: (os.makedirs(leak), shutil.copy(f"{{course}}/source/probe/probe.ipynb", leak)))
attempt("write the gradebook", lambda: open(f"{{course}}/gradebook.db", "ab").write(b"x"))
attempt("write the bashrc", lambda: open(f"{{home}}/.bashrc", "a").write("echo pwned\\n"))
attempt("write beside the hand-in", lambda: open(f"{{course}}/autograded/mallory/pwned", "w").write("x"))
attempt("write the other hand-in", lambda: open(f"{{course}}/autograded/honest/probe/pwned", "w").write("x"))
attempt("detach a process", lambda: subprocess.Popen(["sleep", "300"], start_new_session=True).pid)
attempt("double-fork a process", lambda: subprocess.run(["sh", "-c", "(setsid sleep 301 &)"]).returncode)
attempt("read the hub token", lambda: os.environ["JUPYTERHUB_API_TOKEN"])
attempt("reach the network", lambda: socket.create_connection(("127.0.0.1", port), timeout=3).close())
def add(a, b):
    return a - b
def run_the_key():
    cells = json.load(open(f"{{course}}/source/probe/probe.ipynb"))["cells"]
    exec("".join(next(c["source"] for c in cells if c["metadata"].get("nbgrader", {{}}).get("solution"))), globals())
attempt("run the key's solution", run_the_key)
print(json.dumps(report, indent=1))
"""
# The honest answer writes a file in its working folder and reads it back: the kernel's copy of its folder is its own.
SCRATCH = "with open('scratch.txt', 'w') as f:\n    f.write('3')\nassert open('scratch.txt').read() == '3'\n"
# A wrong answer that plants, in its working folder, what nbgrader (unsandboxed, after the kernel) would follow: the
# notebook that nbgrader writes back replaced by a link to the gradebook, links to the grader's ~/.bashrc and the
# answer key (which set_permissions would chmod 0444 and generate_feedback copy into feedback/), a FIFO, a hard link.
PLANTER = """
import os
course, home = {course!r}, {home!r}
os.symlink(f"{{home}}/.bashrc", "bashrc.txt")
os.symlink(f"{{course}}/source/probe/probe.ipynb", "k.html")
os.mkfifo("fifo")
open("data.txt", "w").write("x")
os.link("data.txt", "hard.txt")
os.remove("probe.ipynb")
os.symlink(f"{{course}}/gradebook.db", "probe.ipynb")
print("planted")
def add(a, b):
    return a - b
"""
# A wrong answer handed in with an ipykernel_launcher.py that, imported instead of ipykernel's from the working
# folder, starts a kernel that runs every test cell as `pass`: full marks, unless the real kernel runs.
FAKE_LAUNCHER = """
from ipykernel.kernelapp import IPKernelApp

def hide_tests(lines):
    return ["pass\\n"] if any("assert" in line for line in lines) else lines

class FakeApp(IPKernelApp):
    def init_shell(self):
        super().init_shell()
        self.shell.input_transformers_post.append(hide_tests)

FakeApp.launch_instance()
"""


def notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = list(cells)
    return nb


def answer_key(marker: str) -> nbformat.NotebookNode:
    """A one-task assignment: the solution (with ``marker`` in it) and a graded test cell with a hidden test."""
    solution = nbformat.v4.new_code_cell(SOLUTION.format(marker=marker))
    solution.metadata.nbgrader = {
        "grade": False,
        "solution": True,
        "locked": False,
        "grade_id": "add",
        "schema_version": 3,
    }
    tests = nbformat.v4.new_code_cell(TESTS)
    tests.metadata.nbgrader = {
        **{"grade": True, "solution": False, "locked": True, "grade_id": "test_add", "points": 2},
        "schema_version": 3,
    }
    return notebook(solution, tests)


def hand_in(released: Path, folder: Path, answer: str) -> None:
    """The student version with its solution cell replaced by ``answer``, in ``folder`` (made here)."""
    nb = nbformat.read(released, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answer
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / released.name)


def chown_tree(folder: Path, user) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def processes_of(uid: int) -> list[str]:
    """The command lines of the live processes that ``uid`` runs."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] != "Z":
                found.append((status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, KeyError, ValueError):
            continue
    return found


def run_as(user, *command: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` as ``user`` (``venvs.as_user``, with ``setpriv`` found without PATH, which ``env`` may narrow)."""
    setpriv = ["/usr/bin/setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    base = {"HOME": user.pw_dir, "USER": user.pw_name, "LANG": "C.UTF-8"}
    return subprocess.run(
        [*setpriv, *command], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def nbgrader(setup: dict, *args: str, path: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``nbgrader <args>`` as the instructor, from the clone's copy (its nbgrader_config.py), on their course."""
    course = setup["course"]
    options = [f"--CourseDirectory.root={course}", f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}"]
    command = [str(setup["venv"] / "bin" / "nbgrader"), *args, *options]
    return run_as(
        setup["user"],
        *command,
        env={"PATH": path, "PYTHONPATH": str(setup["clone"]), **(env or {})},
        cwd=setup["clone"],
    )


def instructor(user) -> dict:
    """The instructor's venv, a copy of the clone's nbgrader_config.py and package, and a course whose answer key
    has a marker in its solution; generate_assignment has run."""
    home = Path(user.pw_dir)
    setup = {"user": user, "home": home, "venv": home / "venv", "clone": home / "clone", "course": home / "course"}
    seeded_venv(setup["venv"], ["nbgrader", "ipykernel"])
    setup["clone"].mkdir()
    shutil.copy2(REPO_ROOT / "nbgrader_config.py", setup["clone"])
    package = setup["clone"] / "ptft_helpers"
    shutil.copytree(REPO_ROOT / "ptft_helpers", package, ignore=shutil.ignore_patterns("__pycache__"))
    setup["marker"] = f"solution-{random_suffix()}"
    setup["key"] = setup["course"] / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    setup["key"].parent.mkdir(parents=True)
    nbformat.write(answer_key(setup["marker"]), setup["key"])
    chown_tree(setup["clone"], user)
    chown_tree(setup["course"], user)
    setup["path"] = f"{setup['venv'] / 'bin'}:/usr/bin:/bin"
    made = nbgrader(setup, "generate_assignment", ASSIGNMENT, "--force", path=setup["path"])
    assert made.returncode == 0, made.stderr[-3000:]
    setup["released"] = setup["course"] / "release" / ASSIGNMENT / setup["key"].name
    return setup


@pytest.fixture(scope="module")
def graded():
    """The instructor's course with two hand-ins, the answer key's solution (honest) and the dishonest one
    (mallory), graded by ``nbgrader autograde`` with a hub token in its environment and a port listening on
    127.0.0.1 for the dishonest one to reach."""
    with unix_user("ptft-grader") as user:
        setup = instructor(user)
        course, home = setup["course"], setup["home"]
        setup["leak"] = Path("/tmp") / f"ptft-leak-{random_suffix()}"
        try:
            with socket.create_server(("127.0.0.1", 0)) as server:
                server.setblocking(False)
                port = server.getsockname()[1]
                dishonest = ATTEMPTS.format(course=str(course), home=str(home), leak=str(setup["leak"]), port=port)
                submitted = course / "submitted"
                honest = SCRATCH + SOLUTION.format(marker=setup["marker"])
                hand_in(setup["released"], submitted / "honest" / ASSIGNMENT, honest)
                hand_in(setup["released"], submitted / "mallory" / ASSIGNMENT, dishonest)
                planter = PLANTER.format(course=str(course), home=str(home))
                hand_in(setup["released"], submitted / "planter" / ASSIGNMENT, planter)
                hand_in(setup["released"], submitted / "faker" / ASSIGNMENT, "def add(a, b):\n    return a - b\n")
                (submitted / "faker" / ASSIGNMENT / "ipykernel_launcher.py").write_text(FAKE_LAUNCHER)
                chown_tree(course, user)
                setup["before"] = {
                    "key": digest(setup["key"]),
                    "bashrc": digest(home / ".bashrc"),
                    "files": files_under(home),
                    "modes": {name: (home / name).lstat().st_mode for name in (".bashrc", setup["key"])},
                }
                setup["token"] = f"hub-token-{random_suffix()}"
                setup["done"] = nbgrader(
                    setup, "autograde", ASSIGNMENT, path=setup["path"], env={"JUPYTERHUB_API_TOKEN": setup["token"]}
                )
                setup["processes"] = processes_left(user.pw_uid)
                try:
                    server.accept()[0].close()
                    setup["connected"] = True
                except BlockingIOError:
                    setup["connected"] = False
            yield setup
        finally:
            shutil.rmtree(setup["leak"], ignore_errors=True)  # made by this test's instructor, if a sandbox failed


def processes_left(uid: int, wait: float = 5.0) -> list[str]:
    """The processes of ``uid`` still running ``wait`` seconds after grading ended (sooner when there are none)."""
    deadline = time.monotonic() + wait
    while (found := processes_of(uid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def autograded(setup: dict, student: str) -> str:
    return (setup["course"] / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()


def report(setup: dict) -> dict[str, str]:
    """What the dishonest hand-in says of its attempts (its answer cell's output)."""
    nb = nbformat.reads(autograded(setup, "mallory"), as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    return json.loads("".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream"))


def score(setup: dict, student: str) -> tuple[float, float]:
    with nbgrader_api.Gradebook(f"sqlite:///{setup['course'] / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, student)
        return submission.score, submission.max_score


def test_the_honest_hand_in_gets_full_marks_and_the_dishonest_one_its_own(graded):
    done = graded["done"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert score(graded, "honest") == (2, 2)
    assert score(graded, "mallory") == (0, 2)
    honest = nbformat.reads(autograded(graded, "honest"), as_version=4)  # its scratch file was written and read
    assert not [o for c in honest.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_nbgrader_follows_no_link_the_hand_in_planted(graded):
    folder = graded["course"] / "autograded" / "planter" / ASSIGNMENT
    with nbgrader_api.Gradebook(f"sqlite:///{graded['course'] / 'gradebook.db'}"):  # still a gradebook
        assert score(graded, "planter") == (0, 2)
    assert "planted" in autograded(graded, "planter")  # nbgrader wrote its graded notebook, not the gradebook
    found = {path.name: info for path, info in sandbox.plain_entries(folder)}
    assert stat.S_ISREG(found[f"{ASSIGNMENT}.ipynb"].st_mode)
    assert not [name for name, info in found.items() if sandbox.unsafe(info)], sorted(found)
    assert not {"k.html", "bashrc.txt", "fifo", "hard.txt"} & set(found)  # the kernel's copy went with it
    home = graded["home"]
    assert {name: (home / name).lstat().st_mode for name in graded["before"]["modes"]} == graded["before"]["modes"]
    assert digest(home / ".bashrc") == graded["before"]["bashrc"]


def test_a_hand_in_with_its_own_ipykernel_launcher_is_graded_by_the_real_kernel(graded):
    assert (graded["course"] / "autograded" / "faker" / ASSIGNMENT / "ipykernel_launcher.py").is_file()
    assert score(graded, "faker") == (0, 2)


def test_the_dishonest_hand_in_reads_no_key_gradebook_or_other_hand_in(graded):
    attempts = report(graded)
    for name in ("read the answer key", "read the gradebook", "read the other hand-in"):
        assert attempts[name].startswith("FAILED"), (name, attempts[name])
    listed = attempts["list the course"] + attempts["list the home"]  # at most the folders that lead to its own
    assert not [name for name in ("source", "release", "submitted", "gradebook.db", ".bashrc") if repr(name) in listed]
    assert graded["marker"] not in autograded(graded, "mallory")  # the key's solution, and the honest hand-in's
    assert graded["marker"] in autograded(graded, "honest")  # (the marker is there to be found)
    assert not graded["leak"].exists()


def test_the_dishonest_hand_in_writes_nothing_outside_its_folder(graded):
    home, before = graded["home"], graded["before"]
    for name in ("write the gradebook", "write the bashrc", "write beside the hand-in", "write the other hand-in"):
        assert report(graded)[name].startswith("FAILED"), (name, report(graded)[name])
    assert digest(home / ".bashrc") == before["bashrc"]
    assert digest(graded["key"]) == before["key"]
    new = set(files_under(home)) - set(before["files"])
    allowed = tuple(f"course/autograded/{name}/probe/" for name in ("honest", "mallory", "planter", "faker"))
    assert new and all(name.startswith(allowed) for name in new), sorted(new)
    assert not [name for name in files_under(home) if "pwned" in name]
    assert not graded["leak"].exists()


def test_no_process_of_the_hand_in_outlives_grading(graded):
    assert report(graded)["detach a process"].startswith("DONE")  # it started inside ...
    assert graded["processes"] == []  # ... and died with the sandbox


def test_the_hand_in_sees_neither_the_hub_token_nor_the_network(graded):
    assert report(graded)["read the hub token"] == "FAILED KeyError"
    assert graded["token"] not in autograded(graded, "mallory")
    assert report(graded)["reach the network"].startswith("FAILED")
    assert not graded["connected"]


def test_grading_without_bwrap_stops_with_one_line(graded):
    course = graded["course"]
    late = course / "submitted" / "late" / ASSIGNMENT
    late.mkdir(parents=True)
    shutil.copy2(course / "submitted" / "honest" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", late)
    chown_tree(course / "submitted" / "late", graded["user"])
    done = nbgrader(graded, "autograde", ASSIGNMENT, path=str(graded["venv"] / "bin"))  # no /usr/bin: no bwrap
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [done.stderr.strip().splitlines()[-1]], done.stderr[-3000:]
    assert errors[0].startswith("nbgrader autograde: error: grading runs each hand-in in a bubblewrap sandbox")
    assert "apt-get install bubblewrap" in errors[0] and "Traceback" not in done.stderr
    assert not (course / "autograded" / "late").exists()
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert "late" not in {s.id for s in gradebook.students}


@pytest.mark.parametrize("planted", ["linked notebook", "linked file", "hard link", "fifo"])
def test_a_submitted_folder_with_a_link_stops_grading_with_one_line(graded, planted):
    """A hand-in unpacked from an archive may hold links: nbgrader would grade the answer key linked as the notebook,
    or copy one linked as a data file into the sandbox."""
    course, student = graded["course"], f"linker-{planted.replace(' ', '-')}"
    folder = course / "submitted" / student / ASSIGNMENT
    notebook = folder / f"{ASSIGNMENT}.ipynb"
    if planted == "linked notebook":
        folder.mkdir(parents=True)
        notebook.symlink_to(Path("../../..") / "source" / ASSIGNMENT / notebook.name)
        assert graded["marker"] in notebook.read_text()  # the answer key
        bad = notebook
    else:
        hand_in(graded["released"], folder, "def add(a, b):\n    return a - b\n")
        bad = folder / "x.txt"
        if planted == "linked file":
            bad.symlink_to(Path("../../..") / "source" / ASSIGNMENT / notebook.name)
        elif planted == "hard link":  # to a file outside the hand-in
            os.link(graded["released"], bad)
        else:
            os.mkfifo(bad)
    chown_tree(course / "submitted" / student, graded["user"])
    done = nbgrader(graded, "autograde", ASSIGNMENT, f"--student={student}", path=graded["path"])
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [done.stderr.strip().splitlines()[-1]], done.stderr[-3000:]
    assert errors[0].startswith(f"nbgrader autograde: error: {bad} is "), errors
    assert "Traceback" not in done.stderr
    assert not (course / "autograded" / student).exists()
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert student not in {s.id for s in gradebook.students}
    shutil.rmtree(folder.parent)


def test_the_kernels_folder_is_scrubbed_of_links_fifos_and_hard_links(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("kept")
    outside.chmod(0o600)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "plain.txt").write_text("plain")
    (folder / "sub" / "plain.txt").write_text("plain")
    (folder / "link.txt").symlink_to(outside)
    (folder / "dirlink").symlink_to(tmp_path)
    (folder / "sub" / "link.txt").symlink_to(outside)
    os.mkfifo(folder / "fifo")
    os.link(folder / "plain.txt", folder / "hard.txt")
    removed = sandbox.scrub(folder)
    assert len(removed) == 6, removed  # both names of the hard-linked file
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["sub", "sub/plain.txt"]
    assert outside.read_text() == "kept" and stat.S_IMODE(outside.stat().st_mode) == 0o600


def test_the_kernels_log_is_read_from_its_end(tmp_path):
    """A kernel may fill its log up to the file size limit: reading its last lines takes no more memory than them."""
    log = tmp_path / "kernel.log"
    with open(log, "wb") as file:
        file.truncate(2 * sandbox.GIB)  # sparse: no disk
        file.seek(0, os.SEEK_END)
        file.write(b"\nthe last line\n")
    code = "import pathlib, sys; from ptft_helpers.sandbox import kernel_said; "
    code += "print(kernel_said(pathlib.Path(sys.argv[1])))"
    limit = f"--as={1024**3}"  # less than the log: reading it whole would fail
    done = subprocess.run(
        ["/usr/bin/prlimit", limit, "--", sys.executable, "-c", code, str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "the last line"
