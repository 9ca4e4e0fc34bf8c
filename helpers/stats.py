"""How sure is an accuracy, and is one model better than another on the same images?

- :func:`accuracy_interval`: the Wilson score interval of an accuracy measured on ``n`` images
  (the binomial standard error is about 0.4 points at 90% on 5,000 images).
- :func:`paired_test`: two models measured on the SAME images. Only the images where they
  disagree carry information about which is better (McNemar): if ``b01`` images are right only
  for A and ``b10`` only for B, then under "equally good" ``b01`` is Binomial(``b01 + b10``,
  1/2). The exact two-sided binomial test gives the p-value; the exact (Clopper-Pearson)
  interval of that binomial proportion, scaled by ``(b01 + b10) / n``, gives the interval of the
  accuracy difference (conditional on the number of disagreements). A paired test is far more
  sensitive than comparing two independent intervals: most images are right (or wrong) for
  both models and add no noise.
- :func:`verdict` / :func:`tally` / :func:`win_rate`: "A beats B" only when the paired test
  says so at ``alpha``; a difference that is not significant is a tie. Win rates over many
  comparisons come with a Wilson interval. With ``alpha = 0.05`` about one comparison in 40 of
  two equally good models is still called a win (and as many a loss).
- :func:`ratio_interval`: a speed-up from interleaved timings: the median of the per-round
  ratios (reference time over model time, measured in the same round), with a bootstrap
  interval of that median, pooled over every round of every call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

LEVEL = 0.95
ALPHA = 0.05


def _check_counts(k: int, n: int) -> None:
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= count <= n and n >= 1, got {k} of {n}")


def accuracy_interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval (fractions) of an accuracy of ``correct`` out of ``n`` images."""
    correct, n = int(correct), int(n)
    _check_counts(correct, n)
    ci = binomtest(correct, n).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


def format_accuracy(correct: int, n: int, level: float = LEVEL) -> str:
    """``"90.54% (95% CI 89.7-91.3) of 5,000 images"``."""
    lo, hi = accuracy_interval(correct, n, level)
    return (f"{100 * correct / n:.2f}% ({100 * level:.0f}% CI {100 * lo:.1f}-{100 * hi:.1f}) "
            f"of {n:,} images")


@dataclass(frozen=True)
class PairedResult:
    """A against B on the same ``n`` images (accuracies as fractions)."""

    accuracy_a: float
    accuracy_b: float
    a_only: int  # images right for A only
    b_only: int  # images right for B only
    n: int
    p_value: float  # exact McNemar (two-sided binomial test on the disagreements)
    ci_low: float  # interval of accuracy_a - accuracy_b
    ci_high: float
    level: float = LEVEL

    @property
    def difference(self) -> float:
        return self.accuracy_a - self.accuracy_b

    def verdict(self, alpha: float = ALPHA) -> str:
        """``"A"`` or ``"B"`` when that one is significantly better at ``alpha``, else ``"tie"``."""
        if self.p_value >= alpha or self.a_only == self.b_only:
            return "tie"
        return "A" if self.a_only > self.b_only else "B"

    def describe(self) -> str:
        """The difference and its interval, without a p-value: for comparisons that were not
        declared before looking (a p-value is only meaningful for those that were)."""
        return (f"{100 * self.difference:+.2f} points ({100 * self.level:.0f}% CI "
                f"{100 * self.ci_low:+.2f} to {100 * self.ci_high:+.2f}; descriptive), "
                f"{self.a_only} vs {self.b_only} of {self.n:,} images right for one only")

    def __str__(self) -> str:
        return (f"{100 * self.difference:+.2f} points ({100 * self.level:.0f}% CI "
                f"{100 * self.ci_low:+.2f} to {100 * self.ci_high:+.2f}), McNemar p = "
                f"{self.p_value:.2g}, {self.a_only} vs {self.b_only} of {self.n:,} images "
                f"right for one only")


