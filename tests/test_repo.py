"""Repository checks: generated README and notebook cells up to date, notebook structure,
pins consistent across requirements.txt / environment.yml / pyproject.toml, README tables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_readme  # noqa: E402
import sync_notebooks  # noqa: E402

EXPECTED_NOTEBOOKS = [
    "01_resnet20.ipynb",
    "02_train_cifar10.ipynb",
    "03_filters_and_clusters.ipynb",
    "04_block_pruning.ipynb",
    "05_network_pruning.ipynb",
]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
URL = sync_notebooks.repo_url()


# --------------------------------------------------------------------------- generated files


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_readme_is_up_to_date():
    proc = _run("make_readme.py", "--check")
    assert proc.returncode == 0, proc.stderr + "\n(run `make readme`)"


def test_notebook_badges_and_setup_cells_are_up_to_date():
    proc = _run("sync_notebooks.py", "--check")
    assert proc.returncode == 0, proc.stderr + "\n(run `make sync`)"


def test_repository_url_is_written_only_in_pyproject():
    """Everything else derives the URL from pyproject (generated README/notebook cells excepted)."""
    skip_dirs = {".git", ".venv", "build", "data", "runs", "checkpoints", "img", "__pycache__"}
    allowed = {ROOT / "pyproject.toml", ROOT / "README.md", *NOTEBOOKS}
    offenders = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [
            d for d in dirnames if d not in skip_dirs and not d.endswith(("_cache", ".egg-info"))
        ]
        for name in filenames:
            path = Path(dirpath) / name
            if path in allowed or path.stat().st_size > 5_000_000:
                continue
            if URL in path.read_text(encoding="utf-8", errors="ignore"):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"repository URL hard-coded in {offenders}; read it from pyproject"


# --------------------------------------------------------------------------- notebooks


def test_the_five_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED_NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_structure(path: Path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert len(cells) > 2

    title = cells[0]
    assert title.cell_type == "markdown", "cell 0 must be the markdown title cell"
    assert title.source.startswith("# "), "cell 0 must start with a '# ' title"
    assert sync_notebooks.badge(URL, path.name) in title.source, "Colab badge missing or stale"

    setup = cells[1]
    assert setup.cell_type == "code", "cell 1 must be the setup code cell"
    assert setup.source == sync_notebooks.setup_source(URL), "setup cell stale: run `make sync`"

    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell must be tagged 'parameters'"
    assert params[0].cell_type == "code"
    assert re.search(r"^PROFILE\s*=", params[0].source, flags=re.MULTILINE), (
        "the 'parameters' cell must assign PROFILE"
    )

    code = [c for c in cells if c.cell_type == "code"]
    assert any(c.outputs for c in code), "notebooks are committed with their outputs"
    errors = [
        i
        for i, c in enumerate(cells)
        if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)
    ]
    assert not errors, f"committed outputs contain errors in cells {errors}"


# --------------------------------------------------------------------------- pins


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.txt: not an exact pin: {line!r}"
            pins[name.strip().lower()] = version.strip()
    return pins


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if not line.startswith("-"):
                    name, _, version = line.partition("==")
                    pins[name.strip().lower()] = version.strip()
        else:
            name, _, version = dep.partition("=")
            pins[name.strip().lower()] = version.lstrip("=").strip()
    pins.pop("python", None)
    pins.pop("pip", None)
    if "pytorch" in pins:  # conda-forge's name for torch
        pins["torch"] = pins.pop("pytorch")
    return pins


def test_requirements_and_environment_pin_the_same_versions():
    req, env = _requirements(), _environment()
    for name in ("torch", "torchvision", "numpy", "scikit-learn", "papermill", "nbval"):
        assert name in req, f"{name} not pinned in requirements.txt"
    assert env == req


def test_pyproject_ranges_admit_the_pins():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _requirements()
    deps = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        deps += [d for d in extra if not d.startswith(project["name"])]
    names = set()
    for dep in deps:
        req = Requirement(dep)
        names.add(req.name.lower())
        assert req.name.lower() in pins, f"{req.name} is not pinned in requirements.txt"
        assert req.specifier.contains(pins[req.name.lower()]), f"{dep} excludes the pin"
    assert names == set(pins), "pyproject and requirements.txt list different packages"


# --------------------------------------------------------------------------- sync script


def _title_only_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 09 · Test\n\nSome text."),
        nbformat.v4.new_code_cell("PROFILE = 'auto'"),
    ]
    return nb


def test_sync_inserts_badge_and_setup_cell_and_is_idempotent():
    nb = _title_only_notebook()
    assert sync_notebooks.sync_notebook(nb, "https://github.com/org/repo", "09_test.ipynb")
    assert nb.cells[0].source.splitlines()[:3] == [
        "# 09 · Test",
        "",
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        "(https://colab.research.google.com/github/org/repo/blob/main/notebooks/09_test.ipynb)",
    ]
    assert nb.cells[1].source == sync_notebooks.setup_source("https://github.com/org/repo")
    assert 'REPO_URL = "https://github.com/org/repo"' in nb.cells[1].source
    assert nb.cells[2].source == "PROFILE = 'auto'"
    assert not sync_notebooks.sync_notebook(nb, "https://github.com/org/repo", "09_test.ipynb")
    nbformat.validate(nb)

    # A new URL rewrites the badge line and the setup cell in place, nothing else.
    assert sync_notebooks.sync_notebook(nb, "https://github.com/new/name", "09_test.ipynb")
    assert len(nb.cells) == 3
    assert "github/new/name/blob/main" in nb.cells[0].source
    assert "github/org/repo" not in nb.cells[0].source
    assert "/content/name" in nb.cells[1].source


def test_setup_cell_is_plain_python_and_does_nothing_outside_colab(tmp_path, monkeypatch):
    source = sync_notebooks.setup_source(URL)
    assert "!" not in "".join(line.lstrip()[:1] for line in source.splitlines())
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "setup-cell", "exec"), {})  # not in Colab: a no-op
    assert Path.cwd() == tmp_path
    script = tmp_path / "setup_cell.py"
    script.write_text(source + "\n")
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated",
         "--line-length", "100", "--select", "E,F,I,B,UP,W", str(script)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


# --------------------------------------------------------------------------- README tables

TRAIN = {
    "test_accuracy": 0.931,
    "test_images": 1000,
    "train_images": 50000,
    "epochs": 30,
    "batch_size": 512,
    "train_seconds": 95.4,
    "seconds_per_epoch": 3.18,
    "seed_pipeline_seconds_per_epoch": 15.9,
    "device": "cuda (NVIDIA H100)",
    "torch_version": "2.14.1",
    "shortcut": "A",
    "params": 272474,
    "macs": 40_810_000,
    "seed": 0,
}

BLOCK = {
    "eval_images": 1000,
    "device": "cuda",
    "sweep_seconds": 12.0,
    "records": [
        # layer1.0 has 16 conv1 filters: 8 kept is 50%.
        {"block": "layer1.0", "strategy": "kmeans", "bn_recalibration": False,
         "kept_filters": 8, "accuracy": 0.80},
        {"block": "layer1.0", "strategy": "kmeans", "bn_recalibration": False,
         "kept_filters": 4, "accuracy": 0.60},
        {"block": "layer1.0", "strategy": "kmeans", "bn_recalibration": True,
         "kept_filters": 8, "accuracy": 0.90},
        # layer3.2 has 64: 32 kept is 50%.
        {"block": "layer3.2", "strategy": "kmeans", "bn_recalibration": True,
         "kept_filters": 32, "accuracy": 0.92},
        {"block": "layer1.0", "strategy": "l1", "bn_recalibration": False,
         "kept_filters": 8, "accuracy": 0.50},
        {"block": "layer1.0", "strategy": "l1", "bn_recalibration": True,
         "kept_filters": 8, "accuracy": 0.70},
    ],
}  # fmt: skip

NETWORK = {
    "eval_images": 1000,
    "device": "cuda",
    "dense_accuracy": 0.93,
    "records": [
        {"target": 0.5, "strategy": "l1", "allocation": "uniform", "widths": [8] * 9,
         "macs": 20_000_000, "params": 140000, "acc_pruned": 0.3, "acc_recalibrated": 0.6,
         "acc_finetuned": 0.88, "finetune_epochs": 5, "cpu_ms_batch1": 1.234,
         "cpu_ms_batch256": 50.0, "speedup_cpu_batch256": 1.8},
        {"target": 0.5, "strategy": "kmeans", "allocation": "uniform", "widths": [8] * 9,
         "macs": 20_000_000, "params": 140000, "acc_pruned": 0.4, "acc_recalibrated": 0.7,
         "acc_finetuned": 0.90, "finetune_epochs": 5, "cpu_ms_batch1": 1.2,
         "cpu_ms_batch256": 49.0, "speedup_cpu_batch256": 1.85},
        {"target": 0.25, "strategy": "random", "allocation": "uniform", "widths": [4] * 9,
         "macs": 10_000_000, "params": 70000, "acc_pruned": 0.1, "acc_recalibrated": 0.2,
         "acc_finetuned": None, "finetune_epochs": 0, "cpu_ms_batch1": 1.0,
         "cpu_ms_batch256": 30.0, "speedup_cpu_batch256": 3.0},
    ],
}  # fmt: skip


def _write_results(tmp_path: Path, **files: dict) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    for name, data in files.items():
        (results / f"{name}.json").write_text(json.dumps(data))
    return results


def _row(markdown: str, startswith: str) -> list[str]:
    line = next(x for x in markdown.splitlines() if x.startswith(startswith))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_render_train_table(tmp_path):
    md = make_readme.render_results(_write_results(tmp_path, train=TRAIN), tmp_path / "img")
    row = _row(md, "| 93.10%")
    assert row == [
        "93.10% (1,000 test images)",
        "272,474",
        "40.8",
        "30",
        "512",
        "3.18",
        "5.0×",
        "cuda (NVIDIA H100), torch 2.14.1",
    ]
    assert "50,000 images" in md
    assert "CPU stand-in" not in md
    assert "block" not in md.lower()  # missing files are skipped


def test_cpu_checkpoint_is_flagged_as_stand_in(tmp_path):
    results = _write_results(tmp_path, train={**TRAIN, "device": "cpu"})
    md = make_readme.render_results(results, tmp_path / "img")
    assert "CPU stand-in checkpoint" in md and "GPU run is still owed" in md


def test_render_block_pruning_table(tmp_path):
    md = make_readme.render_results(_write_results(tmp_path, block_pruning=BLOCK), tmp_path)
    assert "1,000 test images" in md and "averaged over 2 blocks" in md
    # strategy | mean no recal | mean recal | 50% no recal | 50% recal
    assert _row(md, "| `kmeans`") == ["`kmeans`", "70.00%", "91.00%", "80.00%", "91.00%"]
    assert _row(md, "| `l1`") == ["`l1`", "50.00%", "70.00%", "50.00%", "70.00%"]
    assert "Training" not in md


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"block": "layer2.1", "kept_filters": 16}, 0.5),
        ({"block": "layer3.2", "kept_filters": 16}, 0.25),
        ({"block": "x", "kept_filters": 3, "width": 12}, 0.25),
        ({"block": "x", "kept_filters": 3}, None),
    ],
)
def test_kept_fraction(record, expected):
    assert make_readme.kept_fraction(record) == expected


def test_render_network_pruning_table(tmp_path):
    md = make_readme.render_results(_write_results(tmp_path, network_pruning=NETWORK), tmp_path)
    rows = [r for r in md.splitlines() if re.match(r"\| \d+%", r)]
    # sorted by target, then best fine-tuned accuracy first
    assert [r.split("|")[2].strip() for r in rows] == ["`random`", "`kmeans`", "`l1`"]
    kmeans = _row(md, "| 50% | `kmeans`")
    assert kmeans == [
        "50%", "`kmeans`", "`uniform`", "20.00", "140,000", "40.00%", "70.00%",
        "90.00% (5 ep.)", "1.20", "49.0", "1.85×",
    ]  # fmt: skip
    assert _row(md, "| 25%")[7] == "—"
    assert "1,000 test images" in md and "93.00%" in md


def test_figures_are_included_only_when_present(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    (img / "pareto.png").write_bytes(b"\x89PNG")
    md = make_readme.render_results(tmp_path / "no_results", img)
    assert "](img/pareto.png)" in md
    assert "train_curves.png" not in md and "block_pruning.png" not in md


def test_nothing_to_render(tmp_path):
    md = make_readme.render_results(tmp_path / "results", tmp_path / "img")
    assert "No results yet" in md


def test_main_check_and_update(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# T\n<!-- notebooks:start -->\nold\n<!-- notebooks:end -->\n"
        "text\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n"
    )
    results = _write_results(tmp_path, train=TRAIN)
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nbformat.write(_title_only_notebook(), nbdir / "09_test.ipynb")
    args = ["--readme", str(readme), "--results", str(results), "--img", str(tmp_path / "img"),
            "--notebooks", str(nbdir)]  # fmt: skip
    assert make_readme.main([*args, "--check"]) == 1
    assert make_readme.main(args) == 0
    assert make_readme.main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# T\n") and text.endswith("tail\n") and "\ntext\n" in text
    assert "old" not in text
    assert "93.10% (1,000 test images)" in text
    assert "[09_test](notebooks/09_test.ipynb) | 09 · Test |" in text
    assert sync_notebooks.badge(URL, "09_test.ipynb") in text


def test_missing_markers_are_an_error():
    with pytest.raises(ValueError, match="markers"):
        make_readme.replace_section("no markers", "results", "x")


def test_series_timing_is_rendered():
    md = make_readme.render_series({"device": "NVIDIA H200", "total_seconds": 301.4,
                                    "notebook_seconds": {"01_resnet20": 10.2, "02_x": 291.2}})
    assert "301 s on NVIDIA H200" in md and "01_resnet20 10 s" in md
