"""Regenerate the generated sections of README.md.

* Between ``<!-- findings:start -->`` and ``<!-- findings:end -->``: "What we found", at most six
  bullets, every number read from results/train.json, bench_train.json, block_pruning.json and
  network_pruning.json (:func:`render_findings`).
* Between ``<!-- notebooks:start -->`` and ``<!-- notebooks:end -->``: the lessons
  (``notebooks/NN_*.ipynb``) and the study notebooks (``study/NN_*.ipynb``), with their titles
  (each notebook's first heading), their run times from results/series.json and Colab badges
  derived from pyproject's ``[project.urls] Repository`` (see scripts/sync_notebooks.py).
* Between ``<!-- reproduce:start -->`` and ``<!-- reproduce:end -->``: how long ``make
  reproduce`` takes on each kind of device, summed from results/series.json.
* Between ``<!-- results:start -->`` and ``<!-- results:end -->``: tables built from whichever of
  results/train.json, results/block_pruning.json and results/network_pruning.json exist, and the
  figures of ``FIGURES`` that exist in img/.

No result number in the README is typed by hand; the text outside the markers is, and is kept
as it is. The findings and reproduce sections are rewritten only where their markers exist.

Usage::

    python scripts/make_readme.py          # rewrite README.md
    python scripts/make_readme.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sync_notebooks  # noqa: E402  (sibling script: repository URL and Colab badges)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS, STAGE_WIDTHS  # noqa: E402
from helpers.study.network_plots import GOAL_POINTS  # noqa: E402  (the one definition)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS_DIR = ROOT / "results"
IMG_DIR = ROOT / "img"
NOTEBOOK_DIR = ROOT / "notebooks"  # the lessons (`make run`)
STUDY_DIR = ROOT / "study"  # the reproduction (`make reproduce`)

# series.json is rendered in the notebook tables and the reproduction section, not here.
RESULT_FILES = ("train.json", "block_pruning.json", "network_pruning.json")
# (path relative to the repository root, caption); shown only when the file exists.
FIGURES = (
    ("img/train_curves.png", "Training curves of ResNet20 on CIFAR-10"),
    ("img/block_pruning.png", "Accuracy drop after pruning one BasicBlock, no fine-tuning: the "
     "original method (centroid, no treatment), then l1 beside the best clustering arm, both "
     "under that arm's treatment"),
    ("img/pareto.png", "Whole-network pruning: accuracy against MACs"),
)
RESNET20_WIDTHS = dict(zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True))  # conv1 width per block
DASH = "—"


# --------------------------------------------------------------------------- formatting


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x, digits: int = 2) -> str:
    """Fraction -> '93.10%'."""
    return DASH if _missing(x) else f"{100 * x:.{digits}f}%"


def count(x) -> str:
    """Integer with thousands separators."""
    return DASH if _missing(x) else f"{int(x):,}"


def millions(x, digits: int = 1) -> str:
    return DASH if _missing(x) else f"{x / 1e6:.{digits}f}"


def num(x, digits: int = 1) -> str:
    return DASH if _missing(x) else f"{x:.{digits}f}"


def ratio(x, digits: int = 2) -> str:
    return DASH if _missing(x) else f"{x:.{digits}f}×"


def target(x) -> str:
    """A pruning target: fractions are shown as percentages, anything else as given."""
    if _missing(x):
        return DASH
    if isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1:
        return f"{100 * x:g}%"
    return str(x)


def mean(values: Iterable[float]) -> float | None:
    values = [v for v in values if not _missing(v)]
    return sum(values) / len(values) if values else None


def table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """Markdown table; align holds 'l' or 'r' per column (default: first left, others right)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def run_of(r: dict) -> str:
    """'the `cpu` profile on cpu' from a results file's profile and device."""
    profile = f"the `{r['profile']}` profile" if r.get("profile") else "an unrecorded profile"
    return f"{profile} on {r.get('device', DASH)}"


# --------------------------------------------------------------------------- sections


def interval(accuracy, images) -> str:
    """'88.12% (95% CI 87.21–88.98%, 5,000 images)'; a dash when not recorded."""
    if _missing(accuracy) or _missing(images) or not images:
        return DASH
    low, high = sync_notebooks.wilson_interval(accuracy, int(images))
    return f"{pct(accuracy)} (95% CI {pct(low)}–{pct(high)}, {count(images)} images)"


def checkpoint_origin(r: dict) -> str:
    """Which run produced the committed checkpoint, from train.json's profile and device."""
    profile, device = r.get("profile"), r.get("device", DASH)
    if profile == "full":
        return f"the `full` profile (the GPU run), trained on {device}"
    if profile == "cpu":
        return (f"the `cpu` profile, trained on {device} (the profile that reproduces the "
                "committed outputs on a CPU; the `full` GPU profile trains longer)")
    if profile:
        return f"the `{profile}` profile, trained on {device}"
    return f"a run whose profile was not recorded, trained on {device}"


