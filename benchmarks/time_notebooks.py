#!/usr/bin/env python
"""Run every notebook in full (storing its outputs) and in fast mode, timing both: the series' run-time record.

``make notebooks`` runs this. For each notebook, in order: a fast-mode run (``PTFT_FAST=1``, outputs thrown away),
then a full run (``PTFT_FAST=0``, outputs stored in the notebook), each with ``jupyter nbconvert --execute``, kernel
start included. Every run's row goes to ``results/notebook_times.csv``: notebook, mode, wall seconds, the CPU, the
PyTorch threads, how busy the CPU was in the 5 seconds just before the run, the date and the code version. A
notebook's earlier rows are replaced.

From that record it then writes the times where people read them: the ``**Run time:**`` line at the top of each
notebook, and the tables between ``<!-- notebook-times -->`` markers in README.md and docs/teaching.md.
``tests/test_run_times.py`` checks that they agree with the record.

Time only on a quiet machine: other processes on the same cores made times 3 to 16 times longer. Before each run
the script waits (up to 2 minutes) until the CPU is less than 10% busy, and records how busy it was, so that a
reader can tell. (The load average cannot tell: it lags by a minute, so after one notebook it still counts the
last.) ``--fast-only`` times fast mode without touching the stored outputs;
``--write-only`` rewrites the prose from the existing record.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers.devices import cpu_name  # noqa: E402
from ptft_helpers.settings import code_version  # noqa: E402

RECORD = REPO_ROOT / "results" / "notebook_times.csv"
FIELDS = ["notebook", "mode", "seconds", "cpu", "threads", "cpu_busy_before", "date", "code_version"]
MARKER = re.compile(r"(<!-- notebook-times -->\n).*?(<!-- /notebook-times -->)", re.DOTALL)
RUN_TIME = re.compile(r"^\*\*Run time:\*\*.*$", re.MULTILINE)
DOCS = ("README.md", "docs/teaching.md")  # the pages with a run-time table between the markers


def notebooks() -> list[Path]:
    return sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))


def duration(seconds: float) -> str:
    """A wall time as people read it: '44 s', '3 min 05 s'."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def cpu_busy(seconds: float = 5.0) -> float:
    """The share of all cores' time that was busy over the next ``seconds`` (from /proc/stat; 0.0 where it
    cannot be read)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except OSError:
        return 0.0
    return (busy1 - busy0) / max(total1 - total0, 1)


def wait_until_quiet(limit: float = 0.10, patience: float = 120.0) -> float:
    """Wait until the CPU is less than ``limit`` busy (at most ``patience`` seconds); return the last reading."""
    start = time.perf_counter()
    busy = cpu_busy()
    while busy >= limit and time.perf_counter() - start < patience:
        busy = cpu_busy()
    return busy


def execute(path: Path, fast: bool) -> float:
    """Run ``path`` with nbconvert; in full mode store the outputs in place. Returns the wall seconds."""
    env = {**os.environ, "PTFT_FAST": "1" if fast else "0", "PTFT_PROGRESS": "0"}
    out = "--stdout" if fast else "--inplace"  # fast mode: the executed notebook is printed and thrown away
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        out,
        "--ExecutePreprocessor.timeout=3600",
        "--ExecutePreprocessor.record_timing=False",
        "--ExecutePreprocessor.store_widget_state=False",
        str(path),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=path.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{path.name} ({'fast' if fast else 'full'} mode) failed:\n{done.stderr[-3000:]}")
    return seconds


def read_record() -> list[dict]:
    if not RECORD.is_file():
        return []
    with open(RECORD, newline="") as f:
        return list(csv.DictReader(f))


def write_record(rows: list[dict]) -> None:
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with open(RECORD, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["notebook"], r["mode"])))


def times(record: list[dict]) -> dict[str, dict[str, dict]]:
    """{notebook: {"full": row, "fast": row}} from the record."""
    out: dict[str, dict[str, dict]] = {}
    for row in record:
        out.setdefault(row["notebook"], {})[row["mode"]] = row
    return out


def run_time_line(full: dict, fast: dict) -> str:
    """The ``**Run time:**`` line of a notebook, from its two rows of the record."""
    return (
        f"**Run time:** full run {duration(float(full['seconds']))}, fast mode (`PTFT_FAST=1`) "
        f"{duration(float(fast['seconds']))}: measured by `make notebooks` on {full['date']} on a "
        f"{full['threads']}-thread {full['cpu']} with no GPU (the CPU {float(full['cpu_busy_before']):.0%} busy just "
        f"before the run), with the encoders of `make checkpoints` already trained."
    )


def table(record: dict[str, dict[str, dict]]) -> str:
    rows = ["| notebook | full run | fast mode |", "| --- | ---: | ---: |"]
    for name, modes in sorted(record.items()):
        rows.append(
            f"| {name.removesuffix('.ipynb')} | {duration(float(modes['full']['seconds']))} | "
            f"{duration(float(modes['fast']['seconds']))} |"
        )
    first = next(iter(record.values()))["full"]
    total = sum(float(m["full"]["seconds"]) for m in record.values())
    rows.append(f"| all, in full | {duration(total)} | |")
    return "\n".join(rows) + (
        f"\n\nMeasured by `make notebooks` (`benchmarks/time_notebooks.py`) on a "
        f"{first['threads']}-thread {first['cpu']}, no GPU, on {first['date']}; "
        "each notebook from a fresh kernel, kernel start included, with the encoders of "
        "`make checkpoints` already trained. The record: `results/notebook_times.csv`.\n"
    )


def coalesce_streams(nb: dict) -> None:
    """Join each cell's consecutive outputs to the same stream into one (the kernel flushes them in pieces that
    depend on timing), so that a re-run's diff shows only what changed."""
    for cell in nb["cells"]:
        joined: list[dict] = []
        for output in cell.get("outputs", []):
            previous = joined[-1] if joined else {}
            if previous.get("output_type") == output["output_type"] == "stream" and previous["name"] == output["name"]:
                previous["text"] = ("".join(previous["text"]) + "".join(output["text"])).splitlines(keepends=True)
            else:
                joined.append(output)
        if "outputs" in cell:
            cell["outputs"] = joined


