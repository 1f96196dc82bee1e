"""Run times are measured, not typed: every notebook's top, the README and the teacher's guide quote the record
that ``make notebooks`` writes (``results/notebook_times.csv``, by ``benchmarks/time_notebooks.py``), and every
notebook's recorded full run fits a lesson (at most 10 minutes)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("time_notebooks", REPO_ROOT / "benchmarks" / "time_notebooks.py")
timer = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(timer)
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))


@pytest.fixture(scope="module")
def record() -> dict:
    with open(timer.RECORD, newline="") as f:
        return timer.times(list(csv.DictReader(f)))


def first_cell(path: Path) -> str:
    return "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])


def test_every_notebook_has_a_full_and_a_fast_time(record):
    assert set(record) == {p.name for p in NOTEBOOKS}
    assert all(set(modes) == {"full", "fast"} for modes in record.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_run_time_at_a_notebooks_top_is_the_records(path, record):
    modes = record[path.name]
    (line,) = [x for x in first_cell(path).splitlines() if x.startswith("**Run time:**")]
    assert line == timer.run_time_line(modes["full"], modes["fast"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_full_run_fits_a_lesson(path, record):
    assert float(record[path.name]["full"]["seconds"]) <= 600, f"{path.name}: a full run must take at most 10 minutes"


@pytest.mark.parametrize("doc", timer.DOCS)
def test_the_tables_in_the_readme_and_the_guide_are_the_records(doc, record):
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    assert text.count("<!-- notebook-times -->") == 1
    start = text.index("<!-- notebook-times -->\n") + len("<!-- notebook-times -->\n")
    assert text[start : text.index("<!-- /notebook-times -->")] == timer.table(record)


def test_durations_read_as_people_write_them():
    assert [timer.duration(s) for s in (0.4, 44, 59.6, 60, 125.2, 601)] == [
        "0 s",
        "44 s",
        "1 min 00 s",
        "1 min 00 s",
        "2 min 05 s",
        "10 min 01 s",
    ]


def test_the_cpu_is_read_as_a_busy_share():
    # A busy loop in this process for the whole sampling window keeps at least one core of the machine busy.
    import threading

    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        busy = timer.cpu_busy(0.5)
    finally:
        stop.set()
        spinner.join()
    assert 0.9 / (os.cpu_count() or 1) <= busy <= 1.0


def test_coalesce_streams_joins_only_consecutive_pieces_of_one_stream():
    def stream(name, text):
        return {"output_type": "stream", "name": name, "text": text}

    figure = {"output_type": "display_data", "data": {}, "metadata": {}}
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [
                    stream("stdout", ["a\n", "b"]),
                    stream("stdout", ["c\n"]),
                    figure,
                    stream("stdout", ["d\n"]),
                    stream("stderr", ["e\n"]),
                ],
            },
            {"cell_type": "markdown", "source": "x"},
        ]
    }
    timer.coalesce_streams(nb)
    assert nb["cells"][0]["outputs"] == [
        stream("stdout", ["a\n", "bc\n"]),
        figure,
        stream("stdout", ["d\n"]),
        stream("stderr", ["e\n"]),
    ]
    assert "outputs" not in nb["cells"][1]