def render_train(r: dict) -> str:
    seed = r.get("seed_pipeline_seconds_per_epoch")
    per_epoch = r.get("seconds_per_epoch")
    speedup = seed / per_epoch if not _missing(seed) and per_epoch else None
    row = [
        interval(r.get("val_accuracy"), r.get("val_images")),
        interval(r.get("test_accuracy"), r.get("test_images")),
        count(r.get("params")),
        millions(r.get("macs")),
        count(r.get("epochs")),
        count(r.get("batch_size")),
        num(r.get("seconds_per_epoch"), 2),
        ratio(speedup, 1),
        f"{r.get('device', DASH)}, torch {r.get('torch_version', DASH)}",
    ]
    header = [
        "Validation accuracy",
        "Test accuracy",
        "Params",
        "MACs (M)",
        "Epochs",
        "Batch",
        "s / epoch",
        "Speed-up vs seed pipeline",
        "Device",
    ]
    return "\n".join([
        "### Training (`study/02`)",
        "",
        f"The committed checkpoint (`checkpoints/resnet20.pt`) comes from {checkpoint_origin(r)}.",
        "",
        table(header, [row], ["l", "l", "r", "r", "r", "r", "r", "r", "l"]),
        "",
        f"Trained on {count(r.get('train_images'))} images in {num(r.get('train_seconds'), 0)} s "
        f"(seed {r.get('seed', DASH)}, shortcut option {r.get('shortcut', DASH)}); the "
        "validation images are the last ones of the official training set, held out from "
        "training. Intervals: 95% Wilson intervals of a proportion. The seed pipeline is the "
        "unoptimised training loop that `study/02` starts from.",
    ])


def kept_fraction(record: dict, widths: dict | None = None) -> float | None:
    """Fraction of a block's conv1 filters kept by one block-pruning record.

    The block's width comes from the record (``width``), else from ``widths`` (the results
    file's), else from ResNet20's default widths; ``None`` when the block is unknown.
    """
    width = record.get("width") or (widths or {}).get(record.get("block")) or \
        RESNET20_WIDTHS.get(record.get("block"))
    return record["kept_filters"] / width if width else None


def render_block_pruning(r: dict) -> str:
    records = r.get("records", [])
    strategies = list(dict.fromkeys(rec["strategy"] for rec in records))
    treatments = ("none", "recal", "refit+recal")

    def treatment_of(rec: dict) -> str:  # older files had only a bn_recalibration flag
        if "treatment" in rec:
            return rec["treatment"]
        return "recal" if rec.get("bn_recalibration") else "none"

    def acc(strategy: str, treatment: str, half: bool = False) -> str:
        values = []
        for rec in records:
            if rec["strategy"] != strategy or treatment_of(rec) != treatment:
                continue
            frac = kept_fraction(rec, r.get("widths"))
            if half and (frac is None or abs(frac - 0.5) > 1e-6):
                continue
            if frac is not None and frac >= 1:  # k = width: the unpruned block, left out
                continue
            values.append(rec.get("accuracy"))
        return pct(mean(values))

    rows = [[f"`{s}`", *(acc(s, t) for t in treatments), *(acc(s, t, True) for t in treatments)]
            for s in strategies]
    header = ["Strategy", "Mean, as pruned", "Mean, BN recal.", "Mean, refit + recal.",
              "50% kept, as pruned", "50% kept, BN recal.", "50% kept, refit + recal."]
    blocks = len({str(rec.get("block")) for rec in records})
    out = [
        "### Pruning one BasicBlock at a time (`study/04`)",
        "",
        f"Accuracy on {images_of(r.get('eval_images'), r.get('eval_split', 'test'))}, "
        f"averaged over {blocks} blocks "
        'and every pruned point of the sweep ("mean": every number k of conv1 filters kept '
        "below the block's width; the unpruned k = width points are left out, as in "
        '`study/04`), or over the blocks at half of the filters kept ("50% kept"); "BN recal." '
        "re-estimates the BatchNorm "
        "statistics on augmented training images after pruning; \"refit\" re-fits conv2 by "
        "least squares against the unpruned block first.",
    ]
    if not _missing(r.get("dense_accuracy")):
        out[-1] += f" Unpruned network: {pct(r['dense_accuracy'])}."
    out += [
        "",
        table(header, rows),
        "",
        f"Sweep: {count(len(records))} points in {num(r.get('sweep_seconds'), 0)} s, "
        f"{run_of(r)}.",
    ]
    return "\n".join(out)


