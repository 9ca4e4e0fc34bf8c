"""Whole-network pruning: a plan applied to all nine blocks, repaired block by block.

:func:`prune_network` prunes every block to its width in a plan (:mod:`helpers.plans`) with
any strategy of :mod:`helpers.pruning`. Pruning alone leaves every later layer reading
activations it was not trained for; two repairs need no gradients:

- **Refit** (``refit_images``): the blocks are pruned *in order*, and each block's conv2 is
  re-fit by least squares (:func:`helpers.refit.refit_conv2`) so that its output reproduces the
  UNPRUNED network's conv2 output on the same images, given the already pruned (and repaired)
  upstream as input. Errors of earlier blocks are thus corrected where they arise instead of
  compounding. Before the refit, the block's BN statistics are re-estimated on what now enters
  it, and again after, so that every later block is fit to the activations it will see once
  the whole network is recalibrated.
- **Recalibration** (``recal_images``): every BN layer's statistics re-estimated on training
  images (:func:`helpers.pruning.recalibrate_bn`).

The per-block sensitivity a sensitivity-guided plan needs comes from notebook 04's sweep
(:func:`sensitivity_from_json`), or is measured here (:func:`measure_sensitivity`);
:func:`fold_bn` gives the BN-folded form a deployment would run, and :func:`speed_table` the
measured CPU speed-up of plans (their widths alone set it), for a latency budget.
:func:`removal_accuracy` measures what removing one whole block costs (a plan may keep 0
filters in a block with an identity shortcut: :func:`helpers.plans.depth_plan`).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.data import normalize
from helpers.metrics import accuracy, compare_latency, count_macs, count_params, ieee_fp32, predict
from helpers.models import (
    BLOCK_NAMES,
    REMOVABLE,
    BasicBlock,
    ResNet,
    check_removable,
    load_state_dict_checked,
    resnet20,
)
from helpers.plans import TREATMENTS, Sensitivity, check_plan
from helpers.pruning import check_strategy, prune_block, pruned_block, recalibrate_bn
from helpers.refit import RIDGE, augmented, refit_conv2
from helpers.stats import ratio_interval

RECAL_BATCHES = 10  # batches of 256 training images for BN recalibration


# --------------------------------------------------------------------------- pruning


def _fit_bn(bn: nn.BatchNorm2d, h: Tensor) -> Tensor:
    """Set ``bn``'s running statistics to those of ``h`` (its input, all images at once) and
    return ``bn(h)`` in eval mode."""
    bn.running_mean.copy_(h.mean((0, 2, 3)))
    bn.running_var.copy_(h.var((0, 2, 3)))  # unbiased, as BN's running estimate
    return bn.eval()(h)


@torch.no_grad()
def _fit_block(block: BasicBlock, x: Tensor, target: Tensor, ridge: float,
               batch_size: int) -> tuple[Tensor, dict]:
    """Repair one pruned block on its actual inputs ``x``: bn1's statistics, then conv2 refit
    against ``target`` (the unpruned conv2 output), then bn2's (and the shortcut BN's)
    statistics for what the block now computes. Returns the block's output and the report."""
    if block.conv1.out_channels == 0:  # no filters: conv2 writes zeros, bn2 a constant
        report = refit_conv2(block, x, target, ridge, batch_size)
        out = _fit_bn(block.bn2, torch.zeros_like(target))
    else:
        a = torch.relu(_fit_bn(block.bn1, block.conv1(x)))
        report = refit_conv2(block, x, target, ridge, batch_size)  # reads bn1 as just set
        out = _fit_bn(block.bn2, block.conv2(a))
    sc = block.shortcut
    if isinstance(sc, nn.Sequential) and len(sc) == 2:  # conv3x3 + BN projection
        out = out + _fit_bn(sc[1], sc[0](x))
    else:
        out = out + sc(x)
    return torch.relu(out), {"mse_before": report.mse_before, "mse_after": report.mse_after,
                             "refit": report.refit}


