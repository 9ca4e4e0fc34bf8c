"""helpers.study.clusters: batches of clusterings, their scores, raw against BN-folded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from helpers.pruning import cluster_filters
from helpers.study.clusters import (
    NULL_KINDS,
    canonical_labels,
    cluster_scores,
    cluster_table,
    folding_comparison,
    k_grid,
    null_counts,
    null_features,
    null_summary,
    scores_with_null,
    seed_stability,
)
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


def grouped_model(groups: int = 4, block: str = "layer1.0", noise: float = 0.01):
    """A model whose ``block`` conv1 filters form ``groups`` tight, well-separated groups."""
    m = make_model()
    w = m.get_submodule(block).conv1.weight
    gen = torch.Generator().manual_seed(3)
    centres = torch.randn(groups, *w.shape[1:], generator=gen)
    with torch.no_grad():
        w.copy_(centres[torch.arange(len(w)) % groups]
                + noise * torch.randn(w.shape, generator=gen))
    return m


def test_k_grid():
    widths = {"a": 16, "b": 64}
    assert k_grid(widths, 4) == {"a": [1, 4, 8, 12, 16], "b": [1, 16, 32, 48, 64]}
    assert k_grid(widths)["a"] == list(range(1, 17))
    assert k_grid(widths, kept=(0.5, 0.01)) == {"a": [1, 8], "b": [1, 32]}
    with pytest.raises(ValueError):
        k_grid(widths, 0)
    with pytest.raises(ValueError):
        k_grid(widths, kept=(1.5,))


def test_null_features_keep_what_they_promise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 30)) * np.linspace(0.1, 3, 30) + 0.5
    g = null_features(x, "gaussian", seed=1)
    assert g.shape == x.shape and not np.allclose(g, x)
    assert np.allclose(np.linalg.norm(g, axis=1), np.linalg.norm(x, axis=1))
    assert np.array_equal(g, null_features(x, "gaussian", seed=1))
    assert not np.allclose(g, null_features(x, "gaussian", seed=2))
    s = null_features(x, "shuffled", seed=1)
    assert np.array_equal(np.sort(s, axis=0), np.sort(x, axis=0)) and not np.array_equal(s, x)
    c = null_features(x, "gaussian_cov", seed=1)
    assert np.allclose(c.mean(0), x.mean(0)) and not np.allclose(c, x)
    assert np.allclose(np.cov(c, rowvar=False), np.cov(x, rowvar=False))
    wide = rng.standard_normal((40, 6))  # more filters than weights: covariance still exact
    assert np.allclose(np.cov(null_features(wide, "gaussian_cov"), rowvar=False),
                       np.cov(wide, rowvar=False))
    with pytest.raises(ValueError, match="unknown null kind"):
        null_features(x, "uniform")
    with pytest.raises(ValueError):
        null_features(x[:1], "gaussian")


def test_scores_with_null_trained_rows_are_cluster_scores():
    m = make_model()
    ks = {"layer1.0": [1, 4, 16], "layer2.0": [3]}
    df = scores_with_null(m, ks, kinds=("gaussian", "shuffled"), draws=2, progress=False)
    assert len(df) == 2 * (1 + 2 * 2) * 4  # features x (trained + kinds x draws) x (block, k)
    for f, fold in (("raw", False), ("folded", True)):
        ref = cluster_scores(m, ks, fold_bn=fold, progress=False)
        got = df[(df.features == f) & (df.source == "trained")].reset_index(drop=True)
        assert np.allclose(got.inertia, ref.inertia)
        assert np.allclose(got.silhouette, ref.silhouette, equal_nan=True)
    null = df[df.source != "trained"]
    assert np.allclose(null[null.k == 1].inertia_fraction, 1.0)
    alone = scores_with_null(m, {"layer1.0": [4]}, kinds=("gaussian",), draws=2,
                             features=("raw",), progress=False)
    same = null[(null.block == "layer1.0") & (null.k == 4) & (null.source == "gaussian")
                & (null.features == "raw")]
    assert np.allclose(alone[alone.source == "gaussian"].inertia, same.inertia)
    with pytest.raises(ValueError):
        scores_with_null(m, {"layer1.0": [17]}, draws=1, progress=False)


def test_grouped_filters_beat_every_null():
    m = grouped_model(groups=4)
    df = scores_with_null(m, {"layer1.0": [1, 2, 4, 8, 16]}, draws=3, features=("raw",),
                          progress=False)
    for kind in NULL_KINDS:
        row = null_summary(df, kind).loc[("raw", "layer1.0")]
        assert row["best k"] == 4 and row["silhouette"] > 0.9
        assert row["draws beaten"] == row["draws"] == 3
        assert row["inertia left"] < row["null inertia left"]  # at k = 8
    counts = null_counts(df)
    assert counts["beats every draw"].tolist() == [1, 1, 1]
    assert np.allclose(counts.p, 1 / 4)  # one block beating all of its 3 draws: chance 1/4
    assert list(counts.index.get_level_values("null")) == list(NULL_KINDS)


def test_seed_stability():
    m = grouped_model(groups=4)
    df = seed_stability(m, "layer1.0", [4], seeds=4)
    assert df.ari_mean.tolist() == [1.0] and df.identical.tolist() == [1.0]
    assert df.same_nearest.tolist() == [1.0] and np.isclose(df.inertia_spread.iloc[0], 0)
    m = make_model()
    df = seed_stability(m, "layer2.0", [5, 16], seeds=(0, 1))
    assert df.k.tolist() == [5, 16] and df.kept_fraction.tolist() == [5 / 32, 0.5]
    a, b = (cluster_filters(m, "layer2.0", 5, seed=s) for s in (0, 1))
    assert np.isclose(df.ari_mean.iloc[0], adjusted_rand_score(a.labels, b.labels))
    null = seed_stability(m, "layer2.0", [5], seeds=3, fold_bn=True, null="shuffled")
    assert null.source.tolist() == ["shuffled"] and null.seeds.tolist() == [3]
    with pytest.raises(ValueError, match="two different seeds"):
        seed_stability(m, "layer2.0", [5], seeds=[1, 1])
    with pytest.raises(ValueError):
        seed_stability(m, "layer2.0", [33], seeds=2)


def test_scores_against_null_draws_one_panel_per_block():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.study.cluster_plots import scores_against_null

    df = scores_with_null(make_model(), {"layer1.0": [1, 2, 8], "layer1.1": [2, 8]},
                          kinds=("gaussian",), draws=2, features=("raw",), progress=False)
    fig = scores_against_null(df, "silhouette", "raw", ncols=2)
    assert sum(ax.get_visible() and ax.axison for ax in fig.axes) == 2
    assert len(fig.axes[0].lines) == 2  # null mean and trained
    plt.close(fig)
    with pytest.raises(ValueError):
        scores_against_null(df, "silhouette", "folded")


def test_cluster_map_marks_each_rule_in_its_marker_and_colour_and_names_only_given_rules():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from helpers.plots import STRATEGY_COLORS
    from helpers.pruning import filter_features
    from helpers.study.cluster_plots import cluster_map, cluster_map_legend
    from tests.test_sweep import legend_covers

    m = make_model()
    c = cluster_filters(m, "layer2.0", 8, seed=0)
    fig = cluster_map(filter_features(m.get_submodule("layer2.0")), c)
    kept = {rule: [col for col in fig.axes[0].collections
                   if len(col.get_offsets()) == len(getattr(c, rule))
                   and len(col.get_edgecolors())
                   and to_rgb(col.get_edgecolors()[0]) == to_rgb(STRATEGY_COLORS[rule])]
            for rule in ("first", "nearest")}
    assert all(len(v) == 1 for v in kept.values()), kept
    cluster_map_legend(fig, rules=("first", "nearest"))  # lesson 03: no other rule known yet
    text = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert '"first"' in text and '"nearest"' in text
    assert '"merge"' not in text and '"centroid"' not in text
    assert legend_covers(fig) == []
    plt.close(fig)
    fig = cluster_map(filter_features(m.get_submodule("layer2.0")), c)
    cluster_map_legend(fig)  # the study: every rule that keeps each member
    text = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert '"merge"' in text and '"centroid"' in text
    plt.close(fig)
