"""Reading a per-block pruning sweep: its records, and paired comparisons between its arms.

:class:`SweepResult` is what :func:`helpers.study.sweep.sweep` (and
:meth:`helpers.study.sweep.BlockSweep.run`) returns: one record ``{block, strategy, treatment,
kept_filters, accuracy}`` per point, with the per-image correctness behind each accuracy, and
their context; it is written to JSON with
:meth:`SweepResult.to_json`. The functions below read it: an **arm** is a ``(strategy,
treatment)`` pair, and :func:`compare` tests two arms point by point on the same images
(:func:`helpers.stats.paired_test`), :func:`scoreboard` counts their wins over all points,
:func:`arm_means` and :func:`best_arm` rank the arms by mean accuracy, and :func:`refit_table`
lists what the refit did at every point.

This module does not import :mod:`helpers.study.sweep` (which imports it), so the names both need
are defined here: every treatment (:data:`ALL_TREATMENTS`; the sweep's default set, ``TREATMENTS``,
stays in :mod:`helpers.study.sweep`) and the record keys (:data:`RECORD_KEYS`). The naive reference
and the benchmark are in :mod:`helpers.study.sweep_check`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.stats import LEVEL, PairedResult, WinRate, _as_bool, paired_test, win_rate

ALL_TREATMENTS = ("none", "recal", "refit", "refit+recal")
RECORD_KEYS = ("block", "strategy", "treatment", "kept_filters", "accuracy")


# --------------------------------------------------------------------------- results


@dataclass
class SweepResult:
    """Records ``{block, strategy, treatment, kept_filters, accuracy}`` and their context.

    ``accuracy`` is a fraction of ``eval_images`` images of the ``eval_split`` split;
    ``correct[i]`` is the per-image correctness (bool, ``eval_images`` long) of ``records[i]``,
    kept in memory for paired comparisons (not written to JSON).
    """

    records: list[dict]
    correct: np.ndarray  # (len(records), eval_images) bool
    eval_images: int
    eval_split: str
    recal_images: int
    refit_images: int
    device: str
    precision: str
    seconds: float
    dense_correct: np.ndarray  # the unpruned network, per image
    dense_recal_correct: np.ndarray | None  # the unpruned network after recalibration
    evaluated: int = 0  # networks actually run (identical ones are run once)
    widths: dict = field(default_factory=dict)
    clusterings: dict = field(default_factory=dict, repr=False)  # (block, k, folded) -> ...
    refits: dict = field(default_factory=dict, repr=False)  # (block, k, strategy) -> report

    @property
    def dense_accuracy(self) -> float:
        return float(self.dense_correct.mean())

    @property
    def dense_accuracy_recalibrated(self) -> float | None:
        if self.dense_recal_correct is None:
            return None
        return float(self.dense_recal_correct.mean())

    def frame(self) -> pd.DataFrame:
        """The records as a DataFrame, with the block's width, the removed fraction and the
        accuracy drop from the unpruned network (a fraction)."""
        df = pd.DataFrame(self.records, columns=list(RECORD_KEYS))
        df["width"] = df["block"].map(self.widths)
        df["removed"] = df["width"] - df["kept_filters"]
        df["removed_fraction"] = df["removed"] / df["width"]
        df["drop"] = self.dense_accuracy - df["accuracy"]
        return df

    def index(self, block: str, k: int, strategy: str, treatment: str) -> int:
        """Position of a point in ``records`` (and ``correct``)."""
        if not hasattr(self, "_index") or len(self._index) != len(self.records):
            self._index = {(r["block"], r["kept_filters"], r["strategy"], r["treatment"]): i
                           for i, r in enumerate(self.records)}
        try:
            return self._index[(block, int(k), strategy, treatment)]
        except KeyError:
            raise KeyError(f"the sweep has no point {(block, k, strategy, treatment)}") from None

    def correct_at(self, block: str, k: int, strategy: str, treatment: str) -> np.ndarray:
        """Per-image correctness of one point."""
        return self.correct[self.index(block, k, strategy, treatment)]

    def points(self, pruned_only: bool = True) -> list[tuple[str, int]]:
        """The (block, k) points of the sweep, in order (k below the width only, by default)."""
        seen = dict.fromkeys((r["block"], r["kept_filters"]) for r in self.records)
        return [p for p in seen if not pruned_only or p[1] < self.widths[p[0]]]

    def to_json(self, path: str | os.PathLike, **extra) -> Path:
        """Write the records and their context (``eval_images``, ``eval_split``,
        ``dense_accuracy``, ``device``, ``sweep_seconds``, ...); ``extra`` keys are added."""
        import json

        out = {"eval_images": self.eval_images, "eval_split": self.eval_split,
               "dense_accuracy": self.dense_accuracy,
               "dense_accuracy_recalibrated": self.dense_accuracy_recalibrated,
               "device": self.device, "precision": self.precision,
               "sweep_seconds": round(self.seconds, 3), "recal_images": self.recal_images,
               "refit_images": self.refit_images, "networks_evaluated": self.evaluated,
               "widths": self.widths, **extra, "records": self.records}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
        return path


# --------------------------------------------------------------------------- reading results


Arm = tuple[str, str]  # (strategy, treatment)


def arm_name(arm: Arm) -> str:
    return f"{arm[0]}, {arm[1]}"


def _best(result: SweepResult, block: str, k: int, arms: Sequence[Arm]) -> Arm:
    return max(arms, key=lambda a: result.correct_at(block, k, *a).sum())


def compare(result: SweepResult, a: Arm | Sequence[Arm], b: Arm | Sequence[Arm],
            points: Sequence[tuple[str, int]] | None = None) -> pd.DataFrame:
    """Paired comparison of A and B at every (block, k) point (k below the width by default).

    ``a`` and ``b`` are ``(strategy, treatment)`` pairs, or lists of them: then at each point
    the most accurate of the list is taken (chosen on the same images it is compared on, so its
    accuracy is slightly optimistic). One row per point: ``a`` and ``b`` (the arms used), their
    accuracies, the difference A - B with its 95% interval, the exact McNemar p-value and the
    ``winner``: ``"A"``, ``"B"`` or ``"tie"`` (not significant at 5%).
    """
    rows = []
    for block, k in points if points is not None else result.points():
        arm_a = a if isinstance(a[0], str) else _best(result, block, k, a)
        arm_b = b if isinstance(b[0], str) else _best(result, block, k, b)
        r: PairedResult = paired_test(result.correct_at(block, k, *arm_a),
                                      result.correct_at(block, k, *arm_b))
        rows.append({"block": block, "width": result.widths[block], "kept_filters": k,
                     "a": arm_name(arm_a), "b": arm_name(arm_b), "accuracy_a": r.accuracy_a,
                     "accuracy_b": r.accuracy_b, "difference": r.difference,
                     "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value,
                     "winner": r.verdict()})
    return pd.DataFrame(rows)


def arm_means(result: SweepResult) -> pd.DataFrame:
    """Mean accuracy (%) of every strategy (rows) under every treatment (columns) over the
    pruned points (k below the width)."""
    df = result.frame()
    df = df[df.kept_filters < df.width]
    table = 100 * df.pivot_table(index="strategy", columns="treatment", values="accuracy")
    return table[[t for t in ALL_TREATMENTS if t in table.columns]]


def _percent(r) -> str:
    return f"{100 * r.rate:.0f} ({100 * r.low:.0f}-{100 * r.high:.0f})"


def scoreboard(result: SweepResult,
               pairs: Mapping[str, tuple[Arm | Sequence[Arm], Arm | Sequence[Arm]]],
               points: Sequence[tuple[str, int]] | None = None,
               block_bootstrap: bool = False) -> pd.DataFrame:
    """For each named pair (A, B) of :func:`compare`: over the (block, k) points, how often A
    is significantly better, how often it ties, how often B is better (exact McNemar, 5%), with
    95% Wilson intervals of the rates, and the mean difference A - B (points).

    The Wilson intervals take the points as independent; the points of one block are not.
    ``block_bootstrap`` adds the intervals of a bootstrap over blocks
    (:func:`cluster_bootstrap_rate`, 2,000 draws, seed 0): columns
    ``"A win % (95% CI, blocks resampled)"`` and ``"B win % (95% CI, blocks resampled)"``."""
    rows = []
    for label, (a, b) in pairs.items():
        table = compare(result, a, b, points)
        n = len(table)
        if not n:
            raise ValueError("no (block, k) points to compare")
        t = {w: win_rate(int((table.winner == w).sum()), n) for w in ("A", "tie", "B")}
        row = {"comparison": label, "points": n, "A wins": t["A"].wins,
               "ties": t["tie"].wins, "B wins": t["B"].wins,
               "A win % (95% CI)": _percent(t["A"]), "B win % (95% CI)": _percent(t["B"]),
               "mean A - B (points)": round(100 * float(table.difference.mean()), 2)}
        if block_bootstrap:
            boot = cluster_bootstrap_rate(table.winner == "A", table.winner == "B", table.block)
            row["A win % (95% CI, blocks resampled)"] = _percent(boot["wins"])
            row["B win % (95% CI, blocks resampled)"] = _percent(boot["losses"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("comparison")


def best_arm(result: SweepResult, arms: Sequence[Arm] | None = None) -> Arm:
    """The (strategy, treatment) of highest mean accuracy over the pruned points."""
    means = arm_means(result).stack()
    if arms is not None:
        means = means[[tuple(a) for a in arms]]
    return tuple(means.idxmax())


def refit_table(result: SweepResult) -> pd.DataFrame:
    """The refit's calibration MSE (conv2 output, before bn2) before and after, per point."""
    rows = [{"block": b, "kept_filters": k, "strategy": s, "mse_before": r.mse_before,
             "mse_after": r.mse_after, "refit": r.refit}
            for (b, k, s), r in result.refits.items()]
    df = pd.DataFrame(rows)
    if len(df):
        df["mse_ratio"] = df.mse_after / df.mse_before.where(df.mse_before > 0)
    return df


