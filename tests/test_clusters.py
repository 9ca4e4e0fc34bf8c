"""helpers.clusters: batches of clusterings, their scores, raw against BN-folded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.clusters import canonical_labels, cluster_scores, cluster_table, folding_comparison
from helpers.pruning import cluster_filters
from tests.test_pruning import make_model, one_thread  # noqa: F401 (autouse fixture)


def test_canonical_labels():
    assert canonical_labels([2, 2, 0, 1, 0]) == [0, 0, 1, 2, 1]
    assert canonical_labels(np.array([5, 1, 5])) == [0, 1, 0]


def test_cluster_table_is_cluster_filters():
    m = make_model()
    req = [("layer1.0", 4, False), ("layer2.1", 7, True), ("layer1.0", 4, False)]
    table = cluster_table(m, req, seed=2, progress=False)
    assert len(table) == 2
    for (block, k, fold), c in table.items():
        ref = cluster_filters(m, block, k, fold_bn=fold, seed=2)
        assert np.array_equal(c.labels, ref.labels) and np.allclose(c.centroids, ref.centroids)


@pytest.mark.slow
def test_cluster_table_in_worker_processes_gives_the_same_result():
    m = make_model()
    req = [("layer3.0", k, fold) for k in (3, 20) for fold in (False, True)]
    serial = cluster_table(m, req, jobs=1, progress=False)
    parallel = cluster_table(m, req, jobs=2, progress=False)
    for key in req:
        assert canonical_labels(serial[key].labels) == canonical_labels(parallel[key].labels)
        assert np.allclose(serial[key].centroids, parallel[key].centroids)


def test_cluster_scores():
    m = make_model()
    df = cluster_scores(m, {"layer1.0": [1, 2, 8, 15, 16]}, progress=False)
    assert df.k.tolist() == [1, 2, 8, 15, 16]
    assert np.isclose(df.inertia_fraction.iloc[0], 1.0)  # k = 1: all of the variance
    assert df.inertia_fraction.iloc[-1] == 0.0  # k = width: every filter its own cluster
    assert df.inertia.is_monotonic_decreasing
    assert df.silhouette.isna().tolist() == [True, False, False, False, True]
    assert df.silhouette.dropna().between(-1, 1).all()


def test_folding_with_identical_bn_channels_changes_nothing_else_it_may():
    m = make_model()
    b = m.get_submodule("layer2.1")
    with torch.no_grad():  # every channel: the same scale and shift
        b.bn1.weight.fill_(2.0)
        b.bn1.bias.fill_(0.5)
        b.bn1.running_mean.fill_(0.0)
        b.bn1.running_var.fill_(1.0 - b.bn1.eps)
    df = folding_comparison(m, {"layer2.1": 8, "layer3.0": 16}).set_index("block")
    assert df.loc["layer2.1", "adjusted_rand"] == 1.0 and df.loc["layer2.1", "same_partition"]
    assert np.isclose(df.loc["layer2.1", "bn_scale_max/min"], 1.0)
    assert df.loc["layer3.0", "bn_scale_max/min"] > 1.5  # randomised BN: scales differ