@torch.no_grad()
def _prune_and_refit(model: ResNet, plan: tuple[int, ...], strategy: str, seed: int,
                     images: Tensor, ridge: float, batch_size: int) -> tuple[ResNet, list[dict]]:
    """Blocks pruned in order, each repaired against the unpruned network (see module doc).

    All ``images`` go through at once (about 1,000 images: a few hundred MB of activations),
    in float32 and the NCHW layout (the refit's unfold is slow on channels-last tensors).
    """
    pruned = copy.deepcopy(model).eval()
    dense = copy.deepcopy(model).eval()  # the targets come from it
    device = next(model.parameters()).device
    dense.to(memory_format=torch.contiguous_format)
    pruned.to(memory_format=torch.contiguous_format)
    reports = []
    with ieee_fp32():
        x_dense = torch.relu(dense.bn(dense.conv(normalize(images.to(device)))))
        x = x_dense
        for name, k, width in zip(BLOCK_NAMES, plan, model.widths, strict=True):
            ref = dense.get_submodule(name)
            target = (ref.conv2(torch.relu(ref.bn1(ref.conv1(x_dense))))
                      if ref.conv1.out_channels else torch.zeros_like(x_dense))  # removed
            block = pruned_block(pruned, name, k, strategy, seed) if k < width else (
                pruned.get_submodule(name))
            x, report = _fit_block(block.eval(), x, target, ridge, batch_size)
            stage, index = name.split(".")
            getattr(pruned, stage)[int(index)] = block
            reports.append({"block": name, "kept": int(k), **report})
            x_dense = torch.relu(ref.bn2(target) + ref.shortcut(x_dense))
    pruned.widths = tuple(int(k) for k in plan)
    return pruned, reports


@torch.no_grad()
def prune_network(model: ResNet, plan: Sequence[int] | Mapping[str, int], strategy: str,
                  seed: int = 0, refit_images: Tensor | None = None,
                  recal_images: Tensor | None = None, recal_batches: int = RECAL_BATCHES,
                  ridge: float = RIDGE, batch_size: int = 256) -> ResNet:
    """A copy of ``model`` whose nine blocks keep ``plan`` conv1 filters (``model`` untouched).

    Args:
        plan: nine kept widths, or a mapping {block: width} (other blocks keep theirs).
        strategy: which filters stay in each block (:data:`helpers.pruning.STRATEGIES`).
        refit_images: uint8 training images (about 1,000), used with the training
            augmentation (:func:`helpers.refit.augmented`, seeded ``seed``). Given, the blocks
            are pruned in order and every block's conv2 (also of blocks the plan leaves whole:
            their input changed) is re-fit against the unpruned network; without them each
            block is only pruned.
        recal_images: uint8 training images to recalibrate every BN layer on at the end
            (``recal_batches`` batches of 256, augmented, see
            :func:`helpers.pruning.recalibrate_bn`); None: no recalibration.

    The copy's ``meta`` records the plan, the strategy, the repairs and, with a refit, each
    block's calibration MSE before and after (``meta["refit"]``).
    """
    check_strategy(strategy)
    plan = check_plan(plan, model.widths)
    meta = {"plan": list(plan), "strategy": strategy, "seed": seed}
    if refit_images is None:
        pruned = copy.deepcopy(model)
        for name, k, width in zip(BLOCK_NAMES, plan, model.widths, strict=True):
            if k < width:
                pruned = prune_block(pruned, name, k, strategy, seed=seed)
    else:
        pruned, reports = _prune_and_refit(model, plan, strategy, seed,
                                           augmented(refit_images, seed=seed), ridge, batch_size)
        meta |= {"refit_images": len(refit_images), "ridge": ridge, "refit": reports}
    if recal_images is not None:
        recalibrate_bn(pruned, recal_images, batches=recal_batches, seed=seed)
        meta["recal_images"] = min(len(recal_images), recal_batches * 256)
    pruned.meta = meta
    return pruned.eval()


def prune_and_score(model: ResNet, plan: Sequence[int] | Mapping[str, int], strategy: str,
                    images: Tensor, labels: Tensor, train_images: Tensor,
                    treatment: str = "refit+recal",
                    refit_images: int = 1024, recal_batches: int = RECAL_BATCHES,
                    seed: int = 0) -> tuple[ResNet, np.ndarray]:
    """:func:`prune_network` with a named treatment, and its per-image correctness on
    ``images`` (fp32).

    ``treatment``: "none" (pruned only), "recal" (BN recalibrated on ``train_images``) or
    "refit+recal" (conv2 refit in order on the first ``refit_images`` training images, then
    recalibration), all augmented as :func:`prune_network` describes.
    """
    if treatment not in TREATMENTS:
        raise ValueError(f"treatment must be one of {TREATMENTS}, got {treatment!r}")
    refit = train_images[:refit_images] if treatment == "refit+recal" else None
    recal = train_images if treatment != "none" else None
    pruned = prune_network(model, plan, strategy, seed, refit_images=refit, recal_images=recal,
                           recal_batches=recal_batches)
    return pruned, correct(pruned, images, labels)


