"""The class server's checks before it changes the machine (``classroom/server.py``): a roster's mistakes are
one-line errors naming the line, system accounts are refused, initial passwords are recorded as each account is
made, a PID file that names another process is not taken for the hub, a port that another program holds stops
``start`` before it starts anything, and a hub that fails to start leaves no proxy running; the servers' limits
follow the machine's size, the roster's length and setup's options; and the class's ``collect``
(``ptft_helpers/exchange.py``) refuses hand-ins that are not their student's own plain files, dates them by the
file system, and never keeps a link or what one points at, even one swapped in between its listing and its copy;
it refuses a hand-in that grows past the size limit while it copies, that nests folders too deep, or that names
someone outside the gradebook, in one line whose names are escaped, and collects the others. Setup refuses a link
planted in the exchange; ``stop`` stops only this class's hub and servers, not another class's. Also: the tests'
own accounts never take the place of one that was there before. The whole set-up, with a hub and real logins, is
``tests/test_classroom.py``."""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import grp
import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import parse_utc

from ptft_helpers import exchange

import venvs
from venvs import REPO_ROOT, remove_user, running, unix_user, unused_name

sys.path.insert(0, str(REPO_ROOT))
from classroom import server  # noqa: E402


def roster(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding=encoding)
    return path


def test_a_spreadsheets_roster_with_a_byte_order_mark_is_read(tmp_path):
    path = roster(tmp_path, "username,role,name\nptft-t1,instructor,T\nptft-s1,student,S\n", encoding="utf-8-sig")
    assert [r["username"] for r in server.read_roster(path)] == ["ptft-t1", "ptft-s1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("username,role,name\nptft-t1,instructor,Doe, Jane\n", "line 2: more fields than the header"),
        ("username,role,name\nptft-t1,instructor,T\nroot,student,R\n", "line 3: root is a system account"),
        ("username,role,name\nptft-t1,instructor,T\nptft-t1,student,S\n", "line 3: ptft-t1 is listed twice"),
        ("username,role,name\nptft-t1,teacher,T\n", "line 2: role 'teacher' must be"),
        ("username,role,name\nPtft,instructor,T\n", "line 2: 'Ptft' is not a Unix username"),
        ("username,role,name\nptft-s1,student,S\n", "has no instructor"),
        ("name\nx\n", "needs a header line"),
    ],
)
def test_roster_mistakes_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(server.SetupError, match=message) as caught:
        server.read_roster(roster(tmp_path, text))
    assert "\n" not in str(caught.value)


