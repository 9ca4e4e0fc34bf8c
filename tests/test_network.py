"""Whole-network pruning: plans, exact MACs, prune_network with refit, sensitivity, save/load,
resumable fine-tuning, latency, figures."""

import copy
import json
import platform
import random
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import metrics
from helpers.data import normalize
from helpers.metrics import compare_latency, count_macs, count_params, steady_allocator
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS, load_model, resnet20, save_model
from helpers.plans import (
    MACS_PER_FILTER,
    Sensitivity,
    check_plan,
    feasible_round_to,
    kept_count,
    macs_removed,
    plan_for,
    plan_macs,
    plan_params,
    sensitivity_plan,
    uniform_plan,
)
from helpers.study import finetune as finetune_module
from helpers.study import network as network_module
from helpers.study import network_plots
from helpers.study.finetune import (
    ResultCache,
    code_version,
    compare_step_seconds,
    finetune,
    measuring_functions,
    model_fingerprint,
    pruning_functions,
    training_functions,
)
from helpers.study.network import (
    block_sensitivity,
    fold_bn,
    measure_sensitivity,
    prune_network,
    sensitivity_from_json,
    speedups,
)
from helpers.train import finetune_config

matplotlib.use("Agg")

TARGETS = (0.1, 0.3, 0.5, 0.7, 0.85)
TINY = (4, 4, 4, 8, 8, 8, 8, 8, 8)  # a narrow ResNet20: fast on a CPU


def dense(seed=0, shortcut="conv3x3", widths=None):
    torch.manual_seed(seed)
    model = resnet20(shortcut, widths)
    with torch.no_grad():  # non-trivial BN statistics, as in a trained network
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def images(n, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def fake_sensitivity(dense_accuracy=0.9):
    """Stage 1 most sensitive, first block of a stage twice as sensitive, quadratic curves."""
    records = []
    for name, width in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True):
        s = {"layer1": 0.3, "layer2": 0.15, "layer3": 0.05}[name[:6]] * (
            2 if name.endswith(".0") else 1)
        for f in (0.25, 0.5, 0.75):
            records.append({"block": name, "strategy": "l1", "treatment": "refit+recal",
                            "kept_filters": round(f * width),
                            "accuracy": dense_accuracy - s * (1 - f) ** 2})
    return Sensitivity.from_records(records, dense_accuracy)


def within_one_filter_per_block(plan, target, shortcut="conv3x3"):
    """Removes at least the target, and not more than one filter per block beyond it."""
    budget = (1 - target) * plan_macs(DEFAULT_WIDTHS, shortcut)
    macs = plan_macs(plan, shortcut)
    return macs <= budget and macs > budget - sum(MACS_PER_FILTER)


# --------------------------------------------------------------------------- MACs and plans


@pytest.mark.parametrize("shortcut", ["A", "conv3x3"])
def test_closed_form_macs_equal_measured_macs(shortcut):
    rng = random.Random(0)
    plans = [DEFAULT_WIDTHS, (1,) * 9] + [
        tuple(rng.randint(1, w) for w in DEFAULT_WIDTHS) for _ in range(4)]
    for plan in plans:
        assert plan_macs(plan, shortcut) == count_macs(resnet20(shortcut, plan)), plan
    assert plan_macs(DEFAULT_WIDTHS, "A") == 40_551_040  # the usual "40.55 M" of ResNet20


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("round_to", [1, 4, 8])
def test_uniform_plan_hits_target_and_stays_uniform(target, round_to):
    if macs_removed([min(round_to, w) for w in DEFAULT_WIDTHS]) < target:  # unreachable
        with pytest.raises(ValueError, match=f"multiple of {round_to}"):
            uniform_plan(target, round_to=round_to)
        return
    plan = uniform_plan(target, round_to=round_to)
    assert within_one_filter_per_block(plan, target) if round_to == 1 else (
        macs_removed(plan) >= target)
    assert all(k % round_to == 0 for k in plan)
    fractions = [k / w for k, w in zip(plan, DEFAULT_WIDTHS, strict=True)]
    assert max(fractions) - min(fractions) <= 2 * round_to / 16 + 1e-9


@pytest.mark.parametrize("target", TARGETS)
def test_sensitivity_plan_hits_target_and_beats_uniform(target):
    sens = fake_sensitivity()
    plan = sensitivity_plan(target, sens)
    check_plan(plan)
    assert within_one_filter_per_block(plan, target)
    assert sens.predicted_loss(plan) <= sens.predicted_loss(uniform_plan(target)) + 1e-5
    if target == 0.5:  # the insensitive stage 3 is pruned harder than the sensitive stage 1
        assert np.mean(plan[6:]) / 64 < np.mean(plan[:3]) / 16


