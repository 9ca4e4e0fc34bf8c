"""Execute a notebook series with papermill, one notebook at a time, in order, and time it.

    python scripts/run_series.py                  # the lessons, notebooks/ (PROFILE=auto)
    python scripts/run_series.py --copy           # the same, then copied over notebooks/
    python scripts/run_series.py --study          # the reproduction, study/ (full on CUDA, or cpu)
    python scripts/run_series.py --study --profile cpu --only 03 04
    python scripts/run_series.py --clean build/x.ipynb notebooks/01_resnet20.ipynb

Each notebook is executed into build/run/ (its cell outputs are logged to
build/run/<notebook>.log, the series' progress to build/run/series.log); the series stops at the
first failure, because later notebooks use what earlier ones produce.

What is copied back: a lesson run (`make run`) leaves notebooks/ as it is, so a learner's run
changes nothing in the repository but its run times (results/series.json); the executed lessons
stay in build/run/. ``--copy`` (`make record`, for maintainers) also copies each lesson that
succeeded over its source. A study run (`make reproduce`) copies by default: the study notebooks'
outputs are the reproduction. A copied notebook is cleaned first (see :func:`clean_notebook`),
so a failure never leaves a half-executed notebook behind; it keeps its ``parameters`` cell
(``PROFILE = "auto"``) and holds no ``injected-parameters`` cell; the profile it ran with is kept
in its metadata, which the generated provenance cell reports.

Run times go to results/series.json, per notebook: a lesson's under ``lesson`` (on a CPU) or
``lesson_gpu``, a study notebook's under its profile (``cpu``, ``full``); each with seconds,
device, CPU model, CPU threads and date. scripts/sync_notebooks.py then rewrites the provenance
cells of
the copied notebooks. Results of one study notebook appear in the provenance of later ones: run
``make sync`` (``make record`` and ``make reproduce`` do) after running only some notebooks. The
ci profile writes its outputs to a temporary folder, so its executed notebooks are not copied
(unless --copy) and its times are not recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"  # the lessons
STUDY_DIR = ROOT / "study"  # the reproduction
RUN_DIR = ROOT / "build" / "run"
SERIES = ROOT / "results" / "series.json"
MAX_BYTES = 600_000

# A tqdm progress bar, e.g. ' 40%|####      | 2/5 [00:01<00:02,  1.5it/s, loss=0.3]'.
PROGRESS = re.compile(r"\d+%\|.*\|\s*\d|\|\s*\d+/\d+\s*\[|\d+(\.\d+)?\s*(it/s|s/it)\]")


# --------------------------------------------------------------------------- cleaning


def strip_progress(text: str) -> str:
    """Remove tqdm progress bars from a stream's text; keep every other line.

    A carriage return rewrites a terminal line, so each line keeps only what follows its last
    ``\\r``; lines that still look like a progress bar are dropped.
    """
    lines = []
    for line in text.split("\n"):
        line = line.rsplit("\r", 1)[-1]
        if not PROGRESS.search(line):
            lines.append(line)
    return "\n".join(lines)


def _is_widget(output) -> bool:
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


def relative_paths(text: str, root: Path = ROOT) -> str:
    """Absolute paths of the repository (and of $CIFAR10_ROOT, the home folder) made portable."""
    root = str(root)
    text = re.sub(re.escape(root) + r"(?![\w.-])", ".", text.replace(root + os.sep, ""))
    data = os.environ.get("CIFAR10_ROOT")
    if data:
        text = text.replace(str(Path(data).expanduser().resolve()), "$CIFAR10_ROOT")
        text = text.replace(data.rstrip(os.sep), "$CIFAR10_ROOT")
    home = str(Path.home())
    if len(home) > 1:
        text = text.replace(home + os.sep, "~" + os.sep)
    return text


def small_png(data: str, colors: int = 256) -> str:
    """A base64 PNG as an adaptive-palette PNG of at most ``colors`` colours, if that is smaller.

    Matplotlib's inline figures are RGBA; their few distinct colours (lines, text, a colormap)
    fit a 256-colour palette without a visible change, at a quarter of the bytes or less.
    """
    import base64
    import io

    from PIL import Image

    from helpers.plots import palette_png

    raw = base64.b64decode(data)
    if Image.open(io.BytesIO(raw)).mode == "P":
        return data
    small = palette_png(raw, colors)
    return base64.b64encode(small).decode("ascii") if len(small) < len(raw) else data


def _clean_output(output, root: Path) -> bool:
    """Clean one output in place; returns False when nothing of it is left."""
    if output.output_type == "stream":
        output.text = relative_paths(strip_progress(output.text), root)
        return bool(output.text.strip())
    if output.output_type == "error":
        output.traceback = [relative_paths(line, root) for line in output.traceback]
        output.evalue = relative_paths(output.evalue, root)
        return True
    if _is_widget(output):  # tqdm.auto's widget bars: their state is not saved anyway
        return False
    for mime, value in output.get("data", {}).items():
        if isinstance(value, str) and mime.startswith("text/"):
            output.data[mime] = relative_paths(value, root)
        elif mime == "image/png" and isinstance(value, str):
            output.data[mime] = small_png(value)
    return True


def _merge_streams(outputs: list) -> list:
    """Consecutive outputs of the same stream as one (as Jupyter shows them)."""
    merged = []
    for out in outputs:
        last = merged[-1] if merged else None
        if (out.output_type == "stream" and last is not None and last.output_type == "stream"
                and last.name == out.name):
            last.text += out.text
        else:
            merged.append(out)
    return merged


def clean_notebook(nb, root: Path = ROOT):
    """Make an executed notebook fit to commit, in place (and return it).

    Removes papermill's ``injected-parameters`` cell (the ``parameters`` cell keeps its
    defaults), tqdm progress bars and widgets from the outputs (consecutive chunks of one stream
    merged first, so that a bar's carriage returns are seen together), absolute paths of the
    repository, timestamps of papermill and of the kernel, re-encodes RGB(A) PNG figures with a
    256-colour palette (:func:`small_png`), and keeps in the notebook's metadata
    only the parameters it ran with and its duration.
    """
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in _merge_streams(cell.outputs) if _clean_output(o, root)]
    meta = nb.metadata.get("papermill", {})
    nb.metadata.pop("widgets", None)
    if meta:
        nb.metadata["papermill"] = {k: meta[k] for k in ("parameters", "duration") if k in meta}
    return nb


def clean_file(source: Path, dest: Path | None = None, root: Path = ROOT) -> Path:
    """:func:`clean_notebook` on a file, written to ``dest`` (default: in place)."""
    import nbformat

    nb = clean_notebook(nbformat.read(source, as_version=4), root)
    dest = Path(dest or source)
    nbformat.write(nb, dest)
    size = dest.stat().st_size
    if size > MAX_BYTES:
        print(f"warning: {dest} is {size / 1e3:.0f} KB, more than {MAX_BYTES / 1e3:.0f} KB",
              file=sys.stderr)
    return dest


# --------------------------------------------------------------------------- timing record


def lesson_key() -> str:
    """Where a lesson's run time is kept in results/series.json: one entry per kind of device."""
    import sync_notebooks  # its LESSON_RUNS names the keys: (on a CPU, on a GPU)
    import torch

    return sync_notebooks.LESSON_RUNS[torch.cuda.is_available()]


def record_time(stem: str, profile: str, seconds: float, path: Path = SERIES,
                note: str | None = None) -> dict:
    """Store one notebook's run time under ``notebooks[stem][profile]`` in results/series.json
    (``profile``: a study profile, or :func:`lesson_key` for a lesson).

    ``note`` says what the time does not include (e.g. fine-tuning loaded from state files that
    an earlier, interrupted or separate run computed); the README and the provenance show it.
    """
    import torch

    from helpers.device import cpu_model, device_name

    series = json.loads(path.read_text()) if path.exists() else {}
    runs = series.setdefault("notebooks", {}).setdefault(stem, {})
    runs[profile] = {"seconds": round(seconds, 1), "device": device_name(),
                     "cpu": cpu_model(), "threads": torch.get_num_threads(),
                     "date": datetime.date.today().isoformat()}
    if note:
        runs[profile]["note"] = note
    series["notebooks"] = dict(sorted(series["notebooks"].items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(series, indent=1) + "\n")
    return series


# --------------------------------------------------------------------------- running


def select(only: list[str] | None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks, in order; ``only`` keeps those whose name starts with one of it."""
    paths = sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = [o for o in only if not any(p.name.startswith(o) for p in paths)]
        if unknown:
            raise SystemExit(f"--only: no notebook starts with {unknown}")
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    return paths


def _logger(path: Path) -> logging.Handler:
    """Send papermill's log (each cell's outputs, with log_output=True) to ``path``."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("papermill")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    return handler


def run(notebook: Path, profile: str, run_dir: Path = RUN_DIR) -> tuple[Path, float]:
    """Execute ``notebook`` with PROFILE=``profile`` into ``run_dir``; returns (file, seconds)."""
    import papermill as pm

    out = run_dir / notebook.name
    os.environ.pop("MPLBACKEND", None)  # e.g. Agg from .ci/run: the kernel's default shows figures
    handler = _logger(run_dir / f"{notebook.stem}.log")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook), str(out), parameters={"PROFILE": profile},
                            cwd=str(ROOT), progress_bar=sys.stderr.isatty(), log_output=True)
    finally:
        logging.getLogger("papermill").removeHandler(handler)
        handler.close()
    return out, time.perf_counter() - t0