def cluster_bootstrap_rate(wins, losses, clusters, n: int = 2000, seed: int = 0,
                           level: float = LEVEL) -> dict[str, WinRate]:
    """Win, tie and loss rates over comparisons grouped in clusters, with cluster-bootstrap
    intervals (e.g. the (block, k) points of a sweep, clustered by block).

    Args:
        wins, losses: per comparison, whether A won, whether B won (bool vectors of the same
            length; neither: a tie).
        clusters: per comparison, its cluster (e.g. the block name); at least two clusters.
        n: bootstrap draws. Each draw takes as many clusters as there are, with replacement,
            with all their comparisons, and recomputes each rate (wins over comparisons drawn,
            so a bigger cluster weighs more, as in the rate itself).
        seed: of the draws (``numpy.random.default_rng``): the same seed, the same interval.

    Returns ``{"wins", "ties", "losses"}``, each a :class:`WinRate` (the count and the number of
    comparisons, as :func:`helpers.stats.tally`) whose ``low, high`` are the percentile interval
    of the draws at ``level``. With independent comparisons (one per cluster) the interval is
    close to Wilson's; when comparisons of a cluster agree it is wider. A rate of 0 (or 1) has the
    interval 0-0 (or 1-1): no draw can contain what no cluster has; read Wilson's there
    (:func:`helpers.stats.win_rate`), and with few clusters (a sweep has 9 blocks) the interval
    is coarse.
    """
    w, lo = _as_bool(wins, "wins"), _as_bool(losses, "losses")
    c = np.asarray(clusters)
    if not (len(w) == len(lo) == len(c)) or not len(w):
        raise ValueError(f"wins, losses and clusters must have the same length >= 1, got "
                         f"{len(w)}, {len(lo)} and {len(c)}")
    if (w & lo).any():
        raise ValueError("a comparison cannot be both a win and a loss")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (bootstrap draws) must be a positive integer, got {n!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    _, index = np.unique(c, return_inverse=True)
    groups = int(index.max()) + 1
    if groups < 2:
        raise ValueError("a cluster bootstrap needs at least two clusters")
    size = np.bincount(index, minlength=groups)
    counts = {"wins": np.bincount(index, w, groups), "losses": np.bincount(index, lo, groups)}
    counts["ties"] = size - counts["wins"] - counts["losses"]
    draws = np.random.default_rng(seed).integers(0, groups, size=(int(n), groups))
    drawn = size[draws].sum(1)
    tails = [(1 - level) / 2, (1 + level) / 2]
    out = {}
    for name in ("wins", "ties", "losses"):
        low, high = np.quantile(counts[name][draws].sum(1) / drawn, tails)
        out[name] = WinRate(int(round(counts[name].sum())), len(w), float(low), float(high),
                            level)
    return out
