"""The graded exercises, round trip through the real nbgrader with its SQLite gradebook.

In a temporary course folder (a copy of ``nbgrader/source``, so the repository is never written):
``nbgrader generate_assignment`` writes the student versions; we check that no solution survives in
them; then ``nbgrader autograde`` grades two hand-ins of every assignment: the answer key (each
student version with the solutions filled in, as a perfect student would hand it in) must get full
marks, and the untouched student version zero marks, without a crash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in


nbgrader_api = pytest.importorskip("nbgrader.api", reason="nbgrader is not installed (pip install -e '.[dev]')")

SOURCE = REPO_ROOT / "nbgrader" / "source"
ASSIGNMENTS = sorted(p.name for p in SOURCE.iterdir() if p.is_dir())
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def nbgrader_meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def read_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        if isinstance(cell["source"], list):
            cell["source"] = "".join(cell["source"])
    return cells


def solution_lines(source: str) -> list[str]:
    """The lines between ### BEGIN SOLUTION and ### END SOLUTION, stripped."""
    lines, inside = [], False
    for line in source.splitlines():
        if "### BEGIN SOLUTION" in line:
            inside = True
        elif "### END SOLUTION" in line:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def run_nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        # nbgrader runs alembic (the gradebook's migrations) from PATH; the kernel imports this checkout.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nbgrader",
            *args,
            f"--CourseDirectory.root={course}",
            f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder after generate_assignment and autograde; yields (folder, autograde's result)."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(SOURCE, root / "source")
    generated = run_nbgrader(root, "generate_assignment", "*", "--force")
    assert generated.returncode == 0, generated.stdout[-3000:] + generated.stderr[-3000:]
    for assignment in ASSIGNMENTS:
        for source in (SOURCE / assignment).glob("*.ipynb"):
            student = json.loads((root / "release" / assignment / source.name).read_text())
            blank = root / "submitted" / "blank" / assignment / source.name
            blank.parent.mkdir(parents=True)
            blank.write_text(json.dumps(student))
            solutions = {
                nbgrader_meta(c)["grade_id"]: c["source"]
                for c in read_cells(source)
                if nbgrader_meta(c).get("solution")
            }
            for cell in student["cells"]:
                if nbgrader_meta(cell).get("grade_id") in solutions:
                    cell["source"] = solutions[nbgrader_meta(cell)["grade_id"]]
            key = root / "submitted" / "key" / assignment / source.name
            key.parent.mkdir(parents=True)
            key.write_text(json.dumps(student))
    graded = run_nbgrader(root, "autograde", "*")
    yield root, graded


def test_every_assignment_has_three_to_five_graded_tasks():
    assert len(ASSIGNMENTS) >= 5, ASSIGNMENTS
    for assignment in ASSIGNMENTS:
        for notebook in (SOURCE / assignment).glob("*.ipynb"):
            cells = read_cells(notebook)
            graded = [c for c in cells if nbgrader_meta(c).get("grade")]
            assert 3 <= len(graded) <= 5, f"{notebook.name}: {len(graded)} graded test cells"
            assert all(nbgrader_meta(c).get("points", 0) > 0 for c in graded), notebook.name
            assert any("BEGIN HIDDEN TESTS" in c["source"] for c in graded), f"{notebook.name}: no hidden tests"
            for cell in cells:
                if nbgrader_meta(cell).get("solution"):
                    assert solution_lines(cell["source"]), f"{notebook.name}: a solution cell without a solution region"


def test_student_versions_keep_no_solution(course):
    root, _ = course
    for assignment in ASSIGNMENTS:
        for source in (SOURCE / assignment).glob("*.ipynb"):
            released = root / "release" / assignment / source.name
            assert released.is_file(), f"generate_assignment wrote no {released.relative_to(root)}"
            text = "\n".join(c["source"] for c in read_cells(released) if c["cell_type"] == "code")
            for marker in MARKERS:
                assert marker not in text, f"{released.name}: {marker!r} survived"
            for cell in read_cells(source):
                if nbgrader_meta(cell).get("solution"):
                    leaked = [line for line in solution_lines(cell["source"]) if len(line) > 12 and line in text]
                    assert not leaked, f"{released.name}: solution code survived: {leaked}"
                    student = next(
                        c
                        for c in read_cells(released)
                        if nbgrader_meta(c).get("grade_id") == nbgrader_meta(cell)["grade_id"]
                    )
                    assert "raise NotImplementedError()" in student["source"]


def scores(root: Path) -> dict[tuple[str, str], tuple[float, float]]:
    with nbgrader_api.Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        return {
            (assignment, student): (sub.score, sub.max_score)
            for assignment in ASSIGNMENTS
            for student in ("key", "blank")
            for sub in [gradebook.find_submission(assignment, student)]
        }


def test_answer_key_gets_full_marks(course):
    root, graded = course
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    for (assignment, student), (score, most) in scores(root).items():
        if student == "key":
            assert most > 0 and score == most, f"{assignment}: the answer key scored {score} of {most}"


def test_untouched_student_version_gets_zero_without_crashing(course):
    root, graded = course
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    for (assignment, student), (score, most) in scores(root).items():
        if student == "blank":
            assert most > 0 and score == 0, f"{assignment}: the untouched student version scored {score} of {most}"
            autograded = root / "autograded" / "blank" / assignment
            assert any(autograded.glob("*.ipynb")), f"no autograded notebook for {assignment}"


def exercise_titles(notebook: Path) -> list[str]:
    """The bold titles of a notebook's numbered exercises, without their final full stop."""
    cells = read_cells(notebook)
    text = next(c["source"] for c in cells if c["cell_type"] == "markdown" and c["source"].startswith("## Exercises"))
    return [t.rstrip(".") for t in re.findall(r"^\s*\d+\.\s+\*\*(.+?)\*\*", text, re.MULTILINE)]


def task_titles(assignment: Path) -> list[str]:
    """The titles of a graded assignment's tasks, from its '## N. Title (k points)' headings."""
    return [
        m.group(1) for c in read_cells(assignment) if (m := re.match(r"## \d+\. (.+?) \(\d+ points?\)", c["source"]))
    ]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_each_notebooks_exercises_are_its_graded_tasks(assignment):
    notebook = REPO_ROOT / "notebooks" / f"{assignment}.ipynb"
    assert notebook.is_file(), f"the assignment {assignment} goes with no notebook of that name"
    (graded,) = (SOURCE / assignment).glob("*.ipynb")
    assert exercise_titles(notebook) == task_titles(graded)


def test_the_exercise_check_reads_both_lists():
    assert exercise_titles(REPO_ROOT / "notebooks" / "01_loss_math.ipynb")[0] == "MSE by hand"
    assert task_titles(SOURCE / "01_loss_math" / "01_loss_math.ipynb")[0] == "MSE by hand"