def copy_back(study: bool, timed: bool, copy: bool | None) -> bool:
    """Whether the executed notebooks are copied over their sources: ``copy`` when given
    (--copy, --no-copy), else only for a study run whose profile writes the repository."""
    return (study and timed) if copy is None else copy


def main(argv: list[str] | None = None) -> int:
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    from helpers.lesson import LESSON_PROFILES
    from helpers.study.profile import PROFILES, WRITES_REPOSITORY, resolve_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", action="store_true",
                        help="run the reproduction (study/) instead of the lessons (notebooks/)")
    parser.add_argument("--profile", default="auto", choices=PROFILES,
                        help="lessons: auto or ci; study: auto (full on CUDA, else cpu), full, "
                             "cpu or ci")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run these notebooks, e.g. 03 04")
    parser.add_argument("--copy", action=argparse.BooleanOptionalAction, default=None,
                        help="copy the executed notebooks over their sources (default: only a "
                             "study run in the cpu or full profile)")
    parser.add_argument("--note", help="recorded with the run times: what they leave out")
    parser.add_argument("--clean", nargs="+", type=Path, metavar=("EXECUTED", "DEST"),
                        help="only clean an executed notebook (into DEST, default in place)")
    args = parser.parse_args(argv)
    if args.clean:
        if len(args.clean) > 2:
            parser.error("--clean takes EXECUTED [DEST]")
        print(clean_file(*args.clean))
        return 0

    folder = STUDY_DIR if args.study else NOTEBOOK_DIR
    if args.study:
        profile = resolve_profile(args.profile)
        timed = profile in WRITES_REPOSITORY
        key = profile
    else:
        if args.profile not in LESSON_PROFILES:
            parser.error(f"the lessons run with --profile {' or '.join(LESSON_PROFILES)}; the "
                         f"study profiles (full, cpu) are for --study (`make reproduce`)")
        profile = args.profile
        timed, key = profile == "auto", lesson_key()
    copy = copy_back(args.study, timed, args.copy)
    notebooks = select(args.only, folder)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "series.log", "a", encoding="utf-8") as log:
        def say(message: str) -> None:
            stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            print(message, flush=True)
            log.write(f"{stamp} {message}\n")
            log.flush()

        say(f"series: {len(notebooks)} notebook(s) of {folder.name}/, PROFILE={profile}, "
            f"copy={copy}")
        total = 0.0
        for nb in notebooks:
            say(f"== {nb.name}: running (cell outputs in {RUN_DIR / nb.stem}.log)")
            try:
                out, seconds = run(nb, profile, RUN_DIR)
            except Exception as e:  # papermill re-raises the cell's error: stop the series
                say(f"!! {nb.name} FAILED ({type(e).__name__}); executed notebook kept in "
                    f"{RUN_DIR / nb.name}; {folder.name}/{nb.name} unchanged")
                return 1
            total += seconds
            say(f"   {nb.name}: {seconds:.1f} s" + ("" if copy else f", executed in {out}"))
            if timed:
                record_time(nb.stem, key, seconds, path=SERIES, note=args.note)
            if copy:
                clean_file(out, nb)
                import sync_notebooks

                # its provenance may cite what it just wrote; `make record` syncs all at the end
                sync_notebooks.sync_all(folder, only=[nb.name])
        say(f"series: {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