def score(model: ResNet, plan: Sequence[int], strategy: str, images: Tensor, labels: Tensor,
          train_images: Tensor, treatment: str = "refit+recal", refit_images: int = 1024,
          recal_batches: int = RECAL_BATCHES, seed: int = 0) -> dict:
    """:func:`prune_and_score` as plain values and tensors (to cache or store): ``plan,
    strategy, treatment, accuracy, images, macs, params``, the per-image ``correct`` (a bool
    tensor) and the pruned network's ``state_dict`` (see :func:`restore`)."""
    pruned, ok = prune_and_score(model, plan, strategy, images, labels, train_images, treatment,
                                 refit_images, recal_batches, seed)
    return {"plan": list(pruned.widths), "stage_widths": list(pruned.stage_widths),
            "strategy": strategy, "treatment": treatment,
            "accuracy": float(ok.mean()), "images": len(ok), "macs": count_macs(pruned),
            "params": count_params(pruned), "correct": torch.from_numpy(ok),
            "state_dict": {k: v.detach().cpu() for k, v in pruned.state_dict().items()}}


def restore(scored: Mapping, shortcut: str, device: str | torch.device = "cpu") -> ResNet:
    """The pruned network a :func:`score` result describes (eval mode, on ``device``)."""
    model = resnet20(shortcut, scored["plan"], stage_widths=scored.get("stage_widths"))
    load_state_dict_checked(model, scored["state_dict"])
    model.meta = {"plan": list(scored["plan"]), "strategy": scored["strategy"],
                  "treatment": scored["treatment"]}
    return model.to(device).eval()


# --------------------------------------------------------------------------- measuring


def correct(model: nn.Module, images: Tensor, labels: Tensor, bf16: bool = False) -> np.ndarray:
    """Per-image correctness (bool) of ``model`` on uint8 ``images``: what paired comparisons
    (:func:`helpers.stats.paired_test`) need. fp32 unless ``bf16``."""
    return (predict(model, images, bf16=bf16).argmax(1) == labels.cpu()).numpy()


# --------------------------------------------------------------------------- sensitivity


@torch.no_grad()
def block_sensitivity(model: ResNet, images: Tensor, labels: Tensor, calibration: Tensor,
                      strategy: str = "l1", fractions: Sequence[float] = (0.25, 0.5, 0.75),
                      treatment: str = "refit+recal", refit_images: int = 1024,
                      recal_batches: int = RECAL_BATCHES, seed: int = 0) -> list[dict]:
    """Accuracy of ``model`` with one block pruned at a time.

    For each block and each kept fraction (of the block's width, at least one filter), prune
    only that block with ``strategy``, apply ``treatment`` (conv2 refit on the first
    ``refit_images`` of ``calibration``, augmented, as :func:`helpers.pruning.prune_block`
    does; BN recalibration on ``calibration``, augmented) and
    measure top-1 accuracy on ``images``. Returns records in the format of notebook 04's
    ``results/block_pruning.json``: ``{block, strategy, treatment, kept_filters, accuracy,
    eval_images}``.
    """
    check_strategy(strategy)
    if treatment not in TREATMENTS:
        raise ValueError(f"treatment must be one of {TREATMENTS}, got {treatment!r}")
    refit_set = calibration[:refit_images] if treatment == "refit+recal" else None
    records = []
    for name, width in zip(BLOCK_NAMES, model.widths, strict=True):
        for k in sorted({max(1, round(f * width)) for f in fractions if round(f * width) < width}):
            pruned = prune_block(model, name, k, strategy, seed=seed, refit_images=refit_set)
            if treatment != "none":
                recalibrate_bn(pruned, calibration, batches=recal_batches, seed=seed)
            acc = accuracy(pruned, images, labels)
            records.append({"block": name, "strategy": strategy, "treatment": treatment,
                            "kept_filters": k, "accuracy": acc.value, "eval_images": acc.images})
    return records


