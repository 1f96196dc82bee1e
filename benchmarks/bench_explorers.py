#!/usr/bin/env python
"""How long does one update of each explorer take? The slider moved through every value, cold cache.

For each explorer (latent size, learning rate) it builds the widget a notebook shows
(``widgets.latent_size_explorer`` / ``widgets.learning_rate_explorer``) and moves its slider
through all of its values, timing each move: training, scoring, drawing the figure and
encoding it as PNG, everything a student waits for. The explorers' result cache is cleared
before every value, so each update trains (the cold-cache case). The data are loaded once
before any timing, as a notebook has done by the time a slider appears.

It measures the current settings (``explorers.latent_size_settings()`` and
``explorers.learning_rate_settings()``, full mode) and, in the same run, the settings they
replaced (``BEFORE``), alternating explorer by explorer; it reports the median over the
slider's values and the target (at most 1.5 s). ``--quick`` times three values of each.

    .venv/bin/python benchmarks/bench_explorers.py --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from ptft_helpers import data, explorers, settings, widgets  # noqa: E402
from ptft_helpers.devices import cpu_name  # noqa: E402

TARGET_SECONDS = 1.5
# The settings before issue 8 (full mode), measured in the same run for comparison.
BEFORE = {
    "latent size": {"train_size": 20000, "epochs": 2, "test_size": 10000, "lr": 1e-3, "batch_size": 128},
    "learning rate": {"train_size": 12800, "epochs": 2, "latent_dim": 32, "batch_size": 128},
}
LR_EXPONENTS = [x / 4 for x in range(-20, 1)]  # the slider: 10**-5 to 10**0 in steps of 0.25


def slider_values(explorer: str, quick: bool) -> list:
    values = list(explorers.LATENT_SIZES) if explorer == "latent size" else [10**x for x in LR_EXPONENTS]
    return [values[0], values[len(values) // 2], values[-1]] if quick else values


def time_updates(explorer: str, values: list, overrides: dict) -> list[dict]:
    """Build the widget at ``values[0]``, then move its slider through the rest; time every update."""
    make = widgets.latent_size_explorer if explorer == "latent size" else widgets.learning_rate_explorer
    rows = []
    explorers.clear_cache()
    start = time.perf_counter()
    widget = make(value=values[0], **overrides)
    rows.append({"value": values[0], "seconds": time.perf_counter() - start})
    for value in values[1:]:
        explorers.clear_cache()
        start = time.perf_counter()
        widget.slider.value = value
        rows.append({"value": value, "seconds": time.perf_counter() - start})
    if widget.error is not None:
        raise RuntimeError(f"The {explorer} explorer failed: {widget.error}")
    for row, (key, result) in zip(rows, widget.results.items()):
        row["key"], row["train_seconds"] = key, result["seconds"]
    return rows


def summarize(rows: list[dict]) -> dict:
    seconds = [r["seconds"] for r in rows]
    return {"median": statistics.median(seconds), "max": max(seconds), "min": min(seconds), "updates": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="time three slider values of each explorer (default: all)")
    p.add_argument("--no-before", action="store_true", help="skip the settings from before issue 8")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table for benchmarks/README.md")
    args = p.parse_args(argv)
    if settings.fast_mode():
        p.error("PTFT_FAST is on: the explorers' full-mode settings are what a student waits for; unset it")
    began = time.perf_counter()
    for split in ("train", "test"):
        data.load("fashion-mnist", split)
    machine = {
        "cpu": cpu_name(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    print(
        f"Machine: {machine['cpu']}, {machine['cpus_usable']} usable CPUs, torch {machine['torch']} "
        f"with {machine['torch_threads']} threads"
    )
    now = {"latent size": explorers.latent_size_settings(), "learning rate": explorers.learning_rate_settings()}
    results = {"machine": machine, "target_seconds": TARGET_SECONDS, "explorers": {}}
    for explorer in ("latent size", "learning rate"):
        values = slider_values(explorer, args.quick)
        entry = {"settings": now[explorer], "after": summarize(time_updates(explorer, values, {}))}
        if not args.no_before:
            entry["before_settings"] = BEFORE[explorer]
            entry["before"] = summarize(time_updates(explorer, values, BEFORE[explorer]))
        results["explorers"][explorer] = entry
        for which in ("before", "after"):
            if which in entry:
                s = entry[which]
                per_value = " ".join(f"{r['seconds']:.2f}" for r in s["updates"])
                print(f"{explorer:>13} {which:>6}: median {s['median']:.2f} s, max {s['max']:.2f} s  ({per_value})")
    results["benchmark_seconds"] = time.perf_counter() - began
    met = all(e["after"]["median"] <= TARGET_SECONDS for e in results["explorers"].values())
    print(
        f"Target (median update <= {TARGET_SECONDS} s): {'met' if met else 'NOT met'}; "
        f"took {results['benchmark_seconds']:.0f} s"
    )
    if args.markdown:
        print("\n" + markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def markdown(results: dict) -> str:
    """The results as the table of ``benchmarks/README.md``."""
    lines = ["| explorer | settings | median s per update | slowest | each value (s) |", "|---|---|---:|---:|---|"]
    for explorer, entry in results["explorers"].items():
        for which, key in (("before", "before_settings"), ("after", "settings")):
            if which in entry:
                s, cfg = entry[which], entry[key]
                shown = ", ".join(f"{k} {v:g}" for k, v in cfg.items())
                each = " ".join(f"{r['seconds']:.2f}" for r in s["updates"])
                lines.append(f"| {explorer} ({which}) | {shown} | **{s['median']:.2f}** | {s['max']:.2f} | {each} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
