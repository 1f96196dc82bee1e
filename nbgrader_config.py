"""nbgrader configuration for the ptft exercises (docs/teaching.md, "Graded exercises").

The course folder is ``nbgrader/``: ``source/`` (committed, with solutions and hidden tests),
``release/`` (student versions, from ``make assignments``), ``submitted/<student>/<assignment>/``
(hand-ins), ``autograded/`` and ``feedback/``. The SQLite gradebook is ``nbgrader/gradebook.db``.
Everything but ``source/`` is generated and kept out of git.
"""

from pathlib import Path

c = get_config()  # noqa: F821 (nbgrader provides it)

COURSE = Path(__file__).resolve().parent / "nbgrader"

c.CourseDirectory.course_id = "ptft"
c.CourseDirectory.root = str(COURSE)
c.CourseDirectory.db_url = f"sqlite:///{COURSE / 'gradebook.db'}"
# Each assignment runs in seconds; a cell that takes two minutes is stuck.
c.Execute.timeout = 120
# Every hand-in runs in a sandbox (ptft_helpers/sandbox.py; docs/classroom.md, "What the grading sandbox protects"):
# it sees no answer key, gradebook, other hand-in or home, and writes only its own folder in autograded/. Closed on
# failure: nbgrader would log an error in this file and go on grading without the sandbox.
try:
    from ptft_helpers.sandbox import configure_nbgrader

    configure_nbgrader(c)
except Exception as err:
    raise SystemExit(
        f"nbgrader_config.py: the grading sandbox cannot be set up ({type(err).__name__}: {err})"
    ) from None
