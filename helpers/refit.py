"""Least-squares reconstruction of a pruned block's conv2 ("refit").

Pruning conv1 of a BasicBlock removes channels of the activation ``h = relu(bn1(conv1(x)))``
that conv2 reads. Whatever rule chose the surviving channels, conv2's weights were trained for
all of them; the remaining ones can carry part of what the removed ones did if conv2 is re-fit.
A 3x3 convolution is a linear map of the unfolded input (``F.unfold``: every output pixel reads
a ``C x 3 x 3`` patch), so with ``X`` the unfolded pruned activations (rows: images x pixels,
columns: ``C x 9``) and ``Y`` the UNPRUNED block's conv2 output (before bn2) at the same pixels,
the best new weights solve the ridge-regularised least squares problem

    W = argmin ||Y - X W^T||^2 + lam ||W||^2  =>  W^T = (X^T X + lam I)^{-1} X^T Y

from the normal equations ``X^T X`` and ``X^T Y``, accumulated in float64 over batches of
images (the unfolded rows never need to be held at once). ``lam`` is ``ridge`` times the mean
diagonal of ``X^T X``, so that the default means the same thing in every block. This is the
reconstruction step of ThiNet (Luo et al., 2017) and of He et al.'s channel pruning (2017),
used here after any selection rule of :mod:`helpers.pruning`.

For strategies that keep original filters unchanged, the pruned ``X`` is a subset of the
columns of the unpruned one, so one pair of dense normal equations per block serves every
subset (:meth:`NormalEquations.subset`): the per-block sweep solves each point on a sub-matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.data import normalize, random_crop_flip
from helpers.models import BLOCK_NAMES, BasicBlock

RIDGE = 1e-4  # lam = RIDGE x mean diagonal of X^T X
REFIT_IMAGES = 1024  # augmented training images a refit is computed on


@dataclass(frozen=True)
class RefitReport:
    """What a refit did: the calibration MSE of conv2's output before and after."""

    mse_before: float  # mean squared error per output value, the weights given
    mse_after: float  # the same with the weights left in place (<= mse_before)
    rows: int  # unfolded rows (images x output pixels) the normal equations sum over
    ridge: float  # lam actually used
    refit: bool  # False: the solve was not better, the old weights were kept


@dataclass
class NormalEquations:
    """``X^T X`` (D, D), ``X^T Y`` (D, C_out) and ``Y^T Y`` (a scalar) in float64.

    ``D = C_in x 9``: columns ordered like ``conv2.weight.flatten(1)`` (channel, then the 3x3
    kernel positions).
    """

    xtx: Tensor
    xty: Tensor
    yty: float
    rows: int

    def subset(self, channels: Tensor | np.ndarray | list[int]) -> NormalEquations:
        """The normal equations of the input channels ``channels`` only (9 columns each)."""
        ch = torch.as_tensor(np.asarray(channels), dtype=torch.long, device=self.xtx.device)
        cols = (ch[:, None] * 9 + torch.arange(9, device=ch.device)).flatten()
        return NormalEquations(self.xtx[cols][:, cols], self.xty[cols], self.yty, self.rows)

    def mse(self, weight: Tensor) -> float:
        """Mean squared error of conv2 weights (C_out, C_in, 3, 3) on the calibration data."""
        w = weight.detach().flatten(1).to(self.xtx)  # (C_out, D)
        sse = self.yty - 2 * (w * self.xty.T).sum() + ((w @ self.xtx) * w).sum()
        return max(float(sse), 0.0) / (self.rows * w.shape[0])

    def solve(self, ridge: float = RIDGE) -> tuple[Tensor, float]:
        """Ridge least-squares weights (C_out, D) in float64, and the ``lam`` used."""
        d = self.xtx.shape[0]
        lam = ridge * float(self.xtx.diagonal().mean()) if d else 0.0
        a = self.xtx + lam * torch.eye(d, dtype=self.xtx.dtype, device=self.xtx.device)
        if lam == 0:  # no regularisation asked for: least squares of least norm
            return (torch.linalg.pinv(a) @ self.xty).T, lam
        return torch.linalg.solve(a, self.xty).T, lam


