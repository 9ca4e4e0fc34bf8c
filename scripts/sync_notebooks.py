"""Write the generated cells of every notebook: badge, provenance, setup cell and navigation.

Nothing in these cells is typed by hand. This script rewrites, in every lesson
(``notebooks/NN_*.ipynb``) and every notebook of the reproduction (``study/NN_*.ipynb``):

* cell 0 (markdown title): the line holding the "Open In Colab" badge, derived from
  pyproject's ``[project.urls] Repository`` (inserted after the title line when missing);
* cell 1, tagged ``provenance`` (markdown): which profile produced the outputs below and how
  long each profile took (``results/series.json``, written by scripts/run_series.py), which
  checkpoint the notebook trains or uses (``results/train.json``) and on which split and how
  many images its own results were measured (``results/block_pruning.json``,
  ``results/network_pruning.json``);
* cell 2 (code): the Colab setup cell;
* the last cell, tagged ``navigation`` (markdown): Previous / Next links, with the titles read
  from the notebooks' first headings.

Cells are inserted when missing and moved to their place when elsewhere; running the script
twice changes nothing the second time.

Usage::

    python scripts/sync_notebooks.py          # rewrite the notebooks that are out of date
    python scripts/sync_notebooks.py --check  # exit 1 if any notebook is out of date

Notebooks are rewritten only when their content changes, with nbformat (as Jupyter saves them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
NOTEBOOK_DIR = ROOT / "notebooks"  # the lessons
STUDY_DIR = ROOT / "study"  # the reproduction (`make reproduce`)
RESULTS_DIR = ROOT / "results"
BRANCH = "main"
BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_MARKER = "# Setup"
SETUP_CELL_ID = "colab-setup"
PROVENANCE_TAG = "provenance"
NAVIGATION_TAG = "navigation"
NOT_YET = "not yet produced — run {who} in the cpu or full profile"
PROFILES_TIMED = ("cpu", "full")  # the study profiles whose outputs are committed
LESSON_RUNS = ("lesson", "lesson_gpu")  # results/series.json keys of a lesson's run times
# What each study notebook (by its number) reads or writes: "trains" or "uses" the checkpoint of
# results/train.json, and the results file holding its own measurements.
USES: dict[str, dict[str, str]] = {
    "01": {},
    "02": {"checkpoint": "trains"},
    "03": {"checkpoint": "uses"},
    "04": {"checkpoint": "uses", "results": "block_pruning.json"},
    "05": {"checkpoint": "uses", "results": "network_pruning.json"},
    "06": {"checkpoint": "uses", "results": "network_pruning.json"},  # reads, trains nothing
}
# The committed study results each lesson shows (every lesson but 01 uses the checkpoint).
LESSON_SHOWS: dict[str, tuple[str, ...]] = {
    "01": (),
    "02": (),
    "03": (),
    "04": ("block_pruning.json",),
    "05": ("network_pruning.json",),
    "06": ("int8.json", "int8_plan.json"),
}


# --------------------------------------------------------------------------- repository URL


def repo_url(pyproject: Path = PYPROJECT) -> str:
    """The ``Repository`` entry of ``[project.urls]`` in pyproject.toml (no trailing slash)."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: no tomllib; the line is simple enough to match
        match = re.search(r'^\s*Repository\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
        if not match:
            raise KeyError("[project.urls] Repository missing from pyproject.toml") from None
        url = match.group(1)
    else:
        url = tomllib.loads(text)["project"]["urls"]["Repository"]
    return url.rstrip("/").removesuffix(".git")


def github_slug(url: str) -> str:
    """'https://github.com/ORG/REPO' -> 'ORG/REPO'."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", url)
    if not match:
        raise ValueError(f"not a GitHub repository URL: {url!r}")
    return f"{match.group(1)}/{match.group(2)}"


def colab_url(url: str, notebook_name: str, folder: str = "notebooks") -> str:
    """Colab link that opens ``<folder>/<notebook_name>`` of the repository's main branch."""
    return (
        f"https://colab.research.google.com/github/{github_slug(url)}"
        f"/blob/{BRANCH}/{folder}/{notebook_name}"
    )


def badge(url: str, notebook_name: str, folder: str = "notebooks") -> str:
    """Markdown "Open In Colab" badge for one notebook."""
    return f"[![Open In Colab]({BADGE_SVG})]({colab_url(url, notebook_name, folder)})"


# Source of the setup cell, cell 2 of every notebook: plain Python (no ! magics), ruff-clean.
# In Colab it clones the repository (again, when a clone lacks pyproject.toml: it was cut short),
# installs it unless the package and its dependencies already import (a failed or interrupted
# `pip install` is repaired by running the cell again), and says how to switch a GPU on.
# Outside Colab it does nothing.
SETUP_TEMPLATE = """\
# Setup: in Google Colab, clone and install this repository (locally, `make venv` did that).
# Generated by scripts/sync_notebooks.py from pyproject.toml: edit the script, not this cell.
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys

REPO_URL = "{url}"
REPO_DIR = "{repo_dir}"
if "google.colab" in sys.modules:
    if not os.path.isfile(os.path.join(REPO_DIR, "pyproject.toml")):  # no clone, or cut short
        shutil.rmtree(REPO_DIR, ignore_errors=True)
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, REPO_DIR], check=True)
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    try:  # installed, with its dependencies? A failed or interrupted pip install lacks them.
        importlib.metadata.version("{dist}")
        for module in ("helpers", "onnxruntime"):
            importlib.import_module(module)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", REPO_DIR], check=True)
        importlib.invalidate_caches()
    os.chdir(REPO_DIR)
    import torch

    if not torch.cuda.is_available():
        print("No GPU in this runtime: the lessons run on the CPU, at their CPU sizes. For a GPU:"
              " Runtime > Change runtime type > T4 GPU, then run the notebook from the top.")"""


def project_name(pyproject: Path = PYPROJECT) -> str:
    """The ``name`` of ``[project]`` in pyproject.toml (the distribution pip installs)."""
    match = re.search(r'^name\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"),
                      flags=re.MULTILINE)
    if not match:
        raise KeyError("[project] name missing from pyproject.toml")
    return match.group(1)


def setup_source(url: str, dist: str | None = None) -> str:
    """Source of the setup cell for the repository at ``url`` (distribution ``dist``, default
    pyproject's name)."""
    repo_dir = f"/content/{github_slug(url).split('/')[1]}"
    return SETUP_TEMPLATE.format(url=url, repo_dir=repo_dir, dist=dist or project_name())


# --------------------------------------------------------------------------- provenance


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, dict]:
    """Every ``results/*.json`` as ``{file name: content}``."""
    return {p.name: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(Path(results_dir).glob("*.json"))}


