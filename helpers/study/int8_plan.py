"""Pruning that stacks with int8: a plan chosen by an int8 latency table, fine-tuned and timed.

    python -m helpers.study.int8_plan               # cpu profile: results/int8_plan.json
    python -m helpers.study.int8_plan --profile ci  # a quick run into a temporary folder

:mod:`helpers.study.int8` found int8 alone faster than every pruned network, and pruning chosen
for float time adding little on top of it. This step asks what pruning chosen for int8 time
gives:

1. **An int8 latency table** (:func:`measure_table`): the same variants as the float tables of
   :mod:`helpers.study.latency_tables` (each stage's candidate conv1 widths, the residual stage
   widths), every network quantized as deployed (:data:`helpers.study.latency_tables.INT8`:
   uint8 activations, the constant adds of removed blocks kept in float) and timed in ONNX
   Runtime at batch 256 against the unpruned int8 network in the same rounds. Which widths
   suit the int8 kernels (e.g. 8-channel convolutions against 16) is read from it, not
   assumed. It is checked on whole networks (:func:`helpers.study.latency_tables.check`).
2. **The choice**, by :data:`PROTOCOL` (with :data:`GAP`, committed in a404b15 after the int8
   table had been measured, before any plan was computed from it): the plan of least
   predicted accuracy loss whose *predicted* int8 speed-up over the unpruned int8 network
   reaches :data:`GOAL`. The losses are the selection half's, recorded with the latency plan
   (``latency_plans[0]`` of ``results/network_pruning.json``: block sensitivity with refit and
   recalibration, the measured cost of removing a block and of narrowing a stage; their sum is
   a ranking score, not a forecast: the chosen plan, measured before fine-tuning, lost far more
   than it). No timing
   of a candidate and no confirmation image takes part. The least predicted loss at other
   goals (:func:`frontier`) shows what each step of speed costs.
3. **Fine-tuning** as the latency plan's (:func:`helpers.study.latency_plans.prune_and_finetune`:
   the study's rule, schedule and teacher, 30 epochs, resumable), then int8 quantization
   calibrated on training images, a score on the selection half, **one look** at the
   confirmation half (appended to the record's ``confirmation_looks`` at once; a second run
   under the protocol is refused) and the test images.
4. **Timing** in ONNX Runtime, 3 fresh processes (the verdict reads the slowest and fastest):
   the unpruned network in fp32 and int8, and the chosen network in fp32 and int8.

**Goal** (issue 31): at least 1.3x over the unpruned int8 network at batch 256, within 0.5
points of the better unpruned network on the confirmation half (the higher of the unpruned
network's and its fine-tuned control's float accuracy, ``results/network_pruning.json``: the
budget includes what int8 rounding costs).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from helpers import paths, stats
from helpers.data import load_splits, normalize, selection_confirmation
from helpers.device import default_device, device_name
from helpers.metrics import count_macs
from helpers.models import DEFAULT_WIDTHS, load_model, save_model
from helpers.onnx_runtime import OnnxModel, export
from helpers.study import finetune, network
from helpers.study.int8 import speed_fields, time_graphs
from helpers.study.latency import predict_ms, predicted_loss
from helpers.study.latency_plans import (
    candidates,
    choose,
    commit,
    label,
    prune_and_finetune,
    refuse_second_look,
)
from helpers.study.latency_tables import (
    CHECK_PLANS,
    INT8,
    check,
    machine,
    measure,
    process_summary,
    residual_entries,
)
from helpers.study.profile import Int8Sizes, outputs, resolve_profile, sizes
from helpers.study.quantize import quantize_onnx

GOAL = 1.3  # over the unpruned int8 network, ONNX Runtime, batch 256
BATCH = 256
GAP = 0.5  # points: the accuracy goal, against the better unpruned network (confirmation half)
PROTOCOL = {  # declared 2026-12-07 (see the module's docstring); recorded with its plan
    "name": "least predicted loss whose predicted speed-up reaches the goal",
    "declared": "2026-12-07", "goal_speedup": GOAL, "batch_size": BATCH, "margin": 0.0,
    "runtimes": [INT8], "reference": "the unpruned network in int8",
    "loss": "selection half, as recorded by the latency plan (latency_plans[0] of "
            "results/network_pruning.json: block_loss, stage_loss; float networks)",
    "time": "the int8 latency table (results/int8_plan.json), batch 256"}
FRONTIER = (1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)  # goals whose least predicted loss is shown
STATE = "int8plan"  # fine-tuning state files: checkpoints/<profile>_int8plan*
CHECKPOINT = "resnet20_int8plan.pt"  # the chosen network, fine-tuned (float; quantize to run)


def measure_table(S: Int8Sizes, threads: int) -> dict:
    """The int8 latency table at batch :data:`BATCH` (``dense_ms``, ``stages``, ``fractions``,
    with ``S.table_residual`` the ``residual`` entries too), with the date, the seconds it took
    and the machine."""
    start = time.perf_counter()
    table = measure(INT8, BATCH, S.table_repeats, S.table_calls, threads, every=S.table_every)
    if S.table_residual:
        table |= residual_entries(INT8, BATCH, S.table_repeats, S.table_calls, threads)
    return {**table, "runtime": INT8, "batch_size": BATCH, "every": S.table_every,
            **machine(threads), "date": time.strftime("%Y-%m-%d"),
            "seconds": round(time.perf_counter() - start)}


def load_table(path, S: Int8Sizes, threads: int, again: bool = False) -> dict:
    """The record's table when it was measured on this machine with these sizes, else a new
    one (written to ``path`` at once: the slow step is never repeated by an interruption)."""
    record = json.loads(path.read_text()) if path.exists() else {}
    old = record.get("table", {})
    same = {**machine(threads), "every": S.table_every}
    if not again and old and all(old.get(k) == v for k, v in same.items()) and (
            "residual" in old) == S.table_residual:
        print(f"int8 table of {old['date']} ({old['cpu']}, {old['threads']} threads) reused")
        return old
    print(f"measuring the int8 latency table on {same['cpu']}, {threads} threads ...", flush=True)
    # a new table voids the old choice; the looks at the confirmation half stay recorded
    record = {"table": measure_table(S, threads),
              "confirmation_looks": record.get("confirmation_looks", [])}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record["table"]


def as_tables(table: Mapping) -> dict:
    """The int8 table in the form :func:`helpers.study.latency_plans.choose` reads."""
    return {"tables": {INT8: {str(BATCH): table}}}


def frontier(loss: Mapping, stage_loss: Mapping, table: Mapping,
             goals: Sequence[float] = FRONTIER) -> list[dict]:
    """For each goal, the plan :data:`PROTOCOL` would choose at it: its predicted loss and
    predicted int8 speed-up (what each step of speed costs; descriptive)."""
    rows = []
    for goal in goals:
        c = choose(loss, stage_loss, as_tables(table), PROTOCOL | {"goal_speedup": goal})
        if c is not None:
            rows.append({"goal": goal, "plan": label(c), "widths": list(c[0]),
                         "stage_widths": list(c[1]),
                         "predicted_loss": predicted_loss(loss, c[0], stage_loss, c[1]),
                         "predicted_speedup": predict_ms(table, DEFAULT_WIDTHS)
                         / predict_ms(table, *c)})
    return rows


def frontier_figure(record: Mapping, others: Mapping[str, Sequence[Mapping]] | None = None):
    """What int8 speed costs in accuracy: the least predicted loss at each goal (the search's
    ranking score: the selection half's per-block losses summed, before fine-tuning) by the int8
    table, and by ``others`` (:func:`frontier` rows by name, e.g. a float table's, dashed); the
    chosen network after fine-tuning (measured: its speed-up's slowest to fastest process, its
    loss against the better unpruned network on the confirmation half); the goal's corner."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    curves = {"int8 table": record["frontier"], **(others or {})}
    for i, (name, front) in enumerate(curves.items()):
        ax.plot([r["predicted_speedup"] for r in front],
                [100 * r["predicted_loss"] for r in front], "o-" if i == 0 else "o--",
                color="tab:gray" if i == 0 else "tab:blue", alpha=1 if i == 0 else 0.6,
                label=f"least predicted loss, {name} (sum of per-block losses)")
    low, mid, high = (record["networks"]["int8 plan int8"][f"{k}_batch{BATCH}"]
                      for k in ("speedup_low", "speedup", "speedup_high"))
    ax.errorbar(mid, -record["gap_points"], xerr=[[mid - low], [high - mid]], fmt="s",
                color="tab:red", capsize=3, label=f"chosen, after {record['finetune_epochs']} "
                                                  "epochs, in int8 (measured)")
    ax.fill_between([record["goal"]["speedup"], max(2.0, high + 0.1)], -1,
                    record["goal"]["gap_points"], color="tab:green", alpha=0.15,
                    label=f"goal: {record['goal']['speedup']:g}x, within "
                          f"{record['goal']['gap_points']:g} points")
    top = max(100 * r["predicted_loss"] for front in curves.values() for r in front)
    ax.set(xlabel=f"speed-up over the unpruned network in the same form (batch {BATCH})",
           ylabel="accuracy lost (points)", yscale="symlog", ylim=(-0.5, 2 * top))
    ax.set_title(f"ONNX Runtime on {record['cpu']}, {record['threads']} threads", fontsize=10)
    ax.legend(fontsize=7.5, loc="lower right", bbox_to_anchor=(1, 0.18))
    fig.tight_layout()
    return fig


def recorded_losses(study: Mapping, residual: bool = True) -> tuple[dict, dict]:
    """The selection half's block losses and stage losses recorded by the latency plan
    (without ``residual``, no stage losses: every stage at its full width)."""
    record = (study.get("latency_plans") or [{}])[0]
    if "block_loss" not in record:
        raise SystemExit("results/network_pruning.json has no latency_plans with block_loss: "
                         "run python -m helpers.study.latency_plans first")
    loss = {b: np.asarray(v, float) for b, v in record["block_loss"].items()}
    stage_loss = {s: {int(r): v for r, v in by.items()}
                  for s, by in record["stage_loss"].items()} if residual else {}
    return loss, stage_loss


def graphs(dense, pruned, calibration) -> dict[str, bytes]:
    """The four networks timed and scored, BN-folded, as ONNX graphs."""
    out = {}
    for name, model in (("unpruned", dense), ("int8 plan", pruned)):
        folded = network.fold_bn(model).cpu()  # a copy, in eval mode
        out[f"{name} fp32"] = export(folded)
        out[f"{name} int8"] = quantize_onnx(folded, calibration, "uint8", float_adds=True)
    return out


def recorded_looks(path: Path) -> list[dict]:
    """Every look at the confirmation half the record at ``path`` holds, oldest first."""
    return json.loads(path.read_text()).get("confirmation_looks", []) if path.exists() else []


def write(path: Path, **fields) -> dict:
    """Merge ``fields`` into the record at ``path`` (written at once) and return it."""
    record = json.loads(path.read_text()) if path.exists() else {}
    record |= fields
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return record


def report_choice(path: Path, choice, loss: Mapping, stage_loss: Mapping, table: Mapping,
                  S8: Int8Sizes, threads: int) -> None:
    """Print the next candidates and the frontier, time the table's checks (with every width
    measured) and write the choice to the record at ``path``."""
    shown = candidates(loss, as_tables(table), GOAL, n=5, batch=str(BATCH),
                       stage_loss=stage_loss)
    dense_ms = predict_ms(table, DEFAULT_WIDTHS)
    print(f"the plans of least predicted loss predicted {GOAL:g}x faster in int8 (selection "
          f"half's losses; {PROTOCOL['name']}):")
    for c in shown:
        lost = predicted_loss(loss, c[0], stage_loss, c[1])
        print(f"  {label(c)}: predicted loss {100 * lost:.2f} points, int8 speed-up "
              f"{dense_ms / predict_ms(table, *c):.2f}x" + ("  <- chosen" if c == choice else ""))
    front = frontier(loss, stage_loss, table)
    print("least predicted loss at each int8 goal: " + "; ".join(
        f"{r['goal']:g}x {100 * r['predicted_loss']:.2f} points" for r in front), flush=True)
    checks = []
    if S8.table_every == 1 and S8.table_residual:  # every width measured: whole networks check it
        checks = check({INT8: {BATCH: table}}, dict(CHECK_PLANS) | {"chosen": choice},
                       S8.table_repeats, S8.table_calls, threads)
        for r in checks:
            print(f"  check {r['plan']:22} predicted {r['predicted_speedup']:.3f}x, measured "
                  f"{r['measured_speedup']:.3f}x ({100 * r['error']:+.1f}%)")
    write(path, protocol=PROTOCOL, widths=list(choice[0]), stage_widths=list(choice[1]),
          predicted_loss=predicted_loss(loss, choice[0], stage_loss, choice[1]),
          predicted_speedup=dense_ms / predict_ms(table, *choice), frontier=front,
          checks=checks, block_loss={b: v.tolist() for b, v in loss.items()},
          stage_loss={s: {str(r): v for r, v in by.items()} for s, by in stage_loss.items()})


def goal_verdicts(speed: str, gap_points: float) -> dict[str, str]:
    """The speed verdict (:func:`helpers.study.latency_tables.verdict`), the accuracy verdict
    (met if the gap to the better unpruned network is at most :data:`GAP` points) and the goal:
    met if both are, missed if either is, else not decided."""
    accuracy = "met" if gap_points >= -GAP else "missed"
    goal = ("met" if speed == accuracy == "met" else
            "missed" if "missed" in (speed, accuracy) else "not decided")
    return {"speed": speed, "accuracy": accuracy, "goal": goal}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", help="cpu (writes results/int8_plan.json) or ci")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table-only", action="store_true", help="measure the table, then stop")
    p.add_argument("--measure-again", action="store_true",
                   help="measure the table again although the record has one from this machine")
    p.add_argument("--look-again", action="store_true",
                   help="look at the confirmation half again under this protocol (appended "
                        "to confirmation_looks; every look must then be reported)")
    a = p.parse_args(argv)
    started = commit()  # the code that chooses (a look records it, not the tree at the look)
    profile = resolve_profile(a.profile)
    S8, S, out = sizes(profile).int8, sizes(profile).network, outputs(profile)
    path = out.results / "int8_plan.json"
    if not a.look_again:
        refuse_second_look(recorded_looks(path), PROTOCOL)
    table = load_table(path, S8, a.threads, a.measure_again)
    print(f"unpruned int8: {table['dense_ms']:.2f} ms at batch {BATCH}")
    if a.table_only:
        return 0
    study = json.loads((paths.RESULTS / "network_pruning.json").read_text())
    loss, stage_loss = recorded_losses(study, S8.table_residual)
    choice = choose(loss, stage_loss, as_tables(table), PROTOCOL)
    if choice is None:
        print(f"no plan is predicted {GOAL:g}x faster than the unpruned network in int8")
        return 1
    report_choice(path, choice, loss, stage_loss, table, S8, a.threads)

    device = default_device()
    data = load_splits(download=True, warn=False)
    val_x, val_y = data.val_images[:S.eval_images], data.val_labels[:S.eval_images]
    sel, conf = selection_confirmation(len(val_y))
    dense = load_model(paths.CHECKPOINT, device).eval()
    rule = study["clustering_rule"]
    cache = finetune.ResultCache(out.checkpoints / f"{STATE}_state_{profile}.pt",
                                 finetune.code_version(*finetune.pruning_functions(),
                                                       *finetune.measuring_functions()))
    key = {"dense": finetune.model_fingerprint(dense), "seed": a.seed, "refit": S.refit_images,
           "recal": S.recal_batches, "strategy": rule}
    scored, run = prune_and_finetune(dense, choice, rule, data, val_x[sel], val_y[sel], S,
                                     study, cache, key, out.checkpoints / f"{profile}_{STATE}",
                                     device, a.seed)
    calibration = normalize(data.train_images[:S8.calibration_images])
    built = graphs(dense, run.model, calibration)
    nets = {n: OnnxModel(g, a.threads) for n, g in built.items()}
    ok = {n: network.correct(m, val_x, val_y) for n, m in nets.items()}
    reference = max(study["dense_confirmation_accuracy"],
                    study["dense_finetuned_confirmation_accuracy"])
    look = {"plan": label(choice), "widths": list(choice[0]), "stage_widths": list(choice[1]),
            "accuracy": float(ok["int8 plan int8"][conf].mean()),
            "accuracy_fp32": float(ok["int8 plan fp32"][conf].mean()), "images": len(conf),
            "date": time.strftime("%Y-%m-%d"), "commit": started, "protocol": PROTOCOL["name"]}
    every_look = write(path, confirmation_looks=recorded_looks(path) + [look])[
        "confirmation_looks"]  # written before anything else is done
    test = {n: network.correct(m, data.test_images, data.test_labels) for n, m in nets.items()}
    versus = stats.paired_test(test["int8 plan int8"], test["unpruned fp32"])  # declared
    gap = 100 * (look["accuracy"] - reference)
    n_test = len(data.test_labels)
    print(f"after {len(run.history)} epochs, in int8: selection "
          f"{stats.format_accuracy(ok['int8 plan int8'][sel].sum(), len(sel))}, confirmation "
          f"{stats.format_accuracy(ok['int8 plan int8'][conf].sum(), len(conf))} ({gap:+.2f} "
          f"points against the better unpruned network, {100 * reference:.2f}%; look "
          f"{len(every_look)}), test {stats.format_accuracy(test['int8 plan int8'].sum(), n_test)}"
          f"; - unpruned fp32, test: {versus}", flush=True)

    per = time_graphs(built, S8, a.threads, reference="unpruned int8")
    summary = process_summary(per, GOAL)
    print(f"ONNX Runtime on {machine()['cpu']}, {a.threads} threads, {S8.processes} fresh "
          f"processes x {S8.rounds} rounds, speed-up over the unpruned int8 network:")
    print(summary.drop(columns="verdict").round(3).to_string(index=False))
    at = summary[(summary.model == "int8 plan int8") & (summary.batch_size == BATCH)].iloc[0]
    over_fp32 = [float(g.set_index("model").median_ms["unpruned fp32"]
                       / g.set_index("model").median_ms["int8 plan int8"])
                 for _, g in per[per.batch_size == BATCH].groupby("process")]
    verdicts = goal_verdicts(at.verdict, gap)
    print(f"goal ({GOAL:g}x over unpruned int8 at batch {BATCH}, within {GAP:g} points): speed "
          f"{verdicts['speed']} ({at.speedup:.2f}x, {at.speedup_low:.2f}-{at.speedup_high:.2f}), "
          f"accuracy {verdicts['accuracy']} ({gap:+.2f} points): {verdicts['goal']}")
    rows = {n: {"acc_selection": float(c[sel].mean()), "acc_confirmation": float(c[conf].mean()),
                "acc_test": float(test[n].mean()), **speed_fields(summary, n)}
            for n, c in ok.items()}
    write(path, profile=profile, **machine(a.threads), device=device_name(device),
          date=time.strftime("%Y-%m-%d"), goal={"speedup": GOAL, "batch_size": BATCH,
                                                 "gap_points": GAP},
          reference_confirmation=reference, gap_points=gap, verdicts=verdicts,
          speedup_processes=per[(per.model == "int8 plan int8") & (per.batch_size == BATCH)]
          .speedup.tolist(), speedup_over_fp32_processes=over_fp32,
          networks=rows, macs=count_macs(run.model), dense_macs=count_macs(dense),
          acc_pruned_selection=float(scored["correct"].float().mean()),
          finetune_epochs=len(run.history), finetune_seconds=round(run.train_seconds, 1),
          calibration_images=S8.calibration_images, calibration_split="train",
          eval_images=len(val_y), selection_images=int(len(sel)),
          confirmation_images=int(len(conf)), test_images=len(data.test_labels),
          processes=S8.processes, rounds=S8.rounds, ort_spinning=False,
          test_vs_unpruned_fp32={k: getattr(versus, k) for k in (
              "difference", "ci_low", "ci_high", "p_value", "a_only", "b_only", "n")},
          confirmation_looks=recorded_looks(path))
    save_model(copy.deepcopy(run.model).cpu(), out.checkpoints / CHECKPOINT, goal_speedup=GOAL,
               runtime=INT8, strategy=rule, finetune_epochs=len(run.history),
               parent=paths.CHECKPOINT.name, protocol=PROTOCOL["name"])
    print(f"wrote {path} and {out.checkpoints / CHECKPOINT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
