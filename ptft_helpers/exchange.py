"""nbgrader's ``collect`` for a class whose students are Unix users (``classroom/server.py`` configures it as
``c.ExchangeFactory.collect``): a hand-in counts only if the student it names made it, and it is as late as its
last change on disk, whatever it says about itself.

nbgrader's own ``collect`` takes the student and the time from the hand-in's folder name,
``<student>+<assignment>+<time>+<random>``, and its ``timestamp.txt``, which any student can write; when the
folder belongs to someone else it only warns. Here:

- a hand-in is rejected, with one line that names it, if its folder or anything in it belongs to someone other
  than the student it names, or if it holds a link or anything else that is not a folder or a plain file (a link
  would make the instructor's ``collect`` copy what the link points at: the answer key, say);
- its time is the latest status change (``ctime``) of its folder and everything in it: the kernel sets it at
  every change, and only root can set it back. The collected copy's ``timestamp.txt`` says that time, so that
  nbgrader's late-submission checks use it.
"""

from __future__ import annotations

import datetime
import glob
import os
import pwd
import shutil
import stat
from collections.abc import Iterator

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default.collect import ExchangeCollect, groupby
from nbgrader.utils import check_mode, ignore_patterns


def entries(top: str) -> Iterator[tuple[str, os.stat_result]]:
    """``top`` and everything under it, each with its ``lstat``; links are listed, never followed, and a folder
    that cannot be read raises ``OSError``."""
    yield top, os.lstat(top)
    for folder, subfolders, files in os.walk(top, onerror=_raise):
        for name in subfolders + files:
            path = os.path.join(folder, name)
            yield path, os.lstat(path)


def _raise(error: OSError) -> None:
    raise error


def changed_at(top: str) -> datetime.datetime:
    """The latest status change of ``top`` and everything under it, in UTC without a time zone (as nbgrader keeps
    its times)."""
    latest = max(status.st_ctime for _, status in entries(top))
    return datetime.datetime.fromtimestamp(latest, datetime.UTC).replace(tzinfo=None)


def why_not_theirs(top: str, student: str) -> str | None:
    """Why the hand-in at ``top`` is not ``student``'s own work as handed in, or None if it is."""
    try:
        uid = pwd.getpwnam(student).pw_uid
    except KeyError:
        return f"there is no user {student}"
    try:
        for path, status in entries(top):
            what = "its folder" if path == top else os.path.relpath(path, top)
            if status.st_uid != uid:
                return f"{what} belongs to {_owner(status.st_uid)}, not {student}"
            if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
                return f"{what} is a link or a special file, not a plain file"
    except OSError as err:
        return f"cannot read {err.filename}: {err.strerror}"
    return None


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"UID {uid}"


class OwnedCollect(ExchangeCollect):
    """``nbgrader collect`` that rejects hand-ins that are not their named student's own and dates each by the
    file system (the module's docstring says why)."""

    def init_src(self) -> None:
        """The hand-ins to collect: each student's newest that is their own (``--before-duedate``: the newest before
        the due date, if there is one)."""
        if not self.coursedir.course_id:
            self.fail("No course id specified. Re-run with --course flag.")
        self.inbound_path = os.path.join(self.root, self.coursedir.course_id, "inbound")
        if not os.path.isdir(self.inbound_path):
            self.fail(f"There is no inbound folder {self.inbound_path}: check the course id (--course)")
        if not check_mode(self.inbound_path, read=True, execute=True):
            self.fail(f"You cannot read the course's inbound folder {self.inbound_path}: collect as the instructor")
        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gradebook:
            try:
                self.duedate = gradebook.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                self.duedate = None
        student = self.coursedir.student_id or "*"
        pattern = os.path.join(self.inbound_path, f"{student}+{self.coursedir.assignment_id}+*")
        records = [record for record in map(self._record, sorted(glob.glob(pattern))) if record]
        self.src_records = [self._chosen(mine) for mine in groupby(records, lambda r: r["username"]).values()]

    def _record(self, path: str) -> dict | None:
        """The hand-in at ``path`` as nbgrader records it, dated by the file system; None, and one line that
        says why, if it is not its student's own."""
        name = os.path.basename(path)
        student = name.split("+", 1)[0]  # a Unix user name has no "+"
        problem = why_not_theirs(path, student)
        if problem is None:
            try:
                return {"username": student, "filename": name, "timestamp": changed_at(path)}
            except OSError as err:
                problem = f"cannot read {err.filename}: {err.strerror}"
        self.log.error("Rejected the hand-in %s: %s", name, problem)
        return None

    def _chosen(self, records: list[dict]) -> dict:
        newest_first = self._sort_by_timestamp(records)
        if self.duedate is not None and self.before_duedate:
            on_time = [record for record in newest_first if record["timestamp"] <= self.duedate]
            return (on_time or newest_first)[0]
        return newest_first[0]

    def do_copy(self, src: str, dest: str, log=None) -> None:
        """Copy a hand-in (``_copy``), or reject it in one line: a hand-in that fails no longer stops the others."""
        try:
            problem = self._copy(src, dest)
        except (OSError, shutil.Error) as err:
            problem = f"cannot copy it: {err}"
        if problem:
            shutil.rmtree(dest, ignore_errors=True)
            self.log.error("Rejected the hand-in %s: %s", os.path.basename(src), problem)

    def _copy(self, src: str, dest: str) -> str | None:
        """nbgrader's copy, with its size limit and ignored files, except that a link is copied as a link, never
        followed; then the hand-in is checked again (it may have changed meanwhile) and its copy dated. Returns
        what is wrong with it, or None."""
        if self.get_size(src) > 1000 * self.coursedir.max_dir_size:
            return f"it is larger than {self.coursedir.max_dir_size} kB (CourseDirectory.max_dir_size)"
        ignore = ignore_patterns(self.coursedir.ignore, self.coursedir.include, self.coursedir.max_file_size, self.log)
        shutil.copytree(src, dest, symlinks=True, ignore=ignore)
        problem = why_not_theirs(src, os.path.basename(src).split("+", 1)[0]) or _link_in(dest)
        if problem is None:
            with open(os.path.join(dest, "timestamp.txt"), "w") as f:
                f.write(changed_at(src).strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
        return problem


def _link_in(folder: str) -> str | None:
    """What says that ``folder`` holds a link, or None if it holds none."""
    links = [path for path, status in entries(folder) if stat.S_ISLNK(status.st_mode)]
    return f"{os.path.relpath(links[0], folder)} is a link" if links else None
