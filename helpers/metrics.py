"""Measuring a model: parameters, MACs, accuracy (always with its image count), latency."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from helpers.data import normalize

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

    def __str__(self) -> str:
        return f"{100 * self.value:.2f}% of {self.images:,} images"

    def __float__(self) -> float:
        return self.value


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 1000,
            device: torch.device | str | None = None, bf16: bool = False) -> Tensor:
    """Logits (float32, on the CPU) for uint8 images, in eval mode, batched.

    In fp32 unless ``bf16``: on CUDA, TF32 convolutions and matmuls are switched off for the
    call (and restored), so that "fp32" means fp32 on every device.
    """
    device = torch.device(device) if device else next(model.parameters()).device
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


@torch.no_grad()
def latency_ms(model: nn.Module, batch_size: int, device: str | torch.device = "cpu",
               repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock milliseconds of one eval forward pass of a random batch.

    The model is moved to ``device`` and left there in eval mode.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]
