"""The network chosen by time: a plan within a latency goal in PyTorch and ONNX Runtime at once.

``python -m helpers.study.latency_plans`` (a step of ``make reproduce``, after ``study/05`` and
``python -m helpers.study.latency_tables``) reads the latency tables (``results/latency.json``)
and the whole-network study (``results/network_pruning.json``: its clustering rule, its
fine-tuning schedule and its selection and confirmation halves), then:

1. measures, on the selection half, the sensitivity of every block to the clustering rule, the
   accuracy lost by removing each removable block, and the accuracy lost by narrowing each
   stage's residual channels to each candidate width (:mod:`helpers.study.channels`, with refit
   and recalibration; cached);
2. chooses the plan by the protocol :data:`PROTOCOL`, declared here before it is run
   (:func:`choose`): of every plan of conv1 widths, removed blocks and residual stage widths,
   the one of least predicted accuracy loss (the selection half's losses above, summed) whose
   **predicted** speed-up over the unpruned network, at batch 256, reaches the goal (1.5x) in
   both runtimes by the tables, with a signed margin of 0 (the prediction itself must reach the
   goal: the tables' check errors have both signs, so no widening by them is justified, and
   widening by the largest one admitted plans the tables predict will miss); ties go to the
   faster plan. No timing and no confirmation image takes part in the choice;
3. times the next candidates of the same search once (cached), as a description of how their
   predictions hold, which the choice does not read;
4. prunes to the chosen plan (residual channels first, then conv1 filters, each with its refit,
   then recalibration), fine-tunes it with the study's schedule and teacher for the headline's
   epochs (resumable), scores it on both halves and the test images. Every look at the
   confirmation half is appended to the record's ``confirmation_looks`` (plan, accuracy, date,
   commit, protocol) as soon as it is made; once a look exists under this protocol, the
   command refuses to choose again (``--look-again`` appends a second look, never replacing
   one);
5. times it BN-folded in both runtimes at batch 256 and 1, interleaved with the unpruned
   network and the study's 50% MACs headline, in three fresh processes
   (:func:`helpers.study.latency_tables.process_timings`): a verdict against the goal is "met"
   only if the slowest process's median speed-up reaches it, "missed" if the fastest does not,
   else "not decided"; and adds it to ``network_pruning.json`` as ``latency_plans``, with the
   protocol, the losses it was chosen from (so that the choice can be recomputed from the
   record: :func:`recorded_choice`), the CPU model, the thread count and the runtime versions
   (the checkpoint: ``checkpoints/resnet20_latency.pt``).

Plans chosen before this protocol was declared (2026-12-06) were chosen differently: the first
of 12 candidates (budget widened by the largest check error), in predicted-loss order, whose
15-round screening timing reached the goal (:data:`OLD_PROTOCOL`, :func:`measured_choice`).

Every step resumes from its cache or state file when interrupted.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import paths, stats
from helpers.data import load_splits, selection_confirmation
from helpers.device import default_device, device_name
from helpers.metrics import count_macs, count_params
from helpers.models import (
    BLOCK_NAMES,
    DEFAULT_WIDTHS,
    STAGE_WIDTHS,
    load_model,
    resnet20,
    save_model,
)
from helpers.plans import Sensitivity
from helpers.study import finetune, network
from helpers.study.channels import STAGES, prune_stages
from helpers.study.latency import (
    candidate_stage_widths,
    predict_ms,
    predicted_loss,
    removal_aware_loss,
    residual_latency_plans,
)
from helpers.study.latency_tables import (
    PROCESSES,
    in_runtime,
    machine,
    process_summary,
    process_timings,
)
from helpers.study.profile import WRITES_REPOSITORY, outputs, resolve_profile, sizes
from helpers.train import finetune_config

RUNTIMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}
GOAL = 1.5  # at least this much faster than the unpruned network, at batch 256, in both runtimes
BATCH = "256"  # the batch size the goal is set at (JSON keys of the tables are strings)
CANDIDATES = 12  # plans of the search timed once after the choice, as a description
THREADS = 2  # CPU threads of every timing: the tables' (results/latency.json "threads")
MARGIN = 0.0  # signed: a plan's predicted speed-up must reach GOAL * (1 + MARGIN)
TIE_BREAK = 1e-6  # of equally accurate plans, the faster (helpers.study.latency.latency_plans)
PROTOCOL = {  # declared 2026-12-06, before its first run; recorded with every plan it chooses
    "name": "least predicted loss whose predicted speed-up reaches the goal",
    "declared": "2026-12-06", "goal_speedup": GOAL, "batch_size": int(BATCH), "margin": MARGIN,
    "runtimes": list(RUNTIMES), "tie_break": TIE_BREAK,
    "loss": "selection half: block sensitivity (refit+recal) with the measured cost of "
            "removing a block, plus the measured cost of narrowing one stage",
    "time": "results/latency.json, batch 256, both runtimes"}
OLD_PROTOCOL = ("first of 12 candidates (budget widened by the largest check error), in "
                "predicted-loss order, whose 15-round screening reached the goal")


def budgets(latency: Mapping, speedup: float = GOAL, batch: str = BATCH,
            margin: float = MARGIN) -> dict[str, float]:
    """Per runtime, the predicted milliseconds a plan may take at ``batch``: the unpruned
    network's predicted time over ``speedup * (1 + margin)`` (:data:`PROTOCOL`: margin 0, no
    widening by the tables' check errors)."""
    if speedup <= 0 or speedup * (1 + margin) <= 0:
        raise ValueError(f"speedup must be positive, got {speedup} (margin {margin})")
    return {runtime: predict_ms(by_batch[batch], DEFAULT_WIDTHS) / (speedup * (1 + margin))
            for runtime, by_batch in latency["tables"].items()}