def test_sensitivity_plan_with_round_to_keeps_multiples():
    plan = sensitivity_plan(0.5, fake_sensitivity(), round_to=8)
    assert all(k % 8 == 0 for k in plan) and macs_removed(plan) >= 0.5


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_plan_for_is_the_allocation_at_the_feasible_rounding(target):
    sens, r = fake_sensitivity(), feasible_round_to(target, 8)
    assert plan_for(target, "uniform", round_to=8) == uniform_plan(target, round_to=r)
    assert (plan_for(target, "sensitivity", round_to=8, sensitivity=sens)
            == sensitivity_plan(target, sens, round_to=r))
    with pytest.raises(ValueError, match="needs the blocks' sensitivity"):
        plan_for(target, "sensitivity")
    with pytest.raises(ValueError, match="allocation must be one of"):
        plan_for(target, "greedy")


def test_sensitivity_plan_is_optimal_against_random_feasible_plans():
    sens, target = fake_sensitivity(), 0.5
    best = sens.predicted_loss(sensitivity_plan(target, sens))
    rng = random.Random(1)
    budget = (1 - target) * plan_macs(DEFAULT_WIDTHS)
    tried = 0
    while tried < 300:
        plan = tuple(rng.randint(1, w) for w in DEFAULT_WIDTHS)
        if plan_macs(plan) <= budget:
            tried += 1
            assert sens.predicted_loss(plan) >= best - 1e-5, plan


def test_sensitivity_curves_are_monotone_and_zero_at_full_width():
    records = [{"block": n, "strategy": "l1", "treatment": "refit+recal", "kept_filters": 0.5,
                "accuracy": 0.95} for n in BLOCK_NAMES]  # noisy: "better" than dense
    records += [{"block": "layer1.0", "strategy": "l1", "treatment": "recal",
                 "kept_filters": 8, "accuracy": 0.1}]  # another treatment: ignored
    sens = Sensitivity.from_records(records, 0.9)
    for name, width in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True):
        curve = sens.loss[name]
        assert len(curve) == width + 1 and curve[width] == 0
        assert np.all(np.diff(curve) <= 1e-12) and np.all(curve >= 0)
    with pytest.raises(ValueError, match="layer1.0"):
        Sensitivity.from_records(records[1:], 0.9)
    with pytest.raises(ValueError, match="treatment"):
        Sensitivity.from_records(records, 0.9, treatment="refit")


def test_older_records_map_bn_recalibration_to_a_treatment():
    records = [{"block": n, "strategy": "l1", "bn_recalibration": True, "kept_filters": 0.5,
                "accuracy": 0.8} for n in BLOCK_NAMES]
    sens = Sensitivity.from_records(records, 0.9, treatment="recal")
    assert sens.loss["layer2.0"][16] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no 'l1' records"):
        Sensitivity.from_records(records, 0.9, treatment="none")


@pytest.mark.parametrize("kept, width, count", [
    (1.0, 16, 16), (0.5, 16, 8), (0.01, 64, 1), (1, 16, 1), (8, 32, 8), (8.0, 32, 8),
    (np.float64(1.0), 64, 64), (np.int64(3), 16, 3)])
def test_kept_count_reads_fractions_and_counts(kept, width, count):
    assert kept_count(kept, width) == count


@pytest.mark.parametrize("kept", [2.5, True, 17, -1])
def test_kept_count_rejects_what_is_neither(kept):
    with pytest.raises(ValueError):
        kept_count(kept, 16)


def test_unreachable_target_raises():
    with pytest.raises(ValueError, match="keeping one filter per block removes"):
        uniform_plan(0.95)
    with pytest.raises(ValueError, match="fraction of MACs removed"):
        uniform_plan(1.5)


@pytest.mark.parametrize("plan, block", [
    ((16,) * 8, None),
    ((16, 16, 16, 0, 32, 32, 64, 64, 64), "layer2.0"),
    ((-1, 16, 16, 32, 32, 32, 64, 64, 64), "layer1.0"),
    ((16, 16, 16, 32, 33, 32, 64, 64, 64), "layer2.1"),
    ((16, 16, 16, 32, 32, 32, 64, 64, 2.5), "layer3.2"),
    ({"layer4.0": 3}, "layer4.0"),
])
def test_bad_plans_raise_naming_the_block(plan, block):
    with pytest.raises(ValueError, match=block or "one per block"):
        prune_network(dense(), plan, "l1")


def test_plan_checked_against_an_already_pruned_model():
    pruned = prune_network(dense(), uniform_plan(0.5), "l1")
    with pytest.raises(ValueError, match="layer3.0"):
        prune_network(pruned, (1,) * 6 + (64, 1, 1), "l1")


# --------------------------------------------------------------------------- prune_network


@pytest.mark.parametrize("strategy", ["merge", "nearest", "l1", "random", "centroid", "first"])
def test_prune_network_respects_the_plan(strategy):
    model = dense()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = uniform_plan(0.5)
    pruned = prune_network(model, plan, strategy)
    assert pruned.widths == plan
    assert [b.conv1.out_channels for b in pruned.blocks().values()] == list(plan)
    assert [b.conv2.in_channels for b in pruned.blocks().values()] == list(plan)
    assert count_macs(pruned) == plan_macs(plan) and count_params(pruned) == plan_params(plan)
    assert macs_removed(plan) >= 0.5
    assert pruned.meta == {"plan": list(plan), "strategy": strategy, "seed": 0}
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for k, v in model.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])


