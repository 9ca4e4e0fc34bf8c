"""Figures of notebook 04 (block pruning sweep): accuracy against filters kept, drop heatmaps.

``df`` is a sweep's records as a DataFrame (one row per block, strategy, treatment and number
of conv1 filters kept); the paired differences come from
:func:`helpers.study.sweep_results.compare`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.plots import STRATEGY_COLORS, STRATEGY_MARKERS

TREATMENT_STYLES = {"none": ":", "recal": "--", "refit": "-.", "refit+recal": "-"}


def _images(eval_images: int | None, split: str) -> str:
    return f" ({eval_images:,} {split} images)" if eval_images else ""


def original_study(df: pd.DataFrame, strategies=("centroid", "first", "nearest"),
                   treatment: str = "none", eval_images: int | None = None,
                   split: str = "validation"):
    """Accuracy against the number of kept filters, one panel per stage, one colour per block,
    one line style per strategy: the original work's three figures, side by side."""
    styles = ["-", "--", ":", "-."]
    sub = df[df.strategy.isin(strategies) & (df.treatment == treatment)]
    stages = sorted(sub.block.str[:6].unique())
    fig, axes = plt.subplots(1, len(stages), figsize=(4.6 * len(stages), 3.6), sharey=True,
                             squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        part = sub[sub.block.str.startswith(stage)]
        for c, (name, g) in zip(sns.color_palette("deep"), part.groupby("block"), strict=False):
            for ls, s in zip(styles, strategies, strict=False):
                h = g[g.strategy == s].sort_values("kept_filters")
                ax.plot(h.kept_filters, 100 * h.accuracy, ls=ls, color=c, marker=".", ms=4,
                        label=f"{name} {s}")
        ax.set_title(f"{stage}[0..2]", fontsize=11)
        ax.set_xlabel("conv1 filters kept")
        ax.legend(fontsize=7, ncol=2)
    axes[0, 0].set_ylabel(f"accuracy (%){_images(eval_images, split)}")
    fig.suptitle(f"treatment: {treatment}", fontsize=10)
    fig.tight_layout()
    return fig


def strategy_grid(df: pd.DataFrame, strategies=None, treatments=("none", "recal", "refit+recal"),
                  dense: float | None = None, eval_images: int | None = None,
                  split: str = "validation"):
    """Accuracy against kept filters for every block: colour = strategy, line style =
    treatment (dotted: none, dashed: recal, solid: refit + recal); the thin black line is the
    unpruned network."""
    strategies = list(strategies or df.strategy.unique())
    names = list(dict.fromkeys(df.block))
    ncols = 3
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.1 * nrows), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        g = df[df.block == name]
        for s in strategies:
            for t in treatments:
                h = g[(g.strategy == s) & (g.treatment == t)].sort_values("kept_filters")
                if len(h):
                    ax.plot(h.kept_filters, 100 * h.accuracy, ls=TREATMENT_STYLES.get(t, "-"),
                            color=STRATEGY_COLORS.get(s), lw=1.2, label=f"{s}, {t}",
                            marker=STRATEGY_MARKERS.get(s, ".") if len(h) < 20 else None, ms=4)
        if dense is not None:
            ax.axhline(100 * dense, color="black", lw=0.8)
        ax.set_title(f"{name} ({int(g.width.iloc[0])} filters)", fontsize=10)
        ax.set_xlabel("conv1 filters kept")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel(f"accuracy (%){_images(eval_images, split)}", fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(treatments) * 2, len(labels)),
               fontsize=8, bbox_to_anchor=(0.5, -0.06 if nrows > 1 else -0.2), frameon=False)
    fig.tight_layout()
    return fig


def kept_bins(df: pd.DataFrame, bins: int = 8) -> pd.DataFrame:
    """Points at kept fractions 1/bins, 2/bins, ... with a ``bin`` column: per block the point
    nearest the bin, exact when the sweep has it, else at most one filter away (none
    otherwise); 0% and 100% are left out."""
    d = df.copy()
    d["bin"] = (d.kept_filters / d.width * bins).round() / bins
    d["off"] = (d.kept_filters - d.bin * d.width).abs()
    d = d[(d.bin > 0) & (d.bin < 1) & (d.off <= 1)].sort_values("off")
    keys = ["block", "strategy", "treatment", "bin"]
    return d.drop_duplicates(keys).sort_values(keys).drop(columns="off")


def drop_heatmaps(df: pd.DataFrame, panels, bins: int = 8, eval_images: int | None = None,
                  vmax: float | None = None, split: str = "validation"):
    """Accuracy drop (percentage points, from the unpruned network) per block and fraction of
    conv1 filters kept, one heatmap per ``(strategy, treatment)`` panel."""
    d = kept_bins(df, bins)
    d["drop_pts"] = 100 * d["drop"]
    tables = []
    for s, t in panels:
        table = d[(d.strategy == s) & (d.treatment == t)].pivot(
            index="block", columns="bin", values="drop_pts")
        table.columns = [f"{c:.0%}" if c * 100 % 1 == 0 else f"{c:.1%}" for c in table.columns]
        tables.append(table)
    vmax = vmax if vmax is not None else max(float(np.nanmax(t.values)) for t in tables)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels) + 1, 3.7),
                             squeeze=False, sharey=True)
    for j, (ax, table, (s, t)) in enumerate(zip(axes[0], tables, panels, strict=True)):
        sns.heatmap(table, ax=ax, annot=True, fmt=".0f", cmap="rocket_r", vmin=0, vmax=vmax,
                    cbar=j == len(panels) - 1, annot_kws={"fontsize": 7},
                    cbar_kws={"label": "accuracy drop (percentage points)"})
        ax.set_title(f"{s}, {t}", fontsize=10, color=STRATEGY_COLORS.get(s, "black"))
        ax.set_xlabel("conv1 filters kept")
        ax.set_ylabel("block" if j == 0 else "")
        ax.tick_params(axis="x", labelrotation=0, labelsize=8)
    fig.suptitle("Accuracy drop after pruning one block, no fine-tuning"
                 f"{_images(eval_images, split)}", fontsize=11)
    fig.tight_layout()
    return fig


