"""Every numbered notebook has the teaching structure, and no stored output shows an absolute path.

Structure (see each notebook's first and last cells): the first cell is markdown with a ``# NN Title``
heading, a ``**You will be able to:**`` line followed by a bullet list of objectives, a
``**Prerequisites:**`` line and a ``**Run time:**`` line; the notebook ends with the markdown
sections ``## Summary``, ``## Exercises`` (3 to 5 numbered or bulleted items) and ``## References``
(with links), in this order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in


NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))

# A path that starts at the file-system root, e.g. /work/..., /home/..., /tmp/... (not "a/b" or "km/h").
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(work|home|root|tmp|Users|mnt|opt|usr|var|private|srv|data)/")
WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(Users|Windows|Program Files)\\")
ENDING = ("## Summary", "## Exercises", "## References")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _output_texts(cell: dict):
    """Every text a cell's stored outputs hold (streams, plain/HTML/markdown data, error tracebacks)."""
    for output in cell.get("outputs", []):
        text = output.get("text")
        if text is not None:
            yield "".join(text) if isinstance(text, list) else text
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") or mime.endswith("json"):
                yield "".join(value) if isinstance(value, list) else json.dumps(value)
        if "traceback" in output:
            yield "\n".join(output["traceback"])


def absolute_paths(path: Path) -> list[str]:
    """``cell N: ...text...`` for every stored output of the notebook at ``path`` that shows an absolute path."""
    found = []
    for number, cell in enumerate(_cells(path)):
        for text in _output_texts(cell):
            for pattern in (ABSOLUTE_PATH, WINDOWS_PATH):
                match = pattern.search(text)
                if match:
                    found.append(f"cell {number}: ...{text[max(match.start() - 40, 0) : match.end() + 40]!r}...")
    return found


def structure_problems(path: Path) -> list[str]:
    """What the notebook at ``path`` lacks of the required structure (an empty list when complete)."""
    cells = _cells(path)
    problems = []
    number = path.name[:2]
    first = _source(cells[0]) if cells and cells[0]["cell_type"] == "markdown" else ""
    if not re.match(rf"#\s+{number}\b", first):
        problems.append(f"the first cell must be markdown starting with '# {number} Title'")
    objectives = re.search(r"\*\*You will be able to:?\*\*:?[^\n]*\n((?:\s*[-*] .+\n?)+)", first)
    if not objectives:
        problems.append("the first cell needs a '**You will be able to:**' line followed by a bullet list")
    if not re.search(r"^\*\*Prerequisites:?\*\*", first, re.MULTILINE):
        problems.append("the first cell needs a line starting with '**Prerequisites:**'")
    run_time = re.search(r"^\*\*Run time:?\*\*(.*)$", first, re.MULTILINE)
    if not run_time:
        problems.append("the first cell needs a line starting with '**Run time:**'")
    elif not (re.search(r"\d", run_time.group(1)) and re.search(r"fast", run_time.group(1), re.IGNORECASE)):
        problems.append("the '**Run time:**' line must give the measured full-run time and the fast-mode time")
    markdown = [(i, _source(c)) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]
    starts = {heading: [i for i, text in markdown if text.lstrip().startswith(heading)] for heading in ENDING}
    for heading, where in starts.items():
        if not where:
            problems.append(f"no markdown cell starts with '{heading}'")
    if all(starts.values()):
        order = [starts[h][-1] for h in ENDING]
        if order != sorted(order):
            problems.append(f"the closing sections must come in the order {', '.join(ENDING)}")
        if any(c["cell_type"] == "code" for c in cells[order[0] :]):
            problems.append(
                "no code cell may follow '## Summary': the notebook ends with Summary, Exercises, References"
            )
        exercises = _source(cells[order[1]])
        count = len(re.findall(r"^\s*(?:\d+\.|[-*]) ", exercises, re.MULTILINE))
        if not 3 <= count <= 5:
            problems.append(f"'## Exercises' must list 3 to 5 exercises, found {count}")
        if not re.search(r"https?://", _source(cells[order[2]])):
            problems.append("'## References' must give links (http:// or https://)")
    return problems


