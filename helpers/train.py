"""A fast CIFAR-10 trainer: data resident on the device, augmentation on the device, bf16.

Both use channels_last and autocast to bfloat16 where bf16 pays (:func:`bf16_supported`): on a
CUDA GPU of compute capability 8.0 or newer, on a CPU only where a short interleaved measurement
of training steps shows bf16 faster than fp32 (about 4x on one host with AMX, 0.8-0.9x on one
with AVX512-BF16 but no AMX).

On CUDA the forward and backward pass of a training step is captured once in a CUDA graph and
replayed (ResNet20 at batch 512 is launch-bound: replaying one graph replaces hundreds of kernel
launches), and the fused SGD step runs after it. On the CPU the same step runs eagerly.

Every epoch draws its shuffling and augmentation from a generator seeded by (seed, epoch), so a
run resumed from a checkpoint continues as the uninterrupted run would have: bit for bit on the
CPU; on CUDA up to the non-determinism of cuDNN's autotuned kernels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.data import Splits, fingerprint, normalize, random_crop_flip
from helpers.device import default_device
from helpers.metrics import predict
from helpers.models import resnet20


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a run (the defaults are the full 200-epoch recipe)."""

    epochs: int = 200
    batch_size: int = 512
    lr: float = 0.4
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # conv and linear weights only, not BN or biases
    warmup_epochs: float = 5.0  # linear warmup from 0, then cosine to 0
    label_smoothing: float = 0.0
    seed: int = 0
    bf16: bool = True  # autocast to bfloat16 where it pays on the device (see bf16_supported)
    cuda_graph: bool = True  # capture forward+backward in a CUDA graph (CUDA only)
    checkpoint_every: int = 10  # epochs between checkpoints (and always at the end)
    distill_temperature: float = 4.0  # used only with a teacher
    distill_weight: float = 0.9  # share of the distillation loss when a teacher is given


def finetune_config(epochs: int = 15, lr: float = 0.04, **kw) -> TrainConfig:
    """A short schedule for fine-tuning a pruned model: small peak lr, one warmup epoch."""
    return TrainConfig(epochs=epochs, lr=lr, warmup_epochs=min(1.0, epochs / 10), **kw)


def bf16_supported(device: torch.device | str, batch_size: int = 256) -> bool:
    """Whether autocasting to bfloat16 pays on ``device``, by capability and by measurement.

    CUDA: compute capability 8.0 or newer (Ampere on), where bf16 runs natively; never
    ``torch.cuda.is_bf16_supported()``, which also counts emulation (it is True on a T4, sm_75,
    where cuDNN has no bf16 convolutions). CPU: bf16 units (:func:`cpu_has_bf16_units`) and
    bf16 training steps measured faster than fp32 at ``batch_size`` (:func:`cpu_bf16_faster`,
    measured once per process and batch size).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return cpu_has_bf16_units() and cpu_bf16_faster(batch_size)
    return False


def _cpu_step_seconds(model: nn.Module, x: Tensor, y: Tensor, bf16: bool, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16, cache_enabled=False):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


@functools.cache
def cpu_bf16_faster(batch_size: int = 256, steps: int = 2, rounds: int = 3) -> bool:
    """bf16 training steps of ResNet20 faster than fp32 on this CPU: fp32 and bf16 take turns
    (``rounds`` rounds of ``steps`` steps each, after one warm-up round), medians compared.

    Costs about ``4 * (rounds + 1) * steps`` fp32 steps (some 10 s at batch 256 on 2 cores).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, generator=g).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    model = resnet20("conv3x3").to(memory_format=torch.channels_last).train()
    times = {False: [], True: []}
    for r in range(rounds + 1):
        for bf16 in (False, True):
            seconds = _cpu_step_seconds(model, x, y, bf16, steps)
            if r:  # round 0 warms up both
                times[bf16].append(seconds)
    return statistics.median(times[True]) < statistics.median(times[False])