def paired_differences(table: pd.DataFrame, title: str = ""):
    """Accuracy difference A - B (percentage points) with its 95% interval at every (block, k)
    setting of :func:`helpers.study.sweep_results.compare`, one panel per stage, one colour per
    block; filled markers are significant (exact McNemar, 5%), hollow ones ties."""
    stages = sorted(table.block.str[:6].unique())
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.2), sharey=True,
                             squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        part = table[table.block.str.startswith(stage)]
        for j, (c, (name, g)) in enumerate(zip(sns.color_palette("deep"),
                                               part.groupby("block"), strict=False)):
            x = g.kept_filters + (j - 1) * 0.15 * g.width.iloc[0] / 16  # side by side
            err = 100 * np.vstack([g.difference - g.ci_low, g.ci_high - g.difference]).clip(0)
            ax.errorbar(x, 100 * g.difference, yerr=err, fmt="none", ecolor=c, lw=1)
            sig = g.winner != "tie"
            ax.scatter(x[sig], 100 * g.difference[sig], color=c, s=18, label=name, zorder=3)
            ax.scatter(x[~sig], 100 * g.difference[~sig], facecolor="white", edgecolor=c, s=18,
                       zorder=3)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{stage}[0..2]", fontsize=10)
        ax.set_xlabel("conv1 filters kept")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("difference (percentage points)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def rule_means(df: pd.DataFrame, strategies, treatments=("none", "recal", "refit+recal"),
               bins: int = 16, spread: bool = True, dense: float | None = None,
               eval_images: int | None = None, split: str = "validation", title: str = ""):
    """Accuracy against the fraction of conv1 filters kept, averaged over the blocks: one panel
    per treatment, one line per strategy (its mean over the blocks at each kept fraction), the
    blocks' range (lowest to highest) shaded when ``spread``; the thin black line is the
    unpruned network (``dense``, a fraction). Each strategy has its colour and marker
    (:data:`helpers.plots.STRATEGY_COLORS`, :data:`helpers.plots.STRATEGY_MARKERS`); the legend
    sits beside the last panel.

    The readable form of :func:`original_study` (nine lines per panel there), introduced in
    lesson 04 (``notebooks/04_block_pruning.ipynb``, section 6). The fractions are those of
    :func:`kept_bins`; with ``bins=16`` (1/16 .. 15/16) they are exact for widths 16, 32 and
    64, so every block enters every fraction, and only pruned points (k < width).
    """
    d = kept_bins(df[df.strategy.isin(strategies) & df.treatment.isin(treatments)], bins)
    fig, axes = plt.subplots(1, len(treatments), figsize=(4.6 * len(treatments), 3.5),
                             sharey=True, squeeze=False)
    for ax, t in zip(axes[0], treatments, strict=True):
        for s in strategies:
            g = 100 * d[(d.strategy == s) & (d.treatment == t)].groupby("bin").accuracy.agg(
                ["mean", "min", "max"])
            x = 100 * g.index.to_numpy()
            ax.plot(x, g["mean"], color=STRATEGY_COLORS.get(s), lw=1.4, label=s,
                    marker=STRATEGY_MARKERS.get(s, "."), ms=5)
            if spread:
                ax.fill_between(x, g["min"], g["max"], color=STRATEGY_COLORS.get(s), alpha=0.12,
                                lw=0)
        if dense is not None:
            ax.axhline(100 * dense, color="black", lw=0.8)
        ax.set_title(f"treatment: {t}", fontsize=10)
        ax.set_xlabel("conv1 filters kept (% of the block's width)")
    axes[0, 0].set_ylabel("accuracy (%), mean over the blocks", fontsize=9)
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1),
                       borderaxespad=0)  # beside the last panel: it covers no line
    if title or eval_images:
        fig.suptitle(f"{title}{_images(eval_images, split)}", fontsize=10)
    fig.tight_layout()
    return fig


def like_for_like_heatmaps(df: pd.DataFrame, original, arms, reference: str = "l1", **kwargs):
    """:func:`drop_heatmaps` of the ``original`` arm, then of every arm of ``arms`` next to
    the ``reference`` strategy under the *same* treatment, so that each clustering panel is
    compared with like (e.g. ``first`` with refit + recal beside ``l1`` with refit + recal).
    Arms are ``(strategy, treatment)`` pairs; repeated panels are drawn once; ``kwargs`` go to
    :func:`drop_heatmaps`. The figure of the README (``img/block_pruning.png``)."""
    panels = [tuple(original)]
    for strategy, treatment in arms:
        panels += [(reference, treatment), (strategy, treatment)]
    return drop_heatmaps(df, list(dict.fromkeys(panels)), **kwargs)
