"""The numbers the results page and the graded exercises state are the ones the stored results give.

Every results table of ``docs/results.md`` sits between ``<!-- results-NAME -->`` markers and is recomputed here,
from the CSVs that the notebooks' full runs wrote (``results/``), with the same statistics (``ptft_helpers.stats``);
the test fails if a single number differs. ``python tests/test_stored_results.py`` rewrites the page's tables from
the CSVs (after a new full run). Also tied to the CSVs: the reconstruction code that notebooks 06 and 07 use is 05's
best probe on validation; the numbers in the graded exercises of 05 and 11 are 05's stored ones; and what 06 says
about the recorded SimCLR recipe search.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers import stats  # noqa: E402
from ptft_helpers.results import load_rows  # noqa: E402

RESULTS = REPO_ROOT / "results"
RESULTS_PAGE = REPO_ROOT / "docs" / "results.md"  # the tables the README points to
PRETEXTS = ("plain", "denoising", "masked", "masked-rescaled")
BLOCK = re.compile(r"<!-- results-(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /results-(?P=name) -->", re.DOTALL)


def ci_text(ci: stats.Interval, signed: bool = False) -> str:
    return (
        f"{ci.mean:+.1f} [{ci.low:+.1f}, {ci.high:+.1f}]" if signed else f"{ci.mean:.1f} [{ci.low:.1f}, {ci.high:.1f}]"
    )


def p_text(p: float) -> str:
    """A p-value as a table shows it: three decimals, and "< 0.001" rather than a p of 0.000."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def by_method(rows: list[dict], key, n: int) -> dict[int, float]:
    """{draw: test accuracy in %} at ``n`` labels of the rows that ``key(row)`` selects."""
    return {r["seed"]: 100 * r["test_acc"] for r in rows if key(r) and r["labels"] == n}


def of(rows: list[dict], method: str, n: int) -> dict[int, float]:
    """{draw: test accuracy in %} of ``method`` at ``n`` labels."""
    return {r["seed"]: 100 * r["test_acc"] for r in rows if r["method"] == method and r["labels"] == n}


# ---------------------------------------------------------------------------------------------------------------- 05


def choices_05(rows: list[dict]) -> dict:
    """05's choices on validation: the best fine-tune and the best probe (mean validation accuracy, all counts)."""

    def mean_val(k):
        return statistics.fmean(r["val_acc"] for r in rows if (r["method"], r["encoder"]) == k)

    keys = {(r["method"], r["encoder"]) for r in rows if r["encoder"] in PRETEXTS}
    best_ft = max(sorted(k for k in keys if k[0] == "fine-tune"), key=mean_val)
    best_probe = max(sorted(k for k in keys if k[0].startswith("probe")), key=mean_val)
    return {"fine-tune": best_ft, "probe": best_probe, "random": (best_probe[0], "random")}


