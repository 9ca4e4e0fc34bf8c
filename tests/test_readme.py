"""README.md and RESULTS.md: rendered from scripts/templates/ and results/*.json by
scripts/make_readme.py, up to date, within the README's limits (first screen, findings), every
number from one JSON field, and the tables, verdicts and run times they show.

Each check is a function that returns its complaints; each test runs it on the committed pages
and on a seeded defect (a typed number, a sixth bullet, a long intro, ...), which it must catch.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_readme  # noqa: E402
import sync_notebooks  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = (ROOT / "RESULTS.md").read_text(encoding="utf-8")
BENCH = json.loads((ROOT / "results" / "bench_train.json").read_text())
URL = sync_notebooks.repo_url()
LIMITS = {"intro": 60, "before_quick_start": 250, "bullets": 5, "bullet_words": 45}
# Every reference the README cites, with the link it must carry wherever it is mentioned.
README_LINKS = {
    "original work": "https://github.com/AlexeyEvzrezov/resnet20-pruning",
    r"He et al\.,? \(?2016": "https://arxiv.org/abs/1512.03385",
    r"Li et al\.": "https://arxiv.org/abs/1608.08710",
    r"ThiNet": "https://arxiv.org/abs/1707.06342",
    r"He et al\.,? \(?2017": "https://arxiv.org/abs/1707.06168",
    r"Hinton": "https://arxiv.org/abs/1503.02531",
    r"FPGM|[Gg]eometric [Mm]edian": "https://arxiv.org/abs/1811.00250",
    r"Distiller": "https://github.com/IntelLabs/distiller",
}


# --------------------------------------------------------------------------- helpers


def words(markdown: str) -> int:
    """Words a reader sees: comments and link targets dropped, tokens with a letter or digit."""
    text = re.sub(r"<!--.*?-->", "", markdown, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return sum(bool(re.search(r"[A-Za-z0-9]", w)) for w in text.split())


def section(text: str, heading: str) -> str:
    """The body of the level-2 section ``heading`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def bullets(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if re.match(r"\s*[*-] ", line)]


def render(results: Path, img: Path | None = None, templates: Path = make_readme.TEMPLATES,
           study: Path | None = None) -> dict[str, str]:
    ctx = make_readme.context(results, img or results, make_readme.NOTEBOOK_DIR,
                              study or make_readme.STUDY_DIR, URL)
    return make_readme.render(ctx, templates)


def results_copy(tmp_path: Path, **changes) -> Path:
    """The committed results/*.json in ``tmp_path``, each changed by ``changes`` (file stem ->
    function of its parsed JSON, or None to leave the file out)."""
    out = tmp_path / "results"
    out.mkdir(parents=True)
    for path in (ROOT / "results").glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if path.stem in changes and changes[path.stem] is None:
            continue
        (out / path.name).write_text(json.dumps(changes.get(path.stem, lambda d: d)(data)))
    return out


def templates_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """scripts/templates/ in ``tmp_path`` with ``old`` replaced by ``new`` in template ``name``."""
    out = tmp_path / "templates"
    shutil.copytree(make_readme.TEMPLATES, out)
    text = (out / name).read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {name}"
    (out / name).write_text(text.replace(old, new, 1), encoding="utf-8")
    return out


# --------------------------------------------------------------------------- checks


def limit_problems(readme: str) -> list[str]:
    """The README's first screen and findings against LIMITS."""
    problems = []
    head, _, rest = readme.partition("## Quick start")
    if not rest:
        return ["no '## Quick start' section"]
    intro = re.sub(r"<!--.*?-->", "", head, flags=re.S).split("\n# ", 1)[-1].split("\n", 1)[-1]
    intro = intro.split("![")[0]
    if words(intro) > LIMITS["intro"]:
        problems.append(f"the intro has {words(intro)} words")
    if words(head) > LIMITS["before_quick_start"]:
        problems.append(f"{words(head)} words before the Quick start")
    if "](img/headline.png)" not in head:
        problems.append("the headline figure is not before the Quick start")
    found = bullets(section(readme, "What we found"))
    if not 1 <= len(found) <= LIMITS["bullets"]:
        problems.append(f"{len(found)} bullets in What we found")
    problems += [f"a bullet of {words(b)} words: {b[:60]}" for b in found
                 if words(b) > LIMITS["bullet_words"]]
    return problems


SEED_SPEEDUP = re.compile(r"(\d+(?:\.\d+)?)× faster than the seed pipeline")


def speedup_problems(pages: dict[str, str], bench: dict) -> list[str]:
    """The trainer-vs-seed-pipeline speed-up: one value, bench_train.json's speedup_vs_seed,
    wherever a page states it (README and RESULTS state it at least once each)."""
    expected = f"{bench['speedup_vs_seed']:.1f}"
    problems = []
    for page, text in pages.items():
        shown = SEED_SPEEDUP.findall(text)
        if not shown:
            problems.append(f"{page} does not state the speed-up")
        problems += [f"{page} says {x}× where the JSON gives {expected}×" for x in shown
                     if x != expected]
    return problems


TYPED = re.compile(r"(?<![\w.\-/])\d[\d,]*(?:\.\d+)?(?:%|×)?(?![\w])")


def typed_numbers(template: str) -> list[str]:
    """Numbers a template types outside Jinja tags, code spans, links and comments (the 95% of
    '95% interval' and the single digits of a list are allowed)."""
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|`[^`]*`|\]\([^)]*\)|<!--.*?-->", " ",
                  template, flags=re.S)
    return [n for n in TYPED.findall(text) if n not in ("95%",) and not re.fullmatch(r"\d", n)]


