"""Looking at filter clusterings: many k-means++ runs at once, elbow and silhouette scores,
raw against BN-folded clusterings.

The clustering itself is :func:`helpers.pruning.kmeans` (sklearn's k-means++, best of
``KMEANS_RESTARTS`` seedings); this module runs it for many (block, k, folded?) at once and
scores the results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, silhouette_score
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from helpers.models import BLOCK_NAMES, ResNet
from helpers.pruning import Clustering, bn_scale_shift, filter_features, get_block, kmeans


def _kmeans_job(features: np.ndarray, k: int, seed: int) -> Clustering:
    return kmeans(features, k, seed)


def cluster_table(model: ResNet, requests: Iterable[tuple[str, int, bool]], seed: int = 0,
                  jobs: int | None = None, progress: bool = True
                  ) -> dict[tuple[str, int, bool], Clustering]:
    """:func:`helpers.pruning.kmeans` of every requested ``(block, k, fold_bn)``.

    sklearn's k-means++ seeding on a few dozen filters is mostly Python overhead (tens of ms a
    run), so hundreds of clusterings are worth spreading over processes.

    Args:
        jobs: worker processes. None picks ``cpu_count - 1`` when there are more than 4 CPUs
            and at least 64 clusterings (enough to pay for starting the workers), else 1
            (in this process). The results do not depend on it.
    """
    requests = list(dict.fromkeys(requests))
    features = {(name, fold): filter_features(get_block(model, name), fold)
                for name, fold in {(r[0], r[2]) for r in requests}}
    cpus = os.cpu_count() or 1
    if jobs is None:
        jobs = cpus - 1 if cpus > 4 and len(requests) >= 64 else 1
    todo = [(features[(name, fold)], k, seed) for name, k, fold in requests]
    bar = dict(total=len(todo), desc="k-means++", disable=not progress, mininterval=1.0)
    if jobs > 1:
        from joblib import Parallel, delayed

        run = Parallel(n_jobs=jobs, return_as="generator", batch_size=4)(
            delayed(_kmeans_job)(*t) for t in todo)
        results = list(tqdm(run, **bar))
    else:
        results = [_kmeans_job(*t) for t in tqdm(todo, **bar)]
    return {r: replace(c, block=r[0], folded=r[2])
            for r, c in zip(requests, results, strict=True)}


def canonical_labels(labels: Sequence[int]) -> list[int]:
    """Cluster labels renumbered in order of first appearance: [2, 2, 0, 1] -> [0, 0, 1, 2].

    Two clusterings are the same partition exactly when their canonical labels are equal,
    whatever numbers k-means happened to give the clusters.
    """
    first: dict[int, int] = {}
    return [first.setdefault(int(c), len(first)) for c in labels]


def cluster_scores(model: ResNet, ks: Mapping[str, Sequence[int]], fold_bn: bool = False,
                   seed: int = 0, jobs: int | None = None, progress: bool = True
                   ) -> pd.DataFrame:
    """Inertia and silhouette of the k-means++ clustering of each block's filters, for each k.

    Columns: ``block, width, k, inertia, inertia_fraction`` (of the total sum of squares, the
    inertia at k = 1), ``silhouette`` (sklearn's mean silhouette, defined for 2 <= k < width;
    NaN elsewhere).
    """
    requests = [(name, int(k), fold_bn) for name in ks for k in ks[name]]
    table = cluster_table(model, requests, seed, jobs, progress)
    rows = []
    for name, k, _ in requests:
        x = filter_features(get_block(model, name), fold_bn)
        c = table[(name, k, fold_bn)]
        total = float(((x - x.mean(0)) ** 2).sum())
        sil = silhouette_score(x, c.labels) if 2 <= k < len(x) else np.nan
        rows.append({"block": name, "width": len(x), "k": k, "inertia": c.inertia,
                     "inertia_fraction": c.inertia / total if total else np.nan,
                     "silhouette": sil})
    return pd.DataFrame(rows)


def folding_comparison(model: ResNet, ks: Mapping[str, int], seed: int = 0) -> pd.DataFrame:
    """Raw against BN-folded clusterings of each block at its k: how much do they agree?

    Columns: ``block, k, adjusted_rand`` (1 = the same partition, about 0 = no more alike than
    chance), ``same_partition``, ``same_first`` / ``same_nearest`` (whether the two clusterings
    keep the same set of filters under the "first" / "nearest" rules), the spread of the
    BN scales ``|gamma| / sqrt(var + eps)`` that folding multiplies the filters by, and
    ``bias_share``: the share of the folded features' total variance that lies in their last
    coordinate, the folded bias.
    """
    rows = []
    for name in BLOCK_NAMES:
        if name not in ks:
            continue
        k = int(ks[name])
        x = filter_features(get_block(model, name), True)
        raw = kmeans(filter_features(get_block(model, name), False), k, seed)
        folded = kmeans(x, k, seed)
        var = x.var(0)
        scale, _ = bn_scale_shift(get_block(model, name).bn1)
        scale = scale.detach().abs().cpu().numpy()
        rows.append({
            "block": name, "k": k,
            "adjusted_rand": adjusted_rand_score(raw.labels, folded.labels),
            "same_partition": canonical_labels(raw.labels) == canonical_labels(folded.labels),
            "same_first": set(raw.first) == set(folded.first),
            "same_nearest": set(raw.nearest) == set(folded.nearest),
            "bn_scale_min": float(scale.min()), "bn_scale_max": float(scale.max()),
            "bn_scale_max/min": float(scale.max() / max(scale.min(), 1e-12)),
            "bias_share": float(var[-1] / var.sum()) if var.sum() else np.nan})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ is there anything to find?
# Scores of trained filters mean little on their own: k-means always returns k clusters, and
# a silhouette of 0.1 is what a cloud without any groups gives too. The functions below score
# structureless filters of the same shape beside the trained ones, and measure how much a
# clustering depends on k-means++'s random seed.

NULL_KINDS = ("gaussian", "shuffled", "gaussian_cov")
FEATURES = {"raw": False, "folded": True}  # the two feature spaces, by name: fold_bn


def null_features(features: np.ndarray, kind: str = "gaussian", seed: int = 0) -> np.ndarray:
    """Structureless stand-ins for the filters ``features`` (one filter per row).

    - ``"gaussian"``: isotropic Gaussian directions, each row rescaled to the norm of the real
      filter in its place: same shape and per-filter norms, no preferred direction.
    - ``"shuffled"``: every column (weight position) permuted across the filters on its own:
      each position keeps its values, the filters lose any joint structure.
    - ``"gaussian_cov"``: a Gaussian cloud recoloured to exactly the filters' mean and sample
      covariance: the same elongated shape, but a single blob without groups (the null of
      SigClust, Liu et al. 2008). Exact, not only in expectation: with as few points as
      dimensions, a plain Gaussian draw's covariance is much more elongated than its target.
    """
    if kind not in NULL_KINDS:
        raise ValueError(f"unknown null kind {kind!r}; valid kinds: {', '.join(NULL_KINDS)}")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be a (filters >= 2, weights) array, got {x.shape}")
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        g = rng.standard_normal(x.shape)
        return g * (np.linalg.norm(x, axis=1) / np.linalg.norm(g, axis=1))[:, None]
    if kind == "shuffled":
        return np.take_along_axis(x, rng.permuted(np.indices(x.shape)[0], axis=0), axis=0)
    mean = x.mean(0)  # x - mean = U S V^T; keep S V^T, draw U at random (centred, orthonormal)
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    r = min(len(x) - 1, x.shape[1])  # centred rows span at most n - 1 dimensions
    g = rng.standard_normal((len(x), r))
    q = np.linalg.qr(g - g.mean(0))[0]
    return mean + (q * s[:r]) @ vt[:r]


def _one_thread_kmeans(features: np.ndarray, k: int, seed: int) -> Clustering:
    """:func:`kmeans` on one thread: on a few dozen filters OpenMP threads only add overhead
    (several times slower when the CPU is busy with other work); the result is the same."""
    with threadpool_limits(1):
        return kmeans(features, k, seed)


def _many_kmeans(todo: list[tuple[np.ndarray, int, int]], jobs: int | None,
                 progress: bool) -> list[Clustering]:
    """:func:`kmeans` of every ``(features, k, seed)``, in worker processes when it pays."""
    cpus = os.cpu_count() or 1
    if jobs is None:
        jobs = cpus - 1 if cpus > 4 and len(todo) >= 64 else 1
    bar = dict(total=len(todo), desc="k-means++", disable=not progress, mininterval=1.0)
    if jobs > 1:
        from joblib import Parallel, delayed

        run = Parallel(n_jobs=jobs, return_as="generator", batch_size=8)(
            delayed(_one_thread_kmeans)(*t) for t in todo)
        return list(tqdm(run, **bar))
    return [_one_thread_kmeans(*t) for t in tqdm(todo, **bar)]


def _check_ks(width: int, ks: Iterable[int], block: str) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or not all(1 <= k <= width for k in ks):
        raise ValueError(f"ks for block {block} must be integers in 1..{width}, got {ks}")
    return ks


def scores_with_null(model: ResNet, ks: Mapping[str, Sequence[int]],
                     kinds: Sequence[str] = NULL_KINDS, draws: int = 5,
                     features: Sequence[str] = ("raw", "folded"), seed: int = 0,
                     jobs: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Inertia and silhouette of the trained filters and of ``draws`` structureless sets of
    each null kind (:func:`null_features`), for every block, k and feature space.

    Columns: ``features`` ("raw" or "folded": bn1 folded in, see
    :func:`helpers.pruning.filter_features`), ``source`` ("trained" or the null kind),
    ``draw`` (0 for trained), then those of :func:`cluster_scores`. The trained rows equal
    :func:`cluster_scores`; null draw ``d`` of a block is the same whatever else is asked.
    """
    if draws < 0 or any(f not in FEATURES for f in features):
        raise ValueError(f"need draws >= 0 and features among {list(FEATURES)}")
    for kind in kinds:
        null_features(np.zeros((2, 1)), kind)  # unknown kinds fail here, before any work
    sets = []  # (features, source, draw, block, array)
    for name in ks:
        for f in features:
            x = filter_features(get_block(model, name), FEATURES[f])
            sets.append((f, "trained", 0, name, x))
            for kind in kinds:
                for d in range(draws):
                    s = [seed, d, BLOCK_NAMES.index(name), NULL_KINDS.index(kind), int(FEATURES[f])]
                    sets.append((f, kind, d, name, null_features(x, kind, s)))
    jobs_list = [(s, _check_ks(len(s[4]), ks[s[3]], s[3])) for s in sets]
    todo = [(s[4], k, seed) for s, kk in jobs_list for k in kk]
    results = iter(_many_kmeans(todo, jobs, progress))
    rows = []
    for (f, source, d, name, x), kk in jobs_list:
        total = float(((x - x.mean(0)) ** 2).sum())
        for k in kk:
            c = next(results)
            rows.append({"features": f, "source": source, "draw": d, "block": name,
                         "width": len(x), "k": k, "inertia": c.inertia,
                         "inertia_fraction": c.inertia / total if total else np.nan,
                         "silhouette": silhouette_score(x, c.labels) if 2 <= k < len(x)
                         else np.nan})
    return pd.DataFrame(rows)