def test_prune_network_accepts_a_mapping_and_skips_full_blocks():
    model = dense()
    pruned = prune_network(model, {"layer2.1": 8}, "l1")
    assert pruned.widths == (16, 16, 16, 32, 8, 32, 64, 64, 64)
    for name in ("layer1.0", "layer3.2"):
        a, b = model.get_submodule(name), pruned.get_submodule(name)
        assert torch.equal(a.conv1.weight, b.conv1.weight)


@torch.no_grad()
def test_merge_of_duplicated_filters_is_exact_for_the_whole_network():
    """Each block's conv1 filters come in identical pairs: merging them changes nothing."""
    model = dense(1)
    for block in model.blocks().values():
        half = block.conv1.out_channels // 2
        block.conv1.weight[half:] = block.conv1.weight[:half]
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(block.bn1, name)
            t[half:] = t[:half]
    pruned = prune_network(model, [w // 2 for w in DEFAULT_WIDTHS], "merge")
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_refit_in_order_recovers_what_duplicated_channels_carried():
    """Every block's conv1 channels come in identical pairs (weights and BN affine), and the
    network's BN statistics are those of the refit images. "nearest" keeps one channel of each
    pair and drops the other's conv2 slice: the network changes. Refit in order puts the dropped
    slice back (least squares finds conv2 = sum of the pair's slices), block after block on the
    already pruned upstream, so the whole network computes what the unpruned one does, also on
    other images."""
    from helpers.data import normalize
    from helpers.pruning import recalibrate_bn

    model = dense(1)
    for block in model.blocks().values():
        half = block.conv1.out_channels // 2
        block.conv1.weight[half:] = block.conv1.weight[:half]
        block.bn1.weight[half:] = block.bn1.weight[:half]
        block.bn1.bias[half:] = block.bn1.bias[:half]
    calibration = images(64, 1)
    recalibrate_bn(model, calibration, batches=1)  # augmented, seed 0, as the refit's images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = [w // 2 for w in DEFAULT_WIDTHS]
    plain = prune_network(model, plan, "nearest")
    fitted = prune_network(model, plan, "nearest", refit_images=calibration, ridge=1e-8)
    reports = fitted.meta["refit"]
    assert [r["block"] for r in reports] == list(BLOCK_NAMES)  # every block, in order
    assert all(r["mse_after"] < 1e-6 * r["mse_before"] for r in reports)
    assert fitted.meta["refit_images"] == 64 and "recal_images" not in fitted.meta
    assert fitted.widths == tuple(plan) and count_macs(fitted) == plan_macs(plan)
    x = normalize(images(16, 5))
    want = model.eval()(x)
    torch.testing.assert_close(fitted(x), want, rtol=0, atol=2e-3)
    assert (plain(x) - want).abs().max() > 0.1  # without the refit, far from it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_refit_keeps_the_plan_of_already_narrow_models():
    model = dense(3, widths=TINY)
    pruned = prune_network(model, (2, 4, 4, 4, 8, 8, 4, 8, 8), "merge", refit_images=images(16),
                           batch_size=8)
    assert pruned.widths == (2, 4, 4, 4, 8, 8, 4, 8, 8)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_score_keeps_what_restore_needs(tiny_splits, tmp_path):
    from helpers.study.network import correct, restore, score

    model = dense(widths=TINY)
    plan = (2, 4, 3, 8, 5, 8, 8, 6, 8)
    r = score(model, plan, "l1", tiny_splits.val_images, tiny_splits.val_labels,
              tiny_splits.train_images, refit_images=16, recal_batches=1)
    assert r["plan"] == list(plan) and r["treatment"] == "refit+recal" and r["images"] == 10
    assert r["macs"] == count_macs(resnet20("conv3x3", plan))
    cache = ResultCache(tmp_path / "state.pt")  # plain values and tensors survive a cache
    cache({"k": 1}, lambda: r)
    again = ResultCache(tmp_path / "state.pt")({"k": 1}, lambda: None)
    net = restore(again, "conv3x3")
    assert net.widths == plan
    ok = correct(net, tiny_splits.val_images, tiny_splits.val_labels)
    assert torch.equal(torch.from_numpy(ok), r["correct"]) and ok.mean() == r["accuracy"]


def test_pruned_model_save_load_round_trip(tmp_path):
    pruned = prune_network(dense(widths=TINY), (2, 4, 3, 8, 5, 8, 8, 6, 8), "l1",
                           refit_images=images(16), recal_images=images(32), recal_batches=1)
    path = tmp_path / "pruned.pt"
    save_model(pruned, path, target=0.3, refit=pruned.meta["refit"])
    loaded = load_model(path)
    assert loaded.widths == pruned.widths == (2, 4, 3, 8, 5, 8, 8, 6, 8)
    assert loaded.shortcut == "conv3x3" and loaded.meta["target"] == 0.3
    assert len(loaded.meta["refit"]) == 9
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), pruned.eval()(x))


