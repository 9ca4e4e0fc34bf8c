"""Fine-tuning runs that survive interruptions, and what they cost per step.

A fine-tuning run is :func:`helpers.train.train` with a checkpoint file: interrupted, it resumes
where it stopped; finished, calling it again only loads the final weights. :func:`finetune`
names that file after everything that defines the run (the starting network, the plan, the
strategy, the teacher, the schedule, the student's own weights and the :func:`code_version`
of the pruning and training code; see :func:`state_path`), so that a notebook re-run re-uses
its finished runs and never resumes a run that started from another network or was made by
other code. :class:`ResultCache` does the same for measurements that are cheap one by one but
slow to repeat all together (the accuracies of many pruned networks), its keys also carrying
the version of the code that measures.

:func:`compare_step_seconds` times a few training steps of several (student, teacher) set-ups
interleaved, to see what makes fine-tuning cheaper before paying for whole epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.data import Splits, normalize, random_crop_flip
from helpers.models import ResNet
from helpers.train import EagerStep, TrainConfig, make_optimizer, train


def digest(value) -> str:
    """A short, stable hash of a JSON-serialisable value (dict keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights and buffers: which network a run started from."""
    h = hashlib.blake2b(digest_size=8)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def code_version(*functions) -> str:
    """A short hash of the source code of ``functions`` (functions, classes or modules, each
    with its qualified name): part of every cache key, so that a result computed by older code
    is computed again instead of being read (a change of a docstring counts too: a miss costs
    time, a stale value would cost a wrong number)."""
    h = hashlib.blake2b(digest_size=6)
    for f in functions:
        name = getattr(f, "__qualname__", getattr(f, "__name__", repr(f)))
        h.update(f"{getattr(f, '__module__', '')}.{name}\n".encode())
        h.update(inspect.getsource(f).encode())
    return h.hexdigest()


def pruning_functions() -> tuple:
    """What makes a pruned, repaired network and its score (looked up when called): the
    strategies' filter choice and merge, the residual channels' pruning and refit, the conv2
    refit, the BN recalibration, and
    :mod:`helpers.study.network`'s whole-network pruning and scoring."""
    from helpers import metrics, pruning, refit
    from helpers.study import channels, network

    return (channels.writers, channels.readers, channels.channel_features, channels.prune_stage,
            channels.refit_readers, channels.prune_stages, refit.conv_normal_equations,
            pruning.filter_features, pruning.kmeans, pruning.cluster_filters, pruning._shrink,
            pruning._merge, pruning.keep_indices, pruning.pruned_block, pruning.prune_block,
            pruning.calibration_images, pruning.recalibrate_bn, refit.conv2_input,
            refit.normal_equations, refit.apply_refit, refit.refit_conv2, refit.block_io,
            refit.refit_block, refit.augmented, network._fit_bn, network._fit_block,
            network._prune_and_refit, network.prune_network, network.prune_and_score,
            network.score, network.correct, network.removal_accuracy, metrics.predict)


def measuring_functions() -> tuple:
    """What times networks and training steps (looked up when called)."""
    from helpers import metrics, stats
    from helpers.study import network

    return (metrics._pass_seconds, metrics.compare_latency, stats.ratio_interval,
            network.fold_bn, network.pooled_samples, network.latency_table,
            network.speed_table, network.speedups, compare_step_seconds)


def latency_functions() -> tuple:
    """What measures and chooses a latency plan (looked up when called): the ONNX Runtime
    export and session, the networks in each runtime, the timings, the stage sensitivity and
    the plan search (:mod:`helpers.study.latency_plans`' cache keys)."""
    from helpers import onnx_runtime
    from helpers.study import latency, latency_plans, latency_tables

    return (onnx_runtime, latency_tables.in_runtime, latency_tables.network,
            latency_tables.time_in_process, latency_plans.timings,
            latency_plans.stage_sensitivity, latency_plans.choose, latency.predict_ms,
            latency.narrowed_table, latency.latency_plans, latency.residual_latency_plans,
            latency.predicted_loss, latency.removal_aware_loss)


def training_functions() -> tuple:
    """The trainer a fine-tuning run is made by (looked up when called)."""
    from helpers import train as t

    return (t.train, t._train, t.lr_at, t.make_optimizer, t.loss_fn, t.EagerStep,
            t.GraphedStep, t.make_step)


def state_path(folder: str | os.PathLike, name: str, key: Mapping) -> Path:
    """``folder / finetune_state_<name>_<digest(key)>.pt`` (git-ignored: ``*_state*.pt``)."""
    return Path(folder) / f"finetune_state_{name}_{digest(dict(key))}.pt"


def epochs_done(path: str | os.PathLike) -> int:
    """Epochs a fine-tuning state file holds (0 when there is none)."""
    if not os.path.exists(path):
        return 0
    return len(torch.load(path, map_location="cpu", weights_only=True)["history"])


@dataclass
class Finetuned:
    """A finished fine-tuning run."""

    model: ResNet  # the fine-tuned student (eval mode)
    history: list[dict]  # one record per epoch, with val_accuracy and seconds
    path: Path  # its state file
    epochs_run: int  # epochs trained by this call (0: found finished)

    @property
    def train_seconds(self) -> float:
        """Seconds of training over all epochs, also those of earlier, interrupted calls."""
        return float(sum(r["seconds"] for r in self.history))


def finetune(student: ResNet, data: Splits, cfg: TrainConfig, folder: str | os.PathLike,
             name: str, key: Mapping, teacher: nn.Module | None = None,
             device: str | torch.device | None = None, progress: bool = True,
             callback: Callable[[dict], None] | None = None) -> Finetuned:
    """Fine-tune ``student`` in place, resumably; a finished run is loaded, not repeated.

    Args:
        folder, name, key: the state file is ``state_path(folder, name, key | the schedule |
            the student | the code)``: ``key`` should identify the starting point (e.g. the
            unpruned network's :func:`model_fingerprint`, the plan, the strategy, the
            repairs); the student's own :func:`model_fingerprint` (its weights as given) and
            the :func:`code_version` of the pruning and training code are added, so that a
            student pruned otherwise, or code changed since, starts a new run. The trainer
            itself refuses to resume a file written with another config, data or teacher
            presence.
        teacher: distil from it (:func:`helpers.train.train`); None: cross-entropy only.
    """
    full_key = dict(key) | {"config": dataclasses.asdict(cfg), "teacher": teacher is not None,
                            "student": model_fingerprint(student),
                            "code_version": code_version(*pruning_functions(),
                                                         *training_functions())}
    path = state_path(folder, name, full_key)
    before = epochs_done(path)
    history = train(student, data, cfg, device, checkpoint=path, teacher=teacher,
                    callback=callback, progress=progress)
    return Finetuned(student.eval(), history, path, len(history) - before)


class ResultCache:
    """Measured values kept on disk by key, so that a re-run re-uses what it already measured.

    ``cache(key, compute)`` returns the value stored under ``key`` (a JSON-like mapping, hashed
    with :func:`digest` together with ``code``), or computes, stores and returns it. ``key``
    should name the inputs (e.g. the network's :func:`model_fingerprint`); ``code`` (by
    default the :func:`code_version` of the pruning, repair, scoring and timing code, as it is
    when the cache is opened) is added to every key, so that values computed by other code are
    computed again. Values may be plain Python values and tensors (stored with
    ``torch.save``, read with ``weights_only=True``); the file is rewritten atomically after
    every new value, so an interruption loses at most one.
    """

    def __init__(self, path: str | os.PathLike, code: str | None = None):
        self.path = Path(path)
        self.code = code if code is not None else code_version(*pruning_functions(),
                                                               *measuring_functions())
        self.values = (torch.load(self.path, map_location="cpu", weights_only=True)
                       if self.path.exists() else {})
        self.computed = 0  # values computed (not found) by this object

    def __len__(self) -> int:
        return len(self.values)

    def __call__(self, key: Mapping, compute: Callable[[], object]):
        k = digest(dict(key) | {"code_version": self.code})
        if k not in self.values:
            self.values[k] = compute()
            self.computed += 1
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            torch.save(self.values, tmp)
            os.replace(tmp, self.path)
        return self.values[k]


def epoch_printer(label: str) -> Callable[[dict], None]:
    """A training callback printing one short line per epoch (instead of a progress bar,
    whose redraws would bloat a saved notebook)."""
    def show(record: dict) -> None:
        print(f"{label}: epoch {record['epoch']}, {record['seconds']:.0f} s, train loss "
              f"{record['train_loss']:.3f}, val {100 * record.get('val_accuracy', np.nan):.2f}% "
              f"of {record.get('val_images', 0):,}", flush=True)
    return show


# --------------------------------------------------------------------------- cost per step


def compare_step_seconds(setups: Mapping[str, tuple[nn.Module, nn.Module | None]],
                         cfg: TrainConfig, steps: int = 5, rounds: int = 3, warmup: int = 1,
                         device: str | torch.device = "cpu", seed: int = 0) -> pd.DataFrame:
    """Seconds per training step (forward, backward, SGD step) of several set-ups, interleaved.

    Each set-up is ``(student, teacher or None)``; copies are trained, so nothing given is
    changed. A step is exactly the trainer's (:class:`helpers.train.EagerStep`: bf16 autocast
    where the device has bf16 units, channels-last, the teacher's forward under no_grad) on a
    batch of ``cfg.batch_size`` augmented random images. After ``warmup`` untimed steps each,
    ``rounds`` rounds time ``steps`` steps of every set-up in turn.

    Returns one row per set-up: ``setup, seconds_per_step`` (median over rounds), ``min, max``
    and ``bf16``.
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, generator=g)
    x = normalize(random_crop_flip(x, generator=g)).to(device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (cfg.batch_size,), generator=g).to(device)
    runs = {}
    for name, (student, teacher) in setups.items():
        s = copy.deepcopy(student).to(device).to(memory_format=torch.channels_last).train()
        t = None if teacher is None else copy.deepcopy(teacher).to(device).to(
            memory_format=torch.channels_last).eval()
        runs[name] = (EagerStep(s, cfg, device, t), make_optimizer(s, cfg, device))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(warmup + rounds):
        for name, (step, opt) in runs.items():
            n = 1 if r < warmup else steps
            t0 = time.perf_counter()
            for _ in range(n):
                step(x, y)
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) / n)
    return pd.DataFrame([{"setup": name, "seconds_per_step": float(np.median(t)),
                          "min": float(min(t)), "max": float(max(t)),
                          "bf16": runs[name][0].bf16} for name, t in times.items()])