Candidate = tuple[tuple[int, ...], tuple[int, ...]]  # (conv1 widths, residual stage widths)


def candidates(loss: Mapping[str, np.ndarray], latency: Mapping, speedup: float = GOAL,
               n: int = CANDIDATES, batch: str = BATCH,
               limit: Mapping[str, float] | None = None,
               stage_loss: Mapping[str, Mapping[int, float]] | None = None) -> list[Candidate]:
    """The ``n`` pairs (conv1 plan, stage widths) of least predicted loss within
    :func:`budgets` (or the given ``limit``, milliseconds per runtime) in every runtime, best
    first (:func:`helpers.study.latency.residual_latency_plans`; without ``stage_loss``, the full
    stages only)."""
    limit = limit or budgets(latency, speedup, batch)
    return residual_latency_plans(loss, stage_loss or {}, [latency["tables"][r][batch]
                                                            for r in limit],
                                  list(limit.values()), n, TIE_BREAK)


def choose(loss: Mapping[str, np.ndarray], stage_loss: Mapping[str, Mapping[int, float]],
           latency: Mapping, protocol: Mapping = PROTOCOL) -> Candidate | None:
    """The plan :data:`PROTOCOL` chooses: of every (conv1 plan, stage widths), the one of
    least predicted loss (``loss``: per block, at each width; ``stage_loss[stage][width]``)
    whose predicted speed-up reaches ``goal_speedup * (1 + margin)`` in every runtime of the
    tables at the protocol's batch size; None if none is predicted to."""
    if protocol["name"] != PROTOCOL["name"]:
        raise ValueError(f"choose implements the protocol {PROTOCOL['name']!r}, not "
                         f"{protocol['name']!r}")
    limit = budgets(latency, protocol["goal_speedup"], str(protocol["batch_size"]),
                    protocol["margin"])
    found = candidates(loss, latency, n=1, batch=str(protocol["batch_size"]), limit=limit,
                       stage_loss=stage_loss)
    return found[0] if found else None


def label(candidate: Candidate) -> str:
    """How a candidate is named in tables: its conv1 plan, and its stages when narrowed."""
    plan, stages = candidate
    return str(tuple(plan)) + ("" if tuple(stages) == STAGE_WIDTHS
                               else f" stages {tuple(stages)}")


def stage_sensitivity(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      train_images: torch.Tensor, refit_images: int, recal_batches: int,
                      seed: int = 0) -> list[dict]:
    """Accuracy on ``images`` after narrowing one stage's residual channels to each candidate
    width (:func:`helpers.study.channels.prune_stages`, refit and recalibration): one record per
    stage and width."""
    rows = []
    for s, stage in enumerate(STAGES):
        for r in candidate_stage_widths(stage)[:-1]:
            widths = tuple(r if i == s else w for i, w in enumerate(STAGE_WIDTHS))
            pruned = prune_stages(model, widths, seed, train_images[:refit_images],
                                  train_images, recal_batches)
            rows.append({"stage": stage, "width": int(r), "accuracy":
                         float(network.correct(pruned, images, labels).mean())})
    return rows