def _as_bool(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or not (a.dtype == bool or np.isin(a, (0, 1)).all()):
        raise ValueError(f"{name} must be a 1-D vector of per-image correctness (bool)")
    return a.astype(bool)


def paired_test(correct_a: np.ndarray, correct_b: np.ndarray,
                level: float = LEVEL) -> PairedResult:
    """Exact McNemar test and interval of the accuracy difference of A and B, paired by image.

    Args:
        correct_a, correct_b: per-image correctness (bool) of the two models, same images in the
            same order.
    """
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if len(a) != len(b) or not len(a):
        raise ValueError(f"the two vectors must cover the same n >= 1 images, got {len(a)} and "
                         f"{len(b)}")
    n = len(a)
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    d = a_only + b_only
    if d == 0:
        p, lo, hi = 1.0, 0.0, 0.0
    else:
        test = binomtest(a_only, d, 0.5)
        ci = test.proportion_ci(level, method="exact")
        p = float(test.pvalue)
        diff = (a_only - b_only) / n  # the interval holds it; min/max only absorb rounding
        lo = min(d / n * (2 * ci.low - 1), diff)
        hi = max(d / n * (2 * ci.high - 1), diff)
    return PairedResult(float(a.mean()), float(b.mean()), a_only, b_only, n, min(p, 1.0),
                        float(lo), float(hi), level)


def verdict(correct_a: np.ndarray, correct_b: np.ndarray, alpha: float = ALPHA) -> str:
    """``"A"``, ``"B"`` or ``"tie"`` (see :meth:`PairedResult.verdict`)."""
    return paired_test(correct_a, correct_b).verdict(alpha)


@dataclass(frozen=True)
class WinRate:
    """``wins`` of ``n`` comparisons, with a Wilson interval of the rate."""

    wins: int
    n: int
    low: float
    high: float
    level: float = LEVEL

    @property
    def rate(self) -> float:
        return self.wins / self.n

    def __str__(self) -> str:
        return (f"{self.wins} of {self.n} ({100 * self.rate:.0f}%, {100 * self.level:.0f}% CI "
                f"{100 * self.low:.0f}-{100 * self.high:.0f}%)")


def win_rate(wins: int, n: int, level: float = LEVEL) -> WinRate:
    """A rate of ``wins`` out of ``n`` comparisons with its Wilson interval."""
    lo, hi = accuracy_interval(wins, n, level)
    return WinRate(int(wins), int(n), lo, hi, level)


def tally(results: Iterable[PairedResult], alpha: float = ALPHA,
          level: float = LEVEL) -> dict[str, WinRate]:
    """Wins, ties and losses of A over many paired comparisons, each a :class:`WinRate`."""
    verdicts = [r.verdict(alpha) for r in results]
    if not verdicts:
        raise ValueError("tally needs at least one comparison")
    n = len(verdicts)
    return {"wins": win_rate(verdicts.count("A"), n, level),
            "ties": win_rate(verdicts.count("tie"), n, level),
            "losses": win_rate(verdicts.count("B"), n, level)}


def ratio_interval(reference, other, n: int = 2000, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """Median speed-up of ``other`` over ``reference`` and a bootstrap interval of the median.

    Args:
        reference, other: per-round times (any unit, the same for both) of two models timed
            interleaved: round ``i`` of one was measured next to round ``i`` of the other, so
            the ratio ``reference[i] / other[i]`` cancels what a slow phase of the machine did
            to both. Pool the rounds of several calls by concatenating them.
        n, seed: bootstrap draws of the rounds (with replacement) and their seed.

    Returns ``(median, low, high)``: the median of the per-round ratios and the percentile
    interval at ``level`` of the medians of the draws. The interval says how well the rounds
    pin the median down; it does not cover a machine that is slower on another day.
    """
    a, b = np.asarray(reference, float), np.asarray(other, float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"reference and other must be 1-D with the same length >= 1, got "
                         f"shapes {a.shape} and {b.shape}")
    if not ((a > 0).all() and (b > 0).all()):
        raise ValueError("times must be positive")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    ratios = a / b
    draws = np.random.default_rng(seed).integers(0, len(ratios), size=(int(n), len(ratios)))
    low, high = np.quantile(np.median(ratios[draws], axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(np.median(ratios)), float(low), float(high)