def test_a_roster_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_bytes("username,role,name\nptft-t1,instructor,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(server.SetupError, match="is not UTF-8 text"):
        server.read_roster(path)


def test_a_pid_file_naming_another_process_is_not_the_hub(tmp_path):
    assert not server._hub_alive(os.getpid(), Path.cwd())  # this pytest process: alive, but no JupyterHub
    assert not server._hub_alive(2**22 + 1, tmp_path)  # above the kernel's largest PID: no such process


def recorded_accounts(prefix: Path) -> list[str]:
    """The accounts that ``create_accounts`` made (it records each one's password as it makes it)."""
    try:
        with open(prefix / "passwords.csv", newline="") as f:
            return [row["username"] for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_each_initial_password_is_recorded_before_the_next_account_is_made(tmp_path):
    new, taken = unused_name("ptft-pw-new"), unused_name("ptft-pw-taken")
    subprocess.run(["groupadd", taken], check=True)  # useradd refuses a user whose name is an existing group
    try:
        rows = [{"username": new, "role": "student", "name": ""}, {"username": taken, "role": "student", "name": ""}]
        with pytest.raises(server.SetupError, match="useradd"):
            server.create_accounts(rows, tmp_path)
        with open(tmp_path / "passwords.csv", newline="") as f:
            (recorded,) = list(csv.DictReader(f))
        assert recorded["username"] == new and len(recorded["password"]) >= 12
        assert (tmp_path / "passwords.csv").stat().st_mode & 0o777 == 0o600
        assert pwd.getpwnam(new).pw_uid >= server.FIRST_PERSON_UID  # the account that was made
    finally:
        for user in recorded_accounts(tmp_path):
            remove_user(user)
        subprocess.run(["groupdel", taken], capture_output=True)
        assert taken not in {g.gr_name for g in grp.getgrall()}


def offer_first(monkeypatch, names: list[str]):
    """Make the tests' random names start with ``names`` (taken ones), then go on at random; returns what is left
    of them to offer."""
    offered = iter([name.rsplit("-", 1)[1] for name in names])
    random_suffix = venvs.random_suffix
    monkeypatch.setattr(venvs, "random_suffix", lambda: next(offered, None) or random_suffix())
    return offered


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_an_account_that_was_there_before_is_left_alone(monkeypatch):
    with unix_user("ptft-bystander") as bystander:  # someone's account, with a file and a running program
        notes = Path(bystander.pw_dir) / "notes.txt"
        notes.write_text("mine")
        ids = [f"--reuid={bystander.pw_uid}", f"--regid={bystander.pw_gid}", "--init-groups"]
        sleeper = subprocess.Popen(["setpriv", *ids, "--", "sleep", "600"])
        only_a_home = Path("/home") / unused_name("ptft-bystander")  # a folder that useradd would take over
        only_a_home.mkdir()
        taken = [bystander.pw_name, only_a_home.name]
        try:
            offered = offer_first(monkeypatch, taken)
            assert unused_name("ptft-bystander") not in taken and next(offered, None) is None
            offered = offer_first(monkeypatch, taken)
            with unix_user("ptft-bystander") as user:
                assert user.pw_name not in taken and next(offered, None) is None
            assert notes.read_text() == "mine" and sleeper.poll() is None
            assert only_a_home.is_dir()
        finally:
            only_a_home.rmdir()
            sleeper.kill()
            sleeper.wait()


def class_settings(prefix: Path, ports: list[int], users: tuple[str, ...] = ()) -> None:
    """A class in ``prefix``, as ``setup`` writes it, on ``ports`` (public, proxy API, hub), for ``users``."""
    settings = {"prefix": str(prefix), "ip": "127.0.0.1", "users": list(users), "admins": [], "cull_after": 60}
    settings["course"] = "c"
    settings["limits"] = {"memory_bytes": 6 * server.GiB, "processes": 256, "cpu_seconds": 3600}
    settings |= dict(zip(("port", "proxy_api_port", "hub_port"), ports))
    server.write_hub_config(prefix, settings)


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def failing_class(tmp_path) -> Path:
    """A class on free ports whose "hub" starts a "proxy" (a stand-in that sleeps) in a session of its own, as
    JupyterHub does, writes its PID to ``proxy.pid`` and to the log, and exits; returns the prefix."""
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    class_settings(tmp_path, ports)
    proxy = tmp_path / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
    executable(proxy, f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    executable(
        tmp_path / "venv" / "bin" / "jupyterhub",
        f"#!{sys.executable}\nimport subprocess\n"
        f"proxy = subprocess.Popen([{str(proxy)!r}, '--api-port', '{ports[1]}'], start_new_session=True)\n"
        "open('proxy.pid', 'w').write(str(proxy.pid))\nprint(proxy.pid, flush=True)\nraise SystemExit(1)\n",
    )
    return tmp_path


def test_a_hub_that_fails_to_start_leaves_no_proxy_running(failing_class, capsys):
    assert server.main(["start", "--prefix", str(failing_class)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "the hub stopped at once" in error, error
    log = (failing_class / "hub" / "hub.log").read_text()
    assert not running(int(log.split()[0])), log  # the proxy that the hub started
    assert not (failing_class / "hub" / "jupyterhub.pid").exists()


@pytest.mark.parametrize(
    ("key", "option"), [("port", "--port"), ("proxy_api_port", "--proxy-api-port"), ("hub_port", "--hub-port")]
)
def test_start_refuses_a_taken_port_in_one_line_and_starts_nothing(failing_class, capsys, key, option):
    settings_file = failing_class / "hub" / "settings.json"
    port = json.loads(settings_file.read_text())[key]
    with socket.create_server(("127.0.0.1", port)):  # another program's server
        assert server.main(["start", "--prefix", str(failing_class)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert f" {port} ({key} in {settings_file}) is taken" in error and f"run setup again with {option} " in error
    assert not (failing_class / "hub" / "hub.log").exists()  # the hub never ran


def test_the_proxy_and_hub_ports_follow_the_public_port_unless_given():
    def ports(port, proxy_api_port=None, hub_port=None):
        return server.class_ports(argparse.Namespace(port=port, proxy_api_port=proxy_api_port, hub_port=hub_port))

    assert ports(9000) == {"port": 9000, "proxy_api_port": 9001, "hub_port": 9002}
    assert ports(9000, 9100, 9200) == {"port": 9000, "proxy_api_port": 9100, "hub_port": 9200}
    with pytest.raises(server.SetupError, match="the ports must differ"):
        ports(9000, hub_port=9001)


def test_each_server_gets_a_share_of_the_memory_but_enough_for_notebook_07():
    assert server.memory_share(24 * server.GiB, 20) == 6 * server.GiB  # 22 GiB / 20 is less than the floor
    assert server.memory_share(24 * server.GiB, 3) == 22 * server.GiB // 3
    assert server.memory_share(4 * server.GiB, 3) == 2 * server.GiB  # no more than the machine has


def test_the_limits_follow_setups_options():
    args = argparse.Namespace(memory_limit=1.5, process_limit=64, cpu_hours=0.5)
    assert server.server_limits(args, people=30) == {
        "memory_bytes": int(1.5 * server.GiB),
        "processes": 64,
        "cpu_seconds": 1800,
    }


def hand_in(folder: Path, owner: pwd.struct_passwd) -> Path:
    """A hand-in as nbgrader's submit makes it, owned by ``owner``: a notebook, a timestamp and a secret."""
    (folder / "ex").mkdir(parents=True)
    for name, text in (("ex/ex.ipynb", "{}"), ("timestamp.txt", "2000-01-01 00:00:00.000000 UTC"), ("secret", "s")):
        (folder / name).write_text(text)
    for path in (folder, *folder.rglob("*")):
        os.lchown(path, owner.pw_uid, owner.pw_gid)
    return folder


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_a_hand_in_counts_only_as_its_makers_own_plain_files(tmp_path):
    with unix_user("ptft-maker") as maker:
        mine = hand_in(tmp_path / "mine", maker)
        assert exchange.why_not_theirs(str(mine), maker.pw_name) is None
        assert "belongs to" in str(exchange.why_not_theirs(str(mine), "root"))  # handed in in another's name
        assert "there is no user" in str(exchange.why_not_theirs(str(mine), unused_name("ptft-nobody")))
        link = hand_in(tmp_path / "link", maker) / "ex" / "key.ipynb"
        link.symlink_to("/etc/shadow")  # collect, run by the instructor, would copy what it points at
        os.lchown(link, maker.pw_uid, maker.pw_gid)
        assert "is a link" in str(exchange.why_not_theirs(str(tmp_path / "link"), maker.pw_name))
        slipped_in = hand_in(tmp_path / "slipped", maker) / "ex" / "extra.py"
        slipped_in.write_text("")  # root's, in the maker's hand-in
        assert "belongs to root" in str(exchange.why_not_theirs(str(tmp_path / "slipped"), maker.pw_name))
        fifo = hand_in(tmp_path / "fifo", maker) / "ex" / "pipe"
        os.mkfifo(fifo)  # opened without waiting for a writer, then refused
        os.lchown(fifo, maker.pw_uid, maker.pw_gid)
        assert "ex/pipe is a link or a special file" in str(
            exchange.why_not_theirs(str(tmp_path / "fifo"), maker.pw_name)
        )
        os.link(mine / "secret", mine / "ex" / "same")  # a second name: a file that changes under another name
        assert "has other names" in str(exchange.why_not_theirs(str(mine), maker.pw_name))


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_the_collected_copy_is_dated_by_the_file_system_and_never_holds_a_link(tmp_path, caplog):
    with unix_user("ptft-maker") as maker:
        before = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(seconds=1)
        mine = hand_in(tmp_path / "inbound" / f"{maker.pw_name}+ex+2000-01-01 00:00:00.000000 UTC+r", maker)
        collect = exchange.OwnedCollect(coursedir=CourseDirectory(), authenticator=None)
        collect.do_copy(str(mine), str(tmp_path / "copy"))
        written = (tmp_path / "copy" / "timestamp.txt").read_text()
        assert parse_utc(written) >= before, written  # not the year 2000
        link = mine / "ex" / "key.ipynb"
        link.symlink_to("/etc/shadow")  # slipped in after collect chose the hand-in
        os.lchown(link, maker.pw_uid, maker.pw_gid)
        collect.do_copy(str(mine), str(tmp_path / "second copy"))
        assert not (tmp_path / "second copy").exists()
        assert [r.message for r in caplog.records if "ex/key.ipynb is a link" in r.message], caplog.text


class Listing:
    """A folder's listing, taken at once, as ``os.scandir`` gives it (an iterator and a context manager)."""

    def __init__(self, entries: list) -> None:
        self.entries = iter(entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.entries)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


@contextlib.contextmanager
def looked_at(before, after):
    """While in it, ``before()`` runs before and ``after()`` after every listing of a folder and every ``stat``: a
    student who watches the hand-in (inotify) can time changes so, and what collect sees is not what is there
    between its looks."""

    def looking(real):
        def look(*args, **kwargs):
            before()
            try:
                result = real(*args, **kwargs)
                return Listing(list(result)) if real.__name__ == "scandir" else result
            finally:
                after()

        return look

    with pytest.MonkeyPatch.context() as patch:
        for name in ("scandir", "listdir", "stat", "lstat", "fstat"):
            patch.setattr(os, name, looking(getattr(os, name)))
        yield


def collector(tmp_path: Path, monkeypatch, students: tuple[str, ...] = ()) -> exchange.OwnedCollect:
    """The class's collect of the assignment "ex" of the course "c", whose gradebook lists ``students``, from the
    exchange ``tmp_path / "exchange"``."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # the gradebook runs alembic
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(db_url, "c") as gradebook:
        for student in students:
            gradebook.add_student(student)
    coursedir = CourseDirectory(root=str(tmp_path), course_id="c", assignment_id="ex", db_url=db_url)
    collect = exchange.OwnedCollect(coursedir=coursedir, authenticator=None)
    collect.root = str(tmp_path / "exchange")
    return collect


def rejections(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Rejected the hand-in")]


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_a_link_swapped_in_after_the_listing_is_never_followed(tmp_path, caplog):
    with unix_user("ptft-maker") as maker:
        key = tmp_path / "key.ipynb"
        key.write_text("THE ANSWER KEY")  # root's
        mine = hand_in(tmp_path / "inbound" / f"{maker.pw_name}+ex+2000-01-01 00:00:00.000000 UTC+r", maker)
        notebook, aside = mine / "ex" / "ex.ipynb", tmp_path / "aside"

        def plain() -> None:  # the student's own notebook, whenever collect looks
            aside.write_text("{}")
            os.lchown(aside, maker.pw_uid, maker.pw_gid)
            os.rename(aside, notebook)

        def link() -> None:  # a link to the key, between its looks
            aside.symlink_to(key)
            os.lchown(aside, maker.pw_uid, maker.pw_gid)
            os.rename(aside, notebook)

        with looked_at(plain, link):
            exchange.OwnedCollect(coursedir=CourseDirectory(), authenticator=None).do_copy(
                str(mine), str(tmp_path / "copy")
            )
        copied = [path.read_text() for path in (tmp_path / "copy").rglob("*") if path.is_file()]
        assert not [text for text in copied if "ANSWER" in text]
        assert [m for m in rejections(caplog) if m.endswith(": ex/ex.ipynb is a link")], caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_a_file_that_grows_past_the_size_limit_during_the_copy_is_refused(tmp_path, caplog):
    with unix_user("ptft-maker") as maker:
        mine = hand_in(tmp_path / "inbound" / f"{maker.pw_name}+ex+2000-01-01 00:00:00.000000 UTC+r", maker)
        notebook = mine / "ex" / "ex.ipynb"

        def grow() -> None:  # 10 kB, except while collect looks at its size
            with open(notebook, "ab") as f:
                f.write(b" " * 10_000)

        collect = exchange.OwnedCollect(coursedir=CourseDirectory(max_dir_size=1), authenticator=None)  # 1 kB
        with looked_at(lambda: os.truncate(notebook, 2), grow):
            collect.do_copy(str(mine), str(tmp_path / "copy"))
        assert not (tmp_path / "copy").exists()
        assert [m for m in rejections(caplog) if m.endswith("it is larger than 1 kB (CourseDirectory.max_dir_size)")]


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_a_hand_in_nested_too_deep_is_rejected_and_the_others_collected(tmp_path, caplog, monkeypatch):
    with unix_user("ptft-maker") as maker:
        inbound = tmp_path / "exchange" / "c" / "inbound"
        mine = hand_in(inbound / f"{maker.pw_name}+ex+2000-01-01 00:00:00.000000 UTC+a", maker)
        folder = hand_in(inbound / f"{maker.pw_name}+ex+2099-01-01 00:00:00.000000 UTC+b", maker)  # the newest
        deep = folder / "d"
        try:
            for _ in range(1100):  # deeper than Python's recursion limit
                folder = folder / "d"
                folder.mkdir()
                os.chown(folder, maker.pw_uid, maker.pw_gid)
            collect = collector(tmp_path, monkeypatch, (maker.pw_name,))
            collect.init_src()
        finally:
            subprocess.run(["rm", "-rf", deep], check=True)  # pytest's clean-up (recursive) cannot remove it
        assert [record["filename"] for record in collect.src_records] == [mine.name]
        (line,) = rejections(caplog)
        assert line.endswith(f"it nests folders more than {exchange.MOST_DEPTH} deep"), line


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_a_hand_in_from_outside_the_course_is_rejected_in_one_escaped_line(tmp_path, caplog, monkeypatch):
    with unix_user("ptft-maker") as maker, unix_user("ptft-outsider") as outsider:
        inbound = tmp_path / "exchange" / "c" / "inbound"
        mine = hand_in(inbound / f"{maker.pw_name}+ex+2000-01-01 00:00:00.000000 UTC+a", maker)
        hand_in(inbound / f"{outsider.pw_name}+ex+2000\x1b]0;pwned\x07\x1b[2J+b", outsider)  # not in the gradebook
        collect = collector(tmp_path, monkeypatch, (maker.pw_name,))
        collect.init_src()
        assert [record["filename"] for record in collect.src_records] == [mine.name]
        (line,) = rejections(caplog)
        assert line.isprintable(), line
        assert f"{outsider.pw_name}+ex+2000\\x1b]0;pwned\\x07\\x1b[2J+b: {outsider.pw_name} is not a student" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another UID needs root")
def test_setup_refuses_a_link_planted_in_the_exchange_and_leaves_its_target_alone(tmp_path):
    uid = next(uid for uid in range(54321, 60000) if uid not in {p.pw_uid for p in pwd.getpwall()})
    teacher = pwd.struct_passwd(("ptft-teacher", "x", uid, uid, "", str(tmp_path / "home"), "/bin/bash"))
    home = tmp_path / "home"  # the instructor's, private
    home.mkdir()
    os.chown(home, uid, uid)
    home.chmod(0o700)
    exchange_root = tmp_path / "exchange"
    exchange_root.mkdir(mode=0o1777)
    (exchange_root / "course2").symlink_to(home)  # planted by another user, before setup makes the course
    with pytest.raises(server.SetupError, match=r"/course2 is a link: remove it") as caught:
        server.make_instructors(exchange_root / "course2", teacher, 0o755)
    assert "\n" not in str(caught.value)
    server.make_instructors(exchange_root / "course", teacher, 0o755)
    course = (exchange_root / "course").lstat()
    assert (course.st_uid, course.st_mode & 0o7777) == (uid, 0o755)
    (exchange_root / "course" / "inbound").symlink_to(home)
    with pytest.raises(server.SetupError, match=r"/inbound is a link: remove it"):
        server.make_instructors(exchange_root / "course" / "inbound", teacher, 0o1733)
    assert home.stat().st_mode & 0o7777 == 0o700 and list(home.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="running servers as a user needs root")
def test_stop_stops_only_this_classs_hub_and_servers(tmp_path):
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable  # any user can run it
    sleep = "import time; time.sleep(600)"
    with unix_user("ptft-both") as user:  # a user in this class and in another, with a server in each
        this, other = tmp_path / "this", tmp_path / "other"
        class_settings(this, [18000, 18001, 18002], users=(user.pw_name,))
        class_settings(other, [19000, 19001, 19002], users=(user.pw_name,))
        executable(other / "venv" / "bin" / "jupyterhub", f"#!{sys.executable}\n{sleep}\n")
        processes = {
            "other hub": subprocess.Popen([other / "venv" / "bin" / "jupyterhub", "-f", "c.py"], cwd=other / "hub")
        }
        (this / "hub" / "jupyterhub.pid").write_text(str(processes["other hub"].pid))  # stale: names the other
        for name, port in (("this server", 18002), ("other server", 19002)):
            processes[name] = subprocess.Popen(
                [python, "-c", sleep, "jupyterhub-singleuser"],
                env={"JUPYTERHUB_API_URL": f"http://127.0.0.1:{port}/hub/api"},
                user=user.pw_uid,
                group=user.pw_gid,
                cwd="/",
            )
        try:
            assert server.main(["stop", "--prefix", str(this)]) == 0
            assert processes["this server"].wait(timeout=5) is not None
            assert processes["other hub"].poll() is None and processes["other server"].poll() is None
        finally:
            for process in processes.values():
                process.kill()
                process.wait()
