"""Run profiles of the notebooks: "full" on a GPU, a quick "ci" one on a CPU.

The "ci" profile writes everything to a temporary folder, so that running the notebooks in CI
never overwrites the committed checkpoint, results or figures.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import paths

PROFILES = ("auto", "full", "ci")


def resolve_profile(profile: str = "auto") -> str:
    """``"auto"`` becomes ``"full"`` when CUDA is available, else ``"ci"``."""
    if profile not in PROFILES:
        raise ValueError(f"PROFILE must be one of {PROFILES}, got {profile!r}")
    if profile == "auto":
        return "full" if torch.cuda.is_available() else "ci"
    return profile


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Outputs:
    """Where a notebook writes its checkpoint, results (JSON) and figures."""

    checkpoints: Path
    results: Path
    img: Path

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / paths.CHECKPOINT.name


@functools.cache
def _scratch() -> Path:
    """A fresh temporary folder per process: quick runs never see each other's leftovers."""
    return Path(tempfile.mkdtemp(prefix="resnet20-ci-outputs-"))


def outputs(profile: str) -> Outputs:
    """The repository's folders for the full profile, a temporary folder for the others."""
    if resolve_profile(profile) == "full":
        out = Outputs(paths.CHECKPOINTS, paths.RESULTS, paths.IMG)
    else:
        base = _scratch()
        out = Outputs(base / "checkpoints", base / "results", base / "img")
    for folder in (out.checkpoints, out.results, out.img):
        folder.mkdir(parents=True, exist_ok=True)
    return out
