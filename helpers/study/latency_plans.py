"""The network chosen by time: a plan within a latency budget in PyTorch and ONNX Runtime at once.

``python -m helpers.study.latency_plans`` (a step of ``make reproduce``, after ``study/05`` and
``python -m helpers.study.latency_tables``) reads the latency tables (``results/latency.json``)
and the whole-network study (``results/network_pruning.json``: its clustering rule, its
fine-tuning schedule and its selection and confirmation halves), then:

1. measures, on the selection half, the sensitivity of every block to the clustering rule, the
   accuracy lost by removing each removable block, and the accuracy lost by narrowing each
   stage's residual channels to each candidate width (:mod:`helpers.study.channels`, with refit
   and recalibration; cached);
2. asks the latency tables for the plans (conv1 widths and residual stage widths) of least
   predicted loss whose predicted time, in both runtimes at batch 256, is within the unpruned
   network's over the goal, widened by the tables' measured prediction error
   (:func:`candidates`), times them (cached), and keeps the first whose measured speed-up
   reaches the goal in both runtimes (:func:`measured_choice`);
3. prunes to it (residual channels first, then conv1 filters, each with its refit, then
   recalibration), fine-tunes it with the study's schedule and teacher for the headline's
   epochs (resumable), scores it on both halves and the test images;
4. times it BN-folded in both runtimes at batch 256 and 1, interleaved with the unpruned network
   and the study's 50% MACs headline, and adds it to ``network_pruning.json`` as
   ``latency_plans`` (the checkpoint: ``checkpoints/resnet20_latency.pt``).

Every step resumes from its cache or state file when interrupted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence

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
from helpers.study.latency_tables import in_runtime
from helpers.study.profile import outputs, resolve_profile, sizes
from helpers.train import finetune_config

RUNTIMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}
GOAL = 1.5  # at least this much faster than the unpruned network, at batch 256, in both runtimes
BATCH = "256"  # the batch size the goal is set at (JSON keys of the tables are strings)
CANDIDATES = 12  # plans the latency model proposes, each then timed in both runtimes


def budgets(latency: Mapping, speedup: float = GOAL, batch: str = BATCH) -> dict[str, float]:
    """Per runtime, the predicted milliseconds a candidate plan may take at ``batch``: the
    unpruned network's predicted time over ``speedup``, widened by the largest relative error
    of the table's checks on whole networks (``latency["checks"]``, either sign), so that a
    plan the table mispredicts by as much as it did there is still a candidate; the choice
    among the candidates is then made by measuring them (:func:`measured_choice`)."""
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}")
    out = {}
    for runtime, by_batch in latency["tables"].items():
        errors = [abs(c["error"]) for c in latency.get("checks", [])
                  if c["runtime"] == runtime and str(c["batch_size"]) == batch]
        out[runtime] = (predict_ms(by_batch[batch], DEFAULT_WIDTHS) / speedup
                        * (1 + max([0.0, *errors])))
    return out


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
                                  list(limit.values()), n)


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
    """The first of ``plans`` (best predicted accuracy first) whose measured median speed-up
    reaches ``speedup`` in every runtime; if none does, the one whose slower runtime is
    fastest. ``speeds``: one row per runtime and plan, with ``model`` (``str(plan)``, or
    :func:`label` for a candidate pair), ``runtime`` and ``speedup``."""
    by_plan = speeds.pivot_table(index="model", columns="runtime", values="speedup").min(axis=1)
    name = {p: label(p) if len(p) == 2 else str(p) for p in plans}
    for plan in plans:
        if by_plan[name[plan]] >= speedup:
            return plan
    return max(plans, key=lambda p: by_plan[name[p]])


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


def main(argv: Sequence[str] | None = None) -> int:
    """Choose, fine-tune, score and time the latency-budget network; add it to the results."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--profile", default="auto", help="auto, full, cpu or ci (ci writes nothing "
                                                     "to the repository)")
    p.add_argument("--speedup", type=float, default=GOAL)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-budgets", action="store_true",
                   help="use the budgets recorded with the committed latency plan instead of "
                        "those of the tables' current checks (re-checking the tables then keeps "
                        "the plan chosen, and everything but the final timing is read from "
                        "the caches)")
    p.add_argument("--no-timing", action="store_true",
                   help="stop after fine-tuning and scoring (time later, on an idle machine: "
                        "the next run loads everything else from its caches)")
    a = p.parse_args(argv)
    profile = resolve_profile(a.profile)
    S, out, device = sizes(profile).network, outputs(profile), default_device()
    threads = torch.get_num_threads()
    result = json.loads((paths.RESULTS / "network_pruning.json").read_text())
    latency = json.loads((paths.RESULTS / "latency.json").read_text())
    print(f"profile {profile!r} on {device_name(device)}, {threads} CPU threads; latency tables "
          f"of {latency['date']} ({latency['cpu']})", flush=True)

    data = load_splits(download=True, warn=False)
    val_x, val_y = data.val_images[:S.eval_images], data.val_labels[:S.eval_images]
    sel, conf = selection_confirmation(len(val_y))
    dense = load_model(paths.CHECKPOINT, device).eval()
    rule = result["clustering_rule"] if result["profile"] == profile else S.rules[0]
    cache = finetune.ResultCache(out.checkpoints / f"latency_state_{profile}.pt")
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
    narrowed = cache(key | {"stage widths": "every candidate", "images": len(sens_y)},
                     lambda: stage_sensitivity(dense, sens_x, sens_y, data.train_images,
                                               S.refit_images, S.recal_batches, a.seed))
    stage_loss = {s: {r["width"]: sens.dense_accuracy - r["accuracy"]
                      for r in narrowed if r["stage"] == s} for s in STAGES}
    print("residual channels narrowed, one stage at a time (refit + recalibration), accuracy "
          f"of {len(sens_y):,} selection images: "
          + "; ".join(f"{r['stage']} {r['width']}: {100 * r['accuracy']:.1f}%"
                      for r in narrowed), flush=True)
    kept = (result.get("latency_plans") or [{}])[0].get("budget_ms") if a.keep_budgets else None
    limit = kept or budgets(latency, a.speedup)
    proposed = candidates(loss, latency, a.speedup, limit=limit, stage_loss=stage_loss)
    if not proposed:
        print(f"no plan of conv1 widths, removed blocks and stage widths is predicted near "
              f"{a.speedup:g}x faster in both runtimes")
        return 1
    fresh = {label(c): resnet20(dense.shortcut, c[0], stage_widths=c[1])
             for c in proposed}  # time needs widths only
    screen = pd.DataFrame(cache(  # cached: a re-run keeps the choice it made
        {"screen": [[list(p), list(r)] for p, r in proposed], "threads": threads,
         "dense": key["dense"], "repeats": S.latency_repeats},
        lambda: timings({"unpruned": dense, **fresh}, S.latency_repeats, 1, threads, (256,))
        .to_dict("records")))
    choice = measured_choice(screen, proposed, a.speedup)
    plan, stages = choice
    lost = {c: predicted_loss(loss, c[0], stage_loss, c[1]) for c in proposed}
    shown = screen.pivot_table(index="model", columns="runtime", values="speedup")
    tables = {r: latency["tables"][r][BATCH] for r in RUNTIMES}
    forecast = {c: {r: predict_ms(t, DEFAULT_WIDTHS) / predict_ms(t, *c)
                    for r, t in tables.items()} for c in proposed}
    print(f"{len(proposed)} plans proposed by the latency tables, timed at batch {BATCH} "
          f"({S.latency_repeats} interleaved rounds), best predicted accuracy first:")
    for c in proposed:
        print(f"  {label(c)}: predicted loss {100 * lost[c]:.1f} points; measured (predicted) "
              + ", ".join(f"{RUNTIMES[r]} {shown.loc[label(c), r]:.2f}x "
                          f"({forecast[c][r]:.2f}x)" for r in RUNTIMES)
              + ("  <- chosen" if c == choice else ""), flush=True)
    narrow = {} if stages == STAGE_WIDTHS else {"stage_widths": list(stages)}

    def pruned_scored():
        base = dense if not narrow else prune_stages(
            dense, stages, a.seed, data.train_images[:S.refit_images], data.train_images,
            S.recal_batches)
        return network.score(base, plan, rule, val_x, val_y, data.train_images,
                             "refit+recal", S.refit_images, S.recal_batches, a.seed)

    scored = cache(key | {"plan": list(plan)} | narrow, pruned_scored)
    student = network.restore(scored, dense.shortcut, device)
    ft = result["finetune"]
    ft_data = data._replace(train_images=data.train_images[:S.finetune_images],
                            train_labels=data.train_labels[:S.finetune_images],
                            val_images=val_x[sel], val_labels=val_y[sel])
    cfg = finetune_config(S.headline_epochs, ft["lr"], batch_size=ft["batch_size"],
                          seed=a.seed, checkpoint_every=1)
    teacher = network.fold_bn(dense) if result.get("distill", True) else None
    run = finetune.finetune(student, ft_data, cfg, out.checkpoints, f"{profile}_latency",
                            key | {"plan": list(plan), "teacher": "unpruned, BN folded"}
                            | narrow,
                            teacher, device, progress=False,
                            callback=finetune.epoch_printer("latency plan"))
    ok = network.correct(run.model, val_x, val_y)
    test_ok = network.correct(run.model, data.test_images, data.test_labels)
    test_dense = network.correct(dense, data.test_images, data.test_labels)
    versus = stats.paired_test(test_ok, test_dense)  # declared: against the unpruned network
    print(f"after {len(run.history)} epochs: selection "
          f"{stats.format_accuracy(ok[sel].sum(), len(sel))}, confirmation "
          f"{stats.format_accuracy(ok[conf].sum(), len(conf))}, test "
          f"{stats.format_accuracy(test_ok.sum(), len(test_ok))}; - unpruned, test: {versus}",
          flush=True)

    if a.no_timing:
        print("--no-timing: stopped before timing; nothing written")
        return 0
    headline = load_model(paths.CHECKPOINTS / "resnet20_pruned50.pt")
    table = timings({"unpruned": dense, "50% MACs": headline, "latency": run.model},
                    S.latency_repeats, S.latency_calls, threads)
    print(table.drop(columns=["threads"]).round(3).to_string(index=False))
    reference = max(result["dense_confirmation_accuracy"],
                    result["dense_finetuned_confirmation_accuracy"])
    record = {
        "goal_speedup": a.speedup, "batch_size": int(BATCH), "strategy": rule,
        "widths": list(plan), "stage_widths": list(stages),
        "removed_blocks": [b for b, k in zip(BLOCK_NAMES, plan, strict=True) if k == 0],
        "stage_sensitivity": narrowed,
        "screening": [{"widths": list(c[0]), "stage_widths": list(c[1]),
                       "predicted_loss": float(lost[c]),
                       **{f"speedup_{r}_batch{BATCH}": float(shown.loc[label(c), r])
                          for r in RUNTIMES},
                       **{f"predicted_speedup_{r}_batch{BATCH}": float(forecast[c][r])
                          for r in RUNTIMES}, "chosen": c == choice} for c in proposed],
        "screening_rounds": S.latency_repeats,
        "reached_goal_in_screening": bool(shown.loc[label(choice)].min() >= a.speedup),
        "macs": count_macs(run.model), "params": count_params(run.model),
        "predicted_speedup": {f"{r}_batch{BATCH}": v for r, v in forecast[choice].items()},
        "budget_ms": dict(limit),
        "acc_pruned": float(scored["correct"][sel].float().mean()),
        "acc_selection": float(ok[sel].mean()), "acc_confirmation": float(ok[conf].mean()),
        "gap_points": 100 * (float(ok[conf].mean()) - reference),
        "test_acc_finetuned": float(test_ok.mean()),
        "test_vs_unpruned": {k: getattr(versus, k) for k in ("difference", "ci_low", "ci_high",
                                                             "p_value", "a_only", "b_only", "n")},
        "finetune_epochs": len(run.history), "finetune_seconds": round(run.train_seconds, 1),
        "sensitivity_images": len(sens_y), "latency_rounds": int(table.rounds.iloc[0]),
        "latency_date": latency["date"], "device": device_name(device), "cpu_threads": threads,
        **speed_keys(table, "latency"),
        "headline_50": speed_keys(table, "50% MACs"),
    }
    print(json.dumps({k: v for k, v in record.items() if "speedup" in k}, indent=1))
    if profile == result["profile"] or profile == "full":
        result["latency_plans"] = [record]
        (out.results / "network_pruning.json").write_text(
            json.dumps(result, indent=1, default=float) + "\n")
        save_model(copy.deepcopy(run.model).cpu(), out.checkpoints / "resnet20_latency.pt",
                   goal_speedup=a.speedup, strategy=rule, finetune_epochs=len(run.history),
                   parent=paths.CHECKPOINT.name, val_accuracy=float(ok[conf].mean()))
        print(f"wrote {out.results / 'network_pruning.json'} (latency_plans)")
    else:
        print(f"profile {profile!r}: results/ untouched (the study is the {result['profile']!r} "
              f"profile's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