def table_05(rows: list[dict]) -> str:
    """05's table at 100 labels, its three claims with the interval over pretraining runs (and 11's Holm p), and
    the same differences at every label count."""
    chosen, n, runs = choices_05(rows), 100, max(r["pretrain_run"] for r in rows if r["encoder"] in PRETEXTS) + 1

    def label(k):
        return k[0] if k[1] in ("none", "pca") else f"{k[0]} [{k[1]}]"

    def acc(k, count):
        return by_method(rows, lambda r: (r["method"], r["encoder"]) == k, count)

    scratch, pixels = ("scratch", "none"), ("pixels", "none")
    shown = [scratch, chosen["fine-tune"], chosen["probe"], pixels, chosen["random"]]
    lines = ["| at 100 labels (80 fit, 20 validate) | test % [95% CI over draws] |", "| --- | ---: |"]
    lines += [f"| {label(k)} | {ci_text(stats.t_interval(list(acc(k, n).values())))} |" for k in shown]
    claims = {
        "best fine-tune minus scratch": (chosen["fine-tune"], scratch),
        "best probe minus scratch": (chosen["probe"], scratch),
        "best probe minus pixels": (chosen["probe"], pixels),
    }
    cis = {name: stats.run_interval(acc(a, n), acc(b, n), runs) for name, (a, b) in claims.items()}
    holm = stats.holm([ci.p for ci in cis.values()])
    lines += [
        "",
        "| the claims at 100 labels | points [95% CI over pretraining runs] | Holm p |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {ci_text(ci, True)} | {p_text(p)} |" for (name, ci), p in zip(cis.items(), holm)]
    counts = sorted({r["labels"] for r in rows})
    lines += ["", "| points [95% CI over pretraining runs] | " + " | ".join(f"{c} labels" for c in counts) + " |"]
    lines.append("| --- |" + " ---: |" * len(counts))
    for name, (a, b) in claims.items():
        cells = [ci_text(stats.run_interval(acc(a, c), acc(b, c), runs), True) for c in counts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- 06 and 07


def family(rows: list[dict], pairs: list[tuple[str, str]], title: str, n: int = 100) -> str:
    def acc(m):
        return of(rows, m, n)

    cis = [stats.t_interval(stats.paired_differences(acc(a), acc(b))) for a, b in pairs]
    holm = stats.holm([ci.p for ci in cis])
    lines = [f"| {title} | points [95% CI] | Holm p |", "| --- | ---: | ---: |"]
    lines += [f"| {a} minus {b} | {ci_text(ci, True)} | {p_text(p)} |" for (a, b), ci, p in zip(pairs, cis, holm)]
    return "\n".join(lines)


def methods_table(rows: list[dict], n: int = 100) -> str:
    lines = ["| at 100 labels (80 fit, 20 validate) | test % [95% CI] |", "| --- | ---: |"]
    for m in dict.fromkeys(r["method"] for r in rows if r["labels"] == n):
        rs = [r for r in rows if r["method"] == m and r["labels"] == n]
        lines.append(f"| {m} | {ci_text(stats.t_interval([100 * r['test_acc'] for r in rs]))} |")
    return "\n".join(lines)


FAMILY_06 = [
    ("SimCLR + probe", "conv AE + probe"),
    ("SimCLR pooled + probe", "conv AE pooled + probe"),
    ("SimCLR fine-tuned + aug", "scratch conv + aug"),
]
FAMILY_07 = [
    ("SimCLR + spreading", "pixels + spreading"),
    ("SimCLR + spreading", "random conv + spreading"),
    ("SimCLR + spreading", "SimCLR + probe"),
    ("pixels + spreading", "pixels + linear"),
]
GAINS_07 = [
    ("SimCLR + probe", "pixels + linear"),
    ("SimCLR + spreading", "pixels + spreading"),
    ("masked AE + probe", "pixels + linear"),
    ("masked AE + spreading", "pixels + spreading"),
]


def table_06(rows: list[dict]) -> str:
    return methods_table(rows) + "\n\n" + family(rows, FAMILY_06, "the declared family at 100 labels") + "\n"


def table_07(rows: list[dict]) -> str:
    counts = sorted({r["labels"] for r in rows})
    lines = [
        methods_table(rows),
        "",
        family(rows, FAMILY_07, "at 100 labels, exploratory (seen before they were declared)"),
        "",
        "| the same classifier, pretrained code minus pixels (points [95% CI]) | "
        + " | ".join(f"{c:,}" for c in counts)
        + " |",
        "| --- |" + " ---: |" * len(counts),
    ]
    for a, b in GAINS_07:
        cells = [
            ci_text(
                stats.t_interval(stats.paired_differences(of(rows, a, c), of(rows, b, c))),
                True,
            )
            for c in counts
        ]
        lines.append(f"| {a} minus {b} | " + " | ".join(cells) + " |")
    # Labels to match, as notebook 07 computes it: the pretrained method chosen on validation at 100 labels, against
    # the pixels with the same classifier, read off their curve (bootstrap over the draws).
    pretrained = sorted({r["method"] for r in rows if r["method"].split(" + ")[0] in ("SimCLR", "masked AE")})
    best = max(
        pretrained, key=lambda m: statistics.fmean(r["val_acc"] for r in rows if (r["method"], r["labels"]) == (m, 100))
    )
    control = "pixels + spreading" if best.endswith("spreading") else "pixels + linear"
    runs = {c: list(of(rows, control, c).values()) for c in counts}
    est, low, high = stats.bootstrap_labels_to_match(counts, runs, list(of(rows, best, 100).values()), reps=2000)
    lines += [
        "",
        f"{control} needs {est:.0f} labels [95% CI {low:.0f}, {high:.0f}] to match {best}, the pretrained "
        "method chosen on validation at 100 labels (bootstrap over the draws).",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- 08 and 09

FAMILY_08 = [("MAE fine-tuned", "scratch ViT"), ("MAE + probe", "pixels + linear")]


def mean_test_table(rows: list[dict], methods: list[str], title: str) -> list[str]:
    """Mean test % of each method at each label count."""
    counts = sorted({r["labels"] for r in rows})
    lines = [f"| {title} | " + " | ".join(f"{c:,}" for c in counts) + " |", "| --- |" + " ---: |" * len(counts)]
    for m in methods:
        lines.append(
            f"| {m} | " + " | ".join(f"{statistics.fmean(of(rows, m, c).values()):.1f}" for c in counts) + " |"
        )
    return lines


def table_08(rows: list[dict]) -> str:
    """08's methods at 100 labels, its two claims with each pretraining run counted once (Holm), every label count."""
    runs = len({r["pretrain_run"] for r in rows})
    cis = [stats.run_interval(of(rows, a, 100), of(rows, b, 100), runs) for a, b in FAMILY_08]
    lines = [
        methods_table(rows),
        "",
        f"| the declared family at 100 labels, over {runs} pretraining runs | points [95% CI] | Holm p |",
    ]
    lines.append("| --- | ---: | ---: |")
    for (a, b), ci, p in zip(FAMILY_08, cis, stats.holm([ci.p for ci in cis])):
        lines.append(f"| {a} minus {b} | {ci_text(ci, True)} | {p_text(p)} |")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return "\n".join([*lines, "", *mean_test_table(rows, methods, "mean test % at each label count")]) + "\n"


def table_09(rows: list[dict]) -> str:
    """09's methods: what each trains, keeps and saves, its step time against full fine-tuning, its test accuracy
    (interval over the draws); then the two tasks on one base."""
    costs = {c["method"]: c for c in load_rows(RESULTS / "lora_costs.csv")}
    counts = sorted({r["labels"] for r in rows})
    lines = [
        "| method | trained (% of the model) | Adam state | saved file | step time / full | "
        + " | ".join(f"test % at {c:,} [95% CI]" for c in counts)
        + " |",
        "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(counts),
    ]
    for m in dict.fromkeys(r["method"] for r in rows):
        c = costs[m]
        cells = [ci_text(stats.t_interval(list(of(rows, m, n).values()))) for n in counts]
        lines.append(
            f"| {m} | {c['trainable']:,} ({c['trainable_pct']:.2f}%) | {c['optimizer_state_bytes'] / 1e3:,.0f} KB | "
            f"{c['file_bytes'] / 1e3:,.0f} KB | {c['time_ratio']:.2f} | " + " | ".join(cells) + " |"
        )
    transfer = load_rows(RESULTS / "lora_transfer.csv")
    n = max(r["labels"] for r in transfer)
    tasks = list(dict.fromkeys(r["task"] for r in transfer))
    lines += ["", f"| one base, {n:,} labels per task | " + " | ".join(f"{t} test % [95% CI]" for t in tasks) + " |"]
    lines.append("| --- |" + " ---: |" * len(tasks))
    for m in dict.fromkeys(r["method"] for r in transfer):
        cells = [[100 * r["test_acc"] for r in transfer if (r["task"], r["method"]) == (t, m)] for t in tasks]
        lines.append(f"| {m} | " + " | ".join(ci_text(stats.t_interval(c)) for c in cells) + " |")
    return "\n".join(lines) + "\n"


TABLES = {
    "05": ("05_label_efficiency", table_05),
    "06": ("06_contrastive_probe", table_06),
    "07": ("07_label_spreading", table_07),
}
TABLES_ON_FEWER_DRAWS = {  # transformers cost more per trial: fewer label draws (each notebook says how many)
    "08": ("mae_label_efficiency", table_08),
    "09": ("lora_trials", table_09),
}


def expected_blocks() -> dict[str, str]:
    tables = {**TABLES, **TABLES_ON_FEWER_DRAWS}
    return {name: make(load_rows(RESULTS / f"{csv}.csv")) for name, (csv, make) in tables.items()}


def write_results_page() -> None:
    blocks = expected_blocks()
    text = RESULTS_PAGE.read_text(encoding="utf-8")
    text = BLOCK.sub(lambda m: f"<!-- results-{m['name']} -->\n{blocks[m['name']]}<!-- /results-{m['name']} -->", text)
    RESULTS_PAGE.write_text(text, encoding="utf-8")


# -------------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted({**TABLES, **TABLES_ON_FEWER_DRAWS}))
def test_the_results_pages_tables_are_the_stored_results(name):
    found = [m["body"] for m in BLOCK.finditer(RESULTS_PAGE.read_text(encoding="utf-8")) if m["name"] == name]
    assert found == [expected_blocks()[name]], f"docs/results.md's results-{name} block differs from results/"


def test_every_draw_of_every_method_is_stored():
    for csv, _ in TABLES.values():
        rows = load_rows(RESULTS / f"{csv}.csv")
        for (m, n), count in _counts(rows).items():
            assert count == (12 if n <= 100 else 6), (csv, m, n, count)


@pytest.mark.parametrize("csv", [csv for csv, _ in TABLES_ON_FEWER_DRAWS.values()] + ["lora_transfer"])
def test_every_method_has_the_same_draws(csv):
    """Paired comparisons need every method on the same label draws, at every label count, each draw once."""
    rows = load_rows(RESULTS / f"{csv}.csv")
    draws: dict[tuple, list[int]] = {}
    for r in rows:
        draws.setdefault((r.get("task"), r["labels"], r["method"]), []).append(r["seed"])
    for (task, n, method), seeds in draws.items():
        others = [sorted(s) for (t, c, _), s in draws.items() if (t, c) == (task, n)]
        assert len(seeds) == len(set(seeds)) >= 2 and all(o == sorted(seeds) for o in others), (csv, task, n, method)


def _counts(rows):
    out = {}
    for r in rows:
        if r.get("val_counts", True):
            key = (r["method"] + r.get("encoder", ""), r["labels"])
            out[key] = out.get(key, 0) + 1
    return out


def test_06_and_07_use_05s_best_probe():
    chosen = choices_05(load_rows(RESULTS / "05_label_efficiency.csv"))["probe"]
    for name in ("06_contrastive_pretraining", "07_label_spreading"):
        code = "".join(
            "".join(c["source"])
            for c in json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
            if c["cell_type"] == "code"
        )
        assert f'"{chosen[1]}"' in code and f'"{chosen[0].split()[1]}"' in code, (name, chosen)


def test_the_graded_exercises_quote_the_stored_results():
    rows = load_rows(RESULTS / "05_label_efficiency.csv")
    chosen = choices_05(rows)
    probe = chosen["probe"]

    def at(key, n):
        return {r["seed"]: 100 * r["test_acc"] for r in rows if (r["method"], r["encoder"]) == key and r["labels"] == n}

    def mean(key, n):
        return round(statistics.fmean(at(key, n).values()), 1)

    source = (REPO_ROOT / "nbgrader/source/05_what_pretraining_bought/05_what_pretraining_bought.ipynb").read_text()
    expected = (
        f'accuracy = {{(\\"scratch\\", 50): {mean(("scratch", "none"), 50)}, (\\"scratch\\", 100): '
        f'{mean(("scratch", "none"), 100)}, (\\"best probe\\", 50): {mean(probe, 50)}}}'
    )
    assert expected in source and f"{probe[0]} [{probe[1]}]" in source
    probe_at, pixels_at = at(probe, 100), at(("pixels", "none"), 100)
    assert f"diffs = {[round(probe_at[s] - pixels_at[s], 2) for s in sorted(probe_at)]}" in source
    fine_tune = sorted(
        (r for r in rows if (r["method"], r["encoder"]) == chosen["fine-tune"]), key=lambda r: (r["labels"], r["seed"])
    )
    assert f"chosen_lrs = {[r['lr'] for r in fine_tune]}" in source
    runs: dict[int, list[float]] = {}
    scratch_at = at(("scratch", "none"), 100)
    for r in rows:
        if (r["method"], r["encoder"]) == probe and r["labels"] == 100:
            runs.setdefault(r["pretrain_run"], []).append(100 * r["test_acc"] - scratch_at[r["seed"]])
    per_run = [round(statistics.fmean(v), 1) for _, v in sorted(runs.items())]
    appendix = (REPO_ROOT / "nbgrader/source/11_appendix_statistics/11_appendix_statistics.ipynb").read_text()
    assert f"per_run = {per_run}" in appendix
    late = [
        {"labels": r["labels"], "seed": r["seed"], "best_step": r["best_step"], "steps": r["steps"]}
        for r in rows
        if r["method"] == "scratch" and r["labels"] in (20, 1000)
    ]
    assert json.dumps(f"trials = {late}")[1:-1] in appendix


def test_what_06_says_about_the_recipe_search():
    rows = load_rows(RESULTS / "06_simclr_recipe_search.csv")
    means = {}
    for r in rows:
        means.setdefault((r["epochs"], r["temperature"]), []).append(r["val_acc"])
    assert {(30, 0.2)} <= set(means) and all(len(v) == 3 for v in means.values())
    assert all(r["labels"] == 100 for r in rows)  # 3 draws of 100 labels: 300 in all, as 06 says
    images = 3 * 20  # the validation images that decide
    spread = max(statistics.fmean(v) for v in means.values()) - min(statistics.fmean(v) for v in means.values())
    assert round(spread * images) <= 4  # "within a few validation images of each other" (06, section 3)
    recipe = json.loads((RESULTS / "06_simclr_recipe_search.json").read_text())
    assert recipe["test_set_used"] is False and recipe["labels_used"] == 300


if __name__ == "__main__":
    write_results_page()
    print("docs/results.md's results tables rewritten from results/")