def _check_block(block: nn.Module) -> None:
    if not isinstance(block, BasicBlock):
        raise TypeError(f"refit needs a BasicBlock, got {type(block).__name__}")


def _check_pair(inputs: Tensor, targets: Tensor, block: BasicBlock) -> None:
    if inputs.ndim != 4 or targets.ndim != 4 or len(inputs) != len(targets) or not len(inputs):
        raise ValueError(f"inputs (N, C_in, H, W) and targets (N, C_out, H', W') must hold the "
                         f"same N >= 1 images, got {tuple(inputs.shape)} and "
                         f"{tuple(targets.shape)}")
    if inputs.shape[1] != block.conv1.in_channels or targets.shape[1] != block.conv2.out_channels:
        raise ValueError(f"the block reads {block.conv1.in_channels} channels and conv2 writes "
                         f"{block.conv2.out_channels}; got inputs of {inputs.shape[1]} and "
                         f"targets of {targets.shape[1]} channels")


@torch.no_grad()
def conv2_input(block: BasicBlock, x: Tensor) -> Tensor:
    """``relu(bn1(conv1(x)))`` in eval mode, in float32: what conv2 reads."""
    w = block.conv1.weight
    h = F.conv2d(x.to(w.device, w.dtype), w, None, block.conv1.stride, block.conv1.padding)
    bn = block.bn1
    h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return F.relu(h).float()


@torch.no_grad()
def conv_normal_equations(conv: nn.Conv2d, inputs: Tensor, targets: Tensor,
                          batch_size: int = 256, read=None) -> NormalEquations:
    """Accumulate the normal equations of any 3x3 ``conv`` over batches, in float64: what it
    reads is ``inputs`` (or ``read(inputs batch)``), what it should write is ``targets``."""
    dev = conv.weight.device
    d = conv.in_channels * 9
    xtx = torch.zeros(d, d, dtype=torch.float64, device=dev)
    xty = torch.zeros(d, conv.out_channels, dtype=torch.float64, device=dev)
    yty, rows = 0.0, 0
    for i in range(0, len(inputs), batch_size):
        h = inputs[i:i + batch_size].to(dev).float()
        h = read(h) if read is not None else h
        x = F.unfold(h, 3, padding=conv.padding, stride=conv.stride)  # (n, D, L)
        x = x.transpose(1, 2).reshape(-1, d).double()
        y = targets[i:i + batch_size].to(dev).double().flatten(2).transpose(1, 2)
        y = y.reshape(-1, conv.out_channels)
        if len(x) != len(y):
            raise ValueError(f"targets of {tuple(targets.shape[2:])} pixels do not match "
                             f"the convolution's output for these inputs")
        xtx += x.T @ x
        xty += x.T @ y
        yty += float((y * y).sum())
        rows += len(x)
    return NormalEquations(xtx, xty, yty, rows)


@torch.no_grad()
def normal_equations(block: BasicBlock, inputs: Tensor, targets: Tensor,
                     batch_size: int = 256) -> NormalEquations:
    """Accumulate the normal equations of conv2 of ``block`` over batches, in float64.

    ``inputs`` enter the block; ``targets`` are the conv2 outputs (before bn2) to reproduce.
    """
    _check_block(block)
    _check_pair(inputs, targets, block)
    return conv_normal_equations(block.conv2, inputs, targets, batch_size,
                                 read=lambda x: conv2_input(block, x))