# --------------------------------------------------------------------------- sensitivity


def test_block_sensitivity_records(tiny_splits):
    model = dense(widths=TINY)
    records = block_sensitivity(model, tiny_splits.val_images, tiny_splits.val_labels,
                                tiny_splits.train_images, "l1", fractions=(0.5,),
                                refit_images=16, recal_batches=1)
    assert [r["block"] for r in records] == list(BLOCK_NAMES)
    assert [r["kept_filters"] for r in records] == [w // 2 for w in TINY]
    assert all(r["treatment"] == "refit+recal" and 0 <= r["accuracy"] <= 1
               and r["eval_images"] == 10 for r in records)


def test_measure_sensitivity_gives_a_usable_plan(tiny_splits):
    sens = measure_sensitivity(dense(), tiny_splits.val_images, tiny_splits.val_labels,
                               tiny_splits.train_images, "l1", fractions=(0.5,),
                               treatment="recal", recal_batches=1)
    assert sens.treatment == "recal" and len(sens.measured) == 9
    assert within_one_filter_per_block(sensitivity_plan(0.5, sens), 0.5)


def test_measure_sensitivity_recalibrates_everything_with_its_seed(tiny_splits, monkeypatch):
    seeds = []
    real = network_module.recalibrate_bn

    def spy(*args, **kwargs):
        seeds.append(kwargs.get("seed", "default"))
        return real(*args, **kwargs)

    monkeypatch.setattr(network_module, "recalibrate_bn", spy)
    model = dense(widths=TINY)
    x, y, train = tiny_splits.val_images, tiny_splits.val_labels, tiny_splits.train_images
    sens = measure_sensitivity(model, x, y, train, "l1", fractions=(0.5,), treatment="recal",
                               recal_batches=1, seed=3)
    assert seeds == [3] * 10  # the baseline, then the nine pruned networks
    baseline = real(copy.deepcopy(model), train, batches=1, seed=3)
    with torch.no_grad():
        right = (baseline.eval()(normalize(x)).argmax(1) == y).sum().item()
    assert sens.dense_accuracy == pytest.approx(right / len(y))


def sweep_file(tmp_path, model, val, labels, **settings):
    """A sweep file of ``model`` on the first 8 images, every block at half width, plus
    ``settings`` (e.g. refit_images, seed)."""
    from helpers.metrics import accuracy

    records = [{"block": n, "strategy": "l1", "treatment": t, "kept_filters": w // 2,
                "accuracy": 0.05} for n, w in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True)
               for t in ("none", "refit+recal")]
    saved = {"eval_images": 8, "eval_split": "val", "device": "cpu",
             "dense_accuracy": accuracy(model, val[:8], labels[:8]).value,
             "dense_accuracy_recalibrated": 0.25, "records": records, **settings}
    path = tmp_path / "block_pruning.json"
    path.write_text(json.dumps(saved))
    return path


def test_sensitivity_from_json_checks_the_repair_settings_and_seed(tiny_splits, tmp_path):
    model = dense(widths=TINY)
    val, labels = tiny_splits.val_images, tiny_splits.val_labels
    sweep = {"refit_images": 1024, "recal_batches": 10, "ridge": 1e-4, "seed": 0,
             "recal_batch_size": 256, "augment": True}
    path = sweep_file(tmp_path, model, val, labels, **sweep)
    same = {k: sweep[k] for k in ("refit_images", "recal_batches", "ridge", "seed")}
    assert sensitivity_from_json(path, model, val, labels, "l1", **same)[0] is not None
    assert sensitivity_from_json(path, model, val, labels, "l1")[0] is not None  # unchecked
    with pytest.raises(ValueError, match=r"seed 0 \(here 1\)") as err:
        sensitivity_from_json(path, model, val, labels, "l1", **same | {"seed": 1})
    assert "refit_images" not in str(err.value) and "ridge" not in str(err.value)
    with pytest.raises(ValueError, match=r"refit_images 1024 \(here 128\), recal_batches 10 "
                                         r"\(here 1\), ridge 0.0001 \(here 0.01\)"):
        sensitivity_from_json(path, model, val, labels, "l1", refit_images=128,
                              recal_batches=1, ridge=1e-2, seed=0)
    # without a refit, the refit's settings do not matter; without recalibration, neither do
    # the recalibration's
    assert sensitivity_from_json(path, model, val, labels, "l1", "none", refit_images=128,
                                 recal_batches=1, ridge=1e-2, seed=0)[0] is not None
    path = sweep_file(tmp_path, model, val, labels, **sweep | {"recal_batch_size": 64})
    with pytest.raises(ValueError, match=r"recal_batch_size 64 \(here 256\)"):
        sensitivity_from_json(path, model, val, labels, "l1", **same)
    path = sweep_file(tmp_path, model, val, labels)  # an older file: the settings are unknown
    with pytest.raises(ValueError, match="refit_images missing"):
        sensitivity_from_json(path, model, val, labels, "l1", **same)


