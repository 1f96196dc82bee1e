"""Statistics for paired experiments: t-based confidence intervals, Holm's correction, and a
bootstrap interval for "how many labels does scratch need to match a method".

The Student t distribution is computed here from the regularised incomplete beta function
(continued fraction, as in Numerical Recipes), so the package needs no SciPy. The unit tests
check it against printed t tables.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from typing import NamedTuple


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be between 0 and 1, got {x!r}.")
    if x in (0.0, 1.0):
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"The degrees of freedom must be positive, got {df!r}.")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p (e.g. ``t_quantile(0.975, 11)`` = 2.201), by bisection."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p!r}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


class Interval(NamedTuple):
    """A mean with its t-based confidence interval and the two-sided p-value against zero."""

    mean: float
    low: float
    high: float
    p: float
    n: int


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` with its t-based confidence interval and the one-sample t-test p-value.

    For paired differences (method minus baseline, per seed) this is the paired t-test.
    """
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"A confidence interval needs at least 2 values, got {len(values)}.")
    n, mean = len(values), statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * se
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = 2.0 * (1.0 - t_cdf(abs(mean) / se, n - 1))
    return Interval(mean, mean - half, mean + half, p, n)


def paired_differences(a: Mapping, b: Mapping) -> list[float]:
    """``a[k] - b[k]`` for every key the two share (e.g. keyed by seed), in sorted key order.

    Raises ``ValueError`` when the keys differ: a paired comparison needs every pair.
    """
    if set(a) != set(b):
        raise ValueError(f"Paired values need the same keys; only in one: {sorted(set(a) ^ set(b))}.")
    return [a[k] - b[k] for k in sorted(a)]


def cluster_means(values: Sequence[float], clusters: Sequence) -> list[float]:
    """The mean of ``values`` within each cluster (e.g. each pretraining run), in sorted cluster order."""
    if len(values) != len(clusters):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster labels: they must match one to one.")
    groups: dict = {}
    for v, c in zip(values, clusters):
        groups.setdefault(c, []).append(float(v))
    return [statistics.fmean(groups[c]) for c in sorted(groups)]


def run_interval(a: Mapping[int, float], b: Mapping[int, float], runs: int, confidence: float = 0.95) -> Interval:
    """The paired difference ``a - b`` (both keyed by label draw s) counted once per pretraining run: the mean
    difference within each run (draw s uses run ``s % runs``), then a t interval over those ``runs`` means."""
    diffs = paired_differences(a, b)
    return t_interval(cluster_means(diffs, [s % runs for s in sorted(a)]), confidence)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error control), in the input's order.

    Reject hypothesis i at level alpha when its adjusted p-value is <= alpha.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def labels_to_match(label_counts: Sequence[int], baseline: Sequence[float], target: float) -> float:
    """The number of labels at which the ``baseline`` curve reaches ``target`` accuracy.

    Interpolates linearly in log(labels) between the measured points. Returns ``0.0`` when the
    baseline already beats ``target`` at the smallest count and ``math.inf`` when it never reaches it
    (the answer lies outside the measured range).
    """
    if len(label_counts) != len(baseline) or len(label_counts) < 2:
        raise ValueError("Give the same number (at least 2) of label counts and baseline accuracies.")
    if target <= baseline[0]:
        return 0.0
    for (n0, a0), (n1, a1) in zip(zip(label_counts, baseline), zip(label_counts[1:], baseline[1:])):
        if a0 < target <= a1:
            frac = (target - a0) / (a1 - a0)
            return math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))
    return math.inf


def bootstrap_labels_to_match(
    label_counts: Sequence[int],
    baseline_runs: Mapping[int, Sequence[float]],
    method_runs: Sequence[float],
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``labels_to_match`` for a method's mean accuracy, with a percentile bootstrap interval.

    ``baseline_runs[n]`` holds the baseline's accuracies (one per seed) at n labels; ``method_runs``
    the method's accuracies at the label count of interest. Each replicate resamples the seeds of
    every curve point and of the method with replacement. Returns (estimate, low, high); a bound
    of ``inf`` (or 0) means the interval reaches past the measured label counts.
    """
    counts = list(label_counts)
    rng = random.Random(seed)

    def estimate(resample: bool) -> float:
        draw = (lambda xs: rng.choices(xs, k=len(xs))) if resample else list
        curve = [statistics.fmean(draw(list(baseline_runs[n]))) for n in counts]
        return labels_to_match(counts, curve, statistics.fmean(draw(list(method_runs))))

    point = estimate(False)
    replicates = sorted(estimate(True) for _ in range(reps))
    tail = (1.0 - confidence) / 2.0
    return point, replicates[int(tail * (reps - 1))], replicates[math.ceil((1.0 - tail) * (reps - 1))]