def speed_cell(rec: dict, key: str) -> str:
    """'1.52× (1.49–1.55)': a median speed-up with its 95% interval, from ``key``,
    ``key_low`` and ``key_high``."""
    x, low, high = rec.get(key), rec.get(f"{key}_low"), rec.get(f"{key}_high")
    if _missing(x):
        return DASH
    if _missing(low) or _missing(high):
        return ratio(x)
    return f"{ratio(x)} ({low:.2f}–{high:.2f})"


def declared_line(test: dict) -> str:
    """One declared paired comparison: 'a − b: +0.40 points (95% CI …), McNemar p = …'."""
    return (f"{test['a']} − {test['b']}: {100 * test['difference']:+.2f} points (95% CI "
            f"{100 * test['ci_low']:+.2f} to {100 * test['ci_high']:+.2f}), McNemar p = "
            f"{test['p_value']:.2g}, {test['a_only']} against {test['b_only']} of "
            f"{count(test['n'])} {test['images']} images right for one only")


def render_network_pruning(r: dict) -> str:
    def key(rec: dict):
        t = rec.get("target")
        return (0, t, "") if isinstance(t, (int, float)) else (1, 0, str(t))

    dense_macs = r.get("dense_macs")
    refs = [a for a in (r.get("dense_confirmation_accuracy"),
                        r.get("dense_finetuned_confirmation_accuracy")) if not _missing(a)]
    reference = max(refs) if refs else None
    rows = []
    for rec in sorted(r.get("records", []), key=key):
        conf = rec.get("acc_confirmation")
        macs = rec.get("macs")
        removed = (pct(1 - macs / dense_macs) if not _missing(macs) and dense_macs else DASH)
        gap = (f"{100 * (conf - reference):+.2f}"
               if reference is not None and not _missing(conf) else DASH)
        name = target(rec.get("target"))
        rows.append([
            f"**{name}** (headline)" if rec.get("headline") else name,
            removed, f"`{rec.get('strategy', DASH)}`", f"`{rec.get('allocation', DASH)}`",
            millions(macs, 2), count(rec.get("params")), pct(rec.get("acc_pruned")),
            count(rec.get("finetune_epochs")), pct(conf), gap, pct(rec.get("test_acc_finetuned")),
            speed_cell(rec, "speedup_cpu_batch256"), speed_cell(rec, "speedup_cpu_batch1"),
            speed_cell(rec, "onnxruntime_speedup_batch256"),
            speed_cell(rec, "onnxruntime_speedup_batch1"),
        ])
    header = ["Target", "MACs removed", "Strategy", "Allocation", "MACs (M)", "Params",
              "Pruned (selection)", "Epochs", "Fine-tuned (confirmation)", "Gap (points)",
              "Test", "PyTorch, batch 256", "PyTorch, batch 1", "ONNX Runtime, batch 256",
              "ONNX Runtime, batch 1"]
    align = ["l", "r", "l", "l"] + ["r"] * 11
    speed = r.get("min_speedup")
    ft = r.get("finetune", {})
    tried = r.get("headline_plans") or []
    trials = ""
    if tried:
        trials = (f"The headline plan was chosen on the selection half after "
                  f"{count(ft.get('screen_epochs'))} epochs of fine-tuning, among (pruned → "
                  "fine-tuned, selection half): "
                  + "; ".join(f"`{p.get('strategy')}` `{p.get('allocation')}` "
                              f"{pct(p.get('acc_pruned'))} → {pct(p.get('acc_selection'))}"
                              for p in tried) + ".")
        if ft.get("screen_epochs") != ft.get("headline_epochs"):
            trials += (f" Only the chosen plan was then fine-tuned for "
                       f"{count(ft.get('headline_epochs'))} epochs.")
    if r.get("clustering_rule"):
        trials += (" " if trials else "") + (
            f"The clustering rule `{r['clustering_rule']}` was chosen on the selection half "
            "among " + ", ".join(f"`{k}` {pct(v)}" for k, v in
                                 (r.get("clustering_rules") or {}).items())
            + " (the uniform headline plan after refit + recal.).")
    removed = r.get("removed_blocks") or []
    if removed:
        trials += (" " if trials else "") + (
            f"The `depth` plans remove {', '.join(f'`{b}`' for b in removed)} whole (every "
            "filter pruned: the block adds a learned constant to its input) and spread the rest "
            "of the budget uniformly.")
    declared = r.get("declared_tests") or []
    tests = (["", "Comparisons declared before looking (all others in `study/05` are "
              "descriptive):", "", *[f"* {declared_line(t)}" for t in declared]]
             if declared else [])
    sel, conf = r.get("selection_images"), r.get("confirmation_images")
    return "\n".join([
        "### Whole-network pruning (`study/05`)",
        "",
        f"The {images_of(r.get('eval_images'), r.get('eval_split', 'val'))} are split once "
        f"into a selection half ({count(sel)}) and a confirmation half ({count(conf)}): every "
        "choice (clustering rule, removed block, plan, schedule) is made on the selection half, "
        "and the chosen networks are reported on the confirmation half, which no choice saw. "
        f"Confirmation half: unpruned network {pct(r.get('dense_confirmation_accuracy'))}, the "
        "same fine-tuned with the headline's schedule (the control) "
        f"{pct(r.get('dense_finetuned_confirmation_accuracy'))}; \"Gap\" is the fine-tuned "
        f"network against the better of the two. {run_of(r)[0].upper()}{run_of(r)[1:]}"
        + (f"; final models also on {count(r['test_images'])} test images (unpruned "
           f"{pct(r.get('dense_test_accuracy'))}, control "
           f"{pct(r.get('dense_finetuned_test_accuracy'))})" if r.get("test_images") else "")
        + ". \"Pruned\" is after the in-order conv2 refit and BN recalibration, before "
        "fine-tuning. Speed-ups: BN-folded networks on the CPU, "
        f"{r.get('cpu_threads', DASH)} threads, in PyTorch and in ONNX Runtime "
        f"{r.get('onnxruntime_version', '')}, the median of the per-round ratios of "
        f"{count(r.get('latency_rounds'))} interleaved rounds with its 95% interval"
        + (f". The headline network must remove at least {target(r.get('headline_budget'))}"
           f" of the MACs and be at least {speed:g}× faster at batch 256" if speed else "")
        + ".",
        "",
        table(header, rows, align),
        *(["", trials] if trials else []),
        *tests,
    ])


