#!/usr/bin/env python3
"""What one class server gives each student: run a notebook in students' own kernels through a running hub, first
for one student alone, then for several at once, and measure each student's memory and CPU time.

Run as root on the class server, after ``make classroom ROSTER=...`` and ``make classroom-start`` (it logs the
roster's students in with the initial passwords in ``<prefix>/passwords.csv``):

    /opt/ptft/venv/bin/python benchmarks/bench_classroom.py --prefix /opt/ptft --students 4
    /opt/ptft/venv/bin/python benchmarks/bench_classroom.py --notebook 00_setup_and_data --fast

It prints a Markdown table and writes the numbers to ``benchmarks/classroom-<notebook>.json`` (docs/classroom.md,
"What each student costs", quotes the runs stored there). Memory is the resident memory of all of a student's
processes (server and kernel), sampled every 0.25 s; CPU time is theirs during the run. Students' servers stay up
afterwards (the idle culler stops them). Time on a quiet machine: other work on the cores makes every number worse.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers.devices import cpu_name  # noqa: E402

from classroom.client import Hub, Usage, run_notebook  # noqa: E402


def run_at_once(hub: Hub, students: list[str], notebook: str, fast: bool) -> Usage:
    async def together():
        return await asyncio.gather(
            *(run_notebook(hub, u, f"ptft-notebooks/{notebook}.ipynb", fast=fast) for u in students)
        )

    with Usage(students) as usage:
        errors = asyncio.run(together())
    if any(errors):
        raise SystemExit(f"the notebook failed: {errors}")
    return usage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path("/opt/ptft"), help="the class server (/opt/ptft)")
    parser.add_argument("--students", type=int, default=4, help="students running the notebook at once (4)")
    parser.add_argument("--notebook", default="03_pretraining", help="which notebook (03_pretraining)")
    parser.add_argument("--fast", action="store_true", help="run it in fast mode (default: a full run)")
    parser.add_argument("--json", type=Path, help="where to write the numbers (benchmarks/classroom-NOTEBOOK.json)")
    args = parser.parse_args(argv)
    args.json = args.json or REPO_ROOT / "benchmarks" / f"classroom-{args.notebook}.json"
    if os.geteuid() != 0:
        raise SystemExit("run this as root: it reads the initial passwords, which only root can read")
    settings = json.loads((args.prefix / "hub" / "settings.json").read_text())
    with open(args.prefix / "passwords.csv", newline="") as f:
        passwords = {row["username"]: row["password"] for row in csv.DictReader(f)}
    students = [u for u in settings["users"] if u not in settings["admins"] and u in passwords][: args.students]
    if len(students) < args.students:
        raise SystemExit(f"the roster has {len(students)} students with an initial password; asked for {args.students}")
    host = "127.0.0.1" if settings["ip"] in ("", "0.0.0.0") else settings["ip"]
    hub = Hub(f"http://{host}:{settings['port']}", passwords)

    logins = [threading.Thread(target=hub.log_in, args=(u,)) for u in students]
    for t in logins:
        t.start()
    for t in logins:
        t.join()
    alone = run_at_once(hub, students[:1], args.notebook, args.fast)
    together = run_at_once(hub, students, args.notebook, args.fast) if len(students) > 1 else alone
    load = os.getloadavg()[0]
    result = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "notebook": args.notebook,
        "mode": "fast" if args.fast else "full",
        "spawn_seconds": {u: round(s, 1) for u, s in hub.spawn_seconds.items()},
        "idle_server_mb": together.idle_mb,
        "alone": {
            "wall_seconds": round(alone.wall_seconds, 1),
            "peak_mb": alone.peak_mb,
            "cpu_seconds": {u: round(s, 1) for u, s in alone.cpu_seconds.items()},
        },
        "load_average_after": round(load, 2),
    }
    if together is not alone:  # one student: the run alone is all there is
        result["at_once"] = {
            "students": len(students),
            "wall_seconds": round(together.wall_seconds, 1),
            "peak_mb": together.peak_mb,
            "cpu_seconds": {u: round(s, 1) for u, s in together.cpu_seconds.items()},
        }
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    mean = statistics.fmean
    print(f"{args.notebook} ({result['mode']} mode) on a {os.cpu_count()}-core {cpu_name()}, through the hub:\n")
    print("| students at once | wall time | peak memory per student (mean, max) | CPU time per student (mean) |")
    print("| ---: | ---: | ---: | ---: |")
    for usage in (alone, together) if together is not alone else (alone,):
        peaks = list(usage.peak_mb.values())
        print(
            f"| {len(usage.users)} | {usage.wall_seconds:.0f} s | {mean(peaks) / 1024:.2f} GB, "
            f"{max(peaks) / 1024:.2f} GB | {mean(usage.cpu_seconds.values()):.0f} s |"
        )
    idle = list(together.idle_mb.values())
    print(
        f"\nidle server (logged in, no kernel): {mean(idle):.0f} MB per student; from the login form to a ready "
        f"server (its first start, unless it was running): {min(hub.spawn_seconds.values()):.1f} to "
        f"{max(hub.spawn_seconds.values()):.1f} s; written to {args.json}"
    )


if __name__ == "__main__":
    main()