def removal_accuracy(model: ResNet, images: Tensor, labels: Tensor, calibration: Tensor,
                     blocks: Sequence[str] = REMOVABLE, refit_images: int = 1024,
                     recal_batches: int = RECAL_BATCHES, seed: int = 0,
                     progress: bool = True) -> pd.DataFrame:
    """Accuracy of ``model`` with one block removed at a time (all its filters pruned: the
    residual branch becomes bn2's constant), repaired by refit + recalibration as
    :func:`prune_network` does, on ``images``. One row per block: ``block, accuracy, loss``
    (points lost against ``model`` as it is, without recalibration), ``eval_images``, most
    accurate first. study/05 picks the block its depth plans remove from it: the stage whose
    depth plans are fastest on average, then that stage's most accurate block."""
    blocks = check_removable(blocks)
    ok_dense = correct(model, images, labels)
    rows = []
    for name in tqdm(blocks, desc="removing blocks", disable=not progress):
        _, ok = prune_and_score(model, {name: 0}, "l1", images, labels, calibration,
                                refit_images=refit_images, recal_batches=recal_batches,
                                seed=seed)
        rows.append({"block": name, "accuracy": float(ok.mean()),
                     "loss": 100 * float(ok_dense.mean() - ok.mean()), "eval_images": len(ok)})
    return (pd.DataFrame(rows).sort_values("accuracy", ascending=False, kind="stable")
            .reset_index(drop=True))


def sensitivity_for(model: ResNet, strategy: str, val_images: Tensor, val_labels: Tensor,
                    train_images: Tensor, json_path: str | Path | None = None,
                    measure_images: int = 1000, fractions: Sequence[float] = (0.25, 0.5, 0.75),
                    refit_images: int = 1024, recal_batches: int = RECAL_BATCHES,
                    seed: int = 0) -> tuple[Sensitivity, str]:
    """The "refit+recal" sensitivity of ``strategy``: from notebook 04's sweep at ``json_path``
    when it is usable (:func:`sensitivity_from_json`), else measured here
    (:func:`measure_sensitivity`) on the first ``measure_images`` validation images at the
    kept ``fractions``. The sweep is used only if it was measured with this ``refit_images``,
    ``recal_batches`` (of 256 images), the default ridge and ``seed``. Returns the sensitivity
    and a sentence saying where it comes from."""
    why = "no sweep file given"
    if json_path is not None:
        try:  # a sweep of other refit/recalibration settings or seed is measured again
            sens, why = sensitivity_from_json(json_path, model, val_images, val_labels, strategy,
                                              refit_images=refit_images,
                                              recal_batches=recal_batches, ridge=RIDGE, seed=seed)
        except SweepSettingsMismatch as e:
            sens, why = None, str(e)
        if sens is not None:
            return sens, why
    x, y = val_images[:measure_images], val_labels[:measure_images]
    sens = measure_sensitivity(model, x, y, train_images, strategy, fractions, "refit+recal",
                               refit_images, recal_batches, seed)
    return sens, (f"measured here ({why}): {len(sens.measured)} networks with one block pruned "
                  f"to {', '.join(f'{f:.0%}' for f in fractions)} of its filters, refit and "
                  f"recalibrated, scored on {len(y):,} validation images")


def measure_sensitivity(model: ResNet, images: Tensor, labels: Tensor, calibration: Tensor,
                        strategy: str = "l1", fractions: Sequence[float] = (0.25, 0.5, 0.75),
                        treatment: str = "refit+recal", refit_images: int = 1024,
                        recal_batches: int = RECAL_BATCHES, seed: int = 0) -> Sensitivity:
    """:func:`block_sensitivity` plus its baseline: ``model`` itself, recalibrated on the same
    ``calibration`` images (same ``seed``: same augmentation) when the treatment recalibrates,
    on the same ``images``."""
    baseline = copy.deepcopy(model)
    if treatment != "none":
        recalibrate_bn(baseline, calibration, batches=recal_batches, seed=seed)
    dense = accuracy(baseline, images, labels).value
    records = block_sensitivity(model, images, labels, calibration, strategy, fractions,
                                treatment, refit_images, recal_batches, seed)
    return Sensitivity.from_records(records, dense, strategy, treatment, model.num_classes)


class SweepSettingsMismatch(ValueError):
    """A sweep file measured with other repair settings (or seed) than the caller uses."""


RECAL_BATCH_SIZE = 256  # what prune_network, block_sensitivity and measure_sensitivity use


