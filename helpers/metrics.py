"""Measuring a model: parameters, MACs, accuracy (always with its image count), latency
(interleaved across models, with its spread)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from helpers.data import normalize
from helpers.stats import accuracy_interval, format_accuracy

INPUT_SHAPE = (1, 3, 32, 32)


@contextmanager
def ieee_fp32():
    """Run CUDA convolutions and matmuls in full IEEE fp32 inside the block (no TF32).

    PyTorch lets cuDNN use TF32 tensor cores for fp32 convolutions by default (10 mantissa
    bits); the sweep and the naive reference both run inside this context so that they compute
    the same thing. Uses one API throughout (mixing the legacy ``allow_tf32`` flags with the
    newer ``fp32_precision`` settings is an error in recent PyTorch); restores on exit.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):  # torch >= 2.9
        knobs = [cudnn.conv, cudnn.rnn, matmul]
        saved = [k.fp32_precision for k in knobs]
        for k in knobs:
            k.fp32_precision = "ieee"
        try:
            yield
        finally:
            for k, value in zip(knobs, saved, strict=True):
                k.fp32_precision = value
    else:
        saved = cudnn.allow_tf32, matmul.allow_tf32
        cudnn.allow_tf32, matmul.allow_tf32 = False, False
        try:
            yield
        finally:
            cudnn.allow_tf32, matmul.allow_tf32 = saved


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def _flop_counts(model: nn.Module, input_shape=INPUT_SHAPE) -> dict[str, dict]:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(input_shape, device=device))
    model.train(was_training)
    return counter.get_flop_counts()


def count_macs(model: nn.Module, input_shape=INPUT_SHAPE) -> int:
    """Multiply-accumulates of one forward pass (FlopCounterMode counts 2 FLOPs per MAC).

    Convolutions and the linear layer; BN, ReLU, additions and pooling are not counted, as in
    the usual ResNet20 figure of 40.55 M.
    """
    return sum(_flop_counts(model, input_shape)["Global"].values()) // 2


def layer_table(model: nn.Module, input_shape=INPUT_SHAPE) -> pd.DataFrame:
    """One row per leaf module: type, output shape, parameters and MACs (batch 1)."""
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(
        name, tuple(o.shape[1:]))) for name, m in model.named_modules()
        if not list(m.children()) and not isinstance(m, (nn.Identity, nn.Sequential))]
    try:
        counts = _flop_counts(model, input_shape)
    finally:
        for h in hooks:
            h.remove()
    prefix = type(model).__name__ + "."
    rows = []
    for name, shape in shapes.items():
        module = model.get_submodule(name)
        macs = sum(counts.get(prefix + name, {}).values()) // 2
        rows.append({"layer": name, "type": type(module).__name__, "output": shape,
                     "params": count_params(module) if list(module.parameters()) else 0,
                     "MACs": macs})
    return pd.DataFrame(rows)


LAYER_PARTS = ("stem conv", "block conv1", "block conv2", "shortcut", "batch norm", "classifier")
STAGES = ("stem", "stage 1", "stage 2", "stage 3", "classifier")


def layer_part(name: str) -> str:
    """The part of ResNet20 a layer of :func:`layer_table` belongs to (one of LAYER_PARTS)."""
    last = name.rsplit(".", 1)[-1]
    if ".shortcut" in name:  # option A's PadShortcut, or conv3x3's projection conv + BN
        return "shortcut"
    if last in ("conv1", "conv2"):
        return f"block {last}"
    if last.startswith("bn"):
        return "batch norm"
    parts = {"conv": "stem conv", "fc": "classifier"}
    if name not in parts:
        raise ValueError(f"{name!r} is not a layer name of ResNet20")
    return parts[name]


def layer_stage(name: str) -> str:
    """The stage of a layer: 'stem', 'stage 1'..'stage 3' (layer1..layer3), 'classifier'."""
    head = name.split(".", 1)[0]
    if head.startswith("layer") and head[5:].isdigit():
        return f"stage {head[5:]}"
    return {"conv": "stem", "bn": "stem", "fc": "classifier"}.get(head) or "other"


def layer_groups(table: pd.DataFrame, by: str = "part") -> pd.DataFrame:
    """Parameters and MACs of a :func:`layer_table` summed per part (or per stage), with shares.

    ``by="part"`` groups by :func:`layer_part`, ``by="stage"`` by :func:`layer_stage`; rows
    come in the order of LAYER_PARTS or STAGES, and the columns are ``params``, ``MACs``,
    ``% of params`` and ``% of MACs``.
    """
    key = {"part": (layer_part, LAYER_PARTS), "stage": (layer_stage, STAGES)}
    if by not in key:
        raise ValueError(f"by must be 'part' or 'stage', got {by!r}")
    group, order = key[by]
    sums = table.groupby(table.layer.map(group).rename(by))[["params", "MACs"]].sum()
    sums = sums.reindex([g for g in order if g in sums.index] +
                        [g for g in sums.index if g not in order])
    sums["% of params"] = 100 * sums.params / sums.params.sum()
    sums["% of MACs"] = 100 * sums.MACs / sums.MACs.sum()
    return sums