def wilson_interval(accuracy: float, images: int) -> tuple[float, float]:
    """95% Wilson interval of an accuracy measured on ``images`` images."""
    from scipy.stats import binomtest

    ci = binomtest(round(accuracy * images), images).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_text(accuracy, images) -> str | None:
    """'88.12% (95% CI 87.21–88.98%) on 5,000 images', or None when not recorded."""
    if accuracy is None or not images:
        return None
    low, high = wilson_interval(accuracy, int(images))
    return (f"{100 * accuracy:.2f}% (95% CI {100 * low:.2f}–{100 * high:.2f}%) "
            f"on {int(images):,} images")


def duration(seconds: float) -> str:
    """12 s, 3.5 min, 1.2 h."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _where(record: dict) -> str:
    """'the `cpu` profile on AMD EPYC' (the CPU model where a CPU record names it, else the
    device: 'on cpu' in older records; or 'an unrecorded profile on ...')."""
    profile = f"the `{record['profile']}` profile" if record.get("profile") else \
        "an unrecorded profile"
    cpu = record.get("cpu") if record.get("device") == "cpu" else None
    return f"{profile} on {cpu or record.get('device') or 'an unrecorded device'}"


def _ran_with(nb) -> str | None:
    """The PROFILE a notebook was executed with (kept in its metadata by run_series)."""
    return nb.metadata.get("papermill", {}).get("parameters", {}).get("PROFILE")


def machine(run: dict) -> str:
    """'AMD EPYC, 2 threads' for a run of results/series.json: the CPU model where the run
    was on a CPU and recorded it, else the device ('cpu' in older records, 'NVIDIA H200')."""
    name = run.get("cpu") if run.get("device") == "cpu" and run.get("cpu") else run.get("device")
    return (name or "—") + (f", {run['threads']} threads" if run.get("threads") else "")


def _run_time(run: dict) -> str:
    """'4.2 min on AMD EPYC, 2 threads' (and the run's note, if it has one)."""
    note = f" ({run['note']})" if run.get("note") else ""
    return f"{duration(run['seconds'])} on {machine(run)}{note}"


def _runs(series: dict | None, stem: str) -> dict:
    return (series or {}).get("notebooks", {}).get(stem, {})


def outputs_line(nb, stem: str, series: dict | None) -> str:
    """Which profile produced the committed outputs, and what each profile took to run."""
    profile = _ran_with(nb)
    if not profile:
        line = "Outputs below: profile not recorded (not executed by `scripts/run_series.py`)."
    elif profile == "ci":
        line = ("Outputs below: the `ci` test profile (tiny sizes, files in a temporary folder): "
                "they show the mechanics, not results.")
    else:
        line = f"Outputs below: the `{profile}` profile."
    runs = _runs(series, stem)
    times = [f"`{name}` {_run_time(runs[name])}" if runs.get(name) else
             f"`{name}` not yet measured" for name in PROFILES_TIMED]
    return f"{line} Run time of the whole notebook: {'; '.join(times)}."


def checkpoint_line(train: dict | None, role: str) -> str:
    """The checkpoint the notebook trains (role 'trains') or analyses (role 'uses')."""
    if train is None:
        who = "this notebook" if role == "trains" else "notebook 02"
        return f"Checkpoint `checkpoints/resnet20.pt`: {NOT_YET.format(who=who)}."
    verb = "trained here" if role == "trains" else "trained by notebook 02"
    epochs = f", {train['epochs']} epochs" if train.get("epochs") else ""
    val = accuracy_text(train.get("val_accuracy"), train.get("val_images"))
    test = accuracy_text(train.get("test_accuracy"), train.get("test_images"))
    return (f"Checkpoint `checkpoints/resnet20.pt`, {verb} in {_where(train)}{epochs}: "
            f"validation accuracy {val or 'not recorded'}; test accuracy {test or 'not recorded'}.")


def results_line(name: str, record: dict | None) -> str:
    """Which split, how many images and which run the notebook's own results come from."""
    if record is None:
        return f"Results `results/{name}`: {NOT_YET.format(who='this notebook')}."
    images = record.get("eval_images")
    split = record.get("eval_split") or ("validation" if "test_images" in record else None)
    measured = (f"measured on {int(images):,} {split} images" if images and split else
                f"measured on {int(images):,} images (split not recorded)" if images else
                "image count not recorded")
    if record.get("test_images"):
        measured += f", final models on {int(record['test_images']):,} test images"
    return f"Results `results/{name}`: {measured}, in {_where(record)}."


def lesson_outputs_line(nb, stem: str, series: dict | None) -> str:
    """Which run produced a lesson's committed outputs, and its run time on each device."""
    profile = _ran_with(nb)
    if not profile:
        line = "Outputs below: not recorded (not executed by `scripts/run_series.py`)."
    elif profile == "ci":
        line = "Outputs below: the `ci` test profile (tiny sizes): they show the mechanics only."
    else:
        line = f"Outputs below: a lesson run (`PROFILE = \"{profile}\"`)."
    runs = _runs(series, stem)
    times = [f"{_run_time(runs[key])}, {runs[key].get('date')}" if runs.get(key) else
             f"on a {where} not yet measured"
             for key, where in zip(LESSON_RUNS, ("CPU", "GPU"), strict=True)]
    return f"{line} Run time of the whole lesson: {'; '.join(times)}."


def lesson_provenance_source(nb, notebook_name: str, results: dict[str, dict]) -> str:
    """The provenance cell of a lesson: its run, and the committed study results it shows."""
    stem = Path(notebook_name).stem
    lines = [lesson_outputs_line(nb, stem, results.get("series.json"))]
    shows = LESSON_SHOWS.get(stem[:2], ())
    if stem[:2] != "01":
        lines.append(checkpoint_line(results.get("train.json"), "uses"))
    lines += [results_line(name, results.get(name)) for name in shows]
    if stem[:2] == "01":
        lines.append("Nothing below depends on data or on a trained checkpoint: every number is "
                     "computed from the architecture.")
    lines.append("Lessons never write to `checkpoints/`, `results/` or `img/`; `make reproduce` "
                 "regenerates them (`study/`).")
    return "\n".join(["**Provenance** (generated by `scripts/sync_notebooks.py` from "
                      "`results/*.json`):", "", *[f"* {line}" for line in lines]])


def provenance_source(nb, notebook_name: str, results: dict[str, dict]) -> str:
    """The markdown of a study notebook's provenance cell, from ``results`` (see
    load_results)."""
    stem = Path(notebook_name).stem
    uses = USES.get(stem[:2], {})
    lines = [outputs_line(nb, stem, results.get("series.json"))]
    if "checkpoint" in uses:
        lines.append(checkpoint_line(results.get("train.json"), uses["checkpoint"]))
    if "results" in uses:
        lines.append(results_line(uses["results"], results.get(uses["results"])))
    if not uses:
        lines.append("Nothing below depends on data or on a trained checkpoint: every number is "
                     "computed from the architecture.")
    return "\n".join(["**Provenance** (generated by `scripts/sync_notebooks.py` from "
                      "`results/*.json`):", "", *[f"* {line}" for line in lines]])


# --------------------------------------------------------------------------- navigation


def title_of(nb) -> str | None:
    """Text of the first '# ' heading of the notebook's first cell, if any."""
    if not nb.cells:
        return None
    return next((line[2:].strip() for line in nb.cells[0].source.splitlines()
                 if line.startswith("# ")), None)


def navigation_source(titles: dict[str, str], notebook_name: str) -> str:
    """Previous / Next links; ``titles`` maps every notebook's file name to its title, in order."""
    names = list(titles)
    i = names.index(notebook_name)
    links = []
    if i > 0:
        links.append(f"**Previous:** [{titles[names[i - 1]]}]({names[i - 1]})")
    if i + 1 < len(names):
        links.append(f"**Next:** [{titles[names[i + 1]]}]({names[i + 1]})")
    else:
        links.append("**Next:** this is the last notebook of the series")
    links.append("[All notebooks](../README.md#notebooks)")
    return " · ".join(links)


# --------------------------------------------------------------------------- cells


def _is_badge_line(line: str) -> bool:
    return BADGE_SVG in line or "colab.research.google.com/github/" in line


def sync_title_cell(source: str, badge_line: str) -> str:
    """Replace the badge line of the title cell, or insert it after the title line."""
    lines = source.split("\n")
    if any(_is_badge_line(line) for line in lines):
        return "\n".join(badge_line if _is_badge_line(line) else line for line in lines)
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), 0)
    return "\n".join(lines[: title + 1] + ["", badge_line] + lines[title + 1 :])


