"""The scripts' choices that a fresh clone's learner meets: what `make run` writes (only
results/series.json; the executed lessons stay in build/run/), what `make record` and `make
reproduce` copy back, the order of `make reproduce`, and the Colab setup cell with its URL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import run_series  # noqa: E402
import sync_notebooks  # noqa: E402

URL = sync_notebooks.repo_url()


# --------------------------------------------------------------------------- run_series: copying


@pytest.mark.parametrize("study, timed, flag, expected", [
    (False, True, None, False),  # `make run`: the lessons stay as committed
    (False, True, True, True),  # `make record`
    (True, True, None, True),  # `make reproduce` (cpu or full profile)
    (True, False, None, False),  # the study in the ci profile
    (True, True, False, False),  # --no-copy
])  # fmt: skip
def test_copy_back(study, timed, flag, expected):
    assert run_series.copy_back(study, timed, flag) is expected


@pytest.fixture
def fake_series(tmp_path, monkeypatch):
    """run_series.main over a tmp repository, with a fake execution (no kernel)."""
    lessons, run_dir = tmp_path / "notebooks", tmp_path / "build" / "run"
    lessons.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('PROFILE = "auto"', metadata={"tags": ["parameters"]})
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), params,
                    nbformat.v4.new_code_cell("print(1)")]
        nbformat.write(nb, lessons / name)
    calls = {"run": [], "sync": [], "fail": set()}

    def run(notebook, profile, out_dir):
        calls["run"].append((notebook.name, profile))
        if notebook.name[:2] in calls["fail"]:
            raise RuntimeError("a cell raised")
        nb = nbformat.read(notebook, as_version=4)
        nb.cells.insert(2, nbformat.v4.new_code_cell(
            f'PROFILE = "{profile}"', metadata={"tags": ["injected-parameters"]}))
        nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
        nb.metadata["papermill"] = {"parameters": {"PROFILE": profile}, "duration": 2.0}
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / notebook.name)
        return out_dir / notebook.name, 2.0

    monkeypatch.setattr(run_series, "NOTEBOOK_DIR", lessons)
    monkeypatch.setattr(run_series, "RUN_DIR", run_dir)
    monkeypatch.setattr(run_series, "SERIES", tmp_path / "results" / "series.json")
    monkeypatch.setattr(run_series, "run", run)
    monkeypatch.setattr(run_series, "lesson_key", lambda: "lesson")
    monkeypatch.setattr(sync_notebooks, "sync_all",
                        lambda folder, only=None, **kw: calls["sync"].append(only) or [])
    before = {p.name: p.read_bytes() for p in lessons.iterdir()}
    return lessons, run_dir, tmp_path / "results" / "series.json", calls, before


def test_make_run_changes_only_the_run_times(fake_series):
    lessons, run_dir, series, calls, before = fake_series
    assert run_series.main([]) == 0
    assert calls["run"] == [("01_a.ipynb", "auto"), ("02_b.ipynb", "auto")]
    assert {p.name: p.read_bytes() for p in lessons.iterdir()} == before  # notebooks/ untouched
    assert calls["sync"] == []
    assert sorted(json.loads(series.read_text())["notebooks"]) == ["01_a", "02_b"]
    assert (run_dir / "01_a.ipynb").exists() and (run_dir / "series.log").exists()


def test_make_record_copies_the_lessons_cleaned(fake_series):
    lessons, run_dir, series, calls, before = fake_series
    assert run_series.main(["--copy", "--only", "02"]) == 0
    assert calls["run"] == [("02_b.ipynb", "auto")]
    assert (lessons / "01_a.ipynb").read_bytes() == before["01_a.ipynb"]
    copied = nbformat.read(lessons / "02_b.ipynb", as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in copied.cells)
    assert copied.cells[-1].outputs[0].text == "1\n"
    assert copied.metadata["papermill"]["parameters"] == {"PROFILE": "auto"}
    assert calls["sync"] == [["02_b.ipynb"]]
    assert list(json.loads(series.read_text())["notebooks"]) == ["02_b"]


def test_a_failed_lesson_stops_the_series_and_records_nothing(fake_series):
    lessons, run_dir, series, calls, before = fake_series
    calls["fail"].add("01")
    assert run_series.main(["--copy"]) == 1
    assert calls["run"] == [("01_a.ipynb", "auto")]  # 02 not run
    assert {p.name: p.read_bytes() for p in lessons.iterdir()} == before
    assert not series.exists()


def test_the_ci_profile_records_no_time(fake_series):
    lessons, run_dir, series, calls, before = fake_series
    assert run_series.main(["--profile", "ci"]) == 0
    assert not series.exists() and calls["sync"] == []
    assert {p.name: p.read_bytes() for p in lessons.iterdir()} == before


# --------------------------------------------------------------------------- Makefile


def _make(*args: str) -> str:
    """`make -n` (print the commands, run nothing) of the repository's Makefile."""
    env = {**os.environ, "MAKEFLAGS": ""}
    result = subprocess.run(["make", "-n", "-C", str(ROOT), "-o", ".venv/.installed", *args],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def make_available():
    if subprocess.run(["make", "--version"], capture_output=True).returncode != 0:
        pytest.skip("make is not installed")


def test_make_run_only_executes_and_record_copies(make_available):
    run = _make("run")
    assert "scripts/run_series.py" in run
    assert "--copy" not in run and "sync_notebooks" not in run and "make_readme" not in run
    assert "--only 03 04" in _make("run", "ONLY=03 04")
    record = _make("record")
    assert "scripts/run_series.py --copy" in record
    assert "sync" in record and "readme" in record


def test_make_reproduce_runs_study_06_after_the_latency_steps(make_available):
    lines = [line for line in _make("reproduce", "PROFILE=cpu").splitlines()
             if "run_series.py" in line or "helpers.study.latency" in line]
    studies = sorted(p.name[:2] for p in (ROOT / "study").glob("[0-9][0-9]_*.ipynb"))
    before = [s for s in studies if s != "06"]
    assert "helpers.study.latency_tables" in lines[1] and "helpers.study.latency_plans" in lines[2]
    assert lines[0].endswith("--only " + " ".join(before)), lines[0]
    if "06" in studies:
        assert lines[3].endswith("--only 06") and len(lines) == 4, lines
    else:
        assert len(lines) == 3, lines
    only = [line for line in _make("reproduce", "ONLY=03 04").splitlines() if "run_series" in line
            or "latency" in line]
    assert len(only) == 1 and only[0].endswith("--only 03 04"), only


# --------------------------------------------------------------------------- Colab setup cell


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """The setup cell run as in Colab, with REPO_DIR in tmp_path, git and pip faked."""
    import importlib.metadata
    import types

    import torch

    repo = tmp_path / "content" / "repo"
    state = {"commands": [], "installed": False, "clone_complete": True}

    def run(command, check=False):
        state["commands"].append(command[1] if command[0] == "git" else command[3])
        if command[0] == "git":
            Path(command[-1]).mkdir(parents=True)
            if state["clone_complete"]:
                (Path(command[-1]) / "pyproject.toml").write_text("[project]\n")
        else:  # pip install -e
            state["installed"] = True

    real_version = importlib.metadata.version

    def version(name):
        if name == sync_notebooks.project_name() and not state["installed"]:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    source = sync_notebooks.setup_source(URL).replace(
        f'REPO_DIR = "/content/{URL.rsplit("/", 1)[1]}"', f'REPO_DIR = "{repo}"')
    assert str(repo) in source

    def cell():
        state["commands"].clear()
        exec(compile(source, "setup-cell", "exec"), {})
        return list(state["commands"])

    return cell, repo, state


def test_setup_cell_clones_installs_and_says_how_to_get_a_gpu(colab, capsys):
    cell, repo, state = colab
    assert cell() == ["clone", "install"]
    assert Path.cwd() == repo and str(repo) in sys.path
    assert "Runtime > Change runtime type > T4 GPU" in capsys.readouterr().out
    assert cell() == []  # installed: nothing to do


def test_setup_cell_repairs_a_failed_install(colab):
    cell, repo, state = colab
    cell()
    state["installed"] = False  # e.g. pip was interrupted: onnxruntime missing
    assert cell() == ["install"]  # the clone is kept


def test_setup_cell_reclones_a_clone_cut_short(colab):
    cell, repo, state = colab
    state["clone_complete"] = False
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("partial")
    state["clone_complete"] = True
    assert cell() == ["clone", "install"]
    assert not (repo / "README.md").exists() and (repo / "pyproject.toml").exists()


def test_setup_cell_checks_the_install_before_trusting_it():
    source = sync_notebooks.setup_source(URL)
    assert 'importlib.metadata.version("resnet20-kmeans-pruning")' in source
    assert '"onnxruntime"' in source and '"helpers"' in source
    assert f'REPO_URL = "{URL}"' in source


# --------------------------------------------------------------------------- one repository URL

COLAB_LINK = re.compile(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/")
REPO_URL_LINE = re.compile(r'^REPO_URL = "([^"]*)"', re.M)
CLONE = re.compile(r"git clone (?:--depth \d+ )?(https://github\.com/\S+?)(?:\.git)?(?:\s|$)")


def url_mismatches(text: str, url: str) -> list[str]:
    """Every Colab link, setup-cell REPO_URL and `git clone` URL in ``text`` that is not the
    repository at ``url`` (pyproject's)."""
    slug = sync_notebooks.github_slug(url)
    found = [f"Colab link to {m.group(1)}" for m in COLAB_LINK.finditer(text)
             if m.group(1) != slug]
    found += [f"REPO_URL {u}" for u in REPO_URL_LINE.findall(text) if u != url]
    found += [f"git clone {u}" for u in CLONE.findall(text) if u.rstrip("/") != url]
    return found


NOTEBOOK_FILES = sorted([*(ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"),
                         *(ROOT / "study").glob("[0-9][0-9]_*.ipynb")])


@pytest.mark.parametrize("path", [*NOTEBOOK_FILES, ROOT / "README.md"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_badge_and_setup_cell_uses_the_pyproject_url(path: Path):
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        assert COLAB_LINK.search(nb.cells[0].source), f"{path.name}: no Colab badge in cell 0"
        assert REPO_URL_LINE.search(text), f"{path.name}: no setup cell with REPO_URL"
    else:
        text = path.read_text(encoding="utf-8")
    assert not url_mismatches(text, URL), url_mismatches(text, URL)


def test_a_seeded_wrong_url_fails():
    nb = nbformat.read(NOTEBOOK_FILES[0], as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert url_mismatches(text, URL) == []
    slug = sync_notebooks.github_slug(URL)
    assert url_mismatches(text.replace(f"github/{slug}/", "github/someone/fork/"), URL) == [
        "Colab link to someone/fork"]
    assert url_mismatches(text.replace(f'REPO_URL = "{URL}"', 'REPO_URL = "https://x.org/y"'),
                          URL) == ["REPO_URL https://x.org/y"]
    assert url_mismatches("git clone https://github.com/a/b.git x", URL) == [
        "git clone https://github.com/a/b"]


def test_repo_url_is_read_from_pyproject(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n[project.urls]\n'
                         'Repository = "https://github.com/o/r.git/"\n')
    assert sync_notebooks.repo_url(pyproject) == "https://github.com/o/r"
    assert sync_notebooks.project_name(pyproject) == "x"
    assert "github.com/o/r" in sync_notebooks.setup_source(sync_notebooks.repo_url(pyproject), "x")
