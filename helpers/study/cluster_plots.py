"""Figures of notebook 03 (filters and clusters): filters, k-means++ seeds, cluster maps, scores.

Each clustering score is drawn against the same score of structureless references
(:func:`helpers.study.clusters.scores_with_null`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from torch import Tensor

from helpers.plots import STRATEGIES, STRATEGY_COLORS, STRATEGY_MARKERS  # and the style

# --------------------------------------------------------------------------- filters and clusters


def rgb_filters(weight: Tensor, ncols: int = 8):
    """The stem's 3x3 RGB filters as tiny colour images (mid-gray = 0, per-filter contrast)."""
    w = weight.detach().cpu().float()
    scale = w.abs().amax((1, 2, 3), keepdim=True).clamp(min=1e-12)
    img = (0.5 + 0.5 * w / scale).permute(0, 2, 3, 1).numpy()
    nrows = -(-len(w) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.1 * ncols, 1.25 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(w):
            ax.imshow(img[i], interpolation="nearest")
            ax.set_title(str(i), fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def filter_matrices(weights: dict[str, Tensor], labels: dict[str, np.ndarray] | None = None,
                    ncols: int = 3):
    """Each conv1 as a matrix, one row per filter (its in x 3 x 3 weights), red > 0 > blue.

    With ``labels`` (cluster of each filter), the rows are grouped by cluster and separated by
    lines.
    """
    names = list(weights)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        w = weights[name].detach().cpu().float().flatten(1).numpy()
        if labels is not None:
            order = np.argsort(labels[name], kind="stable")
            w = w[order]
            cuts = np.flatnonzero(np.diff(np.asarray(labels[name])[order])) + 0.5
            for y in cuts:
                ax.axhline(y, color="black", lw=0.6)
        lim = np.abs(w).max()
        ax.imshow(w, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"{name}: {w.shape[0]} filters x {w.shape[1]} weights", fontsize=10)
        ax.set_xticks([])
        ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylabel("filter" if labels is None else "filter (grouped by cluster)", fontsize=9)
        ax.grid(False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _pca(features: np.ndarray):
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit(features)


def kmeanspp_seeding(features: np.ndarray, k: int, seed: int = 0, ax=None, title: str = ""):
    """The first ``k`` seeds of one k-means++ initialisation, numbered in the order drawn,
    on a 2-D PCA map of the filters."""
    from sklearn.cluster import kmeans_plusplus

    pca = _pca(features)
    xy = pca.transform(features)
    _, idx = kmeans_plusplus(features, k, random_state=seed)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(xy[:, 0], xy[:, 1], s=25, color="0.6", label="filter")
    ax.scatter(xy[idx, 0], xy[idx, 1], s=90, facecolors="none", edgecolors="crimson",
               linewidths=1.6, label="seed")
    for n, i in enumerate(idx, 1):
        ax.annotate(str(n), xy[i], xytext=(4, 4), textcoords="offset points", fontsize=9,
                    color="crimson", weight="bold")
    ax.set_title(title or f"k-means++ seeds, in order ({k} of {len(features)} filters)",
                 fontsize=10)
    ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # beside
    return ax.figure


# the member of each cluster a rule keeps: the one nearest the centroid, or the lowest-index one
# ("centroid" keeps the lowest-index member's channel with the centroid's weights)
KEPT_MEMBER = {"nearest": ("nearest", "merge"), "first": ("first", "centroid")}


def _kept_style(rule: str) -> dict:
    """A hollow marker in the rule's own marker and colour (helpers.plots), drawn over the
    cluster-coloured filters."""
    return {"marker": STRATEGY_MARKERS[rule], "facecolors": "none",
            "edgecolors": [STRATEGY_COLORS[rule]], "linewidths": 1.6}


def cluster_map(features: np.ndarray, clustering, ax=None, title: str = "",
                show_first: bool = True):
    """Filters on a 2-D PCA map (of the filters), coloured by cluster.

    x: centroid; large hollow marker in the "nearest" rule's marker and colour: the member
    nearest its centroid (what "nearest" and "merge" keep); small hollow marker in the "first"
    rule's: the lowest-index member (what "first" and "centroid" keep).
    """
    pca = _pca(features)
    xy, cxy = pca.transform(features), pca.transform(clustering.centroids)
    k = len(clustering.centroids)
    colors = sns.color_palette("husl", k)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5))
    for c in range(k):
        m = clustering.labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=22, color=colors[c], alpha=0.85)
        ax.scatter(cxy[c, 0], cxy[c, 1], s=70, marker="X", color=colors[c], edgecolors="black",
                   linewidths=0.6)
    near = clustering.nearest
    ax.scatter(xy[near, 0], xy[near, 1], s=140, **_kept_style("nearest"))
    if show_first:
        first = clustering.first
        ax.scatter(xy[first, 0], xy[first, 1], s=55, **_kept_style("first"))
    ax.set_title(title or f"{len(features)} filters, k = {k}", fontsize=10)
    ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%})", fontsize=9)
    ax.set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})", fontsize=9)
    ax.tick_params(labelsize=7)
    return ax.figure


