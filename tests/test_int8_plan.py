"""helpers.study.int8_plan: pruning chosen by an int8 latency table, and its record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import paths
from helpers.models import DEFAULT_WIDTHS, resnet20
from helpers.onnx_runtime import OnnxModel
from helpers.study import int8_plan, latency_tables
from helpers.study.latency import predict_ms, predicted_loss, stage_options
from helpers.study.network import fold_bn
from helpers.study.profile import Int8Sizes
from tests.test_latency import _loss, linear_table


def test_in_runtime_int8_is_the_network_quantized_for_onnx_runtime():
    """The int8 runtime of the tables runs the same network as float, up to int8 rounding (a
    random network's logits correlate), and an unknown runtime names the int8 one."""
    torch.manual_seed(0)
    model = fold_bn(resnet20().eval())
    net = latency_tables.in_runtime(model, latency_tables.INT8, threads=1)
    assert isinstance(net, OnnxModel)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x).flatten().numpy(), net(x).flatten().numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.9
    with pytest.raises(ValueError, match="onnxruntime_int8"):
        latency_tables.in_runtime(model, "tensorrt", threads=1)


def test_measure_every_keeps_only_the_measured_widths(monkeypatch):
    """A table of every n-th variant holds those widths and the full ones, never a width it
    did not time (an unmeasured width written as 0 ms would look free to the plan search)."""
    seen = []

    def fake(todo, runtime, batch, repeats, calls, threads, shortcut, group):
        seen.extend(n for n, _, _ in todo)
        return {n: -1.0 for n in seen}, {n: -0.1 for n in seen}, [10.0]

    monkeypatch.setattr(latency_tables, "_deltas", fake)
    table = latency_tables.measure("pytorch", 256, every=40)
    names = [n for n in latency_tables.variants() if n != "unpruned"]
    assert seen == names[::40]
    for stage, entries in table["stages"].items():
        full = ",".join(map(str, stage_options(stage)[-1]))
        assert entries[full] == 0.0
        assert set(entries) == {full} | {n.split(":")[1] for n in seen if n.startswith(stage)}
    with pytest.raises(ValueError, match="every"):
        latency_tables.measure("pytorch", 256, every=0)


def _table():
    return linear_table(per_mac=1e-6, removed=0.0)


def test_frontier_costs_more_loss_for_more_speed_and_matches_the_choice():
    """Each goal's row is the protocol's choice at that goal (predicted to reach it), and a
    higher goal never costs less predicted loss (the plans of a higher goal are a subset)."""
    rows = int8_plan.frontier(_loss(), {}, _table(), (1.1, 1.3, 1.6))
    assert [r["goal"] for r in rows] == [1.1, 1.3, 1.6]
    for r in rows:
        assert r["predicted_speedup"] >= r["goal"] - 1e-9
        choice = int8_plan.choose(_loss(), {}, int8_plan.as_tables(_table()),
                                  int8_plan.PROTOCOL | {"goal_speedup": r["goal"]})
        assert (tuple(r["widths"]), tuple(r["stage_widths"])) == choice
        assert r["predicted_loss"] == pytest.approx(predicted_loss(_loss(), choice[0]))
    lost = [r["predicted_loss"] for r in rows]
    assert lost == sorted(lost) and lost[0] < lost[-1]


def test_load_table_reuses_this_machines_table_and_keeps_every_look(tmp_path, monkeypatch):
    calls = []

    def fake(S, threads):
        calls.append(threads)
        return {"dense_ms": 1.0, **latency_tables.machine(threads), "every": S.table_every,
                "residual": {}, "date": "2026-12-07"}

    monkeypatch.setattr(int8_plan, "measure_table", fake)
    path, S = tmp_path / "int8_plan.json", Int8Sizes()
    int8_plan.load_table(path, S, 2)
    int8_plan.load_table(path, S, 2)
    assert calls == [2]  # measured once, then reused
    int8_plan.write(path, widths=[1], confirmation_looks=[{"accuracy": 0.9}])
    int8_plan.load_table(path, S, 1)  # another thread count: measured again
    assert calls == [2, 1]
    record = json.loads(path.read_text())
    assert record["confirmation_looks"] == [{"accuracy": 0.9}]  # the look survives a new table
    assert "widths" not in record  # the choice made from the old table does not


