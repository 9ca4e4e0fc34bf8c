"""helpers.study.latency_plans: the network chosen by a latency budget in both runtimes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import paths
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS, STAGE_WIDTHS
from helpers.study import latency_plans
from helpers.study.latency import candidate_stage_widths, predict_ms
from tests.test_latency import _loss, _with_residual, linear_table


def _latency(checks=()):
    return {"tables": {"pytorch": {"256": linear_table()},
                       "onnxruntime": {"256": linear_table(per_mac=2e-6, removed=0.0)}},
            "checks": list(checks)}


def test_budgets_divide_the_unpruned_time_widened_by_the_checks_error():
    lat = _latency()
    dense = {r: predict_ms(t["256"], DEFAULT_WIDTHS) for r, t in lat["tables"].items()}
    assert latency_plans.budgets(lat, 1.5) == pytest.approx({r: d / 1.5 for r, d in dense.items()})
    checks = [{"runtime": "pytorch", "batch_size": 256, "error": -0.04},  # measured 4% slower
              {"runtime": "pytorch", "batch_size": 256, "error": 0.02},
              {"runtime": "pytorch", "batch_size": 1, "error": -0.5},  # another batch size
              {"runtime": "onnxruntime", "batch_size": 256, "error": 0.03}]
    got = latency_plans.budgets(_latency(checks), 1.5)
    assert got["pytorch"] == pytest.approx(dense["pytorch"] / 1.5 * 1.04)
    assert got["onnxruntime"] == pytest.approx(dense["onnxruntime"] / 1.5 * 1.03)
    with pytest.raises(ValueError, match="positive"):
        latency_plans.budgets(lat, 0)


def test_candidates_fit_the_budgets_best_predicted_accuracy_first():
    lat = _latency()
    got = latency_plans.candidates(_loss(), lat, 1.5, n=5)
    assert len(got) == 5 and len(set(got)) == 5
    assert all(stages == STAGE_WIDTHS for _, stages in got)  # no stage losses: full stages
    limit = latency_plans.budgets(lat, 1.5)
    for plan, _ in got:
        for runtime, by_batch in lat["tables"].items():
            assert predict_ms(by_batch["256"], plan) <= limit[runtime] + 1e-12
    lost = [sum(_loss()[b][k] for b, k in zip(BLOCK_NAMES, p, strict=True)) for p, _ in got]
    assert lost == sorted(lost)
    assert latency_plans.candidates(_loss(), lat, 1000.0) == []  # a goal no plan reaches


def test_candidates_narrow_a_stage_when_it_is_cheap_in_accuracy():
    lat = {"tables": {r: {"256": _with_residual(t["256"], 0.05)}
                      for r, t in _latency()["tables"].items()}}
    free = {s: {r: 0.0 for r in candidate_stage_widths(s)} for s in ("layer1", "layer2",
                                                                      "layer3")}
    got = latency_plans.candidates(_loss(), lat, 1.5, n=3, stage_loss=free)
    assert got and all(stages != STAGE_WIDTHS for _, stages in got)  # narrowing costs nothing
    for plan, stages in got:
        for by_batch in lat["tables"].values():
            assert predict_ms(by_batch["256"], plan, stages) <= predict_ms(
                by_batch["256"], DEFAULT_WIDTHS) / 1.5 + 1e-12
    assert latency_plans.label((DEFAULT_WIDTHS, STAGE_WIDTHS)) == str(DEFAULT_WIDTHS)
    assert latency_plans.label((DEFAULT_WIDTHS, (16, 16, 48))).endswith("stages (16, 16, 48)")


def test_measured_choice_takes_the_first_plan_fast_enough_in_every_runtime():
    a, b, c = (8,) * 9, (16,) * 9, (4,) * 9
    speeds = pd.DataFrame([{"model": str(p), "runtime": r, "speedup": s}
                           for p, sp in ((a, {"pytorch": 1.7, "onnxruntime": 1.45}),
                                         (b, {"pytorch": 1.6, "onnxruntime": 1.52}),
                                         (c, {"pytorch": 1.9, "onnxruntime": 1.8}))
                           for r, s in sp.items()])
    assert latency_plans.measured_choice(speeds, [a, b, c], 1.5) == b  # a misses in ONNX RT
    assert latency_plans.measured_choice(speeds, [c, b], 1.5) == c
    # none reaches the goal: the plan whose slower runtime is fastest
    assert latency_plans.measured_choice(speeds, [a, b], 1.6) == b
    # candidate pairs are named by their label
    pair = (a, (16, 16, 48))
    named = speeds.assign(model=speeds.model.replace(str(a), latency_plans.label(pair)))
    assert latency_plans.measured_choice(named, [pair, (b, STAGE_WIDTHS)], 1.4) == pair


def test_speed_keys_name_both_runtimes_and_batches():
    rows = [{"model": m, "runtime": r, "batch_size": b, "median_ms": 2.0, "speedup": s,
             "speedup_low": s - 0.1, "speedup_high": s + 0.1}
            for m, s in (("unpruned", 1.0), ("latency", 1.6))
            for r in ("pytorch", "onnxruntime") for b in (256, 1)]
    keys = latency_plans.speed_keys(pd.DataFrame(rows), "latency")
    for runtime in ("torch", "onnxruntime"):
        for b in (256, 1):
            assert keys[f"speedup_{runtime}_batch{b}"] == 1.6
            assert keys[f"speedup_{runtime}_batch{b}_low"] == pytest.approx(1.5)
            assert keys[f"{runtime}_ms_batch{b}"] == 2.0
    assert len(keys) == 16


def test_committed_latency_plan_is_what_its_tables_chose():
    """results/network_pruning.json's latency_plans: the widths meet the budgets recorded
    with them in the committed tables, and the record carries what the issue asks."""
    result = json.loads((paths.RESULTS / "network_pruning.json").read_text())
    if not result.get("latency_plans"):
        pytest.skip("no latency plan yet (python -m helpers.study.latency_plans)")
    rec = result["latency_plans"][0]
    latency = json.loads((paths.RESULTS / "latency.json").read_text())
    for runtime, budget in rec["budget_ms"].items():
        assert predict_ms(latency["tables"][runtime]["256"], rec["widths"],
                          rec.get("stage_widths")) <= budget + 1e-9
    for key in ("speedup_torch_batch256", "speedup_onnxruntime_batch256", "acc_confirmation",
                "macs"):
        assert key in rec
    for runtime in ("torch", "onnxruntime"):
        for b in (256, 1):
            k = f"speedup_{runtime}_batch{b}"
            assert rec[f"{k}_low"] <= rec[k] <= rec[f"{k}_high"]
    assert rec["removed_blocks"] == [b for b, k in zip(BLOCK_NAMES, rec["widths"], strict=True)
                                     if k == 0]


def test_main_runs_end_to_end_in_the_ci_profile(lab_root, monkeypatch, capsys):
    """The whole step on the ci profile's small sizes: it chooses a plan within the budgets,
    fine-tunes, scores and times it, and leaves the repository's results alone."""
    if not (paths.RESULTS / "latency.json").exists():
        pytest.skip("results/latency.json not yet written (make latency)")
    monkeypatch.setenv("CIFAR10_ROOT", str(lab_root))
    before = (paths.RESULTS / "network_pruning.json").read_bytes()
    assert latency_plans.main(["--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert "results/ untouched" in out and out.count("<- chosen") == 1
    assert (paths.RESULTS / "network_pruning.json").read_bytes() == before
    losses = [float(line.split("predicted loss ")[1].split()[0]) for line in out.splitlines()
              if "predicted loss " in line]
    assert losses and np.isfinite(losses).all() and losses == sorted(losses)  # best first