def write_prose(record: dict[str, dict[str, dict]]) -> None:
    for path in notebooks():
        modes = record.get(path.name)
        if not modes or set(modes) != {"full", "fast"}:
            raise SystemExit(f"{path.name} has no full and fast time in {RECORD.name}: time it first")
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        first = "".join(nb["cells"][0]["source"])
        updated = RUN_TIME.sub(run_time_line(modes["full"], modes["fast"]).replace("\\", "\\\\"), first, count=1)
        nb["cells"][0]["source"] = updated.splitlines(keepends=True)
        coalesce_streams(nb)
        rewritten = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if rewritten != text:
            path.write_text(rewritten, encoding="utf-8")
    for doc in (REPO_ROOT / name for name in DOCS):
        text = doc.read_text(encoding="utf-8")
        if not MARKER.search(text):
            raise SystemExit(f"{doc.name} has no <!-- notebook-times --> markers")
        doc.write_text(MARKER.sub(lambda m: m.group(1) + table(record) + m.group(2), text), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to time (default: all), e.g. 05_what_pretraining_bought")
    parser.add_argument("--fast-only", action="store_true", help="time fast mode only; keep the stored outputs")
    parser.add_argument("--write-only", action="store_true", help="only rewrite the prose from the record")
    args = parser.parse_args(argv)
    record = read_record()
    if not args.write_only:
        chosen = [p for p in notebooks() if not args.names or p.stem in args.names or p.name in args.names]
        for path in chosen:
            for fast in (True,) if args.fast_only else (True, False):
                mode = "fast" if fast else "full"
                busy = wait_until_quiet()
                if busy >= 0.10:
                    print(f"warning: the CPU was {busy:.0%} busy before {path.name} ({mode}): the time will be long")
                seconds = execute(path, fast)
                record = [r for r in record if (r["notebook"], r["mode"]) != (path.name, mode)]
                record.append(
                    {
                        "notebook": path.name,
                        "mode": mode,
                        "seconds": f"{seconds:.1f}",
                        "cpu": cpu_name(),
                        "threads": torch.get_num_threads(),
                        "cpu_busy_before": f"{busy:.3f}",
                        "date": datetime.date.today().isoformat(),
                        "code_version": code_version(),
                    }
                )
                write_record(record)
                print(f"{path.name:40s} {mode}: {duration(seconds)}", flush=True)
    write_prose(times(record))


if __name__ == "__main__":
    main()