NOT_MEASURED = "not yet measured"


def run_cell(run: dict | None, notes: list[str]) -> str:
    """'2.1 min (NVIDIA H200, 16 threads)' for one recorded run of results/series.json, with a
    footnote mark ``(n)`` when the run has a note (appended to ``notes``)."""
    if not run:
        return NOT_MEASURED
    threads = f", {run['threads']} threads" if run.get("threads") else ""
    mark = ""
    if run.get("note"):
        notes.append(run["note"])
        mark = f" ({len(notes)})"
    return f"{sync_notebooks.duration(run['seconds'])} ({run.get('device', DASH)}{threads}){mark}"


def footnotes(notes: list[str]) -> list[str]:
    return ["", *(f"({i}) {n}" for i, n in enumerate(notes, 1))] if notes else []


def load_series(results_dir: Path = RESULTS_DIR) -> dict[str, dict]:
    """results/series.json's ``notebooks`` (stem -> run key -> run), or {} when absent."""
    path = Path(results_dir) / "series.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("notebooks", {})


# --------------------------------------------------------------------------- what we found

FINDINGS_FILES = ("train.json", "bench_train.json", "block_pruning.json", "network_pruning.json")
TREATMENT_RULES = ("l1", "nearest")  # the rules whose treatments "What we found" sums up
CLUSTER_RULES = ("first", "nearest", "centroid", "merge")  # each compared with L1 there
REFERENCE_RULE = "l1"
SPLIT_NAMES = {"val": "validation"}


def images_of(images, split: str | None = None) -> str:
    """'5,000 validation images' ('images' alone when the split is not recorded)."""
    split = SPLIT_NAMES.get(split, split)
    return f"{count(images)} {split} images" if split else f"{count(images)} images"


def treatment_of(rec: dict) -> str:
    """A block-pruning record's treatment (older files had only a bn_recalibration flag)."""
    if "treatment" in rec:
        return rec["treatment"]
    return "recal" if rec.get("bn_recalibration") else "none"


def pruned_points(r: dict) -> dict[tuple[str, str], dict[tuple[str, int], float]]:
    """``{(strategy, treatment): {(block, k): accuracy}}`` over the pruned points of a
    block_pruning.json (k below the block's width; points of unknown width are left out)."""
    arms: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
    for rec in r.get("records", []):
        frac = kept_fraction(rec, r.get("widths"))
        if frac is None or frac >= 1 or _missing(rec.get("accuracy")):
            continue
        arm = arms.setdefault((rec["strategy"], treatment_of(rec)), {})
        arm[(str(rec["block"]), int(rec["kept_filters"]))] = rec["accuracy"]
    return arms


def paired_counts(a: dict, b: dict) -> tuple[int, int, int, float | None]:
    """At the points both arms have: how often A is higher, lower, equal, and the mean A - B."""
    common = [p for p in a if p in b]
    higher = sum(a[p] > b[p] for p in common)
    lower = sum(a[p] < b[p] for p in common)
    return higher, lower, len(common) - higher - lower, mean(a[p] - b[p] for p in common)


def points(x) -> str:
    """A difference of fractions in percentage points, signed: '+0.07'."""
    return DASH if _missing(x) else f"{100 * x:+.2f}"