@dataclass(frozen=True)
class Accuracy:
    """An accuracy together with the number of images it was measured on."""

    correct: int
    images: int

    @property
    def value(self) -> float:
        return self.correct / self.images

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Wilson score interval of the accuracy (:func:`helpers.stats.accuracy_interval`)."""
        return accuracy_interval(self.correct, self.images, level)

    def __str__(self) -> str:
        return format_accuracy(self.correct, self.images)

    def __float__(self) -> float:
        return self.value


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 1000,
            device: torch.device | str | None = None, bf16: bool = False) -> Tensor:
    """Logits (float32, on the CPU) for uint8 images, in eval mode, batched.

    In fp32 unless ``bf16``: on CUDA, TF32 convolutions and matmuls are switched off for the
    call (and restored), so that "fp32" means fp32 on every device.
    """
    device = torch.device(device) if device else next(  # an ONNX Runtime session: the CPU
        (p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    out = []
    try:
        with ieee_fp32(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for i in range(0, len(images), batch_size):
                x = normalize(images[i:i + batch_size].to(device, non_blocking=True))
                out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> Accuracy:
    """Top-1 accuracy of ``model`` on uint8 ``images``, with the image count."""
    pred = predict(model, images, batch_size).argmax(1)
    return Accuracy(int((pred == labels.cpu()).sum()), len(labels))


def per_class_accuracy(logits: Tensor, labels: Tensor, classes: list[str]) -> pd.DataFrame:
    """Accuracy and image count of every class."""
    pred = logits.argmax(1)
    rows = [{"class": c, "images": int((labels == i).sum()),
             "accuracy": float((pred[labels == i] == i).float().mean())}
            for i, c in enumerate(classes)]
    return pd.DataFrame(rows)


@contextmanager
def num_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)`` (None: leave as is); restore after."""
    saved = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)


@functools.cache
def steady_allocator() -> bool:
    """Stop glibc's malloc from handing large freed blocks back to the OS; True if it worked.

    By default glibc serves big allocations (a batch's activations: megabytes) with fresh
    ``mmap`` pages and returns them on free, so every forward pass page-faults its activations
    anew, how often depending on the allocator's adaptive thresholds: CPU timings of the same
    network then swing by 20% from one measurement to the next. Raising the mmap and trim
    thresholds to 1 GiB keeps the pages in the process, as jemalloc or tcmalloc (PyTorch's CPU
    performance guide recommends them) would. It applies to the whole process from now on, and
    is a no-op (False) where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)
                    and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. Timers call it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _pass_seconds(model: nn.Module, x: Tensor, number: int) -> float:
    """Seconds per forward pass, averaged over ``number`` consecutive passes."""
    synchronize(x.device)
    t0 = time.perf_counter()
    for _ in range(number):
        model(x)
    synchronize(x.device)
    return (time.perf_counter() - t0) / number


def latency_ms(model: nn.Module, batch_size: int, device: str | torch.device = "cpu",
               repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock milliseconds of one eval forward pass of a random batch (one model).

    The model is moved to ``device`` and left there in eval mode. To compare models, use
    :func:`compare_latency`, which interleaves them and reports the spread.
    """
    table = compare_latency({"model": model}, batch_size, device, repeats, warmup, number=1)
    return float(table.median_ms.iloc[0])


def compare_latency(models: Mapping[str, nn.Module], batch_size: int,
                    device: str | torch.device = "cpu", repeats: int = 7, warmup: int = 2,
                    number: int | None = None, threads: int | None = None,
                    min_sample_s: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Forward-pass latency of several models, measured round-robin, with its spread.

    Every model is moved to ``device`` in eval mode, channels-last (the inputs' layout) and fed
    the same random batch. After ``warmup`` untimed samples of each, ``repeats`` rounds time
    every model in turn: one sample is the mean of ``number`` consecutive passes (by default
    enough for the first model, normally the largest, to run ``min_sample_s``, so that the
    clock's resolution and the per-call jitter of a batch of 1 do not dominate).
    Interleaving makes a slow phase of the machine (another process, a clock change) hit all
    models alike, instead of whichever was being timed then; each round visits the models in
    a new random order (seeded by ``seed``), so that no model always follows the same one. On
    the CPU the allocator is made steady first (:func:`steady_allocator`).

    Args:
        threads: CPU threads for the measurement (``torch.set_num_threads``, restored after);
            None keeps the current setting. The frame records the number used.

    Returns one row per model: ``model, batch_size, threads, number, repeats, median_ms,
    q1_ms, q3_ms, min_ms, max_ms`` (milliseconds per forward pass; q1/q3: the quartiles) and
    ``samples_ms``, the list of the ``repeats`` samples in round order (sample ``i`` of every
    model comes from the same round: :func:`helpers.stats.ratio_interval` pairs them).
    """
    if not models:
        raise ValueError("compare_latency needs at least one model")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    device = torch.device(device)
    if device.type == "cpu":
        steady_allocator()
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    nets = {name: m.to(device).eval().to(memory_format=torch.channels_last)
            for name, m in models.items()}
    with num_threads(threads if device.type == "cpu" else None) as used:
        if number is None:
            first = next(iter(nets.values()))
            _pass_seconds(first, x, 1)  # the first call pays one-off costs (kernel selection)
            number = max(1, math.ceil(min_sample_s / max(_pass_seconds(first, x, 1), 1e-6)))
        times: dict[str, list[float]] = {name: [] for name in nets}
        names, rng = list(nets), np.random.default_rng(seed)
        for r in range(warmup + repeats):
            for i in rng.permutation(len(names)):
                name = names[i]
                seconds = _pass_seconds(nets[name], x, number)
                if r >= warmup:
                    times[name].append(1000 * seconds)
    rows = []
    for name, t in times.items():
        q1, median, q3 = np.percentile(t, [25, 50, 75])
        rows.append({"model": name, "batch_size": batch_size, "threads": used, "number": number,
                     "repeats": repeats, "median_ms": float(median), "q1_ms": float(q1),
                     "q3_ms": float(q3), "min_ms": float(min(t)), "max_ms": float(max(t)),
                     "samples_ms": [float(v) for v in t]})
    return pd.DataFrame(rows)
