"""nbgrader's ``collect`` for a class whose students are Unix users (``classroom/server.py`` configures it as
``c.ExchangeFactory.collect``): a hand-in counts only if the student it names made it, and it is as late as its
last change on disk, whatever it says about itself.

nbgrader's own ``collect`` takes the student and the time from the hand-in's folder name,
``<student>+<assignment>+<time>+<random>``, and its ``timestamp.txt``, which any student can write; when the
folder belongs to someone else it only warns. Here:

- a hand-in is rejected, with one line that names it, if it names someone who is not a student of the course
  (in the gradebook), if its folder or anything in it belongs to someone other than the student it names, or if
  it holds a link, a file with other names (hard links) or anything else that is not a folder or a plain file (a
  link would make the instructor's ``collect`` copy what it points at: the answer key, say); so is one nested
  deeper than ``MOST_DEPTH`` folders or holding more than ``MOST_ENTRIES`` files and folders, or larger than
  nbgrader's ``CourseDirectory.max_dir_size``; one rejected hand-in never stops the others;
- everything is copied through open descriptors: each file or folder is opened relative to its folder's
  descriptor without following a link, checked on what was opened (``fstat``), and read from that descriptor,
  so a link swapped in between the listing and the copy is refused, never followed, and a file that grows during
  the copy is cut off at the size limit;
- its time is the latest status change (``ctime``) of its folder and everything in it: the kernel sets it at
  every change, and only root can set it back. The collected copy's ``timestamp.txt`` says that time, so that
  nbgrader's late-submission checks use it.

Names in the rejection lines are the students' own choice: characters that are not printable (a terminal's
escape sequences) are shown escaped, as Python writes them (``\\x1b``).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fnmatch
import glob
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterator

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default.collect import ExchangeCollect, groupby
from nbgrader.utils import check_mode

MOST_DEPTH = 32  # folders within folders: nbgrader's own hand-in is one folder of notebooks
MOST_ENTRIES = 10_000  # files and folders in one hand-in
CHUNK = 2**20
OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO opens at once, to be refused


class Refused(Exception):
    """Why a hand-in is not taken, in one line."""


def walk(top: str, uid: int) -> Iterator[tuple[str, int, os.stat_result]]:
    """The hand-in at ``top`` and everything in it, each folder before what it holds: its path relative to ``top``
    ("" for ``top``), an open descriptor (closed when the next is asked for) and its ``fstat`` (a folder's taken
    after its listing). ``Refused`` at the first thing that ``_opened`` refuses, deeper than ``MOST_DEPTH`` folders or
    past ``MOST_ENTRIES``; ``OSError`` if a folder cannot be listed. Iterative: no depth overflows the stack."""
    fd, status = _opened(top, "its folder", uid)
    if not stat.S_ISDIR(status.st_mode):
        os.close(fd)
        raise Refused("it is a file, not a folder")
    folders: list[tuple[int, str, Iterator[str]]] = []  # the open ones, innermost last, with the names left to see
    try:
        yield _entered(folders, fd, "")
        seen = 0
        while folders:
            fd, path, names = folders[-1]
            name = next(names, None)
            if name is None:
                os.close(folders.pop()[0])
                continue
            seen += 1
            if seen > MOST_ENTRIES:
                raise Refused(f"it holds more than {MOST_ENTRIES} files and folders")
            child, status = _opened(name, os.path.join(path, name), uid, folder=fd)
            if stat.S_ISDIR(status.st_mode):
                yield _entered(folders, child, os.path.join(path, name))
                continue
            try:
                yield os.path.join(path, name), child, status
            finally:
                os.close(child)
    finally:
        for fd, _, _ in folders:
            os.close(fd)


def _entered(folders: list, fd: int, path: str) -> tuple[str, int, os.stat_result]:
    """Add the open folder ``fd`` to ``folders`` (which closes it from now on) with its listing; what ``walk``
    yields for it."""
    folders.append((fd, path, iter(())))
    if len(folders) > MOST_DEPTH:
        raise Refused(f"it nests folders more than {MOST_DEPTH} deep")
    folders[-1] = (fd, path, iter(os.listdir(fd)))
    return path, fd, os.fstat(fd)


def _opened(name: str, shown: str, uid: int, folder: int | None = None) -> tuple[int, os.stat_result]:
    """``name`` (in the folder open as ``folder``) opened without following a link, and its ``fstat``; ``Refused``
    (``shown`` names it) if it is a link, or not ``uid``'s own folder or plain file with this one name."""
    try:
        fd = os.open(name, OPEN, dir_fd=folder)
    except OSError as err:
        link = err.errno == errno.ELOOP
        raise Refused(f"{shown} is a link" if link else f"cannot open {shown}: {err.strerror}") from None
    status = os.fstat(fd)
    problem = _wrong(status, shown, uid)
    if problem:
        os.close(fd)
        raise Refused(problem)
    return fd, status


def _wrong(status: os.stat_result, shown: str, uid: int) -> str | None:
    if status.st_uid != uid:
        return f"{shown} belongs to {_owner(status.st_uid)}, not {_owner(uid)}"
    if stat.S_ISDIR(status.st_mode):
        return None
    if not stat.S_ISREG(status.st_mode):
        return f"{shown} is a link or a special file, not a plain file"
    if status.st_nlink != 1:
        return f"{shown} has other names too (hard links)"
    return None