def finding_training(train: dict | None, bench: dict | None) -> str | None:
    parts = []
    if train:
        parts.append(
            f"**Training.** ResNet20 trained for {count(train.get('epochs'))} epochs in "
            f"{num(train.get('train_seconds'), 0)} s on {train.get('device', DASH)} "
            f"({num(train.get('seconds_per_epoch'), 2)} s per epoch, "
            f"{run_of(train).split(' on ')[0]}) and "
            f"reached {pct(train.get('val_accuracy'))} on "
            f"{images_of(train.get('val_images'), 'validation')} and "
            f"{pct(train.get('test_accuracy'))} on {images_of(train.get('test_images'), 'test')}.")
    steps = (bench or {}).get("step_seconds") or {}
    if bench and not _missing(bench.get("speedup_vs_seed")) and steps:
        fastest = min(steps, key=steps.get)
        text = (f"In the training benchmark on {bench.get('device', DASH)} "
                f"(`results/bench_train.json`), this trainer's fastest step ({fastest}, batch "
                f"{count(bench.get('batch_size'))}) amounts to "
                f"{num(bench.get('trainer_seconds_per_epoch'), 2)} s per epoch against "
                f"{num(bench.get('seed_pipeline_seconds_per_epoch'), 1)} s for the seed PIL + "
                f"`DataLoader` pipeline, {ratio(bench['speedup_vs_seed'], 1)} faster")
        if steps.get("fp32"):
            text += ("; per step against fp32: " + ", ".join(
                f"{name} {ratio(steps['fp32'] / sec)}" for name, sec in steps.items()
                if name != "fp32" and sec))
        parts.append(text + ".")
    return " ".join(parts) or None


def finding_treatments(r: dict | None) -> str | None:
    if not r:
        return None
    arms = pruned_points(r)
    rules = [s for s in TREATMENT_RULES if (s, "none") in arms]
    if not rules:
        return None
    n = len(arms[(rules[0], "none")])
    blocks = len({b for b, _ in arms[(rules[0], "none")]})
    where = (f"{images_of(r.get('eval_images'), r.get('eval_split'))}, "
             f"{r.get('device', DASH)}")

    def means(s: str) -> str:
        m = [mean(arms.get((s, t), {}).values()) for t in ("none", "recal", "refit+recal")]
        gains = [None if _missing(a) or _missing(b) else b - a
                 for a, b in zip(m[:-1], m[1:], strict=True)]
        return (f"`{s}` from {pct(m[0])} as pruned to {pct(m[1])} with BN recalibration "
                f"({points(gains[0])} points) and {pct(m[2])} with the conv2 refit on top "
                f"({points(gains[1])})")

    return (f"**What the repairs buy, one block pruned at a time** (mean accuracy over the "
            f"{count(n)} pruned points of {blocks} blocks, every k below the block's width, no "
            f"fine-tuning; "
            f"{where}): " + "; ".join(means(s) for s in rules) + ".")


def finding_clustering(r: dict | None) -> str | None:
    if not r:
        return None
    arms = pruned_points(r)
    t = "refit+recal"
    ref = arms.get((REFERENCE_RULE, t))
    rules = [s for s in CLUSTER_RULES if (s, t) in arms]
    if not ref or not rules:
        return None
    counts = []
    for s in rules:
        higher, lower, equal, diff = paired_counts(arms[(s, t)], ref)
        counts.append(f"`{s}` {higher} / {lower} / {equal} ({points(diff)} points on average)")
    return (f"**Clustering against L1, both after refit + recal** (the same pruned points, "
            f"{images_of(r.get('eval_images'), r.get('eval_split'))}, "
            f"{r.get('device', DASH)}): at how many of the {count(len(ref))} points each "
            f"clustering rule is above / below / equal to `{REFERENCE_RULE}`: "
            + "; ".join(counts) + ". Descriptive counts, not a test: neighbouring k of a "
            "block are correlated, and `study/04`'s paired tests call most single "
            "points ties.")


def finding_network(r: dict | None) -> str | None:
    if not r:
        return None
    head = next((rec for rec in r.get("records", []) if rec.get("headline")), None)
    if head is None:
        return None
    macs, dense_macs = head.get("macs"), r.get("dense_macs")
    removed = pct(1 - macs / dense_macs) if not _missing(macs) and dense_macs else DASH
    conf = f"{count(r.get('confirmation_images'))} confirmation images"
    threads = f", {r['cpu_threads']} threads" if r.get("cpu_threads") else ""
    test = ""
    if r.get("test_images"):
        test = (f"; on {images_of(r['test_images'], 'test')} {pct(head.get('test_acc_finetuned'))}"
                f" (unpruned {pct(r.get('dense_test_accuracy'))}, control "
                f"{pct(r.get('dense_finetuned_test_accuracy'))})")
    return (f"**The {target(head.get('target'))} network** (`{head.get('strategy', DASH)}` rule, "
            f"`{head.get('allocation', DASH)}` allocation, {removed} of the MACs removed, "
            f"{count(head.get('params'))} parameters instead of {count(r.get('dense_params'))}; "
            f"{run_of(r)}): after {count(head.get('finetune_epochs'))} epochs of fine-tuning "
            f"{pct(head.get('acc_confirmation'))} of the {conf}, which took no part in any "
            f"choice, against {pct(r.get('dense_confirmation_accuracy'))} for the unpruned "
            f"network and {pct(r.get('dense_finetuned_confirmation_accuracy'))} for the "
            f"unpruned one fine-tuned the same way (the control){test}. BN-folded on the CPU"
            f"{threads}, it runs {speed_cell(head, 'speedup_cpu_batch256')} faster at batch "
            f"256 in PyTorch and {speed_cell(head, 'onnxruntime_speedup_batch256')} in ONNX "
            f"Runtime (median and 95% interval).{goals(r, head)}")


