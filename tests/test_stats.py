"""Statistics against hand-computed examples and printed tables."""

from __future__ import annotations

import math

import pytest

from ptft_helpers import stats


@pytest.mark.parametrize(
    "df, expected",  # two-sided 95% critical values from any printed t table
    [(1, 12.706), (2, 4.303), (4, 2.776), (5, 2.571), (9, 2.262), (11, 2.201), (30, 2.042)],
)
def test_t_quantile_matches_the_printed_table(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_cdf_known_values():
    assert stats.t_cdf(0.0, 7) == pytest.approx(0.5)
    # df = 1 is the Cauchy distribution: P(T <= 1) = 1/2 + atan(1)/pi = 3/4.
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)
    # df = 2 has a closed form: P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2)).
    assert stats.t_cdf(1.5, 2) == pytest.approx(0.5 + 1.5 / (2 * math.sqrt(2 + 1.5**2)), abs=1e-12)
    assert stats.t_cdf(-1.5, 2) == pytest.approx(1 - stats.t_cdf(1.5, 2), abs=1e-12)
    assert stats.t_quantile(0.025, 5) == pytest.approx(-stats.t_quantile(0.975, 5))


def test_t_interval_by_hand():
    # Values 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), se sqrt(5/3)/2 = 0.6455, t(0.975, 3) = 3.1824.
    ci = stats.t_interval([1, 2, 3, 4])
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert ci.mean == pytest.approx(2.5)
    assert (ci.low, ci.high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-5)
    # t = 2.5 / 0.6455 = 3.873 with 3 df: two-sided p = 0.0305.
    assert ci.p == pytest.approx(0.0305, abs=2e-4)
    assert ci.n == 4


def test_paired_differences_pair_by_key_and_refuse_missing_pairs():
    assert stats.paired_differences({1: 0.7, 0: 0.5}, {0: 0.4, 1: 0.6}) == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="same keys"):
        stats.paired_differences({0: 1.0, 1: 2.0}, {0: 1.0})


def test_paired_interval_is_narrower_than_the_unpaired_one_when_seeds_move_together():
    a, b = [0.60, 0.70, 0.80, 0.65], [0.58, 0.69, 0.77, 0.64]
    paired = stats.t_interval(stats.paired_differences(dict(enumerate(a)), dict(enumerate(b))))
    # The unpaired (pooled two-sample) interval, by hand: the seeds' spread of 8.8 points swamps the difference.
    n, mean_a, mean_b = len(a), sum(a) / len(a), sum(b) / len(b)
    pooled = (sum((x - mean_a) ** 2 for x in a) + sum((x - mean_b) ** 2 for x in b)) / (2 * n - 2)
    half = stats.t_quantile(0.975, 2 * n - 2) * (pooled * 2 / n) ** 0.5
    unpaired = (mean_a - mean_b - half, mean_a - mean_b + half)
    assert paired.high - paired.low < (unpaired[1] - unpaired[0]) / 5
    assert paired.low > 0 and unpaired[0] < 0  # only the paired interval sees the consistent +1 to +3 points


def test_cluster_means():
    assert stats.cluster_means([1, 2, 3, 5], ["b", "a", "b", "a"]) == pytest.approx([3.5, 2.0])


def test_run_interval_counts_each_pretraining_run_once():
    a = {s: 10.0 + s for s in range(6)}  # draws 0..5; draw s uses run s % 3
    b = {s: 10.0 for s in range(6)}
    # Differences 0..5; run 0 has draws 0 and 3 (mean 1.5), run 1: 1 and 4 (2.5), run 2: 2 and 5 (3.5).
    ci = stats.run_interval(a, b, runs=3)
    assert ci.n == 3 and ci.mean == pytest.approx(2.5)
    assert ci.high - ci.mean == pytest.approx(4.302653 * 1.0 / math.sqrt(3), abs=1e-5)  # sd of 1.5, 2.5, 3.5 is 1


def test_holm_by_hand():
    # Sorted p: 0.005, 0.01, 0.03, 0.04 -> times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_labels_to_match_interpolates_in_log_labels():
    counts, curve = [10, 100, 1000], [0.5, 0.7, 0.8]
    assert stats.labels_to_match(counts, curve, 0.7) == pytest.approx(100)
    assert stats.labels_to_match(counts, curve, 0.75) == pytest.approx(math.sqrt(100 * 1000))  # halfway in log
    assert stats.labels_to_match(counts, curve, 0.4) == 0.0
    assert stats.labels_to_match(counts, curve, 0.9) == math.inf


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible():
    base = {10: [0.50, 0.52, 0.48], 100: [0.70, 0.71, 0.69], 1000: [0.80, 0.81, 0.79]}
    point, low, high = stats.bootstrap_labels_to_match([10, 100, 1000], base, [0.74, 0.76, 0.75], reps=500)
    assert point == pytest.approx(math.sqrt(100 * 1000))
    assert low <= point <= high
    assert 100 < low and high < 1000
    assert stats.bootstrap_labels_to_match([10, 100, 1000], base, [0.74, 0.76, 0.75], reps=500) == (point, low, high)


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="at least 2"):
        stats.t_interval([1.0])
    with pytest.raises(ValueError, match="strictly between"):
        stats.t_quantile(1.0, 3)