@functools.cache
def cpu_has_bf16_units() -> bool:
    """AMX-BF16 or AVX512-BF16 in the CPU flags, and oneDNN's bf16 kernels usable by torch."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: trust torch's report of the vector extension
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")
    return "amx_bf16" in flags or "avx512_bf16" in flags


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on conv/linear weights (ndim > 1) only."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           fused=device.type == "cuda")


def loss_fn(logits: Tensor, labels: Tensor, cfg: TrainConfig,
            teacher_logits: Tensor | None = None) -> Tensor:
    """Cross-entropy, or its mix with Hinton et al.'s distillation loss when a teacher is given.

    The distillation term is ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``; the ``T^2``
    keeps its gradients on the scale of the cross-entropy's.
    """
    ce = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
    if teacher_logits is None:
        return ce
    t = cfg.distill_temperature
    student = F.log_softmax(logits.float() / t, 1)
    kd = F.kl_div(student, F.log_softmax(teacher_logits.float() / t, 1), reduction="batchmean",
                  log_target=True) * t * t
    return (1 - cfg.distill_weight) * ce + cfg.distill_weight * kd


class EagerStep:
    """Forward + backward of one batch; returns the (detached) loss and logits.

    ``bf16``: None (the trainer) autocasts to bfloat16 when ``cfg.bf16`` asks for it and it
    pays on the device (:func:`bf16_supported`); True or False forces the precision (a
    benchmark timing bf16 against fp32 must get what it names).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device,
                 teacher: nn.Module | None = None, bf16: bool | None = None):
        self.model, self.cfg, self.device, self.teacher = model, cfg, device, teacher
        self.bf16 = (cfg.bf16 and bf16_supported(device, cfg.batch_size)) if bf16 is None \
            else bf16

    def forward_backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16,
                            cache_enabled=False):
            teacher_logits = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(x)
            logits = self.model(x)
            loss = loss_fn(logits, y, self.cfg, teacher_logits)
        loss.backward()
        return loss.detach(), logits.detach()

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.model.zero_grad(set_to_none=True)
        return self.forward_backward(x, y)


class GraphedStep(EagerStep):
    """:class:`EagerStep` captured once in a CUDA graph and replayed on static input buffers.

    The gradients live in the graph's memory pool and are overwritten by every replay, so
    nobody may call ``zero_grad`` after capture. Warm-up passes run on zeros and the BN
    statistics they touch are restored, so capture leaves the model as it found it.
    """

    def __init__(self, model, cfg, device, teacher, batch_size: int, bf16: bool | None = None):
        super().__init__(model, cfg, device, teacher, bf16)
        self.x = torch.zeros(batch_size, 3, 32, 32, device=device).contiguous(
            memory_format=torch.channels_last)
        self.y = torch.zeros(batch_size, dtype=torch.long, device=device)
        saved = [b.detach().clone() for b in model.buffers()]
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    model.zero_grad(set_to_none=True)
                    self.forward_backward(self.x, self.y)
            torch.cuda.current_stream(device).wait_stream(side)
            model.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss, self.logits = self.forward_backward(self.x, self.y)
        except Exception:  # leave the model as it was, so that an eager fallback starts clean
            torch.cuda.synchronize(device)
            model.zero_grad(set_to_none=True)
            raise
        finally:
            with torch.no_grad():
                for b, s in zip(model.buffers(), saved, strict=True):
                    b.copy_(s)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss, self.logits


def make_step(model, cfg, device, teacher=None, bf16: bool | None = None) -> EagerStep:
    """A CUDA-graphed step when possible (falls back to eager with a warning), else eager;
    ``bf16`` as in :class:`EagerStep`.

    Which one was made is visible as ``isinstance(step, GraphedStep)`` (tests check it).
    """
    if device.type == "cuda" and cfg.cuda_graph:
        try:
            return GraphedStep(model, cfg, device, teacher, cfg.batch_size, bf16)
        except Exception as e:  # capture is refused by some ops/drivers: stay correct
            warnings.warn(f"CUDA graph capture failed ({e}); training eagerly", stacklevel=2)
    return EagerStep(model, cfg, device, teacher, bf16)


def _run_id(cfg: TrainConfig, images: Tensor, labels: Tensor, teacher: nn.Module | None) -> dict:
    """What a checkpoint must agree on to be resumed: config, training data, teacher or not."""
    return dataclasses.asdict(cfg) | {"train_images": len(labels),
                                      "data": fingerprint(images, labels),
                                      "teacher": teacher is not None}


def _save_checkpoint(path, model, optimizer, run_id, history) -> None:
    tmp = f"{path}.tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "config": run_id, "history": history}, tmp)
    os.replace(tmp, path)  # atomic: an interruption never leaves a half-written checkpoint


