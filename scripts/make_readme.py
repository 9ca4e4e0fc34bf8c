"""Regenerate the generated sections of README.md.

* Between ``<!-- notebooks:start -->`` and ``<!-- notebooks:end -->``: the table of notebooks
  (title read from each notebook's first heading, Colab badge derived from pyproject's
  ``[project.urls] Repository``, see scripts/sync_notebooks.py).
* Between ``<!-- results:start -->`` and ``<!-- results:end -->``: tables built from whichever of
  results/train.json, results/block_pruning.json and results/network_pruning.json exist, and the
  figures of ``FIGURES`` that exist in img/. No result number in the README is typed by hand.

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
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS_DIR = ROOT / "results"
IMG_DIR = ROOT / "img"
NOTEBOOK_DIR = ROOT / "notebooks"

RESULT_FILES = ("train.json", "block_pruning.json", "network_pruning.json", "series.json")
# (path relative to the repository root, caption); shown only when the file exists.
FIGURES = (
    ("img/train_curves.png", "Training curves of ResNet20 on CIFAR-10"),
    ("img/block_pruning.png", "Accuracy after pruning one BasicBlock at a time"),
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
        "### Training (notebook 02)",
        "",
        f"The committed checkpoint (`checkpoints/resnet20.pt`) comes from {checkpoint_origin(r)}.",
        "",
        table(header, [row], ["l", "l", "r", "r", "r", "r", "r", "r", "l"]),
        "",
        f"Trained on {count(r.get('train_images'))} images in {num(r.get('train_seconds'), 0)} s "
        f"(seed {r.get('seed', DASH)}, shortcut option {r.get('shortcut', DASH)}); the "
        "validation images are the last ones of the official training set, held out from "
        "training. Intervals: 95% Wilson intervals of a proportion. The seed pipeline is the "
        "unoptimised training loop that notebook 02 starts from.",
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
            values.append(rec.get("accuracy"))
        return pct(mean(values))

    rows = [[f"`{s}`", *(acc(s, t) for t in treatments), *(acc(s, t, True) for t in treatments)]
            for s in strategies]
    header = ["Strategy", "Mean, as pruned", "Mean, BN recal.", "Mean, refit + recal.",
              "50% kept, as pruned", "50% kept, BN recal.", "50% kept, refit + recal."]
    blocks = len({str(rec.get("block")) for rec in records})
    out = [
        "### Pruning one BasicBlock at a time (notebook 04)",
        "",
        f"Accuracy on {count(r.get('eval_images'))} {r.get('eval_split', 'test')} images, "
        f"averaged over {blocks} blocks "
        'and every fraction of conv1 filters kept in the sweep ("mean"), or over the blocks at '
        'half of the filters kept ("50% kept"); "BN recal." re-estimates the BatchNorm '
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


def render_network_pruning(r: dict) -> str:
    def key(rec: dict):
        t = rec.get("target")
        acc = rec.get("acc_finetuned")
        return (
            (0, t, "") if isinstance(t, (int, float)) else (1, 0, str(t)),
            -acc if not _missing(acc) else math.inf,
        )

    dense_macs = r.get("dense_macs")
    refs = [a for a in (r.get("dense_accuracy"), r.get("dense_finetuned_accuracy"))
            if not _missing(a)]
    reference = max(refs) if refs else None
    rows = []
    for rec in sorted(r.get("records", []), key=key):
        epochs = rec.get("finetune_epochs")
        finetuned = pct(rec.get("acc_finetuned"))
        if not _missing(epochs) and finetuned != DASH:
            finetuned += f" ({count(epochs)} ep.)"
        macs = rec.get("macs")
        removed = (pct(1 - macs / dense_macs) if not _missing(macs) and dense_macs else DASH)
        gap = (f"{100 * (rec['acc_finetuned'] - reference):+.2f}"
               if reference is not None and not _missing(rec.get("acc_finetuned")) else DASH)
        name = target(rec.get("target"))
        rows.append(
            [
                f"**{name}** (headline)" if rec.get("headline") else name,
                removed,
                f"`{rec.get('strategy', DASH)}`",
                f"`{rec.get('allocation', DASH)}`",
                millions(macs, 2),
                count(rec.get("params")),
                pct(rec.get("acc_pruned")),
                finetuned,
                gap,
                pct(rec.get("test_acc_finetuned")),
                num(rec.get("cpu_ms_batch256"), 1),
                ratio(rec.get("speedup_cpu_batch256")),
                ratio(rec.get("speedup_cpu_batch1")),
            ]
        )
    header = [
        "Target",
        "MACs removed",
        "Strategy",
        "Allocation",
        "MACs (M)",
        "Params",
        "Pruned, refit + recal.",
        "Fine-tuned",
        "Gap (points)",
        "Test, fine-tuned",
        "CPU ms, batch 256",
        "Speed-up, batch 256",
        "Speed-up, batch 1",
    ]
    align = ["l", "r", "l", "l"] + ["r"] * 9
    speed = r.get("min_speedup")
    tried = r.get("headline_plans") or []
    trials = ("The headline plan was chosen on the validation images after "
              f"{count(r.get('finetune', {}).get('headline_epochs'))} epochs of fine-tuning, "
              "among (pruned, refit + recal. → fine-tuned): "
              + "; ".join(f"`{p.get('strategy')}` `{p.get('allocation')}` "
                          f"{pct(p.get('acc_pruned'))} → {pct(p.get('acc_finetuned'))}"
                          for p in tried) + "." if tried else "")
    removed = r.get("removed_blocks") or []
    if removed:
        trials += (" " if trials else "") + (
            f"The `depth` plans remove {', '.join(f'`{b}`' for b in removed)} whole (every "
            "filter pruned: the block adds a learned constant to its input) and spread the rest "
            "of the budget uniformly.")
    return "\n".join(
        [
            "### Whole-network pruning (notebook 05)",
            "",
            f"Accuracy on {count(r.get('eval_images'))} {r.get('eval_split', 'test')} images: "
            f"unpruned network {pct(r.get('dense_accuracy'))}, the same fine-tuned with the "
            f"headline's schedule (the control) {pct(r.get('dense_finetuned_accuracy'))}; "
            "\"Gap\" is the fine-tuned network against the better of the two. "
            f"{run_of(r)[0].upper()}{run_of(r)[1:]}"
            + (f"; final models also on {count(r['test_images'])} test images (unpruned "
               f"{pct(r.get('dense_test_accuracy'))})" if r.get("test_images") else "")
            + ". \"Pruned\" is after the in-order conv2 refit and BN recalibration, before "
            "fine-tuning. CPU latency of the pruned (physically smaller) network in PyTorch, "
            f"{r.get('cpu_threads', DASH)} threads; speed-up relative to the unpruned one"
            + (f". The headline network must remove at least {target(r.get('headline_budget'))}"
               f" of the MACs and be at least {speed:g}× faster at batch 256" if speed else "")
            + ".",
            "",
            table(header, rows, align),
            *(["", trials] if trials else []),
        ]
    )


def render_series(r: dict) -> str:
    """Run time of every notebook in each profile, as scripts/run_series.py recorded it."""
    runs = r.get("notebooks", {})
    if not runs:
        return ""
    measured = {p for by_profile in runs.values() for p in by_profile}
    profiles = [*sync_notebooks.PROFILES_TIMED,
                *sorted(measured - set(sync_notebooks.PROFILES_TIMED))]

    notes: list[str] = []

    def cell(run: dict | None) -> str:
        if not run:
            return "not yet measured"
        threads = f", {run['threads']} threads" if run.get("threads") else ""
        mark = ""
        if run.get("note"):
            notes.append(run["note"])
            mark = f" ({len(notes)})"
        return (f"{sync_notebooks.duration(run['seconds'])} ({run.get('device', DASH)}{threads})"
                f"{mark}")

    rows = [[f"[{stem}](notebooks/{stem}.ipynb)", *(cell(by.get(p)) for p in profiles)]
            for stem, by in runs.items()]
    return "\n".join([
        "### Run time of each notebook",
        "",
        "Measured by `scripts/run_series.py` (`make run`), whole notebook, per profile.",
        "",
        table(["Notebook", *(f"`{p}` profile" for p in profiles)], rows,
              ["l"] + ["r"] * len(profiles)),
        *(["", *(f"({i}) {n}" for i, n in enumerate(notes, 1))] if notes else []),
    ])


RENDERERS = {
    "series.json": render_series,
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
        return "_No results yet: run `make run` to produce results/*.json and img/*.png._"
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


def render_notebooks(notebook_dir: Path = NOTEBOOK_DIR, url: str | None = None) -> str:
    url = url or sync_notebooks.repo_url()
    paths = sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        return "_No notebooks yet._"
    rows = [
        [
            f"[{p.stem}](notebooks/{p.name})",
            notebook_title(p).replace("|", "\\|"),
            sync_notebooks.badge(url, p.name),
        ]
        for p in paths
    ]
    return table(["Notebook", "Topic", "Colab"], rows, ["l", "l", "l"])


def replace_section(text: str, name: str, content: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"README lacks the markers {start} ... {end}")
    return text[: i + len(start)] + "\n" + content.strip() + "\n" + text[j:]


def render_readme(
    text: str,
    results_dir: Path = RESULTS_DIR,
    img_dir: Path = IMG_DIR,
    notebook_dir: Path = NOTEBOOK_DIR,
    url: str | None = None,
) -> str:
    text = replace_section(text, "notebooks", render_notebooks(notebook_dir, url))
    return replace_section(text, "results", render_results(results_dir, img_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--img", type=Path, default=IMG_DIR)
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR)
    args = parser.parse_args(argv)

    old = args.readme.read_text(encoding="utf-8")
    new = render_readme(old, args.results, args.img, args.notebooks)
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