def latency_speeds(rec: dict) -> str:
    """'1.61× (1.58–1.63) in PyTorch and 1.52× (…) in ONNX Runtime at batch 256; at batch 1
    …': a latency-plan record's four speed-ups with their intervals."""
    def both(batch: int) -> str:
        return (f"{speed_cell(rec, f'speedup_torch_batch{batch}')} in PyTorch and "
                f"{speed_cell(rec, f'speedup_onnxruntime_batch{batch}')} in ONNX Runtime")
    return f"{both(256)} at batch 256; {both(1)} at batch 1"


def latency_verdict(r: dict, rec: dict) -> str:
    """The latency network against its goals: the confirmation gap, and in each runtime whether
    the speed-up interval at batch 256 clears the goal (met), stays below it (missed), or
    straddles it (not decided)."""
    refs = [a for a in (r.get("dense_confirmation_accuracy"),
                        r.get("dense_finetuned_confirmation_accuracy")) if not _missing(a)]
    said = []
    if refs and not _missing(rec.get("acc_confirmation")):
        gap = 100 * (rec["acc_confirmation"] - max(refs))
        said.append(f"{gap:+.2f} points against the better unpruned network on the "
                    f"confirmation half, where the goal was at most {GOAL_POINTS:g} below "
                    f"({'met' if gap >= -GOAL_POINTS else 'missed'})")
    goal = rec.get("goal_speedup")
    for runtime, name in (("torch", "PyTorch"), ("onnxruntime", "ONNX Runtime")):
        low = rec.get(f"speedup_{runtime}_batch256_low")
        high = rec.get(f"speedup_{runtime}_batch256_high")
        if goal and not (_missing(low) or _missing(high)):
            verdict = "met" if low >= goal else "missed" if high < goal else "not decided"
            said.append(f"{name} at batch 256 against {goal:g}× ({verdict})")
    return f" Against its goals: {'; '.join(said)}." if said else ""


def finding_latency(r: dict | None) -> str | None:
    """The network chosen by measured latency (``latency_plans``), beside the MACs headline."""
    recs = (r or {}).get("latency_plans") or []
    if not recs:
        return None
    rec = recs[0]
    removed = rec.get("removed_blocks") or []
    head = next((x for x in r.get("records", []) if x.get("headline")), {})
    stages = tuple(rec.get("stage_widths") or ())
    narrow = stages and stages != STAGE_WIDTHS
    return (f"**A plan chosen by time, not MACs** (`helpers.study.latency_plans`): conv1 widths "
            f"{tuple(rec.get('widths', ()))}"
            + (f", {', '.join(f'`{b}`' for b in removed)} removed" if removed else "")
            + (f", residual channels of the three stages narrowed to {stages} (of "
               f"{STAGE_WIDTHS}, `helpers.channels`)" if narrow else "")
            + f", {pct(1 - rec['macs'] / r['dense_macs'])} of the MACs removed and "
            f"{count(rec.get('params'))} parameters: of the plans the latency tables "
            f"(`results/latency.json`) proposed as near {rec.get('goal_speedup')}× in both "
            f"runtimes (conv1 widths, removed blocks and residual stage widths; their budget "
            f"widened by the tables' check error), the most accurate by "
            f"the sensitivity of the selection half whose short screening timing "
            + ("reached it in both" if rec.get("reached_goal_in_screening", True) else
               "came closest") + f". After {count(rec.get('finetune_epochs'))} epochs of "
            f"fine-tuning {pct(rec.get('acc_confirmation'))} of the "
            f"{count(r.get('confirmation_images'))} confirmation images; "
            f"{pct(rec.get('test_acc_finetuned'))} of {images_of(r.get('test_images'), 'test')}. "
            f"Measured BN-folded on the CPU ({rec.get('cpu_threads', DASH)} threads): "
            f"{latency_speeds(rec)} (new rounds, not the screening's). The "
            f"{target(head.get('target'))} MACs network of the bullet above, timed in the same "
            f"rounds: "
            f"{latency_speeds(rec.get('headline_50') or {})}.{latency_verdict(r, rec)}"
            + narrowing(r, rec))