def test_main_refuses_a_second_look(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RESULTS", tmp_path)
    (tmp_path / "int8_plan.json").write_text(json.dumps({"confirmation_looks": [
        {"plan": "p", "accuracy": 0.9, "date": "2026-12-07", "commit": "x",
         "protocol": int8_plan.PROTOCOL["name"]}]}))
    monkeypatch.setattr(int8_plan, "load_table", lambda *a: 1 / 0)  # never reached
    with pytest.raises(SystemExit, match="--look-again"):
        int8_plan.main(["--profile", "cpu"])


def _committed():
    path = paths.RESULTS / "int8_plan.json"
    if not path.exists():
        pytest.skip("results/int8_plan.json not yet written (python -m helpers.study.int8_plan)")
    record = json.loads(path.read_text())
    if "verdicts" not in record:
        pytest.skip("results/int8_plan.json holds only the table so far")
    return record


def _recomputed(record):
    loss = {b: np.asarray(v, float) for b, v in record["block_loss"].items()}
    stage_loss = {s: {int(r): v for r, v in by.items()} for s, by in record["stage_loss"].items()}
    return int8_plan.choose(loss, stage_loss, int8_plan.as_tables(record["table"]),
                            record["protocol"])


def test_committed_int8_plan_is_its_protocols_choice_from_its_table():
    """The plan recorded is the one the declared protocol chooses from the recorded table and
    losses; a record with another plan fails the same comparison."""
    record = _committed()
    assert record["protocol"] == int8_plan.PROTOCOL
    choice = _recomputed(record)
    assert (list(choice[0]), list(choice[1])) == (record["widths"], record["stage_widths"])
    t = record["table"]
    assert predict_ms(t, DEFAULT_WIDTHS) / predict_ms(t, *choice) >= int8_plan.GOAL - 1e-9
    wrong = record | {"widths": [16, 16, 16, 32, 32, 32, 64, 64, 64]}
    assert (list(choice[0]), list(choice[1])) != (wrong["widths"], wrong["stage_widths"])


def test_committed_int8_plan_verdicts_follow_from_its_numbers():
    """The speed verdict from the processes' speed-ups, the accuracy verdict from the gap, the
    goal from both; every look at the confirmation half kept; the CPU named."""
    record = _committed()
    speed = latency_tables.verdict(record["speedup_processes"], int8_plan.GOAL)
    gap = 100 * (record["networks"]["int8 plan int8"]["acc_confirmation"]
                 - record["reference_confirmation"])
    accuracy = "met" if gap >= -int8_plan.GAP else "missed"
    assert record["verdicts"]["speed"] == speed and record["verdicts"]["accuracy"] == accuracy
    assert record["gap_points"] == pytest.approx(gap)
    goal = record["verdicts"]["goal"]
    assert (goal == "met") == (speed == accuracy == "met")
    assert record["cpu"] and record["threads"] and len(record["speedup_processes"]) >= 3
    last = record["confirmation_looks"][-1]
    assert last["accuracy"] == record["networks"]["int8 plan int8"]["acc_confirmation"]
    assert last["widths"] == record["widths"] and last["protocol"] == record["protocol"]["name"]


def test_main_runs_end_to_end_in_the_ci_profile(lab_root, monkeypatch, capsys):
    """The whole step on the ci sizes: a table of a few widths, the choice, fine-tuning, int8
    scores, one look and the timing processes, into a temporary folder."""
    monkeypatch.setenv("CIFAR10_ROOT", str(lab_root))
    committed = {p: p.read_bytes() for p in paths.RESULTS.glob("*.json")}
    assert int8_plan.main(["--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert out.count("<- chosen") == 1 and "3 fresh processes" in out
    assert "look 1" in out and "goal (1.3x" in out
    assert {p: p.read_bytes() for p in paths.RESULTS.glob("*.json")} == committed


def test_frontier_figure_draws_the_record():
    """The figure's measured point is the chosen network's speed-up and loss from the record,
    with the slowest and fastest process as its range; a record missing them fails."""
    import matplotlib

    matplotlib.use("Agg")
    record = _committed()
    other = [r | {"predicted_loss": r["predicted_loss"] / 2} for r in record["frontier"]]
    fig = int8_plan.frontier_figure(record, {"halved": other})
    net = record["networks"]["int8 plan int8"]
    points = [line.get_xydata() for line in fig.axes[0].lines]
    assert sum(len(p) == len(record["frontier"]) for p in points) == 2  # both curves drawn
    assert any(np.allclose(p, [[net["speedup_batch256"], -record["gap_points"]]]) for p in points)
    front = next(p for p in points if len(p) == len(record["frontier"]))
    assert np.allclose(front[:, 1], [100 * r["predicted_loss"] for r in record["frontier"]])
    with pytest.raises(KeyError):
        int8_plan.frontier_figure({k: v for k, v in record.items() if k != "gap_points"})


def test_goal_verdicts_need_both_parts_and_a_missed_part_decides():
    assert int8_plan.goal_verdicts("met", -0.5)["goal"] == "met"  # the margin is inclusive
    assert int8_plan.goal_verdicts("met", -0.51) == {"speed": "met", "accuracy": "missed",
                                                     "goal": "missed"}
    assert int8_plan.goal_verdicts("not decided", 0.3)["goal"] == "not decided"
    assert int8_plan.goal_verdicts("not decided", -1.36)["goal"] == "missed"
    assert int8_plan.goal_verdicts("missed", 1.0)["goal"] == "missed"