def _check_sweep_settings(saved: Mapping, name: str, treatment: str, expected: Mapping) -> None:
    """Raise :class:`SweepSettingsMismatch` naming every key of ``expected`` (None: not
    checked) whose value in ``saved`` differs or is missing. The refit's settings are checked
    only for "refit+recal", the recalibration's not for "none"."""
    used = {"refit_images": treatment == "refit+recal", "ridge": treatment == "refit+recal",
            "recal_batches": treatment != "none", "seed": True}
    checks = {k: v for k, v in expected.items() if v is not None and used[k]}
    if checks.get("recal_batches") is not None and "recal_batch_size" in saved:
        checks["recal_batch_size"] = RECAL_BATCH_SIZE  # older files lack it: not checked
    if checks.get("recal_batches") is not None and "augment" in saved:
        checks["augment"] = True  # the recalibration (and refit) images are augmented here
    wrong = []
    for key, want in checks.items():
        got = saved.get(key)
        if key == "ridge":
            same = isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-9)
        else:
            same = got is not None and got == want
        if not same:
            wrong.append(f"{key} {'missing' if got is None else repr(got)} (here {want!r})")
    if wrong:
        raise SweepSettingsMismatch(f"{name} was measured with other settings than this run's: "
                                    + ", ".join(wrong))


def sensitivity_from_json(path: str | Path, model: ResNet, images: Tensor, labels: Tensor,
                          strategy: str = "l1", treatment: str = "refit+recal", *,
                          refit_images: int | None = None, recal_batches: int | None = None,
                          ridge: float | None = None, seed: int | None = None
                          ) -> tuple[Sensitivity | None, str]:
    """Notebook 04's sweep (``results/block_pruning.json``) as a :class:`Sensitivity`, if usable.

    Usable means: it exists, it was measured on validation images (``eval_split`` "val"), its
    unpruned accuracy equals ``model``'s on the first ``eval_images`` of ``images`` (the
    validation images; measured here in the sweep's ``precision``, fp32 or bf16) to within 0.1
    point or two images (the same checkpoint: a GPU's sweep serves a CPU run, whose rounding
    differs by an image or so), and it has records of ``strategy`` with ``treatment`` for every
    block.
    Returns the sensitivity (or None) and a sentence saying why.

    ``refit_images``, ``recal_batches``, ``ridge`` and ``seed``, where given, must be the
    sweep's (the refit's only for "refit+recal", the recalibration's not for "none"; with
    ``recal_batches`` also its ``recal_batch_size``, 256, and ``augment``, where the file has
    them): otherwise :class:`SweepSettingsMismatch` (a ValueError) names every key that
    differs. None (the default) does not check that key.
    """
    path = Path(path)
    if not path.exists():
        return None, f"{path.name} does not exist"
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("eval_split") != "val":
        return None, (f"{path.name} was measured on the {saved.get('eval_split')!r} split, "
                      "not on the validation images")
    n = saved.get("eval_images")
    if not isinstance(n, int) or not 0 < n <= len(labels):
        return None, f"{path.name} was measured on {n} images; {len(labels):,} are given"
    _check_sweep_settings(saved, path.name, treatment,
                          {"refit_images": refit_images, "recal_batches": recal_batches,
                           "ridge": ridge, "seed": seed})
    bf16 = saved.get("precision") == "bf16"  # measure the unpruned network as the sweep did
    dense = float(correct(model, images[:n], labels[:n], bf16=bf16).mean())
    if abs(float(saved.get("dense_accuracy", -1.0)) - dense) > max(1e-3, 2.01 / n):
        return None, (f"{path.name} has another unpruned accuracy ({saved.get('dense_accuracy')}"
                      f" vs {dense:.4f} measured here on {n:,} images): another checkpoint")
    baseline = saved.get("dense_accuracy_recalibrated") if treatment != "none" else None
    try:
        sens = Sensitivity.from_records(saved.get("records", []), baseline or dense, strategy,
                                        treatment, model.num_classes)
    except ValueError as e:
        return None, f"{path.name} is incomplete: {e}"
    return sens, (f"read from {path.name}: {len(sens.measured)} {strategy!r} points "
                  f"({treatment}) on {n:,} validation images, {saved.get('device')}")


# --------------------------------------------------------------------------- deployment