def narrowing(r: dict, rec: dict) -> str:
    """' Narrowing one stage's residual channels ... ': what the stage sensitivity measured,
    and how many screened plans narrowed a stage."""
    sens = rec.get("stage_sensitivity") or []
    if not sens:
        return ""
    acc = [x["accuracy"] for x in sens]
    screened = rec.get("screening") or []
    narrow = sum(tuple(x.get("stage_widths") or STAGE_WIDTHS) != STAGE_WIDTHS for x in screened)
    return (f" Narrowing one stage's residual channels (`helpers.channels`, with refit and "
            f"recalibration) left {pct(min(acc))}–{pct(max(acc))} of the "
            f"{count(rec.get('sensitivity_images'))} selection images (unpruned "
            f"{pct(r.get('dense_selection_accuracy'))}); {narrow} of the {len(screened)} "
            f"screened plans narrowed a stage.")


def goals(r: dict, head: dict) -> str:
    """' Against its goals: ...': the headline's gap and speed against what was asked."""
    refs = [a for a in (r.get("dense_confirmation_accuracy"),
                        r.get("dense_finetuned_confirmation_accuracy")) if not _missing(a)]
    said = []
    if refs and not _missing(head.get("acc_confirmation")):
        gap = 100 * (head["acc_confirmation"] - max(refs))
        met = "met" if gap >= -GOAL_POINTS else "missed"
        said.append(f"{gap:+.2f} points against the better unpruned network, where at most "
                    f"{GOAL_POINTS:g} below was asked ({met})")
    low, high = head.get("speedup_cpu_batch256_low"), head.get("speedup_cpu_batch256_high")
    goal = r.get("min_speedup")
    if goal and not (_missing(low) or _missing(high)):
        verdict = "met" if low >= goal else "missed" if high < goal else "not decided"
        said.append(f"a PyTorch speed-up interval against the {goal:g}× asked ({verdict})")
    return f" Against its goals: {'; '.join(said)}." if said else ""


def render_findings(results_dir: Path = RESULTS_DIR) -> str:
    """The bullets of "What we found" (at most six), from the results files that exist."""
    r = {}
    for name in FINDINGS_FILES:
        path = Path(results_dir) / name
        r[name] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    bullets = [b for b in (
        finding_training(r["train.json"], r["bench_train.json"]),
        finding_treatments(r["block_pruning.json"]),
        finding_clustering(r["block_pruning.json"]),
        finding_network(r["network_pruning.json"]),
        finding_latency(r["network_pruning.json"]),
    ) if b]
    if not bullets:
        return "_Nothing yet: `make reproduce` writes results/*.json._"
    return "\n".join(f"* {b}" for b in bullets[:6])



RENDERERS = {
    "train.json": render_train,
    "block_pruning.json": render_block_pruning,
    "network_pruning.json": render_network_pruning,
}


def render_results(
    results_dir: Path = RESULTS_DIR, img_dir: Path = IMG_DIR, figures=FIGURES
) -> str:
    """Markdown for the results section from the JSON files and figures that exist."""
    parts = []
    for name in RESULT_FILES:
        path = Path(results_dir) / name
        if path.exists():
            part = RENDERERS[name](json.loads(path.read_text(encoding="utf-8")))
            parts += [part] if part else []
    for rel, caption in figures:
        if (Path(img_dir) / Path(rel).name).exists():
            parts.append(f"![{caption}]({rel})")
    if not parts:
        return "_No results yet: `make reproduce` produces results/*.json and img/*.png._"
    return "\n\n".join(parts)


