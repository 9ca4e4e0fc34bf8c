"""Figures shared by the notebooks (matplotlib + seaborn)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

sns.set_theme(style="whitegrid", context="notebook")
plt.rcParams["figure.dpi"] = 80  # one style for the series; small figures keep notebooks light


def show_jpeg(fig, quality: int = 80) -> None:
    """Display ``fig`` as a JPEG (photos compress ~5x better than as PNG), then close it."""
    import io

    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=fig.dpi, bbox_inches="tight",
                pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="jpeg"))


def to_hwc(images: Tensor) -> np.ndarray:
    """uint8 (N, 3, H, W) tensors -> (N, H, W, 3) arrays for imshow."""
    return images.permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: Tensor, labels: Tensor, classes: list[str], per_class: int = 8):
    """The first ``per_class`` images of every class, one row per class."""
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.9, len(classes)))
    for c, row in enumerate(axes):
        picks = torch.nonzero(labels == c).flatten()[:per_class]
        for ax, img in zip(row, to_hwc(images[picks]), strict=False):
            ax.imshow(img)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        row[0].set_ylabel(classes[c], rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    return fig


def augmentation_preview(original: Tensor, augmented: list[Tensor]):
    """Each row: an image, then several random crops/flips of it."""
    n = len(original)
    fig, axes = plt.subplots(n, 1 + len(augmented), figsize=(1.2 * (1 + len(augmented)), 1.2 * n),
                             squeeze=False)
    columns = [original, *augmented]
    for j, batch in enumerate(columns):
        for i, img in enumerate(to_hwc(batch)):
            axes[i, j].imshow(img)
            axes[i, j].axis("off")
        axes[0, j].set_title("original" if j == 0 else f"draw {j}", fontsize=9)
    fig.tight_layout(pad=0.2)
    return fig


def class_counts(splits: dict[str, Tensor], classes: list[str]):
    """Bar chart of images per class, one panel per split (e.g. train / val / test labels)."""
    df = pd.DataFrame({"class": [classes[i] for labels in splits.values()
                                 for i in labels.tolist()],
                       "split": [f"{name} ({len(labels):,})" for name, labels in splits.items()
                                 for _ in range(len(labels))]})
    g = sns.catplot(df, y="class", col="split", kind="count", sharex=False, height=3.0,
                    aspect=0.9, color="steelblue", order=classes)
    g.set_titles("{col_name} images")
    return g.figure


def training_curves(history: list[dict], axes=None):
    """Loss and accuracy per epoch: training (augmented) and validation."""
    df = pd.DataFrame(history)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax_loss, ax_acc, ax_lr = axes
    ax_loss.plot(df.epoch, df.train_loss, label="train")
    ax_acc.plot(df.epoch, 100 * df.train_accuracy, label="train (augmented)")
    if "val_loss" in df:
        ax_loss.plot(df.epoch, df.val_loss, label="validation")
        ax_acc.plot(df.epoch, 100 * df.val_accuracy,
                    label=f"validation ({int(df.val_images.iloc[-1]):,} images)")
    ax_lr.plot(df.epoch, df.lr, color="gray")
    for ax, title in zip(axes, ("loss", "accuracy (%)", "learning rate at epoch end"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    ax_loss.legend()
    ax_acc.legend()
    ax_acc.set_ylim(max(0, 100 * df.train_accuracy.min() - 5), 100)
    ax_loss.figure.tight_layout()
    return ax_loss.figure


class LiveCurves:
    """A training callback that redraws :func:`training_curves` in place while training runs.

    In Jupyter the figure updates in one output; elsewhere (scripts, papermill) it only keeps
    the history, and ``figure()`` draws the final curves.
    """

    def __init__(self, every: int = 1):
        self.every, self.history, self.handle = every, [], None

    def __call__(self, record: dict) -> None:
        self.history.append(record)
        if len(self.history) % self.every:
            return
        try:
            from IPython.display import display
        except ImportError:
            return
        fig = self.figure()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)

    def figure(self):
        return training_curves(self.history)


def confusion_matrix(logits: Tensor, labels: Tensor, classes: list[str], ax=None,
                     split: str = "validation"):
    """Row-normalised confusion matrix (% of each true class), with the image count."""
    pred = logits.argmax(1)
    n = len(classes)
    counts = torch.bincount(labels * n + pred, minlength=n * n).view(n, n).float()
    pct = 100 * counts / counts.sum(1, keepdim=True).clamp(min=1)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    sns.heatmap(pd.DataFrame(pct.numpy(), index=classes, columns=classes), annot=True, fmt=".0f",
                cmap="Blues", cbar=False, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, % of each class ({len(labels):,} {split} images)")
    return ax.figure


def layer_macs(table: pd.DataFrame, ax=None):
    """MACs of every convolution and the classifier of a ``metrics.layer_table``, one bar per
    layer, coloured by ``metrics.layer_part``; the legend sits outside the axes."""
    from helpers.metrics import LAYER_PARTS, layer_part

    layers = table[table.MACs > 0]
    parts = layers.layer.map(layer_part)
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 3.5))
    sns.barplot(x=layers.layer, y=layers.MACs / 1e6, hue=parts, dodge=False, ax=ax,
                hue_order=[p for p in LAYER_PARTS if p in set(parts)])
    ax.set(xlabel="layer", ylabel="MACs per image (M)")
    ax.tick_params(axis="x", rotation=90)
    ax.legend(title="part of the network", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


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
    ax.legend(fontsize=8, loc="best")
    return ax.figure


def cluster_map(features: np.ndarray, clustering, ax=None, title: str = "",
                show_first: bool = True):
    """Filters on a 2-D PCA map (of the filters), coloured by cluster.

    x: centroid; ringed: the member nearest its centroid (what "nearest" and "merge" keep);
    small black square: the lowest-index member (what "first" and "centroid" keep).
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
    ax.scatter(xy[near, 0], xy[near, 1], s=110, facecolors="none", edgecolors="black",
               linewidths=1.2)
    if show_first:
        ax.scatter(xy[clustering.first, 0], xy[clustering.first, 1], s=10, marker="s",
                   color="black")
    ax.set_title(title or f"{len(features)} filters, k = {k}", fontsize=10)
    ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%})", fontsize=9)
    ax.set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})", fontsize=9)
    ax.tick_params(labelsize=7)
    return ax.figure


