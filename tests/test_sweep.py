"""helpers.study.sweep: the cached per-block sweep gives what the naive whole-network way gives
(helpers.study.sweep_check), and helpers.study.sweep_results reads it.

CPU, random-init models with randomised BN, a few dozen random images; the real-data check
runs only when CIFAR10_ROOT is set.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pytest
import torch

from helpers.models import BLOCK_NAMES
from helpers.pruning import STRATEGIES, keep_indices, prune_block, recalibrate_bn
from helpers.study.sweep import (
    TREATMENTS,
    BlockSweep,
    all_ks,
    distiller_kept,
    ieee_fp32,
    ks_at_fractions,
    sweep,
)
from helpers.study.sweep_check import naive_point
from helpers.study.sweep_results import (
    RECORD_KEYS,
    SweepResult,
    arm_means,
    best_arm,
    compare,
    refit_table,
    scoreboard,
)
from tests.test_pruning import make_model, one_thread  # noqa: F401 (autouse fixture)

RECAL = dict(recal_batches=2, recal_batch_size=16)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    test = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (40,), generator=g)
    recal = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    refit = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    return test, labels, recal, refit


@pytest.fixture(scope="module")
def model(data):
    # Recalibrated once so that its activations are in a sane range for random inputs.
    return recalibrate_bn(make_model(1), data[2], batches=2, batch_size=20)


@pytest.fixture(scope="module")
def bs(model, data):
    test, labels, recal, refit = data
    return BlockSweep(model, test, labels, recal, refit, eval_batch_size=16, **RECAL)


# Every strategy and treatment, in every stage, downsampling blocks included.
POINTS = [("layer1.0", 7, "merge", "recal"), ("layer1.2", 3, "nearest", "none"),
          ("layer2.0", 9, "centroid", "refit+recal"), ("layer2.2", 30, "first", "recal"),
          ("layer3.0", 5, "random", "refit+recal"), ("layer3.2", 20, "l1", "refit"),
          ("layer3.1", 40, "merge", "refit"), ("layer2.1", 1, "l1", "refit+recal")]


@pytest.mark.parametrize(("block", "k", "strategy", "treatment"), POINTS)
def test_fast_equals_naive(bs, model, data, block, k, strategy, treatment):
    test, labels, recal, refit = data
    fast = bs.point_logits(block, k, strategy, treatment)
    acc, naive = naive_point(model, block, k, strategy, treatment, test, labels, recal, refit,
                             return_logits=True, **RECAL)
    assert torch.allclose(fast, naive, atol=1e-4, rtol=1e-4), (fast - naive).abs().max()
    assert (fast.argmax(1) == labels).sum().item() / len(labels) == acc


@pytest.mark.parametrize(("block", "k", "strategy", "treatment"),
                         [("layer2.0", 9, "l1", "refit+recal"), ("layer1.1", 5, "merge", "none")])
def test_fast_equals_naive_in_bf16(model, data, block, k, strategy, treatment):
    test, labels, recal, refit = data
    b = BlockSweep(model, test, labels, recal, refit, eval_batch_size=16, bf16=True, **RECAL)
    fast = b.point_logits(block, k, strategy, treatment)
    acc, naive = naive_point(model, block, k, strategy, treatment, test, labels, recal, refit,
                             bf16=True, return_logits=True, **RECAL)
    assert torch.allclose(fast, naive, atol=0.01, rtol=0.01), (fast - naive).abs().max()
    assert (fast.argmax(1) == labels).sum().item() / len(labels) == acc


@pytest.mark.parametrize("strategy", ["l1", "nearest", "merge", "centroid"])
def test_the_sweeps_refit_is_prune_blocks(bs, model, data, strategy):
    block, k = "layer2.1", 6
    want = prune_block(model, block, k, strategy, refit_images=data[3]).get_submodule(block)
    res = bs.run(ks={block: [k]}, strategies=[strategy], treatments=["refit"], progress=False)
    report = res.refits[(block, k, strategy)]
    assert report.mse_after <= report.mse_before
    pruned = bs._pruned(block, k, strategy)
    keep = None
    if strategy in ("l1", "nearest"):
        keep = keep_indices(bs.cpu_model.get_submodule(block), k, strategy,
                            bs._clustering(block, k, strategy))
    got, _ = bs._refit(pruned, keep, bs._refit_data(block))
    assert torch.allclose(got.conv2.weight, want.conv2.weight, atol=1e-5, rtol=1e-4)


def test_cached_recalibration_is_recalibrate_bn(bs, model, data):
    from helpers.data import normalize

    m = recalibrate_bn(copy.deepcopy(model), data[2], batches=2, batch_size=16)
    with ieee_fp32(), torch.no_grad():
        want = m(normalize(data[0])).argmax(1) == data[1]
    assert np.array_equal(bs.dense_recal_correct, want.numpy())
    assert np.array_equal(bs.dense_correct, (model(normalize(data[0])).argmax(1) == data[1])
                          .numpy())


def test_run_records_correctness_and_single_points(bs, model, data):
    ks = {"layer1.1": [16, 5], "layer3.0": [33]}
    res = bs.run(ks=ks, progress=False)
    assert [r["block"] for r in res.records][:3] == ["layer1.1"] * 3
    assert len(res.records) == 3 * len(STRATEGIES) * len(TREATMENTS)
    assert res.correct.shape == (len(res.records), 40) and res.correct.dtype == bool
    assert res.evaluated <= len(res.records)
    assert res.eval_images == 40 and res.recal_images == 32 and res.refit_images == 24
    for r, c in zip(res.records, res.correct, strict=True):
        assert tuple(r) == RECORD_KEYS and isinstance(r["kept_filters"], int)
        assert r["accuracy"] == c.mean()
    for key in [("layer1.1", 5, "merge", "recal"), ("layer3.0", 33, "random", "none"),
                ("layer1.1", 5, "first", "refit+recal"), ("layer1.1", 5, "nearest", "recal")]:
        logits = bs.point_logits(*key)
        assert np.array_equal(res.correct_at(*key), (logits.argmax(1) == data[1]).numpy())
    # keeping every filter: the dense network, recalibrated or not
    for s in STRATEGIES:
        assert np.array_equal(res.correct_at("layer1.1", 16, s, "none"), res.dense_correct)
        assert np.array_equal(res.correct_at("layer1.1", 16, s, "recal"),
                              res.dense_recal_correct)
    assert res.points() == [("layer1.1", 5), ("layer3.0", 33)]


def test_sweep_function_json_and_comparisons(tmp_path, model, data):
    test, labels, recal, refit = data
    res = sweep(model, test[:8], labels[:8], recal, refit, blocks=["layer3.2"],
                ks={"layer3.2": [2, 40]}, strategies=("l1", "merge"),
                treatments=("refit+recal", "none"), progress=False, **RECAL)
    assert [(r["strategy"], r["treatment"]) for r in res.records][:4] == [
        ("l1", "none"), ("l1", "refit+recal"), ("merge", "none"), ("merge", "refit+recal")]
    assert res.seconds > 0 and res.device == "cpu" and res.precision == "fp32"
    df = res.frame()
    assert set(df.columns) >= {*RECORD_KEYS, "width", "removed", "removed_fraction", "drop"}
    assert df.width.tolist()[:2] == [64, 64] and df.removed.tolist()[:2] == [62, 62]
    path = res.to_json(tmp_path / "r" / "block_pruning.json", profile="ci")
    saved = json.loads(path.read_text())
    assert {"eval_images", "eval_split", "dense_accuracy", "dense_accuracy_recalibrated",
            "device", "sweep_seconds", "records", "profile"} <= set(saved)
    assert saved["eval_images"] == 8 and saved["records"] == res.records
    assert saved["eval_split"] == "val" and saved["profile"] == "ci"
    c = compare(res, ("merge", "refit+recal"), ("l1", "none"))
    assert len(c) == 2 and c.kept_filters.tolist() == [2, 40]
    for row in c.itertuples():  # every column, from the per-image vectors by hand
        a = res.correct_at("layer3.2", row.kept_filters, "merge", "refit+recal")
        b = res.correct_at("layer3.2", row.kept_filters, "l1", "none")
        assert (row.accuracy_a, row.accuracy_b) == (a.mean(), b.mean())
        assert row.difference == pytest.approx(np.mean(a.astype(int) - b.astype(int)))
        assert row.p_value == pytest.approx(mcnemar_by_hand(a, b))
        assert row.ci_low <= row.difference <= row.ci_high
        assert row.winner == ("tie" if row.p_value >= 0.05 else "AB"[int(b.sum() > a.sum())])
    arms = [("merge", "none"), ("merge", "refit+recal")]
    best = compare(res, arms, ("l1", "none"))
    for row in best.itertuples():  # the better of the two arms, point by point
        accs = {arm: res.correct_at("layer3.2", row.kept_filters, *arm).mean() for arm in arms}
        assert row.accuracy_a == max(accs.values())
        assert accs[tuple(row.a.split(", "))] == max(accs.values())
    assert list(arm_means(res).columns) == ["none", "refit+recal"]
    board = scoreboard(res, {"merge vs l1": (("merge", "refit+recal"), ("l1", "none"))})
    row = board.loc["merge vs l1"]
    assert row.points == 2 and row["A wins"] + row.ties + row["B wins"] == 2
    means = arm_means(res).stack()
    assert means[best_arm(res)] == means.max()
    refits = refit_table(res)
    assert len(refits) == 4 and (refits.mse_after <= refits.mse_before).all()


def mcnemar_by_hand(a, b) -> float:
    """Exact two-sided McNemar p-value: twice the smaller binomial(d, 1/2) tail, at most 1."""
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    d = a_only + b_only
    tail = sum(math.comb(d, i) for i in range(min(a_only, b_only) + 1)) / 2 ** d
    return min(1.0, 2 * tail) if a_only != b_only else 1.0


def test_mcnemar_by_hand_known_answers():
    yes, no = np.ones(6, bool), np.zeros(6, bool)
    assert mcnemar_by_hand(yes, no) == 2 / 64  # 6 of 6 disagreements for A: 2 * (1/2)^6
    assert mcnemar_by_hand(yes, yes) == 1.0


def test_scoreboard_resamples_blocks_on_request():
    # blocks b0 and b1: A right on every image, B on none (A wins at both k); b2: A == B (ties)
    n, records, correct = 40, [], []
    for block in ("b0", "b1", "b2"):
        for k in (4, 8):
            for strategy in ("merge", "l1"):
                right = strategy == "merge" or block == "b2"
                records.append({"block": block, "strategy": strategy, "treatment": "none",
                                "kept_filters": k, "accuracy": float(right)})
                correct.append(np.full(n, right))
    res = SweepResult(records, np.array(correct), n, "val", 0, 0, "cpu", "fp32", 0.0,
                      np.ones(n, bool), None, widths={"b0": 16, "b1": 16, "b2": 16})
    pairs = {"merge vs l1": (("merge", "none"), ("l1", "none"))}
    plain = scoreboard(res, pairs)
    row = scoreboard(res, pairs, block_bootstrap=True).loc["merge vs l1"]
    assert list(plain.columns) == list(row.index)[:len(plain.columns)]  # the same, then more
    assert (row["A wins"], row.ties, row["B wins"]) == (4, 2, 0)
    assert row["A win % (95% CI)"] == "67 (30-90)"  # Wilson, 4 of 6 independent points
    # 3 blocks resampled: won blocks drawn ~ Binomial(3, 2/3), P(0) = 1/27 > 2.5%: 0 to 3 of 3
    assert row["A win % (95% CI, blocks resampled)"] == "67 (0-100)"
    assert row["B win % (95% CI, blocks resampled)"] == "0 (0-0)"


def test_the_model_given_is_untouched(data):
    m = make_model(2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    b = BlockSweep(m, data[0][:4], data[1][:4], data[2], data[3], **RECAL)
    b.run(ks={"layer2.0": [3]}, progress=False)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_errors(bs, model, data):
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.32 for block layer2\.0"):
        bs.run(ks={"layer2.0": [33]}, progress=False)
    with pytest.raises(ValueError, match="unknown block 'layer0.1'; valid blocks"):
        bs.run(blocks=["layer0.1"], ks={"layer0.1": [1]}, progress=False)
    with pytest.raises(ValueError, match="valid strategies"):
        bs.run(ks={"layer2.0": [3]}, strategies=("kmeans",), progress=False)
    with pytest.raises(ValueError, match="valid treatments"):
        bs.run(ks={"layer2.0": [3]}, treatments=("finetune",), progress=False)
    with pytest.raises(ValueError, match="ks gives no k for blocks"):
        bs.run(blocks=["layer2.0"], ks={"layer1.0": [3]}, progress=False)
    no_recal = BlockSweep(model, data[0][:4], data[1][:4])
    with pytest.raises(ValueError, match="need recal_images"):
        no_recal.run(ks={"layer2.0": [3]}, treatments=("recal",), progress=False)
    with pytest.raises(ValueError, match="need refit_images"):
        no_recal.run(ks={"layer2.0": [3]}, treatments=("refit",), progress=False)
    assert no_recal.run(ks={"layer2.0": [3]}, treatments=("none",), progress=False).records


def test_which_ks():
    m = make_model()
    ks = all_ks(m)
    assert list(ks) == list(BLOCK_NAMES) and ks["layer1.0"] == list(range(16, 0, -1))
    assert sum(len(v) for v in ks.values()) == 336
    assert ks_at_fractions(m, (0.5, 0.25, 0.01))["layer3.0"] == [32, 16, 1]
    assert ks_at_fractions(m, (0.5,), extra={"layer1.0": [10]})["layer1.0"] == [10, 8]
    assert [distiller_kept(w) for w in (16, 32, 64)] == [10, 20, 39]


def test_ieee_fp32_restores_the_settings():
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):  # torch < 2.9: the legacy flags
        before = torch.backends.cudnn.allow_tf32
        with ieee_fp32():
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.allow_tf32 == before
        return
    before = conv.fp32_precision
    with ieee_fp32():
        assert conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert conv.fp32_precision == before


def test_fast_equals_naive_on_real_images(lab_root):
    from helpers.data import load_cifar10

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = load_cifar10(lab_root)
    m = recalibrate_bn(make_model(6), d.train_images[:256], batches=2, batch_size=128)
    test, labels = d.test_images[:100], d.test_labels[:100]
    recal, refit = d.train_images[:64], d.train_images[64:96]
    b = BlockSweep(m, test, labels, recal, refit, recal_batches=2, recal_batch_size=32)
    res = b.run(ks={"layer2.1": [12]}, strategies=("merge", "first"), progress=False)
    for r in res.records:
        acc = naive_point(m, r["block"], r["kept_filters"], r["strategy"], r["treatment"],
                          test, labels, recal, refit, recal_batches=2, recal_batch_size=32)
        assert acc == r["accuracy"]


def test_sweep_result_without_points_is_fine():
    res = SweepResult([], np.zeros((0, 3), bool), 3, "val", 0, 0, "cpu", "fp32", 0.0,
                      np.array([True, False, True]), None)
    assert res.dense_accuracy == pytest.approx(2 / 3) and res.dense_accuracy_recalibrated is None


def test_plots_draw_a_small_sweep():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.study import sweep_plots

    rng = np.random.default_rng(0)
    records = [{"block": b, "strategy": s, "treatment": t, "kept_filters": k,
                "accuracy": float(rng.uniform(0.5, 0.9))}
               for b, w in (("layer1.0", 16), ("layer2.1", 32), ("layer3.2", 64))
               for k in (w // 8, w // 2, 3 * w // 4) for s in ("centroid", "l1")
               for t in TREATMENTS]
    correct = rng.random((len(records), 50)) < 0.8
    res = SweepResult(records, correct, 50, "val", 0, 0, "cpu", "fp32", 0.0,
                      rng.random(50) < 0.9, None,
                      widths={"layer1.0": 16, "layer2.1": 32, "layer3.2": 64})
    df = res.frame()
    pairs = compare(res, ("l1", "refit+recal"), ("centroid", "none"))
    figs = [sweep_plots.original_study(df, ("centroid", "l1"), eval_images=50),
            sweep_plots.strategy_grid(df, ["centroid", "l1"], dense=0.9, eval_images=50),
            sweep_plots.drop_heatmaps(df, [("centroid", "none"), ("l1", "refit+recal")]),
            sweep_plots.paired_differences(pairs)]
    assert all(f.axes for f in figs)
    assert set(sweep_plots.kept_bins(df, 8).bin) == {1 / 8, 1 / 2, 3 / 4}
    plt.close("all")


def test_rule_means_draws_the_mean_over_blocks_of_each_kept_fraction():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.study import sweep_plots

    blocks = (("layer1.0", 16, 0.5), ("layer3.2", 64, 0.9))
    records = [{"block": b, "strategy": s, "treatment": t, "kept_filters": k * w // 4,
                "width": w, "accuracy": acc} for b, w, acc in blocks
               for s in ("l1", "first") for t in ("none", "recal") for k in (1, 2, 3)]
    df = pd.DataFrame(records)
    fig = sweep_plots.rule_means(df, ("l1", "first"), ("none", "recal"), bins=4, spread=False)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        lines = [ln for ln in ax.lines if ln.get_label() in ("l1", "first")]
        assert len(lines) == 2
        for ln in lines:  # fractions 25, 50, 75 %, each the mean of the two blocks: 70 %
            assert list(ln.get_xdata()) == [25, 50, 75]
            assert np.allclose(ln.get_ydata(), 70)
    plt.close(fig)


def legend_covers(fig) -> list[str]:
    """The drawn data points (line vertices, scatter markers) that a legend of ``fig`` covers,
    in display coordinates: empty when no legend covers data."""
    from matplotlib.collections import PathCollection

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    boxes = [leg.get_window_extent(renderer) for leg in legends]
    covered = []
    for ax in fig.axes:
        points = [(ln.get_label(), ln.get_transform().transform(ln.get_xydata()))
                  for ln in ax.lines]
        points += [("scatter", c.get_offset_transform().transform(c.get_offsets()))
                   for c in ax.collections if isinstance(c, PathCollection)]
        for name, xy in points:
            for box in boxes:
                covered += [f"{name} at {tuple(np.round(p))}" for p in xy if box.contains(*p)]
    return covered


def test_rule_means_gives_each_rule_its_marker_and_colour_and_no_legend_covers_data():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from helpers.plots import STRATEGY_COLORS, STRATEGY_MARKERS
    from helpers.study import sweep_plots

    rules = ("l1", "random", "centroid", "first", "nearest", "merge")
    rng = np.random.default_rng(0)
    df = pd.DataFrame([{"block": b, "strategy": s, "treatment": t, "kept_filters": k * w // 16,
                        "width": w, "accuracy": rng.uniform(0.1, 0.9) * k / 16}
                       for b, w in (("layer1.0", 16), ("layer3.2", 64)) for s in rules
                       for t in ("none", "refit+recal") for k in range(1, 16)])
    fig = sweep_plots.rule_means(df, rules, ("none", "refit+recal"), dense=0.92)
    for ax in fig.axes:
        lines = {ln.get_label(): ln for ln in ax.lines if ln.get_label() in rules}
        assert set(lines) == set(rules)
        for rule, ln in lines.items():
            assert ln.get_marker() == STRATEGY_MARKERS[rule]
            assert to_rgb(ln.get_color()) == to_rgb(STRATEGY_COLORS[rule])
    assert legend_covers(fig) == []
    fig.axes[0].legend(loc="center")  # a seeded defect: a legend drawn over the lines
    assert legend_covers(fig)
    plt.close(fig)


def test_drop_heatmaps_colour_each_panel_title_by_its_rule():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from helpers.plots import STRATEGY_COLORS
    from helpers.study import sweep_plots

    df = pd.DataFrame([{"block": "layer1.0", "strategy": s, "treatment": "none",
                        "kept_filters": k, "width": 16, "drop": 0.1}
                       for s in ("l1", "nearest") for k in (2, 8, 12)])
    fig = sweep_plots.drop_heatmaps(df, [("l1", "none"), ("nearest", "none")])
    titles = [ax.title for ax in fig.axes[:2]]
    assert [t.get_text() for t in titles] == ["l1, none", "nearest, none"]
    assert [to_rgb(t.get_color()) for t in titles] == [to_rgb(STRATEGY_COLORS["l1"]),
                                                        to_rgb(STRATEGY_COLORS["nearest"])]
    plt.close(fig)
