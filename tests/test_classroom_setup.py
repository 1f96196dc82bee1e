"""The class server's checks before it changes the machine (``classroom/server.py``): a roster's mistakes are
one-line errors naming the line, system accounts are refused, initial passwords are recorded as each account is
made, a PID file that names another process is not taken for the hub, a port that another program holds stops
``start`` before it starts anything, and a hub that fails to start leaves no proxy running; the servers' limits
follow the machine's size, the roster's length and setup's options; and the class's ``collect``
(``ptft_helpers/exchange.py``) refuses hand-ins that are not their student's own plain files, dates them by the
file system, and never keeps a link, even one slipped in after it chose the hand-in. Also: the tests' own
accounts never take the place of one that was there before. The whole set-up, with a hub and real logins, is
``tests/test_classroom.py``."""

from __future__ import annotations

import argparse
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


def test_a_pid_file_naming_another_process_is_not_the_hub():
    assert not server._hub_alive(os.getpid())  # this pytest process: alive, but no JupyterHub
    assert not server._hub_alive(2**22 + 1)  # above the kernel's largest PID: no such process


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


def class_settings(prefix: Path, ports: list[int]) -> None:
    """A class in ``prefix``, as ``setup`` writes it, on ``ports`` (public, proxy API, hub)."""
    settings = {"prefix": str(prefix), "ip": "127.0.0.1", "users": [], "admins": [], "cull_after": 60, "course": "c"}
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
