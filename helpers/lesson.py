"""What every lesson notebook starts with: its profile, device, scratch folder, and the study.

A lesson (``notebooks/NN_*.ipynb``) runs top to bottom in one sitting: minutes on a laptop CPU,
under three on a GPU. It starts from the committed checkpoint and the committed results of the
full study (``results/*.json``, written by ``make reproduce``) and never writes to
``checkpoints/``, ``results/`` or ``img/``: what it makes goes to a scratch folder,
``build/lessons/<notebook>/`` (a fresh temporary folder in the ``ci`` test profile).
``scripts/run_series.py`` records the lesson's run time in ``results/series.json``.

Profiles of a lesson: ``"auto"`` (the lesson; its sizes depend on the device, see
:meth:`Lesson.pick`) and ``"ci"`` (tiny sizes, to test the notebook).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers import paths
from helpers.device import cpu_model, default_device, device_name

LESSON_PROFILES = ("auto", "ci")
SCRATCH = paths.ROOT / "build" / "lessons"
# Which study notebook writes each results file (its run is dated in results/series.json).
STUDY_NOTEBOOK = {
    "train.json": "02_train_cifar10",
    "block_pruning.json": "04_block_pruning",
    "network_pruning.json": "05_network_pruning",
}
COLAB_GPU_HINT = ("This Colab runtime has no GPU: the lesson runs, but slowly. For a GPU choose "
                  "Runtime > Change runtime type > T4 GPU, then run all cells again.")


@dataclass(frozen=True)
class Lesson:
    """One lesson run: ``profile`` is ``"lesson"`` or ``"ci"``."""

    name: str
    profile: str
    device: torch.device
    scratch: Path

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    def pick(self, cpu, gpu, ci):
        """The size for this run: ``ci`` in the test profile, else by device."""
        if self.profile == "ci":
            return ci
        return gpu if self.gpu else cpu


def start(name: str, profile: str = "auto", seed: int = 0) -> Lesson:
    """Resolve a lesson's profile and device, seed torch, and print one line saying so."""
    if profile not in LESSON_PROFILES:
        raise ValueError(f"a lesson's PROFILE is one of {LESSON_PROFILES}, got {profile!r}; "
                         f"the full study ('full' on a GPU, 'cpu') is `make reproduce`, "
                         f"which runs study/NN_*.ipynb")
    device = default_device()
    if profile == "ci":
        scratch = Path(tempfile.mkdtemp(prefix=f"lesson-{name}-"))
    else:
        scratch = SCRATCH / name
        scratch.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    lesson = Lesson(name, "ci" if profile == "ci" else "lesson", device, scratch)
    threads = torch.get_num_threads()
    where = device_name(device) if lesson.gpu else f"{cpu_model()}, {threads} threads"
    print(f"{name}: profile {lesson.profile!r} on {where}; torch {torch.__version__}; "
          f"scratch folder {_shown(scratch)}")
    if in_colab() and not lesson.gpu:
        print(COLAB_GPU_HINT)
    return lesson


def _shown(path: Path) -> str:
    """A path relative to the repository when inside it (outputs stay portable)."""
    try:
        return str(Path(path).relative_to(paths.ROOT))
    except ValueError:
        return str(path)


def study(file: str, results: Path | None = None) -> dict:
    """A committed result of the full study, e.g. ``study("train.json")`` (read-only)."""
    path = Path(results or paths.RESULTS) / file
    if not path.exists():
        raise FileNotFoundError(f"{_shown(path)} is missing: the lessons read the committed "
                                f"study; `make reproduce` regenerates it")
    return json.loads(path.read_text(encoding="utf-8"))


def images_text(record: dict) -> str:
    """'5,000 validation and 1,000 test images' from a record's image counts."""
    parts = []
    val = record.get("val_images") or (record.get("eval_images")
                                       if record.get("eval_split", "val") == "val" else None)
    if val:
        parts.append(f"{int(val):,} validation")
    if record.get("test_images"):
        parts.append(f"{int(record['test_images']):,} test")
    return " and ".join(parts) + " images" if parts else "image counts not recorded"


def label(file: str, results: Path | None = None) -> str:
    """Where a study result came from: 'committed study run (`full` profile, NVIDIA H200,
    2026-11-28; 5,000 validation and 1,000 test images)'."""
    record = study(file, results)
    series = Path(results or paths.RESULTS) / "series.json"
    runs = study(series.name, results).get("notebooks", {}) if series.exists() else {}
    run = runs.get(STUDY_NOTEBOOK.get(file, ""), {}).get(record.get("profile"), {})
    date = f", {run.get('date') or record['date']}" if run.get("date") or "date" in record else ""
    device = record.get("cpu") or record.get("device") or run.get("device") or "device not recorded"
    return (f"committed study run (`{record.get('profile', '?')}` profile, {device}{date}; "
            f"{images_text(record)})")


def in_colab() -> bool:
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


MIN_ROUNDS = 6  # two equally fast networks agree in all 6 rounds by chance once in 32


def faster_in_every_round(times: Mapping[str, Sequence[float]]) -> str | None:
    """Of two networks timed interleaved (round ``i`` of both side by side), the name of the one
    faster in every round; None when the rounds disagree (the difference lies within the spread
    of the per-round ratios) or fewer than ``MIN_ROUNDS`` were timed. Notebook 05, §7."""
    (a, ta), (b, tb) = times.items()
    ratio = np.asarray(ta, float) / np.asarray(tb, float)  # above 1: a slower in that round
    if len(ratio) < MIN_ROUNDS:
        return None
    return b if (ratio > 1).all() else a if (ratio < 1).all() else None


def grade_faster(prediction: str | None, times: Mapping[str, Sequence[float]]) -> str:
    """'right', 'wrong' or 'not attempted' for a prediction of which network is faster; no grade
    when :func:`faster_in_every_round` cannot tell (notebook 05, exercise 2)."""
    (a, ta), (b, tb) = times.items()
    ratio = np.asarray(ta, float) / np.asarray(tb, float)
    spread = (f"time {a} / time {b} from {ratio.min():.3f} to {ratio.max():.3f} over "
              f"{len(ratio)} rounds")
    faster = faster_in_every_round(times)
    if prediction is None:
        return f"not attempted yet: set MY_PREDICTION and run again ({spread})"
    if faster is None:
        why = "spreads overlap" if len(ratio) >= MIN_ROUNDS else f"under {MIN_ROUNDS} rounds"
        return f"too close to call on this machine: {why} ({spread}); not graded"
    return f"{'right' if prediction == faster else 'wrong'}: {faster} was faster ({spread})"