def _null_row(trained: pd.DataFrame, null: pd.DataFrame, fraction: float) -> dict:
    best = trained.loc[trained.silhouette.idxmax()]
    per_draw = null.groupby("draw").silhouette.max()  # each draw's best k, as for trained
    k_half = int(trained.k.iloc[(trained.k - fraction * trained.width).abs().argmin()])
    return {"best k": int(best.k), "silhouette": best.silhouette,
            "null silhouette": per_draw.mean(), "null max": per_draw.max(),
            "draws beaten": int((best.silhouette > per_draw).sum()), "draws": len(per_draw),
            "k": k_half,
            "inertia left": float(trained.loc[trained.k == k_half, "inertia_fraction"].iloc[0]),
            "null inertia left": float(null.loc[null.k == k_half, "inertia_fraction"].mean())}


def null_summary(scores: pd.DataFrame, kind: str = "gaussian_cov",
                 fraction: float = 0.5) -> pd.DataFrame:
    """Trained filters against one structureless reference, per feature space and block.

    From :func:`scores_with_null`: ``silhouette`` is the trained filters' best mean silhouette
    over the k scored (at ``best k``); ``null silhouette`` / ``null max`` the mean / largest of
    the same best-over-k silhouette of each null draw (a fair comparison: both pick their best
    k); ``draws beaten``: how many of the ``draws`` the trained filters beat (all of them by
    chance 1 in draws + 1, if the trained filters were one more draw of the null).
    ``inertia left`` / ``null inertia left``: the share of the total sum of squares left at
    the scored ``k`` nearest ``fraction`` x width (trained; mean of the draws).
    """
    have = scores[scores.silhouette.notna()]
    rows = []
    for (f, name), g in have.groupby(["features", "block"], sort=False):
        null = g[g.source == kind]
        if not len(null):
            raise ValueError(f"no {kind!r} null draws for {f} {name} in scores")
        rows.append({"features": f, "block": name,
                     **_null_row(g[g.source == "trained"], null, fraction)})
    if not rows:
        raise ValueError("scores hold no silhouette (every k is 1 or the width)")
    return pd.DataFrame(rows).set_index(["features", "block"])