def test_sensitivity_for_measures_again_when_the_sweep_used_another_seed(tiny_splits,
                                                                         tmp_path):
    model = dense(widths=TINY)
    val, labels, train = tiny_splits.val_images, tiny_splits.val_labels, tiny_splits.train_images
    path = sweep_file(tmp_path, model, val, labels, refit_images=16, recal_batches=1,
                      ridge=1e-4, seed=0)
    kw = dict(measure_images=8, fractions=(0.5,), refit_images=16, recal_batches=1)
    sens, why = network_module.sensitivity_for(model, "l1", val, labels, train, path, **kw)
    assert why.startswith("read from block_pruning.json") and sens.dense_accuracy == 0.25
    sens, why = network_module.sensitivity_for(model, "l1", val, labels, train, path, **kw,
                                               seed=1)
    assert why.startswith("measured here (block_pruning.json was measured with other settings")
    assert "seed 0 (here 1)" in why and [r["eval_images"] for r in sens.measured] == [8] * 9


def test_sensitivity_from_json_checks_split_and_checkpoint(tiny_splits, tmp_path):
    from helpers.metrics import accuracy

    model = dense(widths=TINY)
    val, labels = tiny_splits.val_images, tiny_splits.val_labels
    acc8 = accuracy(model, val[:8], labels[:8]).value
    records = [{"block": n, "strategy": s, "treatment": t, "kept_filters": w // 2,
                "accuracy": 0.05} for n, w in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True)
               for s in ("merge", "l1") for t in ("none", "refit+recal")]
    saved = {"eval_images": 8, "eval_split": "val", "device": "cpu", "dense_accuracy": acc8,
             "dense_accuracy_recalibrated": 0.25, "records": records}
    path = tmp_path / "block_pruning.json"
    assert sensitivity_from_json(path, model, val, labels)[0] is None  # missing
    path.write_text(json.dumps(saved))
    sens, why = sensitivity_from_json(path, model, val, labels, "l1")
    assert sens is not None and "9 'l1' points" in why and sens.treatment == "refit+recal"
    assert sens.dense_accuracy == 0.25  # the recalibrated baseline
    assert sens.loss["layer1.0"][8] == pytest.approx(0.2)
    path.write_text(json.dumps(saved | {"device": "NVIDIA H100"}))  # a GPU sweep of this network
    assert sensitivity_from_json(path, model, val, labels, "l1")[0] is not None
    for change, reason in [({"eval_split": "test"}, "'test' split"),
                           ({"dense_accuracy": acc8 + 0.5}, "another checkpoint"),
                           ({"eval_images": 11}, "11 images"),
                           ({"records": records[4:]}, "layer1.0")]:
        path.write_text(json.dumps(saved | change))
        sens, why = sensitivity_from_json(path, model, val, labels, "l1")
        assert sens is None and reason in why, why


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_resumes_and_then_reuses_the_finished_run(tiny_splits, tmp_path):
    teacher = dense(4, "A", TINY)
    plan = (2, 2, 2, 4, 4, 4, 4, 4, 4)
    cfg = finetune_config(epochs=2, lr=0.05, batch_size=32, checkpoint_every=1)
    key = {"dense": model_fingerprint(teacher), "plan": plan}

    def run(**kw):
        student = prune_network(teacher, plan, "l1")
        return finetune(student, tiny_splits, cfg, tmp_path, "p", key, teacher=teacher,
                        progress=False, **kw)

    reference = run()
    assert reference.epochs_run == 2 and len(reference.history) == 2
    reference.path.unlink()

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(callback=interrupt)
    resumed = run()
    assert resumed.epochs_run == 1 and resumed.path.name.startswith("finetune_state_p_")
    again = run()  # finished: loaded, nothing trained
    assert again.epochs_run == 0 and again.train_seconds == resumed.train_seconds
    for a, b, c in zip(reference.model.state_dict().values(), resumed.model.state_dict().values(),
                       again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b) and torch.equal(b, c)
    other = finetune(prune_network(teacher, plan, "l1"), tiny_splits, cfg, tmp_path, "p",
                     key | {"plan": "other"}, teacher=teacher, progress=False)
    assert other.path != again.path and other.epochs_run == 2


def test_result_cache_computes_each_key_once_and_survives_a_restart(tmp_path):
    calls = []

    def compute(value):
        calls.append(value)
        return {"accuracy": value, "correct": torch.tensor([True, False])}

    path = tmp_path / "network_state_ci.pt"
    cache = ResultCache(path)
    assert cache({"plan": [1, 2]}, lambda: compute(0.5))["accuracy"] == 0.5
    assert cache({"plan": [1, 2]}, lambda: compute(0.7))["accuracy"] == 0.5
    assert cache({"plan": [2, 2]}, lambda: compute(0.7))["accuracy"] == 0.7
    again = ResultCache(path)  # a new process
    assert len(again) == 2 and again.computed == 0
    assert torch.equal(again({"plan": [1, 2]}, lambda: compute(0.9))["correct"],
                       torch.tensor([True, False]))
    assert calls == [0.5, 0.7]


