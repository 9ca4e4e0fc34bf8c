"""Looking at filter clusterings: many k-means++ runs at once, elbow and silhouette scores,
raw against BN-folded clusterings.

The clustering itself is :func:`helpers.pruning.kmeans` (sklearn's k-means++, best of
``KMEANS_RESTARTS`` seedings); this module runs it for many (block, k, folded?) at once and
scores the results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, silhouette_score
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
    return dict(zip(requests, results, strict=True))


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
