"""Blocks pruned to no filters: the model, pruning, refit, plans and timing of removed blocks."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers.metrics import count_macs, count_params
from helpers.models import (
    BLOCK_NAMES,
    DEFAULT_WIDTHS,
    REMOVABLE,
    load_model,
    resnet20,
    save_model,
)
from helpers.plans import (
    check_plan,
    depth_plan,
    feasible_round_to,
    macs_removed,
    plan_for,
    plan_macs,
    uniform_plan,
)
from helpers.pruning import STRATEGIES, bn_scale_shift, cluster_filters, prune_block
from helpers.refit import refit_conv2
from helpers.study.network import correct, fold_bn, prune_network, removal_accuracy, speed_table
from tests.test_network import TINY, dense, images


def model(widths=None, seed=0):
    return dense(seed, "conv3x3", widths)


def test_removable_blocks_are_those_with_an_identity_shortcut():
    m = resnet20("conv3x3")
    identity = [n for n in BLOCK_NAMES if isinstance(m.get_submodule(n).shortcut,
                                                     torch.nn.Sequential)
                and len(m.get_submodule(n).shortcut) == 0]
    assert list(REMOVABLE) == identity and len(REMOVABLE) == 7


def test_a_removed_block_adds_its_bn2_shift_and_costs_no_macs():
    widths = (16, 0, 16, 32, 32, 32, 64, 64, 64)
    m = model(widths)
    block = m.layer1[1]
    x = torch.randn(3, 16, 32, 32)
    _, shift = bn_scale_shift(block.bn2)
    with torch.no_grad():
        assert torch.allclose(block(x), F.relu(x + shift.view(1, -1, 1, 1)), atol=1e-6)
    assert count_macs(m) == plan_macs(widths) < plan_macs(DEFAULT_WIDTHS)
    assert count_params(m) < count_params(resnet20("conv3x3"))


def test_a_removed_block_trains_its_constant():
    m = model((16, 16, 16, 32, 32, 0, 64, 64, 64)).train()
    before = m.layer2[2].bn2.bias.detach().clone()
    var_before = m.layer2[2].bn2.running_var.clone()
    loss = m(torch.randn(4, 3, 32, 32)).square().mean()
    loss.backward()
    assert m.layer2[2].bn2.bias.grad is not None and m.layer2[2].bn2.bias.grad.abs().sum() > 0
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert not torch.equal(m.layer2[2].bn2.bias, before)
    # in train mode bn2 normalised zeros: its running statistics move towards zero
    assert (m.layer2[2].bn2.running_var < var_before).all()


def test_save_and_load_keep_a_removed_block(tmp_path):
    m = model((16, 16, 0, 32, 32, 32, 64, 64, 0))
    save_model(m, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.widths == m.widths
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.eval()(x), m(x))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pruning_to_zero_filters_is_the_same_for_every_strategy(strategy):
    m = model()
    pruned = prune_block(m, "layer1.1", 0, strategy)
    assert pruned.widths[1] == 0 and pruned.layer1[1].conv1.weight.shape == (0, 16, 3, 3)
    x = torch.randn(2, 3, 32, 32)
    reference = prune_block(m, "layer1.1", 0, "l1")
    with torch.no_grad():
        assert torch.equal(pruned(x), reference(x))
    with pytest.raises(ValueError, match=r"1\.\.16"):
        cluster_filters(m, "layer1.1", 0)
    with pytest.raises(ValueError, match="layer2.0 cannot keep 0 filters"):
        prune_block(m, "layer2.0", 0, strategy)


def test_refit_of_a_removed_block_keeps_it_and_reports_the_error():
    m = model()
    block = prune_block(m, "layer1.1", 0, "l1").layer1[1]
    inputs, targets = torch.randn(2, 16, 32, 32), torch.randn(2, 16, 32, 32)
    report = refit_conv2(block, inputs, targets)
    assert report.refit is False
    assert report.mse_before == report.mse_after == pytest.approx(
        float(targets.double().square().mean()))


def test_prune_network_removes_a_block_with_refit_and_recalibration():
    m = model()
    pruned = prune_network(m, {"layer2.2": 0, "layer3.1": 8}, "merge", refit_images=images(16),
                           recal_images=images(16, 1), recal_batches=1)
    assert pruned.widths == (16, 16, 16, 32, 32, 0, 64, 8, 64)
    bn2 = pruned.layer2[2].bn2
    assert torch.allclose(bn2.running_mean, torch.zeros(32))  # recalibrated on zeros
    assert torch.isfinite(pruned(torch.randn(2, 3, 32, 32))).all()
    assert [r["block"] for r in pruned.meta["refit"]] == list(BLOCK_NAMES)


def test_plans_may_remove_only_blocks_with_an_identity_shortcut():
    assert check_plan((16, 0, 16, 32, 32, 32, 64, 64, 64))[1] == 0
    with pytest.raises(ValueError, match="layer2.0 cannot keep 0 filters"):
        check_plan((16, 16, 16, 0, 32, 32, 64, 64, 64))
    with pytest.raises(ValueError, match="cannot remove block"):
        depth_plan(0.5, ("layer3.0",))
    with pytest.raises(ValueError, match="sequence of block names"):
        depth_plan(0.5, "layer1.1")
    with pytest.raises(ValueError, match="at least one block"):
        plan_for(0.5, "depth")
    with pytest.raises(ValueError, match="need the 'depth' allocation"):
        plan_for(0.5, "uniform", removed=("layer1.1",))
    with pytest.raises(ValueError, match="cannot remove block"):
        uniform_plan(0.5, removed=("bogus",))
    with pytest.raises(ValueError, match="allocation must be one of"):
        plan_for(0.5, "deep")


@pytest.mark.parametrize("target", [0.2, 0.5, 0.7])
@pytest.mark.parametrize("removed", [("layer1.1",), ("layer2.2", "layer3.1")])
def test_depth_plan_removes_the_blocks_and_spreads_the_rest_uniformly(target, removed):
    plan = depth_plan(target, removed)
    assert macs_removed(plan) >= target
    for name, k, width in zip(BLOCK_NAMES, plan, DEFAULT_WIDTHS, strict=True):
        assert (k == 0) == (name in removed) and k <= width
    kept = [k / w for n, k, w in zip(BLOCK_NAMES, plan, DEFAULT_WIDTHS, strict=True)
            if n not in removed]
    assert max(kept) - min(kept) <= 0.25  # an even spread, as uniform_plan makes it
    # what the removal pays for, the others need not: each keeps at least a uniform plan's
    assert all(k >= u for n, k, u in zip(BLOCK_NAMES, plan, uniform_plan(target), strict=True)
               if n not in removed)


def test_depth_plan_rounds_and_reaches_further():
    r = feasible_round_to(0.7, 8, removed=("layer1.1",))
    plan = plan_for(0.7, "depth", round_to=8, removed=("layer1.1",))
    assert all(k % r == 0 for k in plan) and macs_removed(plan) >= 0.7
    assert plan_for(0.5, "depth", round_to=8, removed=("layer1.1",))[1] == 0


def test_depth_plan_reaches_past_one_filter_per_block():
    # one filter in each of the nine blocks removes 90.0% of the MACs; with the seven removable
    # blocks at 0, one filter in layer2.0 and layer3.0 removes 93.1%: targets in between are
    # reachable, by hand from the closed form
    one_each = 1 - plan_macs([1] * 9) / plan_macs(DEFAULT_WIDTHS)
    two_left = [0 if n in REMOVABLE else 1 for n in BLOCK_NAMES]
    furthest = 1 - plan_macs(two_left) / plan_macs(DEFAULT_WIDTHS)
    assert one_each < 0.905 < 0.92 < furthest
    for target in (0.905, 0.92):
        plan = depth_plan(target, REMOVABLE)
        assert macs_removed(plan) >= target
        assert [k == 0 for k in plan] == [n in REMOVABLE for n in BLOCK_NAMES]
    assert macs_removed(plan_for(0.92, "depth", round_to=8, removed=REMOVABLE)) >= 0.92
    assert depth_plan(0.905, ("layer1.1",))[1] == 0
    with pytest.raises(ValueError, match=f"7 removed ones removes {furthest:.1%}"):
        depth_plan(0.95, REMOVABLE)
    with pytest.raises(ValueError, match=f"one filter per block removes {one_each:.1%}"):
        uniform_plan(0.905)  # without removed blocks the limit is unchanged


def test_removal_accuracy_ranks_the_blocks():
    m = model()
    x, y = images(24), torch.randint(0, 10, (24,), generator=torch.Generator().manual_seed(0))
    table = removal_accuracy(m, x, y, images(32, 1), blocks=("layer1.1", "layer3.2"),
                             refit_images=16, recal_batches=1, progress=False)
    assert sorted(table.block) == ["layer1.1", "layer3.2"]
    assert list(table.accuracy) == sorted(table.accuracy, reverse=True)
    assert (table.eval_images == 24).all()
    dense_accuracy = correct(m, x, y).mean()
    assert np.allclose(table.loss, 100 * (dense_accuracy - table.accuracy))
    with pytest.raises(ValueError, match="cannot remove"):
        removal_accuracy(m, x, y, images(32, 1), blocks=("layer2.0",))


def test_speed_table_ratios(monkeypatch):
    m = model(TINY)
    half = tuple(max(1, w // 2) for w in TINY)
    removed = (4, 0, 4, 8, 8, 8, 8, 8, 8)

    def by_macs(nets, batch_size, device, repeats, **kwargs):  # latency proportional to MACs
        macs = [float(count_macs(n)) for n in nets.values()]
        return pd.DataFrame({"model": list(nets), "threads": 1,
                             "samples_ms": [[v] * repeats for v in macs]})

    with monkeypatch.context() as patch:
        patch.setattr("helpers.study.network.compare_latency", by_macs)
        table = speed_table(m, {"half": half, "removed": removed}, batch_size=2, repeats=2)
    # each plan is timed as a network of its widths (the removed block included)
    assert list(table.plan) == ["half", "removed"]
    assert table.speedup.tolist() == pytest.approx(
        [plan_macs(TINY) / plan_macs(half), plan_macs(TINY) / plan_macs(removed)])
    # from known timings: the median of the per-round ratios (2, 3, 1.5 -> 2), not the ratio
    # of the medians (10 / 5), with an interval within the ratios seen; two calls pooled
    rounds = {"unpruned": [10.0, 12.0, 9.0], str(half): [5.0, 4.0, 6.0]}
    calls = []

    def fake(nets, batch_size, device, repeats, **kwargs):
        calls.append(kwargs["seed"])
        return pd.DataFrame({"model": list(rounds), "threads": 1,
                             "samples_ms": [v[:repeats] for v in rounds.values()]})

    monkeypatch.setattr("helpers.study.network.compare_latency", fake)
    rounds[str(half)] = [5.0, 6.0, 3.0]  # ratios 2, 2, 3: median 2, ratio of medians 2
    row = speed_table(m, {"half": half}, repeats=3, calls=2).iloc[0]
    assert calls == [0, 1]  # a new visiting order per call
    assert row.speedup == 2.0 and 2.0 <= row.speedup_high <= 3.0 and row.speedup_low == 2.0
    rounds[str(half)] = [4.0, 4.0, 6.0]  # ratios 2.5, 3, 1.5: median 2.5, medians' ratio 2.25
    row = speed_table(m, {"half": half}, repeats=3).iloc[0]
    assert row.speedup == 2.5 and 1.5 <= row.speedup_low <= 2.5 <= row.speedup_high <= 3.0


def test_removal_choice_figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.study import network_plots

    removal = pd.DataFrame({"block": ["layer1.1", "layer2.2", "layer3.1"],
                            "accuracy": [0.90, 0.91, 0.86], "speedup": [1.6, 1.49, 1.45],
                            "speedup_low": [1.57, 1.46, 1.40], "speedup_high": [1.64, 1.52, 1.5]})
    fig = network_plots.removal_choice(removal, 1.5, 5000, ("layer1.1",))
    ax = fig.axes[0]
    assert {t.get_text() for t in ax.texts} == set(removal.block)
    # neighbours in accuracy get their labels on opposite sides (above / below the point)
    below = {t.get_text(): t.xyann[1] < 0 for t in ax.texts}
    by_accuracy = removal.sort_values("accuracy").block.tolist()
    assert [below[b] for b in by_accuracy] == [True, False, True]
    plt.close(fig)


def test_fold_bn_keeps_a_removed_block():
    m = model((16, 0, 16, 32, 32, 32, 64, 64, 64))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fold_bn(m)(x), m(x), atol=1e-4)


def test_committed_pruned_checkpoint_is_the_one_the_results_describe(lab_root):
    """checkpoints/resnet20_pruned50.pt round-trips through load_model into the headline's
    widths, MACs and parameters, and scores its recorded accuracy on both halves of the
    validation images (fp32; up to two images of a half may flip where another CPU sums in
    another order)."""
    import json

    from helpers import paths
    from helpers.data import load_splits, selection_confirmation

    results = json.loads((paths.RESULTS / "network_pruning.json").read_text())
    record = next(r for r in results["records"] if r["headline"])
    pruned = load_model(paths.CHECKPOINTS / "resnet20_pruned50.pt").eval()
    assert list(pruned.widths) == record["widths"]
    assert count_macs(pruned) == record["macs"] and count_params(pruned) == record["params"]
    data = load_splits(lab_root, warn=False)
    ok = correct(pruned, data.val_images[:results["eval_images"]],
                 data.val_labels[:results["eval_images"]])
    sel, conf = selection_confirmation(len(ok))
    assert (len(sel), len(conf)) == (results["selection_images"], results["confirmation_images"])
    for half, recorded in ((sel, record["acc_selection"]), (conf, record["acc_confirmation"])):
        assert abs(int(ok[half].sum()) - round(recorded * len(half))) <= 2


def test_a_network_with_a_removed_block_can_be_pruned_again():
    m = prune_network(model(), {"layer1.1": 0}, "l1", refit_images=images(16))
    again = prune_network(m, {"layer1.1": 0, "layer2.2": 16, "layer3.1": 0}, "l1",
                          refit_images=images(16), recal_images=images(16, 1), recal_batches=1)
    assert again.widths == (16, 0, 16, 32, 32, 16, 64, 0, 64)
    assert torch.isfinite(again(torch.randn(2, 3, 32, 32))).all()
    with pytest.raises(ValueError, match="layer1.1 is removed"):
        prune_block(m, "layer1.1", 0, "l1", refit_images=images(8))
