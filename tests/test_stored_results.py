"""The numbers the README and notebook 06's conclusion state are the ones its stored results give.

Each claim is recomputed from ``results/06_label_efficiency.csv`` (written by notebook 06's full run) with the
notebook's own statistics, and the formatted number must appear in the text. A rerun that moves a number makes
these tests fail until the text says what the new run measured.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from ptft_helpers import stats
from ptft_helpers.results import load_rows

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in

CSV = REPO_ROOT / "results" / "06_label_efficiency.csv"
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
NOTEBOOK = json.loads((REPO_ROOT / "notebooks" / "06_beyond_reconstruction.ipynb").read_text(encoding="utf-8"))
CONCLUSION = next(
    "".join(c["source"])
    for c in NOTEBOOK["cells"]
    if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("**When does pretraining buy labels")
)
CONTROLS = ["pixels + linear", "PCA(32) + linear", "scratch conv + aug"]
CONFOUNDS = ["pixels + spreading", "random conv + probe", "random conv + spreading"]


@pytest.fixture(scope="module")
def results():
    rows = load_rows(CSV)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["method"], r["seed"]): r for r in rows}
    return rows, methods, seeds, by


def accuracies(by, seeds, method):
    return {s: 100 * by[method, s]["test_acc"] for s in seeds}


def gain(by, seeds, a, b) -> stats.Interval:
    return stats.t_interval(stats.paired_differences(accuracies(by, seeds, a), accuracies(by, seeds, b)))


def pp(ci: stats.Interval) -> str:
    return f"{ci.mean:+.1f} [{ci.low:+.1f}, {ci.high:+.1f}]".replace("-", "−")


def test_every_method_has_one_row_per_seed(results):
    rows, methods, seeds, by = results
    assert len(seeds) == 12 and len(methods) == 12
    assert len(rows) == len(seeds) * len(methods) == len(by)


def test_the_readme_table_is_the_csv(results):
    rows, methods, seeds, by = results
    for m in methods:
        ci = stats.t_interval(list(accuracies(by, seeds, m).values()))
        val = 100 * statistics.fmean(by[m, s]["val_acc"] for s in seeds)
        assert f"| {m} | {val:.1f} | {ci.mean:.1f} [{ci.low:.1f}, {ci.high:.1f}] |" in README, m


def test_the_headline_is_chosen_on_validation_and_meets_the_target(results):
    rows, methods, seeds, by = results
    mean_val = {m: statistics.fmean(by[m, s]["val_acc"] for s in seeds) for m in methods}
    best_control = max(CONTROLS, key=mean_val.get)
    best_pretext = max((m for m in methods if m not in CONTROLS + CONFOUNDS), key=mean_val.get)
    assert (best_control, best_pretext) == ("scratch conv + aug", "SimCLR + spreading")  # as the text says
    headline = gain(by, seeds, best_pretext, best_control)
    assert headline.mean >= 5 and headline.low > 0
    for text in (README, CONCLUSION):
        assert pp(headline).replace(" [", " points [") in text.replace("**", "")


@pytest.mark.parametrize(
    "a, b",
    [
        ("SimCLR + spreading", "pixels + linear"),
        ("SimCLR + spreading", "pixels + spreading"),
        ("SimCLR + spreading", "random conv + spreading"),
        ("SimCLR + probe", "pixels + linear"),
        ("masked AE + spreading", "pixels + spreading"),
        ("masked AE + spreading", "scratch conv + aug"),
        ("SimCLR two-stage", "SimCLR + probe"),
    ],
)
def test_each_stated_gain_is_the_csvs(results, a, b):
    rows, methods, seeds, by = results
    stated = pp(gain(by, seeds, a, b))
    assert stated in README and stated in CONCLUSION, (a, b, stated)


def test_what_the_pretext_bought_is_clear_but_under_five_points(results):
    rows, methods, seeds, by = results
    for control in ("pixels + spreading", "random conv + spreading"):
        ci = gain(by, seeds, "SimCLR + spreading", control)
        assert 0 < ci.low and ci.mean < 5, (control, ci)