def _resume(path, model, optimizer, run_id) -> list[dict]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config"] != run_id:
        diff = {k: (v, state["config"].get(k)) for k, v in run_id.items()
                if state["config"].get(k) != v}
        raise ValueError(f"checkpoint {path} was written by a run with another config or data "
                         f"(name: (now, then)) {diff}; delete it or use the same config")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["history"]


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, bf16: bool = False,
             split: str = "val") -> dict:
    """Loss and accuracy (eval mode) with the number of images, keys prefixed by ``split``.

    ``bf16=False`` measures in fp32 (on CUDA with TF32 switched off, see
    :func:`helpers.metrics.predict`); the trainer's per-epoch curve uses bf16 where it trains
    in bf16, to save time. Reported accuracies come from fp32.
    """
    logits = predict(model, images, bf16=bf16)
    labels = labels.cpu()
    return {f"{split}_loss": F.cross_entropy(logits, labels).item(),
            f"{split}_accuracy": (logits.argmax(1) == labels).float().mean().item(),
            f"{split}_images": len(labels)}


def train(model: nn.Module, data: Splits, cfg: TrainConfig = TrainConfig(),
          device: str | torch.device | None = None, checkpoint: str | os.PathLike | None = None,
          teacher: nn.Module | None = None, callback: Callable[[dict], None] | None = None,
          progress: bool = True) -> list[dict]:
    """Train ``model`` in place on ``data`` and return the history, one dict per epoch.

    Every epoch is measured on ``data.val_images`` (when there are any); the test images are
    never looked at here.

    Args:
        checkpoint: file to save the run to every ``cfg.checkpoint_every`` epochs; if it
            exists, training resumes from it (same config required) to the same result.
        teacher: a trained model to distill from (fine-tuning); kept in eval mode.
        callback: called with each epoch's record (e.g. to draw live curves).
    """
    device = torch.device(device) if device else default_device()
    benchmark = torch.backends.cudnn.benchmark
    try:  # fixed shapes: let cuDNN pick its fastest kernels, then restore the global flag
        torch.backends.cudnn.benchmark = benchmark or device.type == "cuda"
        return _train(model, data, cfg, device, checkpoint, teacher, callback, progress)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _train(model, data, cfg, device, checkpoint, teacher, callback, progress) -> list[dict]:
    model.to(device).to(memory_format=torch.channels_last).train()
    if teacher is not None:
        teacher.to(device).to(memory_format=torch.channels_last).eval()
    x_train, y_train = data.train_images.to(device), data.train_labels.to(device)
    steps = len(x_train) // cfg.batch_size  # the incomplete last batch is dropped
    if steps == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the "
                         f"{len(x_train)} training images")
    optimizer = make_optimizer(model, cfg, device)
    run_id = _run_id(cfg, data.train_images, data.train_labels, teacher)
    history = _resume(checkpoint, model, optimizer, run_id) if checkpoint and os.path.exists(
        checkpoint) else []
    if checkpoint:
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
    step = make_step(model, cfg, device, teacher)
    warmup = round(cfg.warmup_epochs * steps)
    bar = tqdm(range(len(history), cfg.epochs), desc="epochs", disable=not progress,
               initial=len(history), total=cfg.epochs)
    for epoch in bar:
        g = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(x_train), device=device, generator=g)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        t0 = time.perf_counter()
        for i in range(steps):
            lr = lr_at(epoch * steps + i, cfg.epochs * steps, warmup, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x = normalize(random_crop_flip(x_train[idx], generator=g))
            y = y_train[idx]
            loss, logits = step(x.contiguous(memory_format=torch.channels_last), y)
            optimizer.step()
            loss_sum += loss
            correct += (logits.argmax(1) == y).sum()
        train_loss = loss_sum.item() / steps  # one synchronisation per epoch
        seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} in epoch {epoch + 1}: the run diverged "
                f"(lr {cfg.lr} may be too high for batch {cfg.batch_size}); the last good "
                f"checkpoint is {checkpoint or 'not kept (no checkpoint path given)'}")
        record = {"epoch": epoch + 1, "train_loss": train_loss,
                  "train_accuracy": correct.item() / (steps * cfg.batch_size), "lr": lr,
                  "seconds": seconds}
        if len(data.val_images):
            record |= evaluate(model, data.val_images, data.val_labels, bf16=step.bf16)
        history.append(record)
        bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{record.get('val_accuracy', 0):.3f}")
        if checkpoint and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            _save_checkpoint(checkpoint, model, optimizer, run_id, history)
        if callback is not None:
            callback(record)
        model.train()
    return history