def measured_choice(speeds: pd.DataFrame, plans: Sequence[tuple[int, ...]],
                    speedup: float = GOAL) -> tuple[int, ...]:
    """The choice of :data:`OLD_PROTOCOL` (before 2026-12-06; kept to check the records made
    under it): the first of ``plans`` (best predicted accuracy first) whose measured median
    speed-up reaches ``speedup`` in every runtime; if none does, the one whose slower runtime
    is fastest. A rule of "first to cross a line" picks by timing noise when the candidates'
    speed-ups differ by less than their spread: :func:`choose` replaced it.
    ``speeds``: one row per runtime and plan, with ``model`` (``str(plan)``, or
    :func:`label` for a candidate pair), ``runtime`` and ``speedup``."""
    by_plan = speeds.pivot_table(index="model", columns="runtime", values="speedup").min(axis=1)
    name = {p: label(p) if len(p) == 2 else str(p) for p in plans}
    for plan in plans:
        if by_plan[name[plan]] >= speedup:
            return plan
    return max(plans, key=lambda p: by_plan[name[p]])


def recorded_choice(record: Mapping, latency: Mapping) -> Candidate:
    """The plan a ``latency_plans`` record's protocol chooses from what the record and the
    tables hold: under :data:`PROTOCOL`, :func:`choose` on its ``block_loss`` and
    ``stage_loss``; under :data:`OLD_PROTOCOL` (records without ``protocol``),
    :func:`measured_choice` on its ``screening``. Compare with the record's own plan."""
    protocol = record.get("protocol")
    if protocol is None:  # chosen before PROTOCOL was declared
        screened = record["screening"]
        plans = [(tuple(r["widths"]), tuple(r["stage_widths"])) for r in screened]
        speeds = pd.DataFrame([{"model": label(p), "runtime": r, "speedup": row[
            f"speedup_{r}_batch{record['batch_size']}"]} for p, row in zip(plans, screened,
                                                                         strict=True)
            for r in RUNTIMES])
        return measured_choice(speeds, plans, record["goal_speedup"])
    loss = {b: np.asarray(v, float) for b, v in record["block_loss"].items()}
    stage_loss = {s: {int(r): v for r, v in by.items()} for s, by in record["stage_loss"].items()}
    choice = choose(loss, stage_loss, latency, protocol)
    if choice is None:
        raise ValueError("the recorded protocol chooses no plan from these tables")
    return choice


def looks(result: Mapping) -> list[dict]:
    """Every look at the confirmation half recorded so far (``latency_plans[0]
    ["confirmation_looks"]``), oldest first."""
    return list(((result.get("latency_plans") or [{}])[0]).get("confirmation_looks", []))


def refuse_second_look(recorded: Sequence[Mapping], protocol: Mapping = PROTOCOL) -> None:
    """Raise if a look of ``recorded`` (every look at the confirmation half so far, e.g.
    :func:`looks`) was made under ``protocol``: choosing again after a look would make the
    reported accuracy the better of two."""
    seen = [x for x in recorded if x.get("protocol") == protocol["name"]]
    if seen:
        raise SystemExit(
            f"the confirmation half was already looked at under this protocol "
            f"({seen[-1]['date']}, commit {seen[-1]['commit']}: {100 * seen[-1]['accuracy']:.2f}%"
            f" for {seen[-1]['plan']}); the protocol is run once. --look-again appends a "
            f"second look to confirmation_looks (report every look), never replacing one")


def commit() -> str:
    """The repository's commit (``git rev-parse --short HEAD``, "+changes" when the tree
    differs from it), or "unknown"."""
    try:
        def git(*a):
            return subprocess.run(["git", *a], cwd=paths.ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain",
                                                                          "--untracked-files=no")
                                                      else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_look(path: Path, look: Mapping) -> list[dict]:
    """Append ``look`` to ``latency_plans[0]["confirmation_looks"]`` of the results file at
    ``path`` (written at once, before anything else is done) and return every look."""
    result = json.loads(Path(path).read_text())
    if not result.get("latency_plans"):
        result["latency_plans"] = [{}]
    result["latency_plans"][0]["confirmation_looks"] = all_looks = looks(result) + [dict(look)]
    Path(path).write_text(json.dumps(result, indent=1, default=float) + "\n")
    return all_looks


