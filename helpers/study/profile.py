"""Run profiles of the notebooks, and the one table of their sizes.

- ``"full"``: the real thing (200 training epochs, complete sweeps); meant for a CUDA GPU.
- ``"cpu"``: what reproduces the committed outputs on a 2-core CPU in reasonable time:
  notebook 02 trains ResNet20 on the 45,000 training images for as many epochs as fit about
  45 minutes (bf16 where the CPU has bf16 units); 03-05 analyse the committed checkpoint on
  CPU-sized grids. It writes to the repository, like ``"full"``.
- ``"ci"``: the same code on tiny sizes, to test the notebooks. It writes everything to a fresh
  temporary folder, so that it never overwrites the committed checkpoint, results or figures.
- ``"auto"``: ``"full"`` when CUDA is available, else ``"cpu"``.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import paths
from helpers.pruning import CLUSTER_STRATEGIES

PROFILES = ("auto", "full", "cpu", "ci")
WRITES_REPOSITORY = ("full", "cpu")  # the others write to a temporary folder


@dataclass(frozen=True)
class TrainSizes:
    """Notebook 02: the training run (``train_images`` None: all 45,000 of the training split)."""

    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: float
    train_images: int | None
    seed_pipeline_steps: int  # batches of the original pipeline timed for the speed comparison


@dataclass(frozen=True)
class ClusterSizes:
    """Notebook 03: filter clustering on the committed checkpoint."""

    score_points: int | None  # elbow/silhouette at k = 1 and k = i/score_points x width (None: all)
    null_draws: int  # structureless filter sets per block, null kind and feature space
    stability_seeds: int  # k-means++ seeds compared pairwise
    stability_kept: tuple[float, ...]  # the k / width fractions of the seed-stability table


@dataclass(frozen=True)
class SweepSizes:
    """Notebook 04: the per-block pruning sweep on the validation images.

    ``kept`` None: every k of every block; else k at these fractions of each width, plus the k
    Distiller's 40% pruning keeps. ``bf16``: forward passes under bfloat16 autocast where the
    device has bf16 units (:func:`helpers.train.bf16_supported`), the naive check included.
    """

    eval_images: int | None = None  # validation images (None: all 5,000)
    kept: tuple[float, ...] | None = None
    recal_batches: int = 10  # BN recalibration on recal_batches x recal_batch_size images
    recal_batch_size: int = 256
    refit_images: int = 1024  # augmented training images the refit is computed on
    bf16: bool = False
    eval_batch_size: int = 1000


@dataclass(frozen=True)
class NetworkSizes:
    """Notebook 05: whole-network pruning, fine-tuning and latency (defaults: the full profile).

    The validation images are split once into a selection and a confirmation half
    (:func:`helpers.data.selection_confirmation`): every choice below is made on the selection
    half, and the chosen networks are reported on the confirmation half. The clustering rule
    is the best of ``rules`` on the selection half; with the ``strategies`` (baselines) it
    makes the strategies of the plans. Every target gets one fine-tuned network, chosen among
    its strategies x {uniform, sensitivity, depth} plans (depth: one whole block removed, the
    rest uniform; :func:`helpers.plans.depth_plan`). At the headline target every candidate
    is fine-tuned for ``screen_epochs`` (None: ``headline_epochs``) and the best on the
    selection half then for ``headline_epochs``; at the others the best after prune + refit +
    recalibration is fine-tuned for ``other_epochs``.
    """

    targets: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)  # fractions of the MACs removed
    strategies: tuple[str, ...] = ("l1", "random")  # the baselines the clustering rule joins
    rules: tuple[str, ...] = CLUSTER_STRATEGIES  # compared at the headline's uniform plan
    eval_images: int | None = None  # validation images every choice is made on (None: 5,000)
    refit_images: int = 1024  # augmented training images each conv2 refit is computed on
    recal_batches: int = 10  # batches of 256 augmented training images for BN recalibration
    # The sensitivity the plans are guided by: one block pruned at a time to these fractions of
    # its filters, measured on the first sensitivity_images of the selection half (None: all).
    # (Notebook 04's sweep measured it on all validation images, the confirmation half too.)
    sensitivity_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    sensitivity_images: int | None = None
    finetune_images: int | None = None  # training images for fine-tuning (None: all 45,000)
    # Fine-tuning schedules, (peak lr of the cosine, batch size). Every candidate plan at the
    # headline target is fine-tuned with the first; the plan best on the selection half is
    # then fine-tuned with each of the others too, and the best schedule fine-tunes the rest.
    schedules: tuple[tuple[float, int], ...] = ((0.04, 128), (0.1, 128))
    headline_epochs: int = 30  # the headline target, and the unpruned control
    other_epochs: int = 30  # every other target, and the run without distillation
    screen_epochs: int | None = None  # each headline candidate first (None: headline_epochs)
    timing_steps: int = 5  # training steps per set-up and round when timing fine-tuning costs
    latency_repeats: int = 7  # interleaved rounds of timed forward passes, per call
    latency_calls: int = 3  # calls of latency_repeats rounds, pooled (median and its interval)

    def __post_init__(self):
        if not self.schedules or len(set(self.schedules)) != len(self.schedules):
            raise ValueError(f"schedules must be distinct (lr, batch size) pairs, got "
                             f"{self.schedules!r}")
        for lr, batch in self.schedules:
            if not (lr > 0 and isinstance(batch, int) and batch > 0):
                raise ValueError(f"a schedule is (peak lr > 0, batch size > 0), got {(lr, batch)}")


@dataclass(frozen=True)
class Int8Sizes:
    """``python -m helpers.study.int8``: the committed networks quantized and timed."""

    calibration_images: int = 512  # training images the activation ranges are taken from
    eval_images: int | None = None  # validation images scored (None: all 5,000)
    rounds: int = 15  # interleaved rounds per timing process
    processes: int = 3  # fresh timing processes (a verdict needs at least 3)
    batch_sizes: tuple[int, ...] = (256, 1)
    # The int8 latency table (helpers.study.int8_plan): every table_every-th variant (1: all),
    # with the residual stage widths or not, table_repeats x table_calls interleaved rounds.
    table_every: int = 1
    table_residual: bool = True
    table_repeats: int = 5
    table_calls: int = 2


@dataclass(frozen=True)
class Sizes:
    """Every size of one profile, notebook by notebook (the one source of truth)."""

    train: TrainSizes
    clusters: ClusterSizes
    sweep: SweepSizes = SweepSizes()
    network: NetworkSizes = NetworkSizes()
    int8: Int8Sizes = Int8Sizes()


SIZES: dict[str, Sizes] = {
    "full": Sizes(
        train=TrainSizes(epochs=200, batch_size=512, lr=0.4, warmup_epochs=5, train_images=None,
                         seed_pipeline_steps=100),
        clusters=ClusterSizes(score_points=None, null_draws=20, stability_seeds=10,
                              stability_kept=(0.125, 0.25, 0.5, 0.75)),
        sweep=SweepSizes(kept=None, bf16=False, eval_batch_size=2000),
        network=NetworkSizes(),
    ),
    "cpu": Sizes(
        train=TrainSizes(epochs=35, batch_size=256, lr=0.2, warmup_epochs=2, train_images=None,
                         seed_pipeline_steps=10),
        clusters=ClusterSizes(score_points=8, null_draws=5, stability_seeds=5,
                              stability_kept=(0.25, 0.5, 0.75)),
        sweep=SweepSizes(kept=(3 / 4, 1 / 2, 1 / 4, 1 / 8), bf16=True),  # + Distiller's k
        network=NetworkSizes(schedules=((0.04, 128),), headline_epochs=30, other_epochs=2,
                             screen_epochs=2, latency_repeats=15),
    ),
    "ci": Sizes(
        train=TrainSizes(epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.2, train_images=3200,
                         seed_pipeline_steps=5),
        clusters=ClusterSizes(score_points=4, null_draws=1, stability_seeds=2,
                              stability_kept=(0.5,)),
        sweep=SweepSizes(eval_images=200, kept=(1 / 4,), recal_batches=1,
                         recal_batch_size=64, refit_images=64, bf16=True, eval_batch_size=200),
        network=NetworkSizes(targets=(0.3, 0.5), strategies=("l1",), rules=("first", "merge"),
                             eval_images=500,
                             refit_images=128, recal_batches=1, sensitivity_fractions=(0.5,),
                             sensitivity_images=200,
                             finetune_images=512, schedules=((0.04, 128), (0.1, 64)),
                             headline_epochs=2, other_epochs=1, screen_epochs=1,
                             timing_steps=1, latency_repeats=5, latency_calls=2),
        int8=Int8Sizes(calibration_images=64, eval_images=500, rounds=3, batch_sizes=(256,),
                       table_every=12, table_residual=False, table_repeats=2, table_calls=1),
    ),
}


def resolve_profile(profile: str = "auto") -> str:
    """``"auto"`` becomes ``"full"`` when CUDA is available, else ``"cpu"``."""
    if profile not in PROFILES:
        raise ValueError(f"PROFILE must be one of {PROFILES}, got {profile!r}")
    if profile == "auto":
        return "full" if torch.cuda.is_available() else "cpu"
    return profile


def sizes(profile: str) -> Sizes:
    """The sizes of ``profile`` (``"auto"`` resolved first)."""
    return SIZES[resolve_profile(profile)]


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
    """The repository's folders for the full and cpu profiles, a temporary folder for ci."""
    if resolve_profile(profile) in WRITES_REPOSITORY:
        out = Outputs(paths.CHECKPOINTS, paths.RESULTS, paths.IMG)
    else:
        base = _scratch()
        out = Outputs(base / "checkpoints", base / "results", base / "img")
    for folder in (out.checkpoints, out.results, out.img):
        folder.mkdir(parents=True, exist_ok=True)
    return out
