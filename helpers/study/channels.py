"""Pruning the residual (stage) channels: every layer that writes or reads them, together.

Conv1 pruning (:mod:`helpers.pruning`) leaves the residual stream of each stage at 16, 32 or
64 channels, because every block adds its conv2's output to it. To narrow the stream itself,
channel ``c`` of a stage must go from every layer that touches it at once (a *dependency
group*, in Torch-Pruning's words):

- its **writers**, whose output channel ``c`` is dropped: the stem ``conv``/``bn`` (stage 1)
  or the downsampling block's projection ``shortcut`` (stages 2 and 3), and ``conv2``/``bn2``
  of each of the stage's blocks (a removed block's ``bn2`` adds a constant);
- its **readers**, whose input slice ``c`` is dropped: ``conv1`` of the blocks fed by the
  stage, the next stage's first block (``conv1`` and its projection), or ``fc``.

Which channels stay is chosen as for filters: k-means++ (:func:`helpers.pruning.kmeans`) on one
row per channel, the channel's writers BN-folded (each writer's weights times its BN scale,
and its shift) side by side. Each cluster keeps its member nearest the centroid, and in
every reader the input weights of the other members are added onto it (unlike notebook 04's
``"merge"`` rule, the kept channel's writers stay as they were): two channels with identical
writers carry identical activations, so then the network computes exactly what it did. Then
the same repairs as conv1 pruning: a least-squares refit (:func:`refit_readers`, every reader
fit in network order to reproduce the unpruned network's output on what it now reads) and BN
recalibration.

Only the ``"conv3x3"`` shortcut allows it: option A's zero padding ties each stage's channels
to the next one's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.data import normalize
from helpers.metrics import ieee_fp32
from helpers.models import STAGE_NAMES as STAGES
from helpers.models import ResNet, check_stage_widths
from helpers.pruning import bn_scale_shift, kmeans, recalibrate_bn
from helpers.refit import RIDGE, NormalEquations, apply_refit, augmented, conv_normal_equations


def _stage_index(model: ResNet, stage: str) -> int:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if model.shortcut != "conv3x3":
        raise ValueError("residual channels can be pruned only with shortcut='conv3x3' (option "
                         "A's zero padding couples the channels of consecutive stages)")
    return STAGES.index(stage)


def writers(model: ResNet, stage: str) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """The (conv, BN) pairs whose output channels are ``stage``'s residual channels."""
    s = _stage_index(model, stage)
    blocks = list(getattr(model, stage))
    first = (model.conv, model.bn) if s == 0 else tuple(blocks[0].shortcut)
    return [first] + [(b.conv2, b.bn2) for b in blocks]


def readers(model: ResNet, stage: str) -> list[nn.Module]:
    """The layers (convolutions, or ``fc``) that read ``stage``'s residual channels."""
    s = _stage_index(model, stage)
    blocks = list(getattr(model, stage))
    out = [b.conv1 for b in (blocks if s == 0 else blocks[1:])]
    if s + 1 < len(STAGES):
        nxt = getattr(model, STAGES[s + 1])[0]
        return out + [nxt.conv1, nxt.shortcut[0]]
    return out + [model.fc]


@torch.no_grad()
def channel_features(model: ResNet, stage: str) -> np.ndarray:
    """One row per residual channel of ``stage``: every writer's BN-folded weights for that
    channel and its shift, side by side (float64)."""
    parts = []
    for conv, bn in writers(model, stage):
        scale, shift = bn_scale_shift(bn)
        w = conv.weight.detach().float().flatten(1) * scale[:, None]
        parts += [w, shift[:, None]]
    return torch.cat(parts, 1).cpu().numpy().astype(np.float64)


@torch.no_grad()
def _keep_rows(module: nn.Module, keep: Tensor) -> None:
    """Keep output channels ``keep`` of a conv or BN, in place."""
    if isinstance(module, nn.BatchNorm2d):
        for name in ("weight", "bias"):
            setattr(module, name, nn.Parameter(getattr(module, name)[keep].clone()))
        module.running_mean = module.running_mean[keep].clone()
        module.running_var = module.running_var[keep].clone()
        module.num_features = len(keep)
    else:
        module.weight = nn.Parameter(module.weight[keep].clone())
        module.out_channels = len(keep)


@torch.no_grad()
def _merge_columns(module: nn.Module, groups: Sequence[Tensor]) -> None:
    """Input channel ``j`` of a conv or linear becomes the sum of its old inputs ``groups[j]``."""
    w = module.weight
    new = torch.stack([w[:, g].sum(1) for g in groups], 1)
    module.weight = nn.Parameter(new.contiguous())
    if isinstance(module, nn.Linear):
        module.in_features = len(groups)
    else:
        module.in_channels = len(groups)


@torch.no_grad()
def prune_stage(model: ResNet, stage: str, k: int, seed: int = 0) -> ResNet:
    """A copy of ``model`` whose ``stage`` keeps ``k`` residual channels (``model`` untouched).

    k-means++ on :func:`channel_features` makes ``k`` clusters; each keeps its member nearest
    the centroid in every writer, and every reader gets the sum of the members' input slices.
    Exact when each cluster's channels are identical (and at ``k`` = the stage's width).
    """
    s = _stage_index(model, stage)
    width = model.stage_widths[s]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= width:
        raise ValueError(f"k must be an integer in 1..{width} for {stage} (its residual "
                         f"channels), got {k!r}")
    clustering = kmeans(channel_features(model, stage), int(k), seed)
    order = np.argsort(clustering.nearest)  # kept channels in index order
    keep = torch.as_tensor(clustering.nearest[order])
    groups = [torch.as_tensor(np.flatnonzero(clustering.labels == c)) for c in order]
    pruned = copy.deepcopy(model)
    kept = dict(model.meta.get("kept_channels", {}))  # indices into the network before pruning
    before = torch.as_tensor(kept.get(stage, range(width)))
    pruned.meta = {"kept_channels": kept | {stage: before[keep].tolist()}}
    for conv, bn in writers(pruned, stage):
        _keep_rows(conv, keep)
        _keep_rows(bn, keep)
    for layer in readers(pruned, stage):
        _merge_columns(layer, groups)
    widths = list(pruned.stage_widths)
    widths[s] = int(k)
    pruned.stage_widths = tuple(widths)
    return pruned


