"""helpers.stats: Wilson intervals, the exact McNemar test, win rates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from helpers.stats import (
    PairedResult,
    accuracy_interval,
    format_accuracy,
    paired_test,
    ratio_interval,
    tally,
    verdict,
    win_rate,
)
from helpers.study.sweep_results import cluster_bootstrap_rate


def test_wilson_interval_by_its_formula():
    k, n, z = 4500, 5000, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = accuracy_interval(k, n)
    assert lo == pytest.approx(centre - half, abs=1e-9)
    assert hi == pytest.approx(centre + half, abs=1e-9)
    assert 0.0 == accuracy_interval(0, 10)[0] and accuracy_interval(10, 10)[1] == 1.0
    assert "90.00% (95% CI 89.1-90.8) of 5,000 images" == format_accuracy(k, n)
    with pytest.raises(ValueError, match="count <= n"):
        accuracy_interval(11, 10)


def pair(a_only: int, b_only: int, both: int = 50, neither: int = 10):
    a = np.r_[np.ones(a_only), np.zeros(b_only), np.ones(both), np.zeros(neither)].astype(bool)
    b = np.r_[np.zeros(a_only), np.ones(b_only), np.ones(both), np.zeros(neither)].astype(bool)
    return a, b


def test_mcnemar_p_value_is_the_exact_binomial_on_the_disagreements():
    a, b = pair(12, 3)
    r = paired_test(a, b)
    assert (r.a_only, r.b_only, r.n) == (12, 3, 75)
    assert r.difference == pytest.approx(9 / 75)
    want = min(1.0, 2 * binom.cdf(3, 15, 0.5))  # symmetric null: two-sided = 2 x one tail
    assert r.p_value == pytest.approx(want)
    assert r.ci_low < r.difference < r.ci_high
    assert r.verdict() == "A" and verdict(b, a) == "B"
    assert isinstance(r, PairedResult) and "McNemar p" in str(r)


def test_agreeing_models_tie_whatever_their_accuracy():
    a, b = pair(0, 0)
    r = paired_test(a, b)
    assert r.p_value == 1.0 and r.difference == 0 and (r.ci_low, r.ci_high) == (0.0, 0.0)
    assert r.verdict() == "tie"
    assert paired_test(*pair(3, 1)).verdict() == "tie"  # 4 disagreements: p = 0.625


def test_the_interval_excludes_zero_when_the_test_rejects():
    # Under p = 1/2 the binomial is symmetric: the two-sided p-value is twice one tail, and the
    # central exact interval excludes 1/2 exactly when that tail is below alpha / 2.
    for a_only, b_only in [(30, 10), (10, 30), (20, 18), (9, 1)]:
        r = paired_test(*pair(a_only, b_only))
        assert (r.ci_low > 0 or r.ci_high < 0) == (r.p_value < 0.05)


def test_bad_input():
    with pytest.raises(ValueError, match="same n"):
        paired_test(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="per-image correctness"):
        paired_test(np.full(3, 0.5), np.ones(3))


def test_win_rates_and_tally():
    w = win_rate(45, 50)
    assert w.rate == 0.9 and w.low < 0.9 < w.high and "45 of 50" in str(w)
    results = [paired_test(*pair(30, 5)), paired_test(*pair(5, 30)), paired_test(*pair(2, 2))]
    t = tally(results)
    assert (t["wins"].wins, t["losses"].wins, t["ties"].wins) == (1, 1, 1)
    assert t["wins"].n == 3


def test_cluster_bootstrap_of_identical_blocks_is_the_binomial_of_blocks():
    # 9 blocks of 10 points, every point of a block alike: 4 blocks won throughout, 2 lost,
    # 3 tied. Resampling 9 blocks, the number of won blocks drawn is Binomial(9, 4/9) and the
    # rate is that over 9: its 2.5% and 97.5% quantiles are 1/9 and 7/9 (CDF 0.041 and 0.992,
    # far from 0.025 and 0.975 for 20,000 draws), much wider than Wilson's interval over 90
    # supposedly independent points.
    blocks = np.repeat([f"layer{i}" for i in range(9)], 10)
    wins = np.isin(blocks, ["layer0", "layer3", "layer5", "layer8"])
    losses = np.isin(blocks, ["layer1", "layer2"])
    r = cluster_bootstrap_rate(wins, losses, blocks, n=20_000, seed=1)
    assert (r["wins"].wins, r["ties"].wins, r["losses"].wins) == (40, 30, 20)
    assert {k: v.n for k, v in r.items()} == {"wins": 90, "ties": 90, "losses": 90}
    assert binom.cdf(0, 9, 4 / 9) < 0.02 and 0.035 < binom.cdf(1, 9, 4 / 9)
    assert binom.cdf(6, 9, 4 / 9) < 0.96 and 0.99 < binom.cdf(7, 9, 4 / 9)
    assert (r["wins"].low, r["wins"].high) == pytest.approx((1 / 9, 7 / 9))
    wilson = win_rate(40, 90)
    assert r["wins"].rate == wilson.rate
    assert r["wins"].low < wilson.low - 0.2 and r["wins"].high > wilson.high + 0.2


def test_cluster_bootstrap_of_independent_points_is_close_to_wilson():
    rng = np.random.default_rng(0)
    outcome = rng.permutation(np.r_[np.full(60, 1), np.full(40, -1), np.zeros(100)])
    r = cluster_bootstrap_rate(outcome == 1, outcome == -1, np.arange(200), seed=0)
    for key, count in (("wins", 60), ("losses", 40), ("ties", 100)):
        wilson = win_rate(count, 200)
        assert r[key].rate == wilson.rate
        assert r[key].low == pytest.approx(wilson.low, abs=0.015)
        assert r[key].high == pytest.approx(wilson.high, abs=0.015)


def test_cluster_bootstrap_weighs_clusters_by_size_and_is_seeded():
    # a block of 1 point (won) and one of 3 (tied): draws AA, AB, BA, BB give win rates 1,
    # 1/4, 1/4, 0, the middle half of the draws is 1/4 (a mean of block rates would say 1/2)
    wins, ties = np.array([1, 0, 0, 0], bool), np.zeros(4, bool)
    r = cluster_bootstrap_rate(wins, ties, ["a", "b", "b", "b"], level=0.1, seed=3)
    assert (r["wins"].rate, r["wins"].low, r["wins"].high) == (0.25, 0.25, 0.25)
    assert cluster_bootstrap_rate(wins, ties, ["a", "b", "b", "b"], seed=3) == \
        cluster_bootstrap_rate(wins, ties, ["a", "b", "b", "b"], seed=3)
    with pytest.raises(ValueError, match="at least two clusters"):
        cluster_bootstrap_rate(wins, ties, ["a"] * 4)
    with pytest.raises(ValueError, match="both a win and a loss"):
        cluster_bootstrap_rate(wins, wins, ["a", "b", "b", "b"])
    with pytest.raises(ValueError, match="same length"):
        cluster_bootstrap_rate(wins, ties, ["a", "b"])


# --------------------------------------------------------------------------- speed-up intervals


def test_ratio_interval_pairs_rounds_and_brackets_the_median():
    # a slow phase hits both models in rounds 3-4: per-round ratios stay 2, a ratio of the
    # medians of unpaired times would not
    reference = np.array([10.0, 10.0, 30.0, 30.0, 10.0])
    other = reference / 2
    assert ratio_interval(reference, other) == pytest.approx((2.0, 2.0, 2.0))
    rng = np.random.default_rng(1)
    ratios = rng.lognormal(np.log(1.5), 0.05, 200)
    base = rng.uniform(100, 130, 200)
    median, low, high = ratio_interval(base, base / ratios)
    assert median == pytest.approx(np.median(ratios))
    assert low < median < high and high - low < 0.05  # 200 rounds pin the median down
    few = ratio_interval(base[:10], base[:10] / ratios[:10])
    assert few[2] - few[1] > high - low  # fewer rounds, a wider interval


def test_ratio_interval_checks_its_input():
    with pytest.raises(ValueError, match="same length"):
        ratio_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        ratio_interval([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="level"):
        ratio_interval([1.0], [1.0], level=1.0)


def test_describe_gives_the_difference_without_a_p_value():
    a = np.array([True] * 60 + [False] * 40)
    b = np.array([True] * 50 + [False] * 50)
    r = paired_test(a, b)
    assert "p =" in str(r) and "p =" not in r.describe()
    assert r.describe().startswith("+10.00 points") and "descriptive" in r.describe()
