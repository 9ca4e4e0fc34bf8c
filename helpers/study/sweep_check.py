"""The per-block sweep checked against the naive way, and timed against it.

:func:`naive_point` measures one sweep point the way the original work did: copy the whole
network, prune (and refit) it, recalibrate the whole network, and push the images through a
``DataLoader`` with torchvision transforms, 100 at a time. It is the reference the cached
:class:`helpers.study.sweep.BlockSweep` must match (up to float rounding; the tests and notebook 04
check it), and :func:`benchmark` (``python -m helpers.study.bench sweep``) times both side by side.
Records and comparisons live in :mod:`helpers.study.sweep_results`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from helpers.data import MEAN, STD, PILDataset
from helpers.device import default_device
from helpers.metrics import ieee_fp32
from helpers.models import ResNet
from helpers.pruning import STRATEGIES, prune_block, recalibrate_bn
from helpers.refit import RIDGE
from helpers.study.sweep import (
    CHANNELS_LAST,
    block_widths,
    check_treatment,
    ks_at_fractions,
    precision,
    sweep,
)

NAIVE_BATCH = 100  # the original work's evaluation batch size


def _naive_transform():
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


# --------------------------------------------------------------------------- the naive way


def _treatment(treatment: str | bool) -> str:
    """Old callers passed ``bn_recalibration`` (a bool)."""
    if isinstance(treatment, bool):
        return "recal" if treatment else "none"
    check_treatment(treatment)
    return treatment


@torch.no_grad()
def naive_point(model: ResNet, block: str, k: int, strategy: str, treatment: str,
                eval_images: Tensor, eval_labels: Tensor, recal_images: Tensor | None = None,
                refit_images: Tensor | None = None, *, recal_batches: int = 10,
                recal_batch_size: int = 256, augment: bool = True, ridge: float = RIDGE,
                seed: int = 0, device: torch.device | str | None = None, bf16: bool = False,
                return_logits: bool = False):
    """One sweep point the slow way, as the original work measured it (reference/benchmark).

    Deep-copies and prunes the whole network (clustering included; refit through
    :func:`~helpers.pruning.prune_block`), recalibrates all of its BN layers when the treatment
    says so, then evaluates it through a ``DataLoader`` (PIL images, torchvision ``ToTensor`` +
    ``Normalize``, batch 100), in the sweep's precision (``bf16``). Batches are made
    channels-last like the sweep's: in fp32 that changes nothing but rounding, in bf16 it
    selects the same kernels, so that both give the same logits bit for bit on the CPU.
    Returns the accuracy (a fraction), and the logits too with ``return_logits``.
    """
    treatment = _treatment(treatment)
    device = torch.device(device) if device else default_device()
    if "recal" in treatment and recal_images is None:
        raise ValueError(f"treatment {treatment!r} needs recal_images")
    if "refit" in treatment and refit_images is None:
        raise ValueError(f"treatment {treatment!r} needs refit_images")
    net = copy.deepcopy(model).float().to(device).eval()
    with ieee_fp32():
        pruned = prune_block(net, block, k, strategy, seed=seed, ridge=ridge,
                             refit_images=refit_images if "refit" in treatment else None)
    with precision(device, bf16):
        if "recal" in treatment:
            recalibrate_bn(pruned, recal_images, recal_batches, recal_batch_size,
                           augment=augment, seed=seed, bf16=bf16)
        pruned.eval()
        dataset = PILDataset(eval_images, eval_labels, _naive_transform())
        loader = torch.utils.data.DataLoader(dataset, batch_size=NAIVE_BATCH, shuffle=False)
        correct, outputs = 0, []
        for x, y in loader:
            z = pruned(x.to(device).contiguous(memory_format=CHANNELS_LAST))
            correct += int((z.argmax(1).cpu() == y).sum())
            if return_logits:
                outputs.append(z.float().cpu())
    acc = correct / len(eval_labels)
    return (acc, torch.cat(outputs)) if return_logits else acc


# --------------------------------------------------------------------------- benchmark


def benchmark(points: int = 12, device: torch.device | str | None = None,
              root: str | None = None, eval_images: int | None = None,
              kept: Sequence[float] = (7 / 8, 3 / 4, 5 / 8, 1 / 2, 3 / 8, 1 / 4, 1 / 8),
              recal_batches: int = 10, recal_batch_size: int = 256, seed: int = 0) -> dict:
    """Seconds per sweep point, fast and naive, measured side by side in one run.

    The fast sweep runs a whole grid (all nine blocks, k at the ``kept`` fractions, all
    strategies, with and without recalibration), timed from scratch (caches and clusterings
    included). The naive way then runs ``points`` points of that grid spread over it, and
    their accuracies are checked against the fast ones. Uses the repository checkpoint when it
    exists (else a random-init ResNet20: the timing is the same), and CIFAR-10 from ``root`` /
    ``$CIFAR10_ROOT``.
    """
    import warnings

    from helpers import paths
    from helpers.data import load_cifar10
    from helpers.models import load_model, resnet20

    device = torch.device(device) if device else default_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the lab copy's 1,000-image test set warns
        data = load_cifar10(root)
    model = (load_model(paths.CHECKPOINT) if paths.CHECKPOINT.exists()
             else resnet20("conv3x3")).eval()
    n = eval_images or len(data.test_labels)
    test_x, test_y = data.test_images[:n], data.test_labels[:n]
    recal = data.train_images[:recal_batches * recal_batch_size]
    common = dict(recal_batches=recal_batches, recal_batch_size=recal_batch_size, seed=seed,
                  device=device)
    # Warm up the device (CUDA context, cuDNN) outside both timings.
    naive_point(model, "layer3.2", 32, "l1", True, test_x[:100], test_y[:100], recal, **common)

    fast = sweep(model, test_x, test_y, recal, ks=ks_at_fractions(model, kept), progress=False,
                 treatments=("none", "recal"), **common)
    fast_per_point = fast.seconds / len(fast.records)
    picks = [fast.records[round(i)] for i in np.linspace(0, len(fast.records) - 1, points)]
    t0 = time.perf_counter()
    diffs = []
    for r in picks:
        acc = naive_point(model, r["block"], r["kept_filters"], r["strategy"],
                          r["treatment"], test_x, test_y, recal, **common)
        diffs.append(abs(acc - r["accuracy"]) * n)
    naive_per_point = (time.perf_counter() - t0) / len(picks)
    out = {"device": fast.device, "torch_version": torch.__version__, "eval_images": n,
           "recal_images": fast.recal_images, "fast_points": len(fast.records),
           "fast_networks_evaluated": fast.evaluated, "fast_seconds": fast.seconds,
           "fast_seconds_per_point": fast_per_point, "naive_points": len(picks),
           "naive_seconds_per_point": naive_per_point,
           "speedup": naive_per_point / fast_per_point,
           "max_images_differing": max(diffs),
           "full_sweep_points": sum(block_widths(model).values()) * len(STRATEGIES) * 2}
    out["full_sweep_seconds_estimate_fast"] = fast_per_point * out["full_sweep_points"]
    print(f"device {out['device']}, torch {out['torch_version']}, {n:,} test images, "
          f"{out['recal_images']:,} recalibration images, IEEE fp32")
    print(f"fast:  {fast_per_point * 1000:8.1f} ms per point ({len(fast.records):,} points in "
          f"{fast.seconds:.1f} s, caches and clustering included; {fast.evaluated:,} distinct "
          f"networks run)")
    print(f"naive: {naive_per_point * 1000:8.1f} ms per point ({len(picks)} points: deepcopy, "
          f"prune, recalibrate the whole network, DataLoader batch {NAIVE_BATCH})")
    print(f"speed-up: {out['speedup']:.1f}x; the naive accuracies match the fast ones to "
          f"{out['max_images_differing']:.0f} image(s); the full sweep "
          f"({out['full_sweep_points']:,} points) would take about "
          f"{out['full_sweep_seconds_estimate_fast']:.0f} s at this rate")
    return out