@torch.no_grad()
def _refit_linear(fc: nn.Linear, x: Tensor, y: Tensor, ridge: float) -> dict:
    """Ridge least squares for ``fc`` (weights and bias: an input of ones) to map ``x`` to
    ``y`` (:class:`helpers.refit.NormalEquations`); kept only if the mean squared error goes
    down."""
    xa = torch.cat([x, torch.ones(len(x), 1, device=x.device)], 1).double()
    y = y.double()
    eq = NormalEquations(xa.T @ xa, xa.T @ y, float(y.square().sum()), len(x))
    before = eq.mse(torch.cat([fc.weight, fc.bias[:, None]], 1))
    w, _ = eq.solve(ridge)
    after = eq.mse(w)
    if after <= before:
        fc.weight.copy_(w[:, :-1])
        fc.bias.copy_(w[:, -1])
    return {"mse_before": before, "mse_after": min(after, before), "refit": after <= before}


@torch.no_grad()
def refit_readers(dense: ResNet, pruned: ResNet, images: Tensor,
                  kept: Mapping[str, Sequence[int]], ridge: float = RIDGE,
                  batch_size: int = 256) -> list[dict]:
    """Re-fit, in network order, every reader of ``pruned`` whose input differs from
    ``dense``'s (each ``conv1`` and projection from the first narrowed stage on, and ``fc``),
    so that its output (before BN) reproduces ``dense``'s on the same float ``images``, given
    what ``pruned`` now feeds it (least squares, :func:`helpers.refit.apply_refit`). ``kept``:
    the channels each narrowed stage kept (a projection's target is the dense output at
    those). In place; returns one report per reader."""
    reports = []
    dense, was = copy.deepcopy(dense).eval(), pruned.training
    pruned.eval()
    with ieee_fp32():
        xd = F.relu(dense.bn(dense.conv(images)))
        xp = F.relu(pruned.bn(pruned.conv(images)))
        changed = pruned.stage_widths[0] != dense.stage_widths[0]
        for name, d in dense.blocks().items():
            p = pruned.get_submodule(name)
            rows = kept.get(name.split(".")[0], slice(None))  # what the projection writes
            layers = [("conv1", d.conv1, p.conv1, slice(None))]
            if isinstance(p.shortcut, nn.Sequential) and len(p.shortcut) == 2:
                layers.append(("shortcut", d.shortcut[0], p.shortcut[0], rows))
            for kind, dl, pl, out in layers:
                if changed and pl.out_channels:
                    eq = conv_normal_equations(pl, xp, dl(xd)[:, out], batch_size)
                    r = apply_refit(pl, eq, ridge)
                    reports.append({"layer": f"{name}.{kind}", "mse_before": r.mse_before,
                                    "mse_after": r.mse_after, "refit": r.refit})
            xd, xp = d(xd), p(xp)
            changed = changed or p.bn2.num_features != d.bn2.num_features
        if changed:
            pooled = torch.flatten(F.adaptive_avg_pool2d(xp, 1), 1)
            target = dense.fc(torch.flatten(F.adaptive_avg_pool2d(xd, 1), 1))
            reports.append({"layer": "fc", **_refit_linear(pruned.fc, pooled, target, ridge)})
    pruned.train(was)
    return reports


@torch.no_grad()
def prune_stages(model: ResNet, stage_widths: Sequence[int], seed: int = 0,
                 refit_images: Tensor | None = None, recal_images: Tensor | None = None,
                 recal_batches: int = 10, ridge: float = RIDGE) -> ResNet:
    """A copy of ``model`` with ``stage_widths`` residual channels (narrower stages pruned by
    :func:`prune_stage`), optionally repaired: readers re-fit on ``refit_images`` (uint8
    training images, augmented and seeded ``seed``, :func:`refit_readers`), then every BN
    recalibrated on ``recal_images`` (:func:`helpers.pruning.recalibrate_bn`)."""
    target = check_stage_widths(stage_widths, model.shortcut)
    if any(t > w for t, w in zip(target, model.stage_widths, strict=True)):
        raise ValueError(f"stage_widths {target} must be at most the model's "
                         f"{model.stage_widths}")
    pruned = copy.deepcopy(model).eval()
    pruned.meta = {}  # kept channels are counted from ``model``, the refit's reference
    for stage, k, width in zip(STAGES, target, model.stage_widths, strict=True):
        if k < width:
            pruned = prune_stage(pruned, stage, k, seed)
    meta = {"stage_widths": list(target), "seed": seed,
            "kept_channels": pruned.meta.get("kept_channels", {})}
    if refit_images is not None:
        device = next(model.parameters()).device
        x = normalize(augmented(refit_images, seed=seed).to(device))
        meta["refit"] = refit_readers(model, pruned.to(memory_format=torch.contiguous_format),
                                      x, meta["kept_channels"], ridge)
    if recal_images is not None:
        recalibrate_bn(pruned, recal_images, batches=recal_batches, seed=seed)
    pruned.meta = meta
    return pruned.eval()