def cluster_map_legend(fig, show_first: bool = True) -> None:
    """One legend for a figure of :func:`cluster_map` panels."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker="o", color="0.5", label="filter (colour = cluster)"),
        Line2D([], [], ls="", marker="X", color="0.5", markeredgecolor="black", markersize=9,
               label="centroid"),
        Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="black",
               markersize=10, label='nearest member (kept by "nearest", "merge")')]
    if show_first:
        handles.append(Line2D([], [], ls="", marker="s", color="black", markersize=4,
                              label='lowest-index member (kept by "first", "centroid")'))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9,
               bbox_to_anchor=(0.5, -0.04), frameon=False)


# --------------------------------------------------------------------------- block pruning sweep


STRATEGY_COLORS = dict(zip(("centroid", "first", "nearest", "merge", "l1", "random"),
                           sns.color_palette("deep", 6), strict=True))
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
                            color=STRATEGY_COLORS.get(s), marker="." if len(h) < 20 else None,
                            lw=1.2, label=f"{s}, {t}")
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
                    cbar_kws={"label": "accuracy drop (points)"})
        ax.set_title(f"{s}, {t}", fontsize=10)
        ax.set_xlabel("conv1 filters kept")
        ax.set_ylabel("block" if j == 0 else "")
        ax.tick_params(axis="x", labelrotation=0, labelsize=8)
    fig.suptitle("Accuracy drop after pruning one block, no fine-tuning"
                 f"{_images(eval_images, split)}", fontsize=11)
    fig.tight_layout()
    return fig


def paired_differences(table: pd.DataFrame, title: str = ""):
    """Accuracy difference A - B (points) with its 95% interval at every (block, k) point of
    :func:`helpers.sweep.compare`, one panel per stage, one colour per block; filled markers
    are significant (exact McNemar, 5%), hollow ones ties."""
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
    axes[0, 0].set_ylabel("difference (points)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


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
    range). ``scores`` as returned by :func:`helpers.clusters.scores_with_null`; ``metric``
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


def show_png(fig, colors: int = 128, dpi: float = 80) -> None:
    """Display ``fig`` as a PNG with an adaptive palette of ``colors`` colours, then close it.

    Line plots with shaded bands, scatter plots and colour-mapped matrices lose nothing visible
    and take 3-4x fewer bytes than matplotlib's full-colour PNG.
    """
    import io

    from IPython.display import Image, display
    from PIL import Image as PILImage

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    img = PILImage.open(buf).convert("RGB").quantize(colors)
    out = io.BytesIO()
    img.save(out, format="png", optimize=True)
    display(Image(data=out.getvalue(), format="png"))
