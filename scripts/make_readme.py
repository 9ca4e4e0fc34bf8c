"""Render README.md and RESULTS.md from the Jinja2 templates in scripts/templates/ (the prose)
and draw img/headline.png; this script only loads results/*.json and derives values from them.

    python scripts/make_readme.py          # rewrite README.md, RESULTS.md and img/headline.png
    python scripts/make_readme.py --check  # exit 1 if README.md or RESULTS.md is out of date
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sync_notebooks  # noqa: E402  (sibling script: repository URL, badges, durations)
from sync_notebooks import machine  # noqa: E402  ('AMD EPYC, 2 threads' for a run's record)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS, STAGE_WIDTHS  # noqa: E402
from helpers.study import network_plots  # noqa: E402  (the figure, GOAL_POINTS)
from helpers.study.profile import SIZES  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "templates"
RESULTS_DIR, IMG_DIR = ROOT / "results", ROOT / "img"
NOTEBOOK_DIR, STUDY_DIR = ROOT / "notebooks", ROOT / "study"
PAGES = {"README.md": "README.md.j2", "RESULTS.md": "RESULTS.md.j2"}
RESULT_JSON = ("train", "bench_train", "bench_latency", "block_pruning", "network_pruning",
               "series", "latency", "int8", "int8_plan")
FIGURES = ("train_curves", "block_pruning", "pareto")  # img/*.png shown on RESULTS.md
CLUSTER_RULES, REFERENCE_RULE = ("first", "nearest", "centroid", "merge"), "l1"
TREATMENTS = ("none", "recal", "refit+recal")
RESNET20_WIDTHS = dict(zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True))
REPRODUCE_ON = (("full", "a CUDA GPU"), ("cpu", "a CPU"))  # what `make reproduce` runs where
HEADLINE_BATCH = 256  # the batch of the headline speed-ups (the JSON keys name it)
DASH, NOT_MEASURED = "—", "not yet measured"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


FORMATS = {  # filter name -> format of a present value (a missing one is shown as a dash)
    "pct": lambda x, digits=2: f"{100 * x:.{digits}f}%",  # a fraction: '93.10%'
    "count": lambda x: f"{int(x):,}",
    "num": lambda x, digits=1: f"{x:.{digits}f}",
    "ratio": lambda x, digits=2: f"{x:.{digits}f}×",
    "mega": lambda x, digits=2: f"{x / 1e6:.{digits}f}",  # MACs in millions
    "points": lambda x: f"{100 * x:+.2f}",  # a difference of fractions, in points: '+0.07'
    "duration": sync_notebooks.duration,  # seconds: '12 s', '3.5 min', '1.2 h'
    "target": lambda x: f"{100 * x:g}%" if isinstance(x, float) and 0 < x <= 1 else str(x),
}
FILTERS = {name: lambda x, *a, f=f: DASH if _missing(x) else f(x, *a)
           for name, f in FORMATS.items()}
pct, count, target = FILTERS["pct"], FILTERS["count"], FILTERS["target"]


def wilson(accuracy, images) -> str:  # the filter 'wilson'
    """'88.12% (95% CI 87.21%–88.98%, 5,000 images)'."""
    if _missing(accuracy) or not images:
        return DASH
    low, high = sync_notebooks.wilson_interval(accuracy, int(images))
    return f"{pct(accuracy)} (95% CI {pct(low)}–{pct(high)}, {count(images)} images)"


def mean(values) -> float | None:
    values = [v for v in values if not _missing(v)]
    return sum(values) / len(values) if values else None


def pruned_points(r: dict, half: bool = False) -> dict:
    """``{(strategy, treatment): {(block, k): accuracy}}`` over the pruned points (k below the
    block's width: the record's, the file's or ResNet20's), or only those at half of it. Older
    files had no treatment, only a bn_recalibration flag."""
    arms: dict = {}
    for rec in r.get("records", []):
        block = rec.get("block")
        width = rec.get("width") or (r.get("widths") or {}).get(block) or RESNET20_WIDTHS.get(block)
        frac = rec["kept_filters"] / width if width else 1
        if frac >= 1 or (half and abs(frac - 0.5) > 1e-6):
            continue
        treatment = rec.get("treatment") or ("recal" if rec.get("bn_recalibration") else "none")
        arm = arms.setdefault((rec["strategy"], treatment), {})
        arm[(str(rec["block"]), int(rec["kept_filters"]))] = rec.get("accuracy")
    return arms


def versus(a: dict, b: dict) -> dict:
    """Points where A is above, below, equal to B; the mean A - B; a one-sided sign test each
    way (it treats correlated points as independent, so it finds differences too easily)."""
    from scipy.stats import binomtest

    common = [p for p in a if p in b]
    above, below = sum(a[p] > b[p] for p in common), sum(a[p] < b[p] for p in common)
    n = above + below
    return {"above": above, "below": below, "equal": len(common) - n,
            "diff": mean(a[p] - b[p] for p in common),
            "better": n > 0 and binomtest(above, n, alternative="greater").pvalue < 0.05,
            "worse": n > 0 and binomtest(below, n, alternative="greater").pvalue < 0.05}


def block_summary(r: dict) -> dict:
    """Mean accuracy per rule and treatment, and each clustering rule against L1 after both
    repairs; ``no_better``: no clustering rule found better than L1 even by the sign test."""
    arms, halves = pruned_points(r), pruned_points(r, half=True)
    strategies = list(dict.fromkeys(rec["strategy"] for rec in r.get("records", [])))
    ref = arms.get((REFERENCE_RULE, "refit+recal"), {})
    rules = [versus(arms[(s, "refit+recal")], ref) | {"name": s} for s in CLUSTER_RULES
             if (s, "refit+recal") in arms and ref]
    base = arms.get((REFERENCE_RULE, "none"), {})
    return {"strategies": strategies, "rules": rules, "points": len(base),
            "blocks": len({b for b, _ in base}),
            "means": {s: [mean(arms.get((s, t), {}).values()) for t in TREATMENTS]
                      for s in strategies},
            "half": {s: [mean(halves.get((s, t), {}).values()) for t in TREATMENTS]
                     for s in strategies},
            "close": [x for x in rules if not (x["better"] or x["worse"])],
            "worse": [x for x in rules if x["worse"]],
            "no_better": bool(rules) and not any(x["better"] for x in rules)}


def verdict(low, high, goal) -> str | None:
    """A speed-up interval against its goal: met, missed, or not decided (None: unmeasured)."""
    return None if not goal or _missing(low) or _missing(high) else (
        "met" if low >= goal else "missed" if high < goal else "not decided")


def network_summary(r: dict) -> dict:
    """The whole-network records by target, each with its gap to the better unpruned network
    on the confirmation half and its verdict, the headline, and the plan chosen by latency."""
    refs = [r.get(k) for k in ("dense_confirmation_accuracy",
                               "dense_finetuned_confirmation_accuracy") if not _missing(r.get(k))]

    def derived(rec: dict) -> dict:
        acc, macs = rec.get("acc_confirmation"), rec.get("macs")
        gap = None if not refs or _missing(acc) else acc - max(refs)
        return rec | {"gap": gap, "removed": 1 - macs / r["dense_macs"] if macs else None,
                      "gap_verdict": None if gap is None else
                      "met" if round(100 * gap, 6) >= -network_plots.GOAL_POINTS else "missed"}

    rows = [derived(x) for x in sorted(r.get("records", []), key=lambda x: (  # fractions first
        isinstance(x.get("target"), str), str(x.get("target"))))]
    head = next((x for x in rows if x.get("headline")), None)
    out = {"rows": rows, "head": head, "gap_goal": network_plots.GOAL_POINTS, "latency": None,
           "head_verdict": head and verdict(*(head.get(f"speedup_cpu_batch256_{e}")
                                              for e in ("low", "high")), r.get("min_speedup"))}
    lp = (r.get("latency_plans") or [None])[0]
    if lp:
        out["latency"] = derived(lp) | {"verdicts": {rt: verdict(
            lp.get(f"speedup_{rt}_batch256_low"), lp.get(f"speedup_{rt}_batch256_high"),
            lp.get("goal_speedup")) for rt in ("torch", "onnxruntime")}}
        sens = [x["accuracy"] for x in lp.get("stage_sensitivity") or []]
        out["stage_range"] = (min(sens), max(sens)) if sens else None
        out["narrowed"] = sum(tuple(x.get("stage_widths") or STAGE_WIDTHS) != STAGE_WIDTHS
                              for x in lp.get("screening") or [])
    return out


def headline_points(r: dict) -> list[dict]:
    """The README figure's networks (unpruned, MACs headline, latency plan): confirmation
    accuracy and batch-256 speed-ups (median, low, high) per runtime, the headline's from the
    rounds it shared with the latency plan when there are such."""
    def triple(rec: dict, torch_key: str, ort_key: str) -> dict:
        return {name: tuple(rec[k] for k in (key, f"{key}_low", f"{key}_high"))
                for name, key in (("PyTorch", torch_key), ("ONNX Runtime", ort_key))}

    latency = ("speedup_torch_batch256", "speedup_onnxruntime_batch256")
    pts = [{"label": "unpruned", "unpruned": True, "accuracy": r["dense_confirmation_accuracy"],
            "speed": {"PyTorch": (1.0,) * 3, "ONNX Runtime": (1.0,) * 3}}]
    head = next((x for x in r.get("records", []) if x.get("headline")), None)
    lp = (r.get("latency_plans") or [None])[0]
    if head:
        same = (lp or {}).get("headline_50")
        pts.append({"label": f"{target(head['target'])} MACs", "unpruned": False,
                    "accuracy": head["acc_confirmation"], "speed": triple(same, *latency) if same
                    else triple(head, "speedup_cpu_batch256", "onnxruntime_speedup_batch256")})
    if lp:
        pts.append({"label": "chosen by latency", "unpruned": False,
                    "accuracy": lp["acc_confirmation"], "speed": triple(lp, *latency)})
    return pts


def headline_timing(r: dict) -> dict:
    """CPU model and threads of the latency plan's rounds (shared by the headline's), bars."""
    n = (lp := (r.get("latency_plans") or [{}])[0]).get("timing_processes")
    return {"cpu": lp.get("cpu") or "a CPU (model not recorded)", "cpu_threads": lp.get(
        "cpu_threads") or r["cpu_threads"], "spread": f"slowest to fastest of {n} timing "
            f"processes" if n else "95% interval"}


def run_cell(run: dict | None, notes: list[str]) -> str:
    """'2.1 min (cpu, 2 threads)' for a run of results/series.json, with a footnote mark
    ``(n)`` when the run has a note (appended to ``notes``)."""
    if not run:
        return NOT_MEASURED
    notes += [run["note"]] if run.get("note") else []
    mark = f" ({len(notes)})" if run.get("note") else ""
    return f"{sync_notebooks.duration(run['seconds'])} ({machine(run)}){mark}"


def notebooks(folder: Path, name: str, keys: tuple, runs: dict, notes: list, url: str) -> list:
    """A row per notebook ``NN_*.ipynb`` (new ones appear): link, title, run times, badge."""
    return [[f"[{p.stem}]({name}/{p.name})", (sync_notebooks.title_of(nbformat.read(
        p, as_version=4)) or p.stem).replace("|", "\\|"),
        *(run_cell(runs.get(p.stem, {}).get(k), notes) for k in keys),
        sync_notebooks.badge(url, p.name, name)] for p in sync_notebooks.notebooks(folder)]


def reproduce_rows(stems: list[str], runs: dict, notes: list[str]) -> list[dict]:
    """How long `make reproduce` takes per machine: the sum of the study notebooks' last run
    times in the profile it picks there, the notebooks not measured, and those with a note
    (e.g. cached work; their notes appended to ``notes``): both make the sum a lower bound."""
    rows = []
    for profile, where in REPRODUCE_ON:
        done = {s: runs[s][profile] for s in stems if runs.get(s, {}).get(profile)}
        noted = [s for s, run in done.items() if run.get("note")]
        notes += [done[s]["note"] for s in noted]
        rows.append({"machine": where, "profile": profile,
                     "noted": list(enumerate(noted, len(notes) - len(noted) + 1)),
                     "seconds": sum(run["seconds"] for run in done.values()) if done else None,
                     "missing": [s for s in stems if s not in done],
                     "devices": ", ".join(dict.fromkeys(map(machine, done.values())))})
    return rows


def context(results_dir=RESULTS_DIR, img_dir=IMG_DIR, notebook_dir=NOTEBOOK_DIR,
            study_dir=STUDY_DIR, url: str | None = None) -> dict:
    """Everything the templates show: the results files as loaded, and what derives from them."""
    r = {n: json.loads(p.read_text(encoding="utf-8")) if p.exists() else None
         for n, p in ((n, Path(results_dir) / f"{n}.json") for n in RESULT_JSON)}
    url = url or sync_notebooks.repo_url()
    runs, notes, later = (r["series"] or {}).get("notebooks", {}), [], []
    net, stems = r["network_pruning"], [p.stem for p in sync_notebooks.notebooks(study_dir)]
    return r | {
        "lessons": notebooks(notebook_dir, "notebooks", sync_notebooks.LESSON_RUNS, runs, notes,
                             url),
        "study": notebooks(study_dir, "study", sync_notebooks.PROFILES_TIMED, runs, notes, url),
        "notebook_notes": notes, "reproduce_notes": later,
        "reproduce": reproduce_rows(stems, runs, later) if stems else [],
        "blocks": block_summary(r["block_pruning"]) if r["block_pruning"] else None,
        "net": network_summary(net) if net else None,
        "headline_points": headline_points(net) if net else [], "batch": HEADLINE_BATCH,
        "timing": headline_timing(net) if net else None,
        "figures": [f for f in FIGURES if (Path(img_dir) / f"{f}.png").exists()],
        "stage_widths": STAGE_WIDTHS, "epochs": {p: SIZES[p].train.epochs for p in SIZES},
        "modules": {k: [p.stem for p in sorted((ROOT / "helpers" / sub).glob("[a-z]*.py"))]
                    for k, sub in (("core", "."), ("study", "study"))},
    }


def render(ctx: dict, templates: Path = TEMPLATES) -> dict[str, str]:
    """``{page name: markdown}`` for README.md and RESULTS.md."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.update(FILTERS, wilson=wilson)
    return {page: env.get_template(name).render(**ctx) for page, name in PAGES.items()}


