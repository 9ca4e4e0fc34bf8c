"""Whole-network pruning: plans, exact MACs, prune_network, save/load, resumable fine-tuning."""

import json
import random

import numpy as np
import pytest
import torch

from helpers.metrics import count_macs, count_params
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS, load_model, resnet20, save_model
from helpers.network import (
    MACS_PER_FILTER,
    Sensitivity,
    block_sensitivity,
    check_plan,
    compare_latency,
    fold_bn,
    macs_removed,
    plan_macs,
    plan_params,
    prune_network,
    sensitivity_from_json,
    sensitivity_plan,
    uniform_plan,
)
from helpers.pruning import recalibrate_bn
from helpers.train import TrainConfig, finetune_config, train

TARGETS = (0.1, 0.3, 0.5, 0.7, 0.85)


def dense(seed=0, shortcut="conv3x3"):
    torch.manual_seed(seed)
    model = resnet20(shortcut)
    with torch.no_grad():  # non-trivial BN statistics, as in a trained network
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def fake_sensitivity(dense_accuracy=0.9):
    """Stage 1 most sensitive, first block of a stage twice as sensitive, quadratic curves."""
    records = []
    for name, width in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True):
        s = {"layer1": 0.3, "layer2": 0.15, "layer3": 0.05}[name[:6]] * (
            2 if name.endswith(".0") else 1)
        for f in (0.25, 0.5, 0.75):
            records.append({"block": name, "strategy": "merge", "bn_recalibration": True,
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
@pytest.mark.parametrize("round_to", [1, 4])
def test_uniform_plan_hits_target_and_stays_uniform(target, round_to):
    if round_to == 4 and target > 0.8:
        with pytest.raises(ValueError, match="multiple of 4"):
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
    records = [{"block": n, "strategy": "merge", "bn_recalibration": True, "kept_filters": 0.5,
                "accuracy": 0.95} for n in BLOCK_NAMES]  # noisy: "better" than dense
    records += [{"block": "layer1.0", "strategy": "l1", "bn_recalibration": True,
                 "kept_filters": 8, "accuracy": 0.1}]  # another strategy: ignored
    sens = Sensitivity.from_records(records, 0.9)
    for name, width in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True):
        curve = sens.loss[name]
        assert len(curve) == width + 1 and curve[width] == 0
        assert np.all(np.diff(curve) <= 1e-12) and np.all(curve >= 0)
    with pytest.raises(ValueError, match="layer1.0"):
        Sensitivity.from_records(records[1:], 0.9)


def test_unreachable_target_raises():
    with pytest.raises(ValueError, match="keeping one filter per block removes"):
        uniform_plan(0.95)
    with pytest.raises(ValueError, match="fraction of MACs removed"):
        uniform_plan(1.5)


@pytest.mark.parametrize("plan, block", [
    ((16,) * 8, None),
    ((0, 16, 16, 32, 32, 32, 64, 64, 64), "layer1.0"),
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


def test_pruned_model_save_load_round_trip(tmp_path):
    pruned = prune_network(dense(), uniform_plan(0.3), "merge")
    recalibrate_bn(pruned, torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8),
                   batches=2, batch_size=32)
    path = tmp_path / "pruned.pt"
    save_model(pruned, path, target=0.3)
    loaded = load_model(path)
    assert loaded.widths == pruned.widths and loaded.shortcut == "conv3x3"
    assert loaded.meta == {"target": 0.3}
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded.eval()(x), pruned.eval()(x))


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_with_distillation_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    torch.manual_seed(2)
    teacher = resnet20("A", (4, 4, 4, 8, 8, 8, 8, 8, 8)).eval()  # small: fast on a CPU
    plan = (2, 2, 2, 4, 4, 4, 4, 4, 4)
    cfg = finetune_config(epochs=2, lr=0.05, batch_size=32, checkpoint_every=1)
    assert cfg.warmup_epochs <= 1 and cfg.distill_weight > 0

    def run(**kw):
        student = prune_network(teacher, plan, "l1")
        history = train(student, tiny_data, cfg, device="cpu", teacher=teacher, progress=False,
                        **kw)
        return student, history

    reference, ref_history = run()

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "finetune.pt"
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=ckpt, callback=interrupt)
    resumed, history = run(checkpoint=ckpt)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in ref_history]
    assert isinstance(cfg, TrainConfig)


# --------------------------------------------------------------------------- measuring


def test_block_sensitivity_records(tiny_data):
    model = resnet20("conv3x3").eval()
    records = block_sensitivity(model, tiny_data.test_images, tiny_data.test_labels,
                                tiny_data.train_images[:16], "l1", fractions=(0.5,),
                                recalibration_batches=1)
    assert [r["block"] for r in records] == list(BLOCK_NAMES)
    assert [r["kept_filters"] for r in records] == [w // 2 for w in DEFAULT_WIDTHS]
    assert all(r["bn_recalibration"] and 0 <= r["accuracy"] <= 1 and r["eval_images"] == 10
               for r in records)
    sens = Sensitivity.from_records(records, 0.5, strategy="l1")
    assert within_one_filter_per_block(sensitivity_plan(0.5, sens), 0.5)


def test_compare_latency_measures_every_model():
    models = {"dense": resnet20(), "pruned": resnet20(widths=(4,) * 9)}
    ms = compare_latency(models, batch_size=2, rounds=2, repeats=2, warmup=1)
    assert set(ms) == {"dense", "pruned"} and all(v > 0 for v in ms.values())


def test_fold_bn_computes_the_same_function_without_bn():
    pruned = prune_network(dense(3), uniform_plan(0.5), "l1")
    folded = fold_bn(pruned)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert count_macs(folded) == count_macs(pruned)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), pruned.eval()(x), rtol=1e-4, atol=1e-4)


def test_sensitivity_from_json_checks_images_device_and_checkpoint(tmp_path):
    records = [{"block": n, "strategy": s, "bn_recalibration": True, "kept_filters": w // 2,
                "accuracy": 0.8} for n, w in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True)
               for s in ("merge", "l1")]
    saved = {"eval_images": 1000, "device": "NVIDIA H100 80GB HBM3", "dense_accuracy": 0.9,
             "dense_accuracy_recalibrated": 0.89, "records": records}
    path = tmp_path / "block_pruning.json"
    assert sensitivity_from_json(path, 0.9, 1000, "cuda")[0] is None  # missing
    path.write_text(json.dumps(saved))
    sens, why = sensitivity_from_json(path, 0.9, 1000, "cuda")
    assert sens is not None and "9 'merge' points" in why
    assert sens.dense_accuracy == 0.89  # recalibrated records: the recalibrated baseline
    assert sens.loss["layer1.0"][8] == pytest.approx(0.09)
    for args, reason in [((0.9, 500, "cuda"), "500"), ((0.9, 1000, "cpu"), "not on cpu"),
                         ((0.95, 1000, "cuda"), "another checkpoint")]:
        sens, why = sensitivity_from_json(path, *args)
        assert sens is None and reason in why, why
    saved["records"] = records[2:]  # layer1.0 missing
    path.write_text(json.dumps(saved))
    sens, why = sensitivity_from_json(path, 0.9, 1000, "cuda")
    assert sens is None and "layer1.0" in why