@torch.no_grad()
def apply_refit(conv2: nn.Conv2d, eq: NormalEquations, ridge: float = RIDGE) -> RefitReport:
    """Solve ``eq`` and put the weights in ``conv2`` (in place, same dtype/device/layout),
    unless they do not lower the calibration MSE (then the old weights stay)."""
    if eq.xtx.shape[0] != conv2.in_channels * 9:
        raise ValueError(f"normal equations of {eq.xtx.shape[0] // 9} channels for a conv2 "
                         f"reading {conv2.in_channels}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    before = eq.mse(conv2.weight)
    w, lam = eq.solve(ridge)
    new = w.view_as(conv2.weight).to(conv2.weight.dtype)  # what would be stored
    after = eq.mse(new)
    if not after <= before:  # (also when the solve gave NaN)
        return RefitReport(before, before, eq.rows, lam, refit=False)
    conv2.weight.copy_(new)  # copy_ keeps the parameter's dtype, device and memory format
    return RefitReport(before, after, eq.rows, lam, refit=True)


@torch.no_grad()
def refit_conv2(block: BasicBlock, inputs: Tensor, targets: Tensor, ridge: float = RIDGE,
                batch_size: int = 256) -> RefitReport:
    """Re-fit ``block.conv2.weight`` by ridge least squares so that conv2's output (before bn2)
    on ``inputs`` reproduces ``targets``; in place.

    Args:
        block: the (already pruned) block; conv1 and bn1 are used in eval mode, unchanged.
        inputs: float activations entering the block, (N, C_in, H, W).
        targets: the unpruned block's conv2 output before bn2 for the same images,
            (N, C_out, H', W') (see :func:`block_io`).
        ridge: ``lam`` = ``ridge`` x the mean diagonal of ``X^T X``.

    Returns a :class:`RefitReport`; the calibration MSE never increases (``mse_after <=
    mse_before``): when the solve is not better the old weights are kept. A block pruned to no
    filters has nothing to fit: its conv2 writes zeros (``refit`` is False).
    """
    if block.conv2.in_channels == 0:
        _check_block(block)
        _check_pair(inputs, targets, block)
        mse = float(targets.double().square().mean())
        return RefitReport(mse, mse, targets[:, 0].numel(), 0.0, refit=False)
    return apply_refit(block.conv2, normal_equations(block, inputs, targets, batch_size), ridge)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once what it needs is captured."""


@torch.no_grad()
def block_io(model: nn.Module, block: str, images: Tensor, batch_size: int = 500,
             device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """What enters ``block`` and its conv2's output (before bn2) on uint8 ``images``.

    The model runs in eval mode in float32 (its mode is restored), batch by batch, stopping
    after the block's conv2. Returns ``(inputs, conv2_out)`` on the model's device.
    """
    if block not in BLOCK_NAMES:
        raise ValueError(f"unknown block {block!r}; valid blocks: {', '.join(BLOCK_NAMES)}")
    mod = model.get_submodule(block)
    if mod.conv2.in_channels == 0:
        raise ValueError(f"block {block} is removed (0 filters): it has no conv2 output to refit "
                         f"against")
    device = torch.device(device) if device else next(model.parameters()).device
    captured: dict[str, Tensor] = {}

    def grab_input(_m, args):
        captured["in"] = args[0].detach()

    def grab_output(_m, _args, out):
        captured["out"] = out.detach()
        raise _Stop

    hooks = [mod.register_forward_pre_hook(grab_input),
             mod.conv2.register_forward_hook(grab_output)]
    was_training = model.training
    model.eval()
    ins, outs = [], []
    try:
        for i in range(0, len(images), batch_size):
            x = normalize(images[i:i + batch_size].to(device))
            try:
                model(x.contiguous(memory_format=torch.channels_last))
            except _Stop:
                pass
            ins.append(captured["in"].float())
            outs.append(captured["out"].float())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return torch.cat(ins), torch.cat(outs)


def augmented(images: Tensor, n: int | None = None, seed: int = 0) -> Tensor:
    """The first ``n`` images (all by default) with the training augmentation (random crop from
    a 4-pixel zero padding, random flip), drawn on the CPU from a generator seeded ``seed``: the
    same images on every device."""
    images = images[:n] if n is not None else images
    return random_crop_flip(images.cpu(), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def refit_block(model: nn.Module, block: str, pruned: BasicBlock, images: Tensor,
                ridge: float = RIDGE, seed: int = 0, augment: bool = True) -> RefitReport:
    """Re-fit ``pruned`` (a pruned copy of ``model``'s ``block``) to reproduce the block's conv2
    output on uint8 ``images`` (augmented, seeded ``seed``, unless ``augment`` is False).

    The inputs are what enters ``block`` in ``model`` (eval mode): for one block pruned alone
    they are the same for the pruned network. For whole-network pruning, call
    :func:`block_io` on the pruned upstream and :func:`refit_conv2` directly.
    """
    x = augmented(images, seed=seed) if augment else images
    inputs, targets = block_io(model, block, x)
    return refit_conv2(pruned.to(inputs.device), inputs, targets, ridge)