def cluster_map_legend(fig, show_first: bool = True, rules=STRATEGIES) -> None:
    """One legend for a figure of :func:`cluster_map` panels, below the panels (it covers no
    filter). ``rules``: the rules named as keeping each member, e.g. ``("first", "nearest")``
    in lesson 03, before lesson 04 introduces the others."""
    from matplotlib.lines import Line2D

    def kept(member: str, what: str) -> Line2D:
        names = ", ".join(f'"{r}"' for r in KEPT_MEMBER[member] if r in rules)
        return Line2D([], [], ls="", marker=STRATEGY_MARKERS[member], markerfacecolor="none",
                      markeredgecolor=STRATEGY_COLORS[member], markeredgewidth=1.6,
                      markersize=10 if member == "nearest" else 7,
                      label=f"{what} (kept by {names})")

    handles = [
        Line2D([], [], ls="", marker="o", color="0.5", label="filter (colour = cluster)"),
        Line2D([], [], ls="", marker="X", color="0.5", markeredgecolor="black", markersize=9,
               label="centroid of a cluster"),
        kept("nearest", "member nearest the centroid")]
    if show_first:
        handles.append(kept("first", "lowest-index member"))
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=9,
               bbox_to_anchor=(0.5, 0.0), frameon=False)


# --------------------------------------------------------------------------- notebook 03: clusters


NULL_LABELS = {"gaussian": "random directions, same norms",
               "shuffled": "weights shuffled across filters",
               "gaussian_cov": "one Gaussian blob, same covariance"}


def cluster_maps(features: dict[str, np.ndarray], clusterings: dict, ncols: int = 3):
    """:func:`cluster_map` of several blocks in one figure, with one shared legend."""
    names = list(features)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        c = clusterings[name]
        cluster_map(features[name], c, ax=ax,
                    title=f"{name}: {len(features[name])} filters, k = {len(c.centroids)}")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    cluster_map_legend(fig)
    return fig


def bn_scales(scales: dict[str, np.ndarray], ax=None):
    """The bn1 scale |gamma| / sqrt(var + eps) of every conv1 channel, one strip per block."""
    df = pd.DataFrame([{"block": name, "|BN scale|": float(v)} for name, s in scales.items()
                       for v in np.abs(np.asarray(s))])
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    sns.stripplot(df, x="block", y="|BN scale|", ax=ax, size=3, jitter=0.25)
    ax.set_yscale("log")
    ax.set_title("bn1 scale of every conv1 channel", fontsize=10)
    ax.tick_params(axis="x", labelrotation=45)
    return ax.figure


def raw_and_folded_maps(raw: tuple[np.ndarray, object], folded: tuple[np.ndarray, object],
                        block: str):
    """Two :func:`cluster_map` panels of one block: raw filters, then BN-folded filters + bias
    (each ``(features, clustering)``), each on its own PCA map."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.9))
    for ax, (x, c), what in zip(axes, (raw, folded), ("raw filters", "BN-folded filters + bias"),
                                strict=True):
        cluster_map(x, c, ax=ax, title=f"{block}, {what}, k = {len(c.centroids)}")
    fig.tight_layout()
    return fig


def scores_against_null(scores: pd.DataFrame, metric: str = "silhouette", features: str = "raw",
                        ncols: int = 3):
    """One panel per block: a clustering score of the trained filters against k (black) and
    the same score for each structureless reference (dashed: mean of the draws; band: their
    range). ``scores`` as returned by :func:`helpers.study.clusters.scores_with_null`; ``metric``
    "silhouette" or "inertia_fraction" (the elbow curve)."""
    ylabel = {"silhouette": "mean silhouette",
              "inertia_fraction": "inertia / total sum of squares"}
    if metric not in ylabel:
        raise ValueError(f"metric must be one of {list(ylabel)}, got {metric!r}")
    s = scores[(scores.features == features) & scores[metric].notna()]
    if not len(s):
        raise ValueError(f"no {metric} values for features={features!r} in scores")
    names = list(dict.fromkeys(s.block))
    nulls = [k for k in dict.fromkeys(s.source) if k != "trained"]
    colors = dict(zip(nulls, sns.color_palette("deep", len(nulls)), strict=True))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.5 * ncols, 2.5 * nrows), squeeze=False,
                             sharey=metric == "inertia_fraction")
    for ax, name in zip(axes.flat, names, strict=False):
        g = s[s.block == name]
        for kind in nulls:
            n = g[g.source == kind].groupby("k")[metric]
            lo, hi, mean = n.min(), n.max(), n.mean()
            ax.fill_between(mean.index, lo, hi, color=colors[kind], alpha=0.25, lw=0)
            ax.plot(mean.index, mean, color=colors[kind], lw=1.1, ls="--",
                    label=f"{kind}: {NULL_LABELS.get(kind, kind)}")
        t = g[g.source == "trained"].sort_values("k")
        ax.plot(t.k, t[metric], color="black", marker=".", ms=4, lw=1.5, label="trained filters")
        ax.set_title(f"{name} ({int(g.width.iloc[0])} filters)", fontsize=10)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("k (clusters = filters kept)", fontsize=9)
    for row in axes:
        row[0].set_ylabel(ylabel[metric], fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(f"{ylabel[metric].capitalize()} against k, {features} filters", fontsize=11)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
               fontsize=8, frameon=False)
    return fig