def notebook_title(path: Path) -> str:
    """Text of the first '# ' heading of the notebook's first markdown cell (else its name)."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    for cell in cells[:1]:
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        for line in source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem


def numbered(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def render_notebooks(notebook_dir: Path = NOTEBOOK_DIR, url: str | None = None,
                     study_dir: Path = STUDY_DIR, results_dir: Path = RESULTS_DIR) -> str:
    """The lessons and the study notebooks, each with its run times from results/series.json
    (a lesson's ``lesson`` and ``lesson_gpu`` runs, a study notebook's ``cpu`` and ``full``)."""
    url = url or sync_notebooks.repo_url()
    runs = load_series(results_dir)
    notes: list[str] = []

    def rows(paths: list[Path], folder: str, keys: tuple[str, ...]) -> list[list[str]]:
        return [[f"[{p.stem}]({folder}/{p.name})", notebook_title(p).replace("|", "\\|"),
                 *(run_cell(runs.get(p.stem, {}).get(k), notes) for k in keys),
                 sync_notebooks.badge(url, p.name, folder)] for p in paths]

    align = ["l", "l", "r", "r", "l"]
    sections = (
        (numbered(notebook_dir), "notebooks", sync_notebooks.LESSON_RUNS,
         ["Lesson", "Topic", "On a CPU", "On a GPU", "Colab"],
         "**The lessons** (`notebooks/`, `make run`): short, each run in one sitting; they "
         "read the committed study and write nothing to `checkpoints/`, `results/` or "
         "`img/`. Run time of the whole lesson, as `scripts/run_series.py` measured it:"),
        (numbered(study_dir), "study", sync_notebooks.PROFILES_TIMED,
         ["Notebook", "Topic", "`cpu` profile", "`full` profile", "Colab"],
         "**The reproduction** (`study/`, `make reproduce`): the long notebooks that "
         "regenerate `checkpoints/*.pt`, `results/*.json` and `img/`. Run time of the whole "
         "notebook in each profile:"),
    )
    parts = []
    for paths, folder, keys, header, intro in sections:
        if paths:
            parts += [*([""] if parts else []), intro, "",
                      table(header, rows(paths, folder, keys), align)]
    if not parts:
        return "_No notebooks yet._"
    return "\n".join(parts + footnotes(notes))


REPRODUCE_ON = (("full", "a CUDA GPU"), ("cpu", "a CPU"))  # what `make reproduce` runs where


def render_reproduce(study_dir: Path = STUDY_DIR, results_dir: Path = RESULTS_DIR) -> str:
    """How long `make reproduce` takes on each kind of machine: the sum of the study notebooks'
    recorded run times in the profile it picks there; a lower bound ("at least") when some
    notebook was not measured or a measured run has a note (e.g. cached fine-tuning)."""
    stems = [p.stem for p in numbered(study_dir)]
    runs = load_series(results_dir)
    notes: list[str] = []
    rows = []
    for profile, where in REPRODUCE_ON:
        done = {s: runs[s][profile] for s in stems if runs.get(s, {}).get(profile)}
        missing = [s for s in stems if s not in done]
        if not done:
            rows.append([where, f"`{profile}`", NOT_MEASURED, DASH])
            continue
        noted = [s for s, run in done.items() if run.get("note")]
        total = sync_notebooks.duration(sum(run["seconds"] for run in done.values()))
        if missing or noted:
            total = f"at least {total} (lower bound)"
        devices = ", ".join(dict.fromkeys(
            f"{run.get('device', DASH)}" + (f", {run['threads']} threads" if run.get("threads")
                                           else "") for run in done.values()))
        said = []
        if missing:
            said.append(f"{', '.join(f'`{s}`' for s in missing)} {NOT_MEASURED}")
        for s in noted:
            notes.append(done[s]["note"])
            said.append(f"note ({len(notes)}) on `{s}`")
        rows.append([where, f"`{profile}`", total + (f": {'; '.join(said)}" if said else ""),
                     devices])
    if not stems:
        return "_No study notebooks yet._"
    return "\n".join([
        "Sum of the study notebooks' run times in `results/series.json` (each notebook's last "
        "run in that profile):",
        "",
        table(["Machine", "Profile", "Time of `make reproduce`", "Measured on"], rows,
              ["l", "l", "l", "l"]),
        *footnotes(notes),
    ])


def replace_section(text: str, name: str, content: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"README lacks the markers {start} ... {end}")
    return text[: i + len(start)] + "\n" + content.strip() + "\n" + text[j:]


def has_section(text: str, name: str) -> bool:
    return f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text


def render_readme(
    text: str,
    results_dir: Path = RESULTS_DIR,
    img_dir: Path = IMG_DIR,
    notebook_dir: Path = NOTEBOOK_DIR,
    url: str | None = None,
    study_dir: Path = STUDY_DIR,
) -> str:
    """Every generated section of ``text``: notebooks and results always (their markers must be
    there), findings and reproduce where their markers are."""
    if has_section(text, "findings"):
        text = replace_section(text, "findings", render_findings(results_dir))
    text = replace_section(text, "notebooks",
                           render_notebooks(notebook_dir, url, study_dir, results_dir))
    if has_section(text, "reproduce"):
        text = replace_section(text, "reproduce", render_reproduce(study_dir, results_dir))
    return replace_section(text, "results", render_results(results_dir, img_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--img", type=Path, default=IMG_DIR)
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, help="the lessons")
    parser.add_argument("--study", type=Path, default=STUDY_DIR, help="the study notebooks")
    args = parser.parse_args(argv)

    old = args.readme.read_text(encoding="utf-8")
    new = render_readme(old, args.results, args.img, args.notebooks, study_dir=args.study)
    if new == old:
        return 0
    if args.check:
        print(f"{args.readme} is out of date: run `python scripts/make_readme.py`", file=sys.stderr)
        return 1
    args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme} updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