def first_version(x):
    return x + 1


def second_version(x):
    return x + 2


def test_code_version_hashes_the_source():
    assert code_version(first_version) == code_version(first_version)
    assert code_version(first_version) != code_version(second_version)
    assert code_version(first_version, second_version) != code_version(second_version,
                                                                        first_version)
    assert len(code_version(network_module)) == 12  # modules and classes too
    # the default sets: the functions of the pruning, measuring and training code
    from helpers.pruning import pruned_block, recalibrate_bn
    from helpers.refit import refit_conv2
    from helpers.train import train
    assert {pruned_block, recalibrate_bn, refit_conv2} <= set(pruning_functions())
    assert train in training_functions() and metrics.compare_latency in measuring_functions()


def test_result_cache_misses_when_the_code_changes(tmp_path, monkeypatch):
    path, calls = tmp_path / "network_state_ci.pt", []

    def compute():
        calls.append(1)
        return len(calls)

    assert ResultCache(path)({"plan": [1]}, compute) == 1
    assert ResultCache(path)({"plan": [1]}, compute) == 1 and len(calls) == 1  # a hit
    monkeypatch.setattr("helpers.refit.refit_conv2", second_version)  # "the refit changed"
    changed = ResultCache(path)
    assert changed({"plan": [1]}, compute) == 2 and changed.computed == 1  # a miss
    monkeypatch.undo()
    assert ResultCache(path)({"plan": [1]}, compute) == 1  # the old code's value is still there
    assert ResultCache(path, code="other")({"plan": [1]}, compute) == 3


def test_finetune_state_file_names_the_student_and_the_code(tmp_path, monkeypatch):
    paths = []

    def fake_train(student, data, cfg, device, checkpoint, **kwargs):
        paths.append(checkpoint)
        return []

    monkeypatch.setattr(finetune_module, "train", fake_train)
    cfg, key = finetune_config(epochs=1), {"dense": "abc", "plan": [2] * 9}

    def state(student):
        return finetune(student, None, cfg, tmp_path, "p", key, progress=False).path

    student = dense(7, widths=(2,) * 9)
    first = state(student)
    assert state(copy.deepcopy(student)) == first  # the same weights: the same run
    with torch.no_grad():
        student.conv.weight[0, 0, 0, 0] += 1e-3  # another student under the same key
    other = state(student)
    assert other != first
    monkeypatch.setattr("helpers.pruning.pruned_block", first_version)  # pruning code changed
    changed_pruning = state(student)
    assert changed_pruning not in (first, other)
    monkeypatch.setattr("helpers.train.loss_fn", first_version)  # the trainer changed
    assert state(student) not in (first, other, changed_pruning)
    assert paths == [first, first, other, changed_pruning, paths[-1]]


def test_compare_step_seconds_times_every_setup_without_training_them(monkeypatch):
    # A fake clock moved by the forward passes: 1 s per student forward, and per teacher
    # forward 50 s in the (untimed) warm-up step, then 0.5, 0.25 and 0.75 s in the three
    # rounds of 2 steps: known medians, minima and maxima per step.
    clock = {"t": 0.0}
    teacher_seconds = iter([50.0] + [0.5] * 2 + [0.25] * 2 + [0.75] * 2)

    def tick(seconds):
        return lambda *_: clock.__setitem__("t", clock["t"] + seconds())

    student, teacher = dense(5, widths=(2,) * 9), dense(6, widths=TINY)
    student.register_forward_pre_hook(tick(lambda: 1.0))  # the copies keep the hooks
    teacher.register_forward_pre_hook(tick(lambda: next(teacher_seconds)))
    monkeypatch.setattr(finetune_module, "time", SimpleNamespace(perf_counter=lambda: clock["t"]))
    before = [p.clone() for p in student.parameters()]
    cfg = finetune_config(epochs=1, batch_size=8)
    table = compare_step_seconds({"alone": (student, None), "taught": (student, teacher)}, cfg,
                                 steps=2, rounds=3).set_index("setup")
    assert list(table.index) == ["alone", "taught"]
    alone, taught = table.loc["alone"], table.loc["taught"]
    assert (alone.seconds_per_step, alone["min"], alone["max"]) == (1.0, 1.0, 1.0)
    assert taught.seconds_per_step == pytest.approx(1.0 + 0.5)
    assert (taught["min"], taught["max"]) == pytest.approx((1.0 + 0.25, 1.0 + 0.75))
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


# --------------------------------------------------------------------------- measuring