def timings(nets: Mapping[str, torch.nn.Module], repeats: int, calls: int, threads: int,
            batches: Sequence[int] = (256, 1)) -> pd.DataFrame:
    """Each network BN-folded, timed in both runtimes at each of ``batches`` against the first
    (``network.latency_table``): one row per runtime, batch size and network."""
    folded = {n: network.fold_bn(m).cpu() for n, m in nets.items()}
    runtimes = {r: {n: in_runtime(m, r, threads) for n, m in folded.items()} for r in RUNTIMES}
    first = next(iter(nets))
    return pd.concat([network.latency_table(m, b, repeats, calls, threads, reference=first)
                      .assign(runtime=r) for r, m in runtimes.items() for b in batches],
                     ignore_index=True)


def speed_keys(table: pd.DataFrame, name: str) -> dict[str, float]:
    """``speedup_torch_batch256`` (and ``_low``, ``_high``), ``speedup_onnxruntime_batch1``,
    ... and the milliseconds of network ``name``, from :func:`timings`."""
    out = {}
    for r in table[table.model == name].itertuples():
        runtime = "torch" if r.runtime == "pytorch" else r.runtime
        out |= {f"speedup_{runtime}_batch{r.batch_size}": float(r.speedup),
                f"speedup_{runtime}_batch{r.batch_size}_low": float(r.speedup_low),
                f"speedup_{runtime}_batch{r.batch_size}_high": float(r.speedup_high),
                f"{runtime}_ms_batch{r.batch_size}": float(r.median_ms)}
    return out


def prune_and_finetune(dense: torch.nn.Module, choice: Candidate, rule: str, data,
                       images: torch.Tensor, labels: torch.Tensor, S, study: Mapping,
                       cache: finetune.ResultCache, key: Mapping, state: Path,
                       device: str | torch.device, seed: int = 0):
    """``dense`` pruned to ``choice`` (its residual stages first, then conv1 filters by
    ``rule``, each with its refit, then recalibration; scored on ``images``, cached) and
    fine-tuned with the study's schedule and teacher (``study``: ``network_pruning.json``) for
    ``S.headline_epochs`` on the training images, ``images`` (the selection half) as its
    validation set, resumably (state files ``state``'s folder, named after its name): the
    score (:func:`helpers.study.network.score`) and the run (:class:`finetune.Finetuned`)."""
    plan, stages = choice
    narrow = {} if tuple(stages) == STAGE_WIDTHS else {"stage_widths": list(stages)}

    def pruned_scored():
        base = dense if not narrow else prune_stages(
            dense, stages, seed, data.train_images[:S.refit_images], data.train_images,
            S.recal_batches)
        return network.score(base, plan, rule, images, labels, data.train_images,
                             "refit+recal", S.refit_images, S.recal_batches, seed)

    scored = cache(key | {"plan": list(plan), "scored on": len(labels)} | narrow, pruned_scored)
    ft = study["finetune"]
    ft_data = data._replace(train_images=data.train_images[:S.finetune_images],
                            train_labels=data.train_labels[:S.finetune_images],
                            val_images=images, val_labels=labels)
    cfg = finetune_config(S.headline_epochs, ft["lr"], batch_size=ft["batch_size"], seed=seed,
                          checkpoint_every=1)
    teacher = network.fold_bn(dense) if study.get("distill", True) else None
    run = finetune.finetune(network.restore(scored, dense.shortcut, device), ft_data, cfg,
                            Path(state).parent, Path(state).name,
                            key | {"plan": list(plan), "teacher": "unpruned, BN folded"}
                            | narrow, teacher, device, progress=False,
                            callback=finetune.epoch_printer(Path(state).name))
    return scored, run