def draw_headline(ctx: dict, img_dir: Path = IMG_DIR) -> None:
    """img/headline.png from the context's headline points, saved as the study saves figures."""
    if net := ctx["headline_points"] and ctx["network_pruning"]:
        fig = network_plots.headline(ctx["headline_points"], net["confirmation_images"],
                                     batch_size=HEADLINE_BATCH, **ctx["timing"])
        fig.savefig(Path(img_dir) / "headline.png", dpi=100, bbox_inches="tight")
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    parser.add_argument("--out", type=Path, default=ROOT, help="folder of README.md, RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results/*.json")
    parser.add_argument("--img", type=Path, default=IMG_DIR, help="where headline.png goes")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, help="the lessons")
    parser.add_argument("--study", type=Path, default=STUDY_DIR, help="the study notebooks")
    args = parser.parse_args(argv)

    pages = render(ctx := context(args.results, args.img, args.notebooks, args.study))
    stale = [p for p, text in pages.items() if not (args.out / p).exists()
             or (args.out / p).read_text(encoding="utf-8") != text]
    if args.check:
        for page in stale:
            print(f"{args.out / page} is out of date: run `make readme`", file=sys.stderr)
        return int(bool(stale))
    draw_headline(ctx, args.img)
    for page in stale:
        (args.out / page).write_text(pages[page], encoding="utf-8")
        print(f"{args.out / page} updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