def test_compare_latency_reports_median_and_spread_and_restores_threads(monkeypatch):
    threads = torch.get_num_threads()
    models = {"dense": resnet20(widths=TINY), "pruned": resnet20(widths=(2,) * 9)}
    # known timings (seconds per pass) in the order each model is timed: for "dense" first the
    # two calls that choose ``number`` (0.01 s a pass: 5 passes make min_sample_s = 0.05 s),
    # then one warm-up sample (9 s: it must not count), then five timed rounds
    seconds = {"dense": [0.02, 0.01, 9.0, 0.004, 0.001, 0.003, 0.002, 0.005],
               "pruned": [9.0, 0.010, 0.030, 0.020, 0.050, 0.040]}
    numbers = []

    def fake_pass_seconds(model, x, number):
        name = next(n for n, m in models.items() if m is model)
        numbers.append(number)
        assert x.shape == (2, 3, 32, 32)
        return seconds[name].pop(0)

    monkeypatch.setattr(metrics, "_pass_seconds", fake_pass_seconds)
    table = compare_latency(models, batch_size=2, repeats=5, warmup=1, threads=1)
    assert not any(seconds.values()) and numbers == [1, 1] + [5] * 12
    assert list(table.model) == ["dense", "pruned"] and (table.threads == 1).all()
    assert (table.repeats == 5).all() and (table.number == 5).all()
    dense_row, pruned_row = (table.set_index("model").loc[n] for n in ("dense", "pruned"))
    quantiles = ["min_ms", "q1_ms", "median_ms", "q3_ms", "max_ms"]
    assert dense_row[quantiles].tolist() == pytest.approx([1, 2, 3, 4, 5])
    assert pruned_row[quantiles].tolist() == pytest.approx([10, 20, 30, 40, 50])
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="at least one model"):
        compare_latency({}, 2)


def test_compare_latency_visits_the_models_in_a_new_order_each_round():
    calls = []

    class Named(torch.nn.Module):  # records when it runs
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    names = [f"m{i}" for i in range(6)]
    compare_latency({n: Named(n) for n in names}, 1, repeats=4, warmup=0, number=1)
    rounds = [tuple(calls[-24:][i:i + 6]) for i in range(0, 24, 6)]
    assert all(sorted(r) == names for r in rounds)  # every model once per round
    assert len(set(rounds)) > 1  # 4 rounds of 6 models: one shared order has chance 1/720^3


def test_fold_bn_computes_the_same_function_without_bn():
    pruned = prune_network(dense(3), uniform_plan(0.5), "l1")
    folded = fold_bn(pruned)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert count_macs(folded) == count_macs(pruned)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), pruned.eval()(x), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- figures


def test_network_figures_draw():
    import matplotlib.pyplot as plt

    figs = []
    ladder = pd.DataFrame([{"strategy": s, "stage": st, "accuracy": a}
                           for s in ("l1", "merge")
                           for st, a in (("none", 0.2), ("recal", 0.6), ("refit+recal", 0.8))])
    figs.append(network_plots.recovery(ladder, 0.91, 5000))
    figs.append(network_plots.finetune_curves(
        {"50%": [{"epoch": 1, "val_accuracy": 0.85, "val_images": 5000},
                 {"epoch": 2, "val_accuracy": 0.88, "val_images": 5000}]}, 0.91))
    figs.append(network_plots.sensitivity_and_plans(
        fake_sensitivity(), {"uniform": uniform_plan(0.5)}, DEFAULT_WIDTHS, BLOCK_NAMES))
    legend = figs[-1].axes[1].get_legend()  # below the bars, not over them
    assert legend.get_bbox_to_anchor().transformed(figs[-1].axes[1].transAxes.inverted()).y1 < 0
    timed = pd.DataFrame([{"target": t, "allocation": a, "plan": (t, a), "macs": m, "speedup": x}
                          for t, a, m, x in ((0.5, "uniform", 21e6, 1.5),
                                             (0.5, "sensitivity", 21e6, 1.4),
                                             (0.7, "uniform", 13e6, 1.8))])
    figs.append(network_plots.speed_against_macs(timed, 43e6, 1.5))
    assert all(len(f.axes) >= 1 for f in figs)
    front = network_plots.pareto_front(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.4, 0.9]))
    assert front.tolist() == [0, 2]
    for f in figs:
        plt.close(f)