def findings_template(template: str) -> str:
    return template.split("## What we found")[1].split("\n## ")[0]


# --------------------------------------------------------------------------- tests


def test_pages_are_up_to_date():
    """Rendering again gives the committed README.md and RESULTS.md (`make readme`)."""
    pages = make_readme.render(make_readme.context())
    assert pages["README.md"] == README, "README.md is stale: run `make readme`"
    assert pages["RESULTS.md"] == RESULTS, "RESULTS.md is stale: run `make readme`"
    assert make_readme.main(["--check"]) == 0


def test_a_changed_template_makes_the_pages_stale(tmp_path):
    templates = templates_copy(tmp_path, "RESULTS.md.j2", "# Results", "# Results, changed")
    assert render(ROOT / "results", ROOT / "img", templates)["RESULTS.md"] != RESULTS
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text(README)
    (out / "RESULTS.md").write_text(RESULTS + "stale\n")
    img = shutil.copytree(ROOT / "img", tmp_path / "img")
    (img / "headline.png").unlink()
    args = ["--out", str(out), "--img", str(img)]
    assert make_readme.main([*args, "--check"]) == 1
    assert make_readme.main(args) == 0 and make_readme.main([*args, "--check"]) == 0
    assert (out / "RESULTS.md").read_text() == RESULTS and (img / "headline.png").exists()


def test_the_script_only_loads_and_derives():
    """make_readme.py stays short (the prose is in the templates): at most 300 lines."""
    script = (ROOT / "scripts" / "make_readme.py").read_text(encoding="utf-8")
    assert len(script.splitlines()) <= 300
    assert sorted(p.name for p in make_readme.TEMPLATES.iterdir()) == [
        "README.md.j2", "RESULTS.md.j2", "_macros.md.j2"]


def test_readme_first_screen_and_findings_within_limits():
    assert limit_problems(README) == []


def test_the_limits_check_catches_each_seeded_defect():
    found = section(README, "What we found")
    sixth = README.replace(found, found.replace("\n\n", "\n* **A sixth bullet.**\n\n", 1), 1)
    assert any("6 bullets" in p for p in limit_problems(sixth))
    long_bullet = README.replace(bullets(found)[0], bullets(found)[0] + " and" * 46, 1)
    assert any("a bullet of" in p for p in limit_problems(long_bullet))
    title = README.split("\n# ", 1)[1].split("\n", 1)[0]
    long_intro = README.replace(title + "\n", title + "\n\n" + "word " * 61 + "\n", 1)
    assert any("the intro has" in p for p in limit_problems(long_intro))
    long_head = README.replace("## Quick start", "word " * 250 + "\n\n## Quick start", 1)
    assert any("words before the Quick start" in p for p in limit_problems(long_head))
    no_figure = README.replace("](img/headline.png)", "](img/pareto.png)")
    assert any("headline figure" in p for p in limit_problems(no_figure))


