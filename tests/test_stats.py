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
    tally,
    verdict,
    win_rate,
)


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