def test_speedups_time_plans_against_the_network(monkeypatch):
    model = dense(widths=TINY)
    plan = tuple(max(1, w // 2) for w in TINY)
    timed = []

    def fake_latency(nets, batch_size, device, repeats, **kwargs):  # latency ~ MACs
        timed.append((list(nets), batch_size))
        macs = [count_macs(m) / 1e3 for m in nets.values()]
        return pd.DataFrame({"model": list(nets), "threads": 1,
                             "samples_ms": [[v] * repeats for v in macs]})

    monkeypatch.setattr(network_module, "compare_latency", fake_latency)
    got = speedups(model, {"half": plan, "same": TINY, "twin": plan}, batch_size=2, repeats=1)
    assert timed == [(["unpruned", str(plan), str(TINY)], 2)]  # the same widths timed once
    ratio = count_macs(model) / count_macs(resnet20(model.shortcut, plan))
    assert got == pytest.approx({"half": ratio, "same": 1.0, "twin": ratio}) and ratio > 1.5
    with pytest.raises(ValueError, match="unpruned"):
        speedups(model, {"unpruned": plan})
    with pytest.raises(ValueError, match="layer1.0"):
        speedups(model, {"bad": (-1,) * 9})


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_steady_allocator_takes_on_glibc():
    assert steady_allocator() is True


def _pareto_result(head_epochs=30, plan_epochs=2, other_epochs=2):
    rec = [{"target": t, "headline": t == 0.5, "strategy": "l1", "allocation": "depth",
            "macs": m, "finetune_epochs": head_epochs if t == 0.5 else other_epochs,
            "acc_confirmation": a}
           for t, m, a in ((0.3, 30e6, 0.90), (0.4, 26e6, 0.89), (0.5, 21e6, 0.92),
                           (0.6, 17e6, 0.85))]
    plans_ = [{"strategy": s, "allocation": a, "macs": 21.3e6, "finetune_epochs": plan_epochs,
               "acc_confirmation": acc}
              for (s, a), acc in ((("l1", "depth"), 0.88), (("l1", "uniform"), 0.87),
                                  (("first", "depth"), 0.875))]
    return {"candidates": [{"strategy": "l1", "allocation": "depth", "macs": 21e6,
                            "accuracy": 0.7}],
            "dense_macs": 42.9e6, "dense_selection_accuracy": 0.93, "selection_images": 2500,
            "confirmation_images": 2500, "dense_confirmation_accuracy": 0.925,
            "dense_finetuned_confirmation_accuracy": 0.93, "headline_target": 0.5,
            "finetune": {"headline_epochs": head_epochs}, "records": rec,
            "headline_plans": plans_}


def test_pareto_by_epochs_joins_only_equal_budgets_and_keeps_unpruned_and_control_apart():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.study import network_plots

    result = _pareto_result()  # the cpu profile's shape: a 2-epoch front and a 30-epoch headline
    points = network_plots.finetuned_points(result)
    assert sorted(points.epochs.unique()) == [2, 30]
    assert (points[points.headline].epochs == 30).all() and points.headline.sum() == 1
    fig = network_plots.pareto_by_epochs(result, "t")
    right = fig.axes[1]
    marks = {t.get_text().split(":")[0]: t.xy for t in right.texts
             if t.get_text().startswith(("unpruned", "control"))}
    assert set(marks) == {"unpruned", "control"}
    assert abs(marks["unpruned"][0] - marks["control"][0]) >= 2  # M MACs apart
    dashed = [ln for ln in right.lines if ln.get_linestyle() == "--"]
    two = {round(m / 1e6, 6) for m in points[points.epochs == 2].macs}
    assert len(dashed) == 1 and {round(v, 6) for v in dashed[0].get_xdata()} <= two
    assert 21.0 not in {round(v, 6) for v in dashed[0].get_xdata()}  # not the 30-epoch one
    plt.close(fig)
    # the full profile: every network fine-tuned 30 epochs, one front through all of them
    same = network_plots.finetuned_points(_pareto_result(30, 30, 30))
    assert set(same.epochs) == {30} and len(same) == 6  # l1 depth at 50% listed once
    plt.close(network_plots.pareto_by_epochs(_pareto_result(30, 30, 30)))


def test_speed_by_runtime_draws_each_runtime_and_stars_the_latency_plan():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.study import network_plots

    def speeds(prefix, s):
        return {f"{prefix}{b}{x}": s + d for b in (256, 1)
                for x, d in (("", 0.0), ("_low", -0.05), ("_high", 0.05))}

    records = [{"target": t, "headline": t == 0.5, "macs": m,
                **speeds("speedup_cpu_batch", s), **speeds("onnxruntime_speedup_batch", s - 0.2)}
               for t, m, s in ((0.3, 30e6, 1.2), (0.5, 20e6, 1.4))]
    result = {"records": records, "dense_macs": 40e6, "min_speedup": 1.5, "cpu_threads": 2}
    fig = network_plots.speed_by_runtime(result)
    assert not [ln for ln in fig.axes[0].lines if ln.get_marker() == "*"]
    plt.close(fig)
    plan = {"macs": 16e6, **speeds("speedup_torch_batch", 1.7),
            **speeds("speedup_onnxruntime_batch", 1.55)}
    fig = network_plots.speed_by_runtime(result | {"latency_plans": [plan]})
    stars = [ln for ln in fig.axes[0].lines if ln.get_marker() == "*"]
    assert sorted(float(ln.get_ydata()[0]) for ln in stars) == [1.55, 1.7]
    assert {float(ln.get_xdata()[0]) for ln in stars} == {60.0}  # 60% of the MACs removed
    plt.close(fig)