def null_counts(scores: pd.DataFrame) -> pd.DataFrame:
    """For each null kind and feature space: in how many blocks the trained filters' best
    silhouette beats every null draw (see :func:`null_summary`), how likely at least that many
    would be if the trained filters were structureless (``p``: binomial tail, each block
    beating all its n draws with chance 1 / (n + 1), the blocks' draws independent), and the
    median gap between the trained and the draws' mean silhouette."""
    from scipy.stats import binom

    kinds = [s for s in scores.source.unique() if s != "trained"]
    rows = []
    for kind in kinds:
        s = null_summary(scores, kind)
        for f, g in s.groupby(level="features", sort=False):
            wins = int((g["draws beaten"] == g["draws"]).sum())
            chance = float((1 / (g["draws"] + 1)).mean())
            rows.append({"null": kind, "features": f, "blocks": len(g),
                         "beats every draw": wins, "p": float(binom.sf(wins - 1, len(g), chance)),
                         "median silhouette gap": float((g.silhouette
                                                         - g["null silhouette"]).median())})
    return pd.DataFrame(rows).set_index(["null", "features"])


def seed_stability(model: ResNet, block: str, ks: Iterable[int], seeds: int | Sequence[int] = 5,
                   fold_bn: bool = False, null: str | None = None,
                   null_seed: int = 0) -> pd.DataFrame:
    """How much the k-means++ clustering of one block's filters depends on its random seed.

    Clusters the filters with every seed (``seeds``: a count, meaning 0..n-1, or the seeds
    themselves), each run the best of ``KMEANS_RESTARTS`` seedings as in pruning, and compares
    every pair of seeds. With ``null``, the filters are first replaced by
    ``null_features(features, null, null_seed)``: what a structureless cloud gives.

    Columns: ``block, width, k, kept_fraction, source`` ("trained" or the null kind),
    ``seeds, ari_mean, ari_min`` (adjusted Rand index over the pairs: 1 = same partition),
    ``identical`` (share of pairs giving the same partition), ``same_nearest`` (share of pairs
    keeping the same filters under "nearest"), ``inertia_spread`` ((max - min) / min).
    """
    seeds = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else list(seeds)
    if len(set(seeds)) < 2:
        raise ValueError(f"seed_stability needs at least two different seeds, got {seeds}")
    x = filter_features(get_block(model, block), fold_bn)
    if null is not None:
        x = null_features(x, null, null_seed)
    rows = []
    for k in _check_ks(len(x), ks, block):
        runs = [_one_thread_kmeans(x, k, s) for s in seeds]
        pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]]
        ari = [adjusted_rand_score(a.labels, b.labels) for a, b in pairs]
        inertia = [r.inertia for r in runs]
        rows.append({
            "block": block, "width": len(x), "k": k, "kept_fraction": k / len(x),
            "source": null or "trained", "seeds": len(seeds), "ari_mean": float(np.mean(ari)),
            "ari_min": float(np.min(ari)),
            "identical": float(np.mean([canonical_labels(a.labels) == canonical_labels(b.labels)
                                        for a, b in pairs])),
            "same_nearest": float(np.mean([set(a.nearest) == set(b.nearest) for a, b in pairs])),
            "inertia_spread": (max(inertia) - min(inertia)) / min(inertia) if min(inertia) > 0
            else 0.0})
    return pd.DataFrame(rows)


def k_grid(widths: Mapping[str, int], points: int | None = None,
           kept: Iterable[float] | None = None) -> dict[str, list[int]]:
    """The k to score in each block (increasing): with ``kept``, k = round(fraction x width)
    (at least 1) for each fraction; else k = 1 and k = round(i x width / points) for
    i = 1..points; with neither, every k from 1 to the width."""
    if points is not None and points < 1:
        raise ValueError(f"points must be a positive integer or None, got {points!r}")
    if kept is not None:
        kept = list(kept)
        if not all(0 < f <= 1 for f in kept):
            raise ValueError(f"kept fractions must lie in (0, 1], got {kept}")
    out = {}
    for name, w in widths.items():
        if kept is not None:
            ks = {max(1, round(f * w)) for f in kept}
        elif points is not None:
            ks = {1} | {max(1, round(i * w / points)) for i in range(1, points + 1)}
        else:
            ks = set(range(1, w + 1))
        out[name] = sorted(ks)
    return out