def main(argv: Sequence[str] | None = None) -> int:
    """Choose (by :data:`PROTOCOL`), fine-tune, score and time the latency-goal network; add
    it to the results."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--profile", default="auto", help="auto, full, cpu or ci (ci writes nothing "
                                                     "to the repository)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=THREADS,
                   help="CPU threads of every timing; must equal the tables'")
    p.add_argument("--look-again", action="store_true",
                   help="run although the confirmation half was already looked at under this "
                        "protocol: the new look is appended to confirmation_looks, and every "
                        "look must then be reported")
    p.add_argument("--no-timing", action="store_true",
                   help="stop after fine-tuning and scoring (time later, on an idle machine: "
                        "the next run loads everything else from its caches)")
    a = p.parse_args(argv)
    profile = resolve_profile(a.profile)
    S, out, device = sizes(profile).network, outputs(profile), default_device()
    threads = a.threads
    result_path = out.results / "network_pruning.json"
    result = json.loads((paths.RESULTS / "network_pruning.json").read_text())
    latency = json.loads((paths.RESULTS / "latency.json").read_text())
    writes = profile in WRITES_REPOSITORY
    if writes and profile != result["profile"]:
        raise SystemExit(f"--profile {profile} would write its latency plan over the committed "
                         f"{result['profile']!r} study (results/network_pruning.json): run "
                         f"study/05 in the {profile!r} profile first, or pass --profile "
                         f"{result['profile']}")
    if threads != latency["threads"]:
        raise SystemExit(f"the latency tables were measured at {latency['threads']} threads, "
                         f"this run would time at {threads}: pass --threads "
                         f"{latency['threads']}, or measure the tables again at {threads} "
                         f"(python -m helpers.study.latency_tables --threads {threads})")
    rule = result.get("clustering_rule")
    if rule is None:
        raise SystemExit("results/network_pruning.json names no clustering_rule: run study/05 "
                         "(it chooses the rule on the selection half) before this step")
    if writes and not a.look_again:
        refuse_second_look(looks(result))
    print(f"profile {profile!r} on {device_name(device)}; timings on {machine(threads)['cpu']}, "
          f"{threads} threads; latency tables of {latency['date']} ({latency['cpu']}); "
          f"protocol: {PROTOCOL['name']} ({PROTOCOL['goal_speedup']:g}x, margin "
          f"{PROTOCOL['margin']:+g})", flush=True)

    data = load_splits(download=True, warn=False)
    val_x, val_y = data.val_images[:S.eval_images], data.val_labels[:S.eval_images]
    sel, conf = selection_confirmation(len(val_y))
    dense = load_model(paths.CHECKPOINT, device).eval()
    cache = finetune.ResultCache(out.checkpoints / f"latency_state_{profile}.pt",
                                 finetune.code_version(*finetune.pruning_functions(),
                                                       *finetune.measuring_functions(),
                                                       *finetune.latency_functions()))
    key = {"dense": finetune.model_fingerprint(dense), "val": len(val_y), "seed": a.seed,
           "refit": S.refit_images, "recal": S.recal_batches, "strategy": rule}

    sens_x, sens_y = val_x[sel][:S.sensitivity_images], val_y[sel][:S.sensitivity_images]
    m = cache(key | {"sensitivity": list(S.sensitivity_fractions), "images": len(sens_y)},
              lambda: (lambda v: {"dense": v.dense_accuracy, "records": list(v.measured)})(
                  network.measure_sensitivity(dense, sens_x, sens_y, data.train_images, rule,
                                              S.sensitivity_fractions, "refit+recal",
                                              S.refit_images, S.recal_batches, a.seed)))
    sens = Sensitivity.from_records(m["records"], m["dense"], rule, "refit+recal")
    removal = pd.DataFrame(cache(
        key | {"removal": "every removable block", "images": len(sens_y)},
        lambda: network.removal_accuracy(dense, sens_x, sens_y, data.train_images,
                                         refit_images=S.refit_images,
                                         recal_batches=S.recal_batches, seed=a.seed)
        .to_dict("records")))
    loss = removal_aware_loss(sens.loss, {r.block: sens.dense_accuracy - r.accuracy
                                          for r in removal.itertuples()})
    narrowed = cache(key | {"stage widths": {s: list(candidate_stage_widths(s)[:-1])
                                             for s in STAGES}, "images": len(sens_y)},
                     lambda: stage_sensitivity(dense, sens_x, sens_y, data.train_images,
                                               S.refit_images, S.recal_batches, a.seed))
    stage_loss = {s: {r["width"]: sens.dense_accuracy - r["accuracy"]
                      for r in narrowed if r["stage"] == s} for s in STAGES}
    print("residual channels narrowed, one stage at a time (refit + recalibration), accuracy "
          f"of {len(sens_y):,} selection images: "
          + "; ".join(f"{r['stage']} {r['width']}: {100 * r['accuracy']:.1f}%"
                      for r in narrowed), flush=True)
    choice = choose(loss, stage_loss, latency)
    if choice is None:
        print(f"no plan of conv1 widths, removed blocks and stage widths is predicted "
              f"{GOAL:g}x faster in both runtimes")
        return 1
    plan, stages = choice
    proposed = candidates(loss, latency, limit=budgets(latency), stage_loss=stage_loss)
    assert proposed[0] == choice  # the search's best is the protocol's choice
    fresh = {label(c): resnet20(dense.shortcut, c[0], stage_widths=c[1])
             for c in proposed}  # time needs widths only
    versions = machine(threads)
    screen = pd.DataFrame(cache(  # descriptive only: the choice above does not read it
        {"screen": [[list(p), list(r)] for p, r in proposed], "dense": key["dense"],
         "repeats": S.latency_repeats} | versions,
        lambda: timings({"unpruned": dense, **fresh}, S.latency_repeats, 1, threads, (256,))
        .to_dict("records")))
    lost = {c: predicted_loss(loss, c[0], stage_loss, c[1]) for c in proposed}
    shown = screen.pivot_table(index="model", columns="runtime", values="speedup")
    tables = {r: latency["tables"][r][BATCH] for r in RUNTIMES}
    forecast = {c: {r: predict_ms(t, DEFAULT_WIDTHS) / predict_ms(t, *c)
                    for r, t in tables.items()} for c in proposed}
    print(f"the {len(proposed)} plans of least predicted loss predicted {GOAL:g}x faster in "
          f"both runtimes, best first; the first is chosen ({PROTOCOL['name']}). Measured once "
          f"at batch {BATCH} ({S.latency_repeats} interleaved rounds, one process: a "
          f"description, not a verdict):")
    for c in proposed:
        print(f"  {label(c)}: predicted loss {100 * lost[c]:.1f} points; measured (predicted) "
              + ", ".join(f"{RUNTIMES[r]} {shown.loc[label(c), r]:.2f}x "
                          f"({forecast[c][r]:.2f}x)" for r in RUNTIMES)
              + ("  <- chosen" if c == choice else ""), flush=True)
    scored, run = prune_and_finetune(dense, choice, rule, data, val_x[sel], val_y[sel], S,
                                     result, cache, key, out.checkpoints / f"{profile}_latency",
                                     device, a.seed)
    ok = network.correct(run.model, val_x, val_y)
    look = {"plan": label(choice), "widths": list(plan), "stage_widths": list(stages),
            "accuracy": float(ok[conf].mean()), "images": len(conf),
            "date": time.strftime("%Y-%m-%d"), "commit": commit(),
            "protocol": PROTOCOL["name"]}
    every_look = append_look(result_path, look) if writes else [look]  # before anything else
    test_ok = network.correct(run.model, data.test_images, data.test_labels)
    test_dense = network.correct(dense, data.test_images, data.test_labels)
    versus = stats.paired_test(test_ok, test_dense)  # declared: against the unpruned network
    print(f"after {len(run.history)} epochs: selection "
          f"{stats.format_accuracy(ok[sel].sum(), len(sel))}, confirmation "
          f"{stats.format_accuracy(ok[conf].sum(), len(conf))} (look {len(every_look)} at the "
          f"confirmation half, all: "
          + "; ".join(f"{x['date']} {x['plan']} {100 * x['accuracy']:.2f}%" for x in every_look)
          + f"), test {stats.format_accuracy(test_ok.sum(), len(test_ok))}; - unpruned, test: "
          f"{versus}", flush=True)

    if a.no_timing:
        print("--no-timing: stopped before timing; only the look was recorded")
        return 0
    with tempfile.TemporaryDirectory() as tmp:  # each timing process loads the networks
        save_model(copy.deepcopy(run.model).cpu(), Path(tmp) / "latency.pt")
        spec = {"unpruned": str(paths.CHECKPOINT),
                "50% MACs": str(paths.CHECKPOINTS / "resnet20_pruned50.pt"),
                "latency": str(Path(tmp) / "latency.pt")}
        per_process = process_timings(spec, list(RUNTIMES), (256, 1), PROCESSES,
                                      S.latency_repeats, S.latency_calls, threads)
    table = process_summary(per_process, GOAL)
    print(f"BN-folded, {PROCESSES} fresh processes x {S.latency_repeats * S.latency_calls} "
          f"interleaved rounds on {versions['cpu']}, {threads} threads (speed-up: median of the "
          f"processes' medians, low/high: slowest/fastest process):")
    print(table.round(3).to_string(index=False))
    reference = max(result["dense_confirmation_accuracy"],
                    result["dense_finetuned_confirmation_accuracy"])
    at_goal = table[(table.model == "latency") & (table.batch_size == int(BATCH))]
    record = {
        "protocol": PROTOCOL, "goal_speedup": GOAL, "batch_size": int(BATCH), "strategy": rule,
        "widths": list(plan), "stage_widths": list(stages),
        "removed_blocks": [b for b, k in zip(BLOCK_NAMES, plan, strict=True) if k == 0],
        "block_loss": {b: [float(v) for v in c] for b, c in loss.items()},
        "stage_loss": {s: {str(r): float(v) for r, v in by.items()}
                       for s, by in stage_loss.items()},
        "stage_sensitivity": narrowed,
        "screening": [{"widths": list(c[0]), "stage_widths": list(c[1]),
                       "predicted_loss": float(lost[c]),
                       **{f"speedup_{r}_batch{BATCH}": float(shown.loc[label(c), r])
                          for r in RUNTIMES},
                       **{f"predicted_speedup_{r}_batch{BATCH}": float(forecast[c][r])
                          for r in RUNTIMES}, "chosen": c == choice} for c in proposed],
        "screening_rounds": S.latency_repeats,
        "macs": count_macs(run.model), "params": count_params(run.model),
        "predicted_speedup": {f"{r}_batch{BATCH}": v for r, v in forecast[choice].items()},
        "budget_ms": budgets(latency),
        "acc_pruned": float(scored["correct"].float().mean()),  # selection half
        "acc_selection": float(ok[sel].mean()), "acc_confirmation": float(ok[conf].mean()),
        "gap_points": 100 * (float(ok[conf].mean()) - reference),
        "test_acc_finetuned": float(test_ok.mean()),
        "test_vs_unpruned": {k: getattr(versus, k) for k in ("difference", "ci_low", "ci_high",
                                                             "p_value", "a_only", "b_only", "n")},
        "finetune_epochs": len(run.history), "finetune_seconds": round(run.train_seconds, 1),
        "sensitivity_images": len(sens_y), "latency_rounds": int(table.rounds.iloc[0]),
        "timing_processes": PROCESSES, "ort_spinning": False,
        "latency_date": latency["date"], "latency_timed": time.strftime("%Y-%m-%d"),
        "device": device_name(device), **versions, "cpu_threads": threads,
        "verdicts": {f"{r.runtime}_batch{BATCH}": r.verdict for r in at_goal.itertuples()},
        **speed_keys(table, "latency"),
        "speedup_processes": {f"{r}_batch{b}": per_process[
            (per_process.model == "latency") & (per_process.runtime == r)
            & (per_process.batch_size == b)].speedup.tolist() for r in RUNTIMES
            for b in (256, 1)},
        "headline_50": speed_keys(table, "50% MACs"),
        "confirmation_looks": every_look,
    }
    print(json.dumps({k: v for k, v in record.items() if "speedup" in k or k == "verdicts"},
                     indent=1))
    if writes:
        result = json.loads(result_path.read_text())  # with the look appended above
        record["confirmation_looks"] = looks(result)
        result["latency_plans"] = [record]
        result_path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        save_model(copy.deepcopy(run.model).cpu(), out.checkpoints / "resnet20_latency.pt",
                   goal_speedup=GOAL, strategy=rule, finetune_epochs=len(run.history),
                   parent=paths.CHECKPOINT.name, val_accuracy=float(ok[conf].mean()),
                   protocol=PROTOCOL["name"])
        print(f"wrote {result_path} (latency_plans)")
    else:
        print(f"profile {profile!r}: results/ untouched (the study is the {result['profile']!r} "
              f"profile's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