def copy_hand_in(src: str, dest: str, uid: int, kept: Callable[[str, os.stat_result], bool], most: int) -> float:
    """Copy what ``walk`` vets of ``src`` (and ``kept`` keeps) to a new folder ``dest``, each file read from its
    descriptor, at most ``most`` bytes in all (``Refused`` past that); returns the latest ``ctime`` of all it saw
    (a copied file's taken after its copy)."""
    latest, left = 0.0, most
    with contextlib.closing(walk(src, uid)) as found:
        for path, fd, status in found:
            keep = kept(path, status)
            if keep and stat.S_ISDIR(status.st_mode):
                os.mkdir(os.path.join(dest, path))
            elif keep:
                left -= _copy_file(fd, os.path.join(dest, path), left)
                if left < 0:
                    raise Refused(f"it is larger than {most // 1000} kB (CourseDirectory.max_dir_size)")
                status = os.fstat(fd)
            latest = max(latest, status.st_ctime)
    return latest


def _copy_file(fd: int, target: str, most: int) -> int:
    """Copy the open file ``fd`` to a new file ``target``, up to one byte more than ``most``; how many bytes."""
    copied = 0
    with open(target, "xb") as out:
        while copied <= most and (chunk := os.read(fd, min(CHUNK, most + 1 - copied))):
            out.write(chunk)
            copied += len(chunk)
    return copied


def changed_at(top: str, student: str) -> datetime.datetime:
    """The latest status change of ``top`` and everything under it, in UTC without a time zone (as nbgrader keeps
    its times); ``Refused`` if it is not ``student``'s own (``walk``)."""
    return _utc(max(status.st_ctime for _, _, status in walk(top, _uid(student))))


def why_not_theirs(top: str, student: str) -> str | None:
    """Why the hand-in at ``top`` is not ``student``'s own work as handed in, or None if it is."""
    try:
        changed_at(top, student)
    except (Refused, OSError) as err:
        return _why(err)
    return None


def _uid(student: str) -> int:
    try:
        return pwd.getpwnam(student).pw_uid
    except KeyError:
        raise Refused(f"there is no user {student}") from None


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(tzinfo=None)


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"UID {uid}"


def _why(err: Exception) -> str:
    """One line that says what went wrong with a hand-in."""
    if isinstance(err, Refused):
        return str(err)
    if isinstance(err, OSError):
        return f"cannot read {err.filename}: {err.strerror}"
    return f"{type(err).__name__}: {err}"


def escaped(text: str) -> str:
    """``text`` with each character that is not printable escaped as Python writes it (``\\x1b``)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _student(name: str) -> str:
    return name.split("+", 1)[0]  # a Unix user name has no "+"


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
            students = {student.id for student in gradebook.students}
            try:
                self.duedate = gradebook.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                self.duedate = None
        student = self.coursedir.student_id or "*"
        pattern = os.path.join(self.inbound_path, f"{student}+{self.coursedir.assignment_id}+*")
        records = [self._record(path, students) for path in sorted(glob.glob(pattern))]
        records = [record for record in records if record]
        self.src_records = [self._chosen(mine) for mine in groupby(records, lambda r: r["username"]).values()]

    def _record(self, path: str, students: set[str]) -> dict | None:
        """The hand-in at ``path`` as nbgrader records it, dated by the file system; None, and one line that
        says why, if it is not the own of a student in the gradebook."""
        name = os.path.basename(path)
        try:
            if _student(name) not in students:
                raise Refused(f"{_student(name)} is not a student of this course (in its gradebook)")
            return {"username": _student(name), "filename": name, "timestamp": changed_at(path, _student(name))}
        except Exception as err:  # noqa: BLE001 (whatever it is, it is this hand-in's alone)
            self._reject(name, _why(err))
            return None

    def _chosen(self, records: list[dict]) -> dict:
        newest_first = self._sort_by_timestamp(records)
        if self.duedate is not None and self.before_duedate:
            on_time = [record for record in newest_first if record["timestamp"] <= self.duedate]
            return (on_time or newest_first)[0]
        return newest_first[0]

    def do_copy(self, src: str, dest: str, log=None) -> None:
        """Copy a hand-in (``copy_hand_in``, with nbgrader's size limits and ignored files) and date the copy, or
        reject it in one line: a hand-in that fails no longer stops the others."""
        name = os.path.basename(src)
        try:
            latest = copy_hand_in(src, dest, _uid(_student(name)), self._kept, 1000 * self.coursedir.max_dir_size)
            with open(os.path.join(dest, "timestamp.txt"), "w") as f:
                f.write(_utc(latest).strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
        except Exception as err:  # noqa: BLE001 (whatever it is, it is this hand-in's alone)
            shutil.rmtree(dest, ignore_errors=True)
            self._reject(name, _why(err))

    def _kept(self, path: str, status: os.stat_result) -> bool:
        """Whether to copy ``path`` (relative to the hand-in), as nbgrader's ``ignore_patterns`` would: not in or
        under a name that ``CourseDirectory.ignore`` excludes; a file only if ``include`` matches it and it is no
        larger than ``max_file_size``."""
        names, coursedir = path.split(os.sep), self.coursedir
        if path and any(fnmatch.fnmatch(part, glob) for part in names for glob in coursedir.ignore or ()):
            return False
        if stat.S_ISDIR(status.st_mode):
            return True
        if coursedir.include and not any(fnmatch.fnmatch(names[-1], glob) for glob in coursedir.include):
            return False
        if coursedir.max_file_size and status.st_size > 1000 * coursedir.max_file_size:
            self.log.warning("Ignoring the file %s, larger than CourseDirectory.max_file_size", escaped(path))
            return False
        return True

    def _reject(self, name: str, problem: str) -> None:
        self.log.error("Rejected the hand-in %s: %s", escaped(name), escaped(problem))