@torch.no_grad()
def fold_bn(model: ResNet) -> ResNet:
    """An inference copy of ``model`` with every BN folded into the convolution before it.

    In eval mode a BN is a per-channel affine map, so ``bn(conv(x))`` equals one convolution
    with scaled weights and a bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). The copy
    computes the same function (to float rounding) without the BN passes over memory, which is
    what a deployment would run; it cannot be trained further (its BN layers are gone, but for
    the bn2 of a removed block, which has no convolution to fold into and costs one tiny pass).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    pairs = [(folded, "conv", "bn")]
    for block in folded.blocks().values():
        if block.conv1.out_channels:  # a removed block runs neither conv: its bn2 stays
            pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
        if isinstance(block.shortcut, nn.Sequential) and len(block.shortcut) == 2:
            pairs.append((block.shortcut, "0", "1"))
    for parent, conv, bn in pairs:
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    return folded


def pooled_samples(models: Mapping[str, nn.Module], batch_size: int, repeats: int = 7,
                   calls: int = 1, threads: int | None = None) -> tuple[dict[str, list[float]],
                                                                     int]:
    """Milliseconds per forward pass of each model, ``calls`` calls of ``repeats`` interleaved
    rounds each (:func:`helpers.metrics.compare_latency` on the CPU, a new visiting order per
    call), pooled in round order: sample ``i`` of every model comes from the same round. Returns
    the samples by model and the number of threads used."""
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    samples: dict[str, list[float]] = {name: [] for name in models}
    for call in range(calls):
        table = compare_latency(models, batch_size, "cpu", repeats, threads=threads, seed=call)
        for row in table.itertuples():
            samples[row.model] += row.samples_ms
            used = row.threads
    return samples, used


def latency_table(models: Mapping[str, nn.Module], batch_size: int = 256, repeats: int = 7,
                  calls: int = 1, threads: int | None = None,
                  reference: str = "unpruned") -> pd.DataFrame:
    """Latency of each model and its speed-up over ``reference``, pooled over ``calls`` calls.

    Each call times all ``models`` interleaved for ``repeats`` rounds; the rounds of all calls
    are pooled (:func:`pooled_samples`), and the speed-up is the median of the per-round ratios
    with a bootstrap interval (:func:`helpers.stats.ratio_interval`). Models may be PyTorch
    modules or ONNX Runtime sessions (:class:`helpers.onnx_runtime.OnnxModel`). One row per
    model: ``model, batch_size, threads, rounds, median_ms, speedup, speedup_low,
    speedup_high``.
    """
    if reference not in models:
        raise ValueError(f"the reference {reference!r} is not among the models {list(models)}")
    samples, used = pooled_samples(models, batch_size, repeats, calls, threads)
    rows = []
    for name, t in samples.items():
        speedup, low, high = ratio_interval(samples[reference], t)
        rows.append({"model": name, "batch_size": batch_size, "threads": used, "rounds": len(t),
                     "median_ms": float(np.median(t)), "speedup": speedup,
                     "speedup_low": low, "speedup_high": high})
    return pd.DataFrame(rows)


def speed_table(model: ResNet, plans: Mapping[str, Sequence[int]], batch_size: int = 256,
                repeats: int = 5, threads: int | None = None, calls: int = 1) -> pd.DataFrame:
    """Measured CPU speed-up over ``model`` of a network with each plan's widths, with its
    interval.

    Latency depends on the widths, not on the weights, so each plan is timed as a fresh
    ResNet20 of its widths: no pruning is needed to know whether a plan meets a latency
    budget. Each distinct widths is timed once, so plans with the same widths (e.g. two
    strategies' uniform plans) get the same speed-up. Every network is BN-folded
    (:func:`fold_bn`, the form a deployment runs) and timed interleaved with the unpruned one
    (:func:`latency_table`). One row per plan: ``plan, widths, speedup, speedup_low,
    speedup_high`` (the median of the per-round ratios and its 95% bootstrap interval).
    """
    if "unpruned" in plans:
        raise ValueError("'unpruned' names the reference network; give the plans other names")
    widths = {name: check_plan(plan) for name, plan in plans.items()}
    nets = {"unpruned": fold_bn(model).cpu()}
    nets |= {str(w): fold_bn(resnet20(model.shortcut, w)) for w in dict.fromkeys(widths.values())}
    t = latency_table(nets, batch_size, repeats, calls, threads).set_index("model")
    return pd.DataFrame([{"plan": name, "widths": w, "speedup": float(t.speedup[str(w)]),
                          "speedup_low": float(t.speedup_low[str(w)]),
                          "speedup_high": float(t.speedup_high[str(w)])}
                         for name, w in widths.items()])


def speedups(model: ResNet, plans: Mapping[str, Sequence[int]], batch_size: int = 256,
             repeats: int = 5, threads: int | None = None) -> dict[str, float]:
    """The median speed-up of each plan over ``model``, ``{name: speedup}``: see
    :func:`speed_table` (which also gives the spread)."""
    table = speed_table(model, plans, batch_size, repeats, threads)
    return dict(zip(table.plan, table.speedup, strict=True))
