"""Run profiles of the notebooks: "full" on a GPU, a quick "ci" one on a CPU.

- ``"full"``: the real thing (200 training epochs, complete sweeps); meant for a CUDA GPU.
- ``"ci"``: the same code on small sizes, on a CPU, to test the notebooks. It writes everything
  to a fresh temporary folder, so that it never overwrites the committed checkpoint, results or
  figures.
- ``"standin"``: notebook 02 only: a short CPU training whose checkpoint and results are
  written to the repository as a clearly marked stand-in (``device: "cpu"``) until a GPU run
  replaces them. Only notebook 02 knows this profile.
- ``"auto"``: ``"full"`` when CUDA is available, else ``"ci"``.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import paths

PROFILES = ("auto", "full", "ci", "standin")


def resolve_profile(profile: str = "auto", allowed: tuple[str, ...] = PROFILES[:3]) -> str:
    """``"auto"`` becomes ``"full"`` when CUDA is available, else ``"ci"``.

    ``allowed`` lists the profiles the calling notebook knows (``"standin"`` only notebook 02).
    """
    if profile not in allowed:
        raise ValueError(f"PROFILE must be one of {allowed}, got {profile!r}")
    if profile == "auto":
        return "full" if torch.cuda.is_available() else "ci"
    return profile


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str | None = None) -> str:
    """The GPU's name (e.g. 'NVIDIA H100 80GB HBM3'), or 'cpu': what results record."""
    device = torch.device(device) if device else default_device()
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


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
    if resolve_profile(profile, allowed=PROFILES) in ("full", "standin"):
        out = Outputs(paths.CHECKPOINTS, paths.RESULTS, paths.IMG)
    else:
        base = _scratch()
        out = Outputs(base / "checkpoints", base / "results", base / "img")
    for folder in (out.checkpoints, out.results, out.img):
        folder.mkdir(parents=True, exist_ok=True)
    return out