def is_setup_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and str(cell.get("source", "")).startswith(SETUP_MARKER)


def has_tag(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def _place(nb, index: int | None, find, make, source: str) -> bool:
    """Put the cell ``find`` selects (or a new ``make(source)``) at ``index`` (None: last)
    with ``source``; returns True when the notebook changed."""
    found = [i for i, c in enumerate(nb.cells) if find(c)]
    if len(found) > 1:
        raise ValueError(f"{len(found)} cells where one was expected: {found}")
    changed = False
    if found:
        cell = nb.cells.pop(found[0])
        changed = cell.source != source
        cell.source = source
    else:
        cell, changed = make(source), True
    target = len(nb.cells) if index is None else index
    nb.cells.insert(target, cell)
    return changed or not found or found[0] != target


def _tagged_markdown(tag: str):
    import nbformat

    def make(source: str):
        cell = nbformat.v4.new_markdown_cell(source, metadata={"tags": [tag]})
        cell["id"] = tag
        return cell

    return make


def _setup_cell(source: str):
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    cell["id"] = SETUP_CELL_ID
    return cell


def sync_notebook(nb, url: str, notebook_name: str, provenance: str | None = None,
                  navigation: str | None = None, folder: str = "notebooks") -> bool:
    """Bring the generated cells of ``nb`` (an nbformat v4 NotebookNode) up to date, in place.

    The badge line of the title cell and the setup cell always; the provenance cell (cell 1)
    and the navigation cell (the last one) when their sources are given. Returns True when
    something changed.
    """
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        raise ValueError(f"{notebook_name}: cell 0 must be the markdown title cell")
    changed = False
    title = nb.cells[0]
    new_title = sync_title_cell(title.source, badge(url, notebook_name, folder))
    if new_title != title.source:
        title.source = new_title
        changed = True
    index = 1
    try:
        if provenance is not None:
            changed |= _place(nb, 1, lambda c: has_tag(c, PROVENANCE_TAG),
                              _tagged_markdown(PROVENANCE_TAG), provenance)
            index = 2
        changed |= _place(nb, index, lambda c: is_setup_cell(c) or c.get("id") == SETUP_CELL_ID,
                          _setup_cell, setup_source(url))
        if navigation is not None:
            changed |= _place(nb, None, lambda c: has_tag(c, NAVIGATION_TAG),
                              _tagged_markdown(NAVIGATION_TAG), navigation)
    except ValueError as e:
        raise ValueError(f"{notebook_name}: {e}") from None
    return changed


def notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks of the series, in order."""
    return sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))


def sync_all(notebook_dir: Path = NOTEBOOK_DIR, results_dir: Path = RESULTS_DIR,
             url: str | None = None, write: bool = True,
             only: list[str] | None = None) -> list[Path]:
    """Sync the notebooks of ``notebook_dir`` (``only``: those whose names start with one of
    these); returns those that were (or would be) changed."""
    import nbformat

    url = url or repo_url()
    results = load_results(results_dir)
    paths = notebooks(notebook_dir)
    nbs = {p.name: nbformat.read(p, as_version=4) for p in paths}
    titles = {name: title_of(nb) or Path(name).stem for name, nb in nbs.items()}
    folder = Path(notebook_dir).name
    provenance = provenance_source if folder == STUDY_DIR.name else lesson_provenance_source
    stale = []
    for path in paths:
        if only and not path.name.startswith(tuple(only)):
            continue
        nb = nbs[path.name]
        if sync_notebook(nb, url, path.name, provenance(nb, path.name, results),
                         navigation_source(titles, path.name), folder):
            stale.append(path)
            if write:
                nbformat.write(nb, path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook is stale")
    parser.add_argument("--notebooks", type=Path, nargs="+", default=[NOTEBOOK_DIR, STUDY_DIR],
                        help="folders of notebooks (default: notebooks/ and study/)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks, e.g. 01")
    args = parser.parse_args(argv)

    stale = [path for folder in args.notebooks
             for path in sync_all(folder, args.results, repo_url(args.pyproject),
                                  write=not args.check, only=args.only)]
    for path in stale:
        print(f"{path}: {'out of date' if args.check else 'updated'}", file=sys.stderr)
    if args.check and stale:
        print("run `python scripts/sync_notebooks.py` (or `make sync`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
