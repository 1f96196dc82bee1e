"""The class server's checks before it changes the machine (``classroom/server.py``): a roster's mistakes are
one-line errors naming the line, system accounts are refused, initial passwords are recorded as each account is
made, and a PID file that names another process is not taken for the hub. The whole set-up, with a hub and real
logins, is ``tests/test_classroom.py``."""

from __future__ import annotations

import csv
import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from venvs import REPO_ROOT

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


@pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")
def test_each_initial_password_is_recorded_before_the_next_account_is_made(tmp_path):
    new, taken = "ptft-pw-new", "ptft-pw-taken"
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
        subprocess.run(["userdel", "-r", new], capture_output=True)
        subprocess.run(["groupdel", taken], capture_output=True)
        assert taken not in {g.gr_name for g in grp.getgrall()}