def test_headline_figure_exists_and_its_legend_covers_no_data():
    assert (ROOT / "img" / "headline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    from helpers.study import network_plots

    ctx = make_readme.context()
    labels = [p["label"] for p in ctx["headline_points"]]
    assert labels[0] == "unpruned" and len(labels) == 3  # unpruned, 50% MACs, chosen by latency
    net, t = ctx["network_pruning"], ctx["timing"]
    fig = network_plots.headline(ctx["headline_points"], net["confirmation_images"], **t)
    fig.canvas.draw()
    ax = fig.axes[0]
    title = ax.get_title()
    assert f"Measured on {t['cpu']}, {t['cpu_threads']} threads" in title
    assert t["spread"] in ax.get_xlabel()
    assert f"{net['confirmation_images']:,} validation images" in title

    def overlaps(legend) -> bool:
        return legend.get_window_extent().overlaps(ax.get_window_extent())

    assert not overlaps(ax.get_legend())
    ax.legend(handles=ax.get_legend().legend_handles, loc="center")  # seeded: over the data
    fig.canvas.draw()
    assert overlaps(ax.get_legend())
    plt.close(fig)


def test_training_speedup_comes_from_one_field():
    """The same trainer-vs-seed speed-up on both pages: bench_train.json's speedup_vs_seed."""
    pages = {"README.md": README, "RESULTS.md": RESULTS}
    assert speedup_problems(pages, BENCH) == []
    assert f"{BENCH['speedup_vs_seed']:.1f}×" in section(README, "What we found")


@pytest.mark.parametrize("seeded", [
    "37.3×",  # a typed number
    # the other computation: train.json's seconds per epoch against its seed-pipeline time
    "{{ (train.seed_pipeline_seconds_per_epoch / train.seconds_per_epoch) | ratio(1) }}",
])
def test_the_speedup_check_catches_a_second_source(tmp_path, seeded):
    templates = templates_copy(tmp_path, "RESULTS.md.j2", "{{ b.speedup_vs_seed | ratio(1) }}",
                               seeded)
    pages = render(ROOT / "results", ROOT / "img", templates)
    assert pages["README.md"] == README
    assert speedup_problems(pages, BENCH), pages["RESULTS.md"]


def test_headline_networks_read_the_same_on_both_pages():
    """The figure's accuracies and speed-ups are the numbers the findings and RESULTS show."""
    findings = section(README, "What we found")
    for point in make_readme.context()["headline_points"][1:]:
        acc = make_readme.pct(point["accuracy"])
        torch, ort = (f"{point['speed'][r][0]:.2f}×" for r in ("PyTorch", "ONNX Runtime"))
        for text in (findings, RESULTS):
            assert acc in text and torch in text and ort in text, (point["label"], acc, torch)


def test_templates_type_no_numbers():
    readme = (make_readme.TEMPLATES / "README.md.j2").read_text(encoding="utf-8")
    results = (make_readme.TEMPLATES / "RESULTS.md.j2").read_text(encoding="utf-8")
    assert typed_numbers(findings_template(readme)) == []
    assert typed_numbers(results) == []
    assert typed_numbers("runs 27.5× faster, {{ x | pct }} of 2,500 images (92.4%)") == [
        "27.5×", "2,500", "92.4%"]
    assert typed_numbers("`layer1.1`, conv2, {{ 2.5 }}, [a](b/1.5.md), 95% interval") == []


def test_plain_answer_follows_the_block_results(tmp_path):
    assert "k-means++ clustering is no better than ranking filters by L1 norm" in README
    assert "The repairs matter more than the rule" in README
    assert re.search(r"\| `merge` \| 64 \| 258 \| 5 \|", RESULTS)  # counted by hand once
    assert re.search(r"\| `first` \| 162 \| 154 \| 11 \|", RESULTS)

    def first_wins(d):  # `first` after refit + recal above l1 at every point
        for rec in d["records"]:
            if rec["strategy"] == "first" and rec["treatment"] == "refit+recal":
                rec["accuracy"] = 0.99
        return d

    readme = render(results_copy(tmp_path, block_pruning=first_wins))["README.md"]
    assert "no better" not in readme and "A clustering rule beats L1 norm" in readme
    assert "`first` beats ranking filters by L1 norm" in readme


def test_findings_follow_the_results(tmp_path):
    def network(d):
        head = next(r for r in d["records"] if r["headline"])
        head.update(acc_confirmation=0.8123)
        d["latency_plans"][0]["headline_50"]["speedup_torch_batch256"] = 2.5
        d["confirmation_images"] = 2345
        return d

    pages = render(results_copy(
        tmp_path, train=lambda d: {**d, "val_accuracy": 0.5, "val_images": 1234},
        bench_train=lambda d: {**d, "speedup_vs_seed": 99.0}, network_pruning=network))
    findings = section(pages["README.md"], "What we found")
    assert "50.00% of 1,234 validation images" in findings and "99.0× faster" in findings
    assert "81.23% of 2,345 confirmation images" in findings and "2.50× faster" in findings
    assert "99.0× faster than the seed pipeline" in pages["RESULTS.md"]
    fewer = render(results_copy(tmp_path / "less", network_pruning=None))
    kept = bullets(section(fewer["README.md"], "What we found"))  # training, two sweep, int8
    assert len(kept) == 4 and "Int8 first" in kept[-1]
    assert "](img/headline.png)" not in fewer["README.md"]
    assert "Whole-network" not in fewer["RESULTS.md"]
    none = render(tmp_path / "none")
    assert "Nothing yet" in none["README.md"] and "No results yet" in none["RESULTS.md"]


def test_readme_links_every_reference_and_names_the_commands():
    items = re.split(r"\n\s*\n|\n(?=\s*(?:\*|-|\d+\.) )", README)
    for pattern, url in README_LINKS.items():
        mentions = [i for i in items if re.search(pattern, i)]
        assert mentions, f"the README never mentions {pattern}"
        assert all(url in i for i in mentions), f"{pattern} mentioned without a link to {url}"
    quick = section(README, "Quick start")
    for command in ("make run", "make test"):
        assert f"\n{command} " in quick, command  # in the code block of the quick start
    assert "make venv" in quick and ".venv/bin/jupyter lab notebooks/" in quick
    assert "JupyterLab" in quick and "Runtime > Change runtime type > GPU" in quick
    assert "make reproduce" in section(README, "Reproduce the study")
    assert "repository's `data/`" in section(README, "Data")
    assert "](RESULTS.md)" in section(README, "What we found")


# --------------------------------------------------------------------------- tables


TRAIN = {"val_accuracy": 0.9, "val_images": 5000, "test_accuracy": 0.931, "test_images": 1000,
         "profile": "full", "train_images": 50000, "epochs": 30, "batch_size": 512,
         "train_seconds": 95.4, "seconds_per_epoch": 3.18, "device": "cuda (NVIDIA H100)",
         "torch_version": "2.14.1", "shortcut": "A", "params": 272474, "macs": 40_810_000,
         "seed": 0}
NETWORK = {
    "eval_images": 1000, "selection_images": 500, "confirmation_images": 500, "cpu_threads": 2,
    "dense_confirmation_accuracy": 0.93, "dense_finetuned_confirmation_accuracy": 0.91,
    "dense_macs": 40_000_000, "headline_budget": 0.5, "min_speedup": 1.5,
    "records": [
        {"target": 0.5, "strategy": "l1", "allocation": "uniform", "macs": 20_000_000,
         "acc_confirmation": 0.88, "speedup_cpu_batch256": 1.8},
        {"target": 0.5, "strategy": "kmeans", "allocation": "uniform", "headline": True,
         "macs": 20_000_000, "params": 140000, "acc_pruned": 0.4, "acc_confirmation": 0.925,
         "finetune_epochs": 5, "speedup_cpu_batch256": 1.85, "speedup_cpu_batch256_low": 1.8,
         "speedup_cpu_batch256_high": 1.9, "onnxruntime_speedup_batch256": 1.2,
         "onnxruntime_speedup_batch256_low": 1.15, "onnxruntime_speedup_batch256_high": 1.3},
        {"target": 0.25, "strategy": "random", "allocation": "uniform", "macs": 10_000_000},
    ],
}


def _row(markdown: str, startswith: str) -> list[str]:
    line = next(x for x in markdown.splitlines() if x.startswith(startswith))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_training_table(tmp_path, write_results):
    md = render(write_results(tmp_path, train=TRAIN))["RESULTS.md"]
    low, high = sync_notebooks.wilson_interval(0.931, 1000)
    assert _row(md, "| 90.00%") == [
        "90.00% (95% CI 89.14%–90.80%, 5,000 images)",
        f"93.10% (95% CI {100 * low:.2f}%–{100 * high:.2f}%, 1,000 images)",
        "272,474", "40.8", "30", "512", "3.18", "cuda (NVIDIA H100), torch 2.14.1"]
    assert "comes from\nthe `full` profile, trained on cuda (NVIDIA H100)" in md
    assert "50,000 images" in md and "BasicBlock" not in md  # missing files are skipped


def test_block_table_leaves_out_the_unpruned_points(tmp_path, write_results):
    records = [{"block": "layer1.0", "strategy": s, "bn_recalibration": recal,
                "kept_filters": k, "accuracy": a} for s, recal, k, a in (
        ("kmeans", False, 16, 0.9), ("kmeans", False, 8, 0.8), ("kmeans", False, 4, 0.6),
        ("kmeans", True, 8, 0.9), ("l1", False, 8, 0.5), ("l1", True, 8, 0.7))]
    md = render(write_results(tmp_path, block_pruning={"eval_images": 100, "eval_split": "val",
                                                 "records": records}))["RESULTS.md"]
    # mean: as pruned, recal, refit + recal | half kept: the same (older files: no refit)
    assert _row(md, "| `kmeans`") == ["`kmeans`", "70.00%", "90.00%", "—", "80.00%", "90.00%",
                                      "—"]  # (0.8 + 0.6) / 2, not with k = width's 0.9
    assert _row(md, "| `l1`") == ["`l1`", "50.00%", "70.00%", "—", "50.00%", "70.00%", "—"]
    assert "100 validation images" in md and "averaged over 1 blocks" in md


def test_network_table_and_verdicts(tmp_path, write_results):
    md = render(write_results(tmp_path, network_pruning=NETWORK))["RESULTS.md"]
    rows = [r for r in md.splitlines() if re.match(r"\| (\*\*)?\d+%", r)]
    assert [r.split("|")[3].strip() for r in rows] == ["`random`", "`l1`", "`kmeans`"]
    assert _row(md, "| **50%** (headline)")[:12] == [
        "**50%** (headline)", "50.00%", "`kmeans`", "`uniform`", "20.00", "140,000", "40.00%",
        "5", "92.50%", "-0.50", "—", "1.85× (1.80–1.90)"]  # the gap: against 93%, not 91%
    assert _row(md, "| 50% | 50.00% | `l1`")[9] == "-5.00"
    assert "is -0.50 points from the better unpruned network\n(met)" in md  # exactly 0.5 below
    assert "1.85× (1.80–1.90) against 1.5×:\nmet" in md
    missed = NETWORK | {"records": [NETWORK["records"][1] | {
        "acc_confirmation": 0.92, "speedup_cpu_batch256_low": 1.4,
        "speedup_cpu_batch256_high": 1.49}]}
    md = render(write_results(tmp_path / "missed", network_pruning=missed))["RESULTS.md"]
    assert "(missed)" in md and "against 1.5×:\nmissed" in md
    assert make_readme.verdict(1.45, 1.6, 1.5) == "not decided"
    assert make_readme.verdict(None, 1.6, 1.5) is None


def test_latency_plan_section(tmp_path):
    def plan(d):
        d["latency_plans"][0].update(stage_widths=[16, 16, 64],
                                     speedup_onnxruntime_batch256_high=1.49,
                                     speedup_torch_batch256=1.71, speedup_torch_batch256_low=1.71,
                                     speedup_torch_batch256_high=1.73)
        return d

    md = render(results_copy(tmp_path, network_pruning=plan))["RESULTS.md"]
    latency = section(md, "The plan chosen by latency")
    assert "narrowed to 16, 16, 64 (of 16, 32, 64)" in latency
    assert "PyTorch met,\nONNX Runtime missed" in latency
    assert "| chosen by latency | 1.71× (1.71–1.73)" in latency
    assert "unchanged" in section(RESULTS, "The plan chosen by latency")


def test_figures_only_when_present(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    (img / "pareto.png").write_bytes(b"\x89PNG")
    md = render(tmp_path / "none", img)["RESULTS.md"]
    assert "](img/pareto.png)" in md and "train_curves.png" not in md


def test_notebook_tables_run_times_and_a_new_study_notebook(tmp_path, write_results):
    study = tmp_path / "study"
    study.mkdir()
    for name in ("02_b", "03_c", "06_latency"):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name[:2]} · Title {name}")]
        nbformat.write(nb, study / f"{name}.ipynb")
    gpu, cpu = {"device": "NVIDIA H200", "threads": 16}, {"device": "cpu", "threads": 2}
    series = {"notebooks": {"02_b": {"cpu": {"seconds": 600.0, **cpu},
                                     "full": {"seconds": 60.0, **gpu}},
                            "03_c": {"cpu": {"seconds": 1200.0, "note": "cached", **cpu},
                                     "full": {"seconds": 120.0, **gpu}}}}
    pages = render(write_results(tmp_path, series=series), study=study)
    readme = pages["README.md"]
    assert _row(readme, "| [02_b](study/02_b.ipynb)")[1:4] == [
        "02 · Title 02_b", "10.0 min (cpu, 2 threads)", "60 s (NVIDIA H200, 16 threads)"]
    assert _row(readme, "| [03_c](study/03_c.ipynb)")[2] == "20.0 min (cpu, 2 threads) (1)"
    assert _row(readme, "| [06_latency](study/06_latency.ipynb)")[2:4] == [
        "not yet measured", "not yet measured"]  # appears by itself, measured or not
    assert "(1) cached" in readme and sync_notebooks.badge(URL, "06_latency.ipynb", "study") \
        in readme
    assert _row(pages["RESULTS.md"], "| a CUDA GPU")[2] == (
        "at least 3.0 min (lower bound): `06_latency` not yet measured")
    assert _row(pages["RESULTS.md"], "| a CPU")[2] == (
        "at least 30.0 min (lower bound): `06_latency` not yet measured; note (1) on `03_c`")
    notes: list[str] = []
    assert make_readme.run_cell(None, notes) == "not yet measured" and notes == []
    assert make_readme.run_cell({"seconds": 291.2, "device": "NVIDIA H200", "threads": 16},
                                notes) == "4.9 min (NVIDIA H200, 16 threads)"


def test_readme_speedups_name_the_cpu_they_were_measured_on():
    """Speed-ups differ between CPUs by more than their spread: every README line that states
    one (an '×' after a number) names the CPU model of the latency plan's timing record."""
    lp = json.loads((ROOT / "results" / "network_pruning.json").read_text())["latency_plans"][0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    findings = readme.split("## What we found")[1].split("\n## ")[0]
    caption = readme.split("![")[1].split("## Quick start")[0]
    for text in [caption, *(b for b in findings.split("\n* ") if re.search(r"\d×", b)
                            and "ONNX Runtime" in b)]:
        assert lp["cpu"] in text and f"{lp['cpu_threads']} threads" in text, text[:120]


def test_headline_timing_names_the_record_cpu_or_says_it_is_missing():
    net = {"cpu_threads": 2, "latency_plans": [{"cpu": "Some CPU", "cpu_threads": 2,
                                                "timing_processes": 3}]}
    assert make_readme.headline_timing(net) == {
        "cpu": "Some CPU", "cpu_threads": 2,
        "spread": "slowest to fastest of 3 timing processes"}
    old = make_readme.headline_timing({"cpu_threads": 2, "latency_plans": [{}]})
    assert old["cpu"] == "a CPU (model not recorded)" and old["spread"] == "95% interval"