def test_there_are_numbered_notebooks():
    assert len(NOTEBOOKS) >= 5, f"expected notebooks/00_*.ipynb ... in {REPO_ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_absolute_paths_in_outputs(path):
    found = absolute_paths(path)
    assert not found, (
        f"{path.name}: stored outputs show absolute paths; print paths relative to the "
        f"repository root instead:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_structure(path):
    problems = structure_problems(path)
    assert not problems, f"{path.name}: " + "; ".join(problems)


# The checks themselves must be able to fail: run them on small notebooks written here.


def _write(tmp_path: Path, cells: list[dict], name: str = "07_example.ipynb") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(source: str, output: str = "") -> dict:
    outputs = [{"output_type": "stream", "name": "stdout", "text": output}] if output else []
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": outputs, "execution_count": 1}


GOOD = [
    _md(
        "# 07 Example\n\n**You will be able to:**\n- do one thing\n- do another\n\n"
        "**Prerequisites:** notebook 00.\n\n"
        "**Run time:** full run 10 s on a 2-core CPU; fast mode (PTFT_FAST=1) 2 s.\n"
    ),
    _code("print(path)", "checkpoints/model.pt (1.7 MB)\n"),
    _md("## Summary\n\n* one\n"),
    _md("## Exercises\n\n1. first\n2. second\n3. third\n"),
    _md("## References\n\n- Someone (2020). [A paper](https://example.org/paper).\n"),
]


def test_checks_pass_a_good_notebook(tmp_path):
    path = _write(tmp_path, GOOD)
    assert structure_problems(path) == [] and absolute_paths(path) == []


@pytest.mark.parametrize(
    "shown",
    [
        "/work/main/data/checkpoints",
        "saved to /home/ann/ptft/data",
        "in /tmp/x/y.pt",
        "'/root/.cache/ptft'",
        "C:\\Users\\ann\\ptft",
    ],
)
def test_an_absolute_path_in_an_output_is_found(tmp_path, shown):
    path = _write(tmp_path, [*GOOD[:1], _code("print(path)", f"checkpoint {shown}\n"), *GOOD[2:]])
    assert absolute_paths(path), shown


def test_an_absolute_path_in_an_error_or_data_output_is_found(tmp_path):
    cell = _code("1/0")
    cell["outputs"] = [
        {"output_type": "error", "ename": "E", "evalue": "", "traceback": ["File /usr/lib/x.py"]},
        {"output_type": "execute_result", "data": {"text/plain": "PosixPath('/work/a')"}},
    ]
    found = absolute_paths(_write(tmp_path, [*GOOD[:1], cell, *GOOD[2:]]))
    assert len(found) == 2


def test_relative_paths_and_fractions_are_not_absolute(tmp_path):
    text = "data/checkpoints/x.pt; 5/10 labels; km/h; ./tmp/x; 1.2 images/s; https://example.org/usr/a\n"
    assert absolute_paths(_write(tmp_path, [*GOOD[:1], _code("x", text), *GOOD[2:]])) == []


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (lambda c: [_md(c[0]["source"].replace("# 07", "# Example")), *c[1:]], "first cell"),
        (lambda c: [_md(c[0]["source"].replace("- do one thing\n- do another\n", "")), *c[1:]], "You will be able to"),
        (lambda c: [_md(c[0]["source"].replace("**Prerequisites:** notebook 00.\n", "")), *c[1:]], "Prerequisites"),
        (lambda c: [_md(c[0]["source"].replace("**Run time:**", "Run time:")), *c[1:]], "Run time"),
        (lambda c: [_md(c[0]["source"].replace("; fast mode (PTFT_FAST=1) 2 s", "")), *c[1:]], "fast-mode time"),
        (lambda c: [*c[:2], *c[3:]], "## Summary"),
        (lambda c: [*c[:3], *c[4:]], "## Exercises"),
        (lambda c: c[:4], "## References"),
        (lambda c: [*c[:2], c[3], c[2], c[4]], "order"),
        (lambda c: [*c[:3], _md("## Exercises\n\n1. only one\n"), c[4]], "3 to 5 exercises"),
        (lambda c: [*c[:4], _md("## References\n\nSomeone (2020), no link.\n")], "links"),
        (lambda c: [*c, _code("print(1)")], "no code cell"),
    ],
)
def test_structure_check_finds_what_is_missing(tmp_path, broken, complaint):
    problems = structure_problems(_write(tmp_path, broken(GOOD)))
    assert any(complaint in p for p in problems), problems
