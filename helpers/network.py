"""Whole-network pruning: plans (kept conv1 filters per block), MACs, sensitivity, latency.

A *plan* is nine integers, the conv1 width each BasicBlock keeps ("layer1.0" .. "layer3.2").
Pruning conv1 of a block shrinks conv1 and conv2 of that block together, so a block's MACs are
linear in its kept width ``k``::

    MACs(block) = k * (in_planes + planes) * 9 * H_out * W_out  (+ the shortcut's, fixed)

and a plan's MACs have an exact closed form (:func:`plan_macs`, tested against
:func:`helpers.metrics.count_macs`). Two ways to choose a plan for a MACs target:

- :func:`uniform_plan`: keep (as nearly as integers allow) the same fraction of every block.
- :func:`sensitivity_plan`: from per-block curves "accuracy after pruning this block alone to k
  filters" (:class:`Sensitivity`, measured by :func:`block_sensitivity` or read from notebook
  04's ``results/block_pruning.json``), the plan of least *predicted* accuracy loss, taking the
  loss of a plan as the sum of its blocks' losses. Solved exactly by dynamic programming over
  the MACs budget (a knapsack), not greedily.

:func:`prune_network` applies a plan with any strategy of :mod:`helpers.pruning`;
:func:`compare_latency` times several models interleaved, so that they share the machine's
state (clock, cache, other load) fairly; :func:`fold_bn` gives the BN-folded form a deployment
would time.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import torch
from torch import Tensor, nn

from helpers.metrics import accuracy, count_params, latency_ms
from helpers.models import (
    BLOCK_NAMES,
    BLOCKS_PER_STAGE,
    DEFAULT_WIDTHS,
    SHORTCUTS,
    STAGE_WIDTHS,
    ResNet,
    resnet20,
)
from helpers.pruning import check_strategy, prune_block, recalibrate_bn

INPUT_SIZE = 32
KERNEL = 3 * 3
DEFAULT_SHORTCUT = "conv3x3"  # the repository's checkpoint (helpers.paths.CHECKPOINT)


# --------------------------------------------------------------------------- plans and MACs


@dataclass(frozen=True)
class BlockShape:
    """What a block's cost depends on: its input/output planes and output resolution."""

    name: str
    in_planes: int
    planes: int
    stride: int
    pixels: int  # H_out * W_out

    @property
    def macs_per_filter(self) -> int:
        """MACs of one conv1 filter: its row of conv1 plus its input slice of conv2."""
        return (self.in_planes + self.planes) * KERNEL * self.pixels

    def shortcut_macs(self, shortcut: str) -> int:
        projects = self.stride != 1 or self.in_planes != self.planes
        return self.in_planes * self.planes * KERNEL * self.pixels if (
            projects and shortcut == "conv3x3") else 0


def block_shapes() -> tuple[BlockShape, ...]:
    """The nine BasicBlocks of ResNet20 on 32x32 inputs."""
    shapes, in_planes, size = [], STAGE_WIDTHS[0], INPUT_SIZE
    for s, planes in enumerate(STAGE_WIDTHS):
        for b in range(BLOCKS_PER_STAGE):
            stride = 2 if s > 0 and b == 0 else 1
            size //= stride
            shapes.append(BlockShape(BLOCK_NAMES[s * BLOCKS_PER_STAGE + b], in_planes, planes,
                                     stride, size * size))
            in_planes = planes
    return tuple(shapes)


BLOCKS = block_shapes()
MACS_PER_FILTER = tuple(b.macs_per_filter for b in BLOCKS)


def check_plan(plan: Sequence[int] | Mapping[str, int],
               widths: Sequence[int] = DEFAULT_WIDTHS) -> tuple[int, ...]:
    """Validate a plan against the current ``widths``: nine integers, 1 <= k <= width.

    A plan may also be a mapping {block name: k}; blocks it leaves out keep their width.
    Raises ValueError naming the offending block.
    """
    if isinstance(plan, Mapping):
        unknown = sorted(set(plan) - set(BLOCK_NAMES))
        if unknown:
            raise ValueError(f"plan names unknown block(s) {unknown}; valid blocks: "
                             f"{', '.join(BLOCK_NAMES)}")
        plan = [plan.get(name, w) for name, w in zip(BLOCK_NAMES, widths, strict=True)]
    plan = list(plan)
    if len(plan) != len(BLOCK_NAMES):
        raise ValueError(f"a plan needs {len(BLOCK_NAMES)} kept widths, one per block "
                         f"({', '.join(BLOCK_NAMES)}); got {len(plan)}: {plan}")
    out = []
    for name, k, width in zip(BLOCK_NAMES, plan, widths, strict=True):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= width:
            raise ValueError(f"plan: block {name} must keep an integer number of filters in "
                             f"1..{width} (its conv1 has {width}), got {k!r}")
        out.append(int(k))
    return tuple(out)


def plan_macs(plan: Sequence[int], shortcut: str = DEFAULT_SHORTCUT,
              num_classes: int = 10) -> int:
    """Exact MACs of ``resnet20(shortcut, widths=plan)`` on one 32x32 image (closed form).

    Counts what :func:`helpers.metrics.count_macs` counts: every convolution and the linear layer.
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if len(plan) != len(BLOCKS):
        raise ValueError(f"a plan needs {len(BLOCKS)} widths, got {len(plan)}")
    stem = 3 * STAGE_WIDTHS[0] * KERNEL * INPUT_SIZE ** 2
    fc = STAGE_WIDTHS[-1] * num_classes
    blocks = sum(int(k) * b.macs_per_filter + b.shortcut_macs(shortcut)
                 for k, b in zip(plan, BLOCKS, strict=True))
    return stem + blocks + fc


def plan_params(plan: Sequence[int], shortcut: str = DEFAULT_SHORTCUT) -> int:
    """Parameters of ``resnet20(shortcut, widths=plan)``."""
    return count_params(resnet20(shortcut, check_plan(plan)))


def macs_removed(plan: Sequence[int], shortcut: str = DEFAULT_SHORTCUT) -> float:
    """Fraction of the unpruned ResNet20's MACs that ``plan`` removes."""
    return 1 - plan_macs(plan, shortcut) / plan_macs(DEFAULT_WIDTHS, shortcut)


def _budget(fraction_of_macs_removed: float, shortcut: str) -> int:
    """MACs left to the nine blocks' conv1/conv2 filters by a target (checked reachable)."""
    if not 0 <= fraction_of_macs_removed < 1:
        raise ValueError(f"the fraction of MACs removed must be in [0, 1), "
                         f"got {fraction_of_macs_removed!r}")
    dense = plan_macs(DEFAULT_WIDTHS, shortcut)
    fixed = plan_macs([0] * len(BLOCKS), shortcut)  # stem, shortcuts, fc
    budget = math.floor((1 - fraction_of_macs_removed) * dense) - fixed
    if budget < sum(MACS_PER_FILTER):
        most = macs_removed([1] * len(BLOCKS), shortcut)
        raise ValueError(f"cannot remove {fraction_of_macs_removed:.1%} of the MACs by pruning "
                         f"conv1 filters: keeping one filter per block removes {most:.1%}")
    return budget


def uniform_plan(fraction_of_macs_removed: float, shortcut: str = DEFAULT_SHORTCUT,
                 round_to: int = 1) -> tuple[int, ...]:
    """Keep the same fraction of every block's filters, removing at least the target MACs.

    Each block keeps ``round(f * width)`` filters for the exact fraction ``f`` that meets the
    target; while rounding left the plan above the budget, the block with the largest kept
    fraction loses ``round_to`` filters. ``round_to`` > 1 keeps widths multiples of it (which
    some CPU kernels run faster).
    """
    budget = _budget(fraction_of_macs_removed, shortcut)
    f = budget / sum(w * c for w, c in zip(DEFAULT_WIDTHS, MACS_PER_FILTER, strict=True))
    plan = [_round_width(f * w, w, round_to) for w in DEFAULT_WIDTHS]

    def cost(p):
        return sum(k * c for k, c in zip(p, MACS_PER_FILTER, strict=True))

    while cost(plan) > budget:  # too many MACs: trim the most kept block
        order = sorted(range(len(plan)), key=lambda i: (-plan[i] / DEFAULT_WIDTHS[i], i))
        i = next((i for i in order if plan[i] > round_to), None)
        if i is None:
            most = macs_removed(plan, shortcut)
            raise ValueError(f"cannot remove {fraction_of_macs_removed:.1%} of the MACs with "
                             f"widths multiple of {round_to}: at most {most:.1%}")
        plan[i] -= round_to
    while True:  # MACs to spare: give filters back to the least kept block that fits
        fits = [i for i in range(len(plan)) if plan[i] + round_to <= DEFAULT_WIDTHS[i]
                and cost(plan) + round_to * MACS_PER_FILTER[i] <= budget]
        if not fits:
            return tuple(plan)
        plan[min(fits, key=lambda i: (plan[i] / DEFAULT_WIDTHS[i], i))] += round_to


def _round_width(x: float, width: int, round_to: int) -> int:
    return int(min(width, max(round_to, round_to * round(x / round_to))))


# --------------------------------------------------------------------------- sensitivity


@dataclass(frozen=True)
class Sensitivity:
    """Predicted accuracy loss of every block pruned alone to every width.

    ``loss[block][k]`` is the accuracy (fraction) lost when only ``block`` keeps ``k`` of its
    filters: linearly interpolated between measured widths, made non-increasing in ``k``
    (a noisy measurement may not suggest that fewer filters are better), 0 at full width, and
    chance accuracy (1 / classes) at k = 0 as the pessimistic end point below the smallest
    measured width.
    """

    dense_accuracy: float
    loss: dict[str, np.ndarray]
    measured: tuple[dict, ...]  # the records it was built from
    strategy: str
    bn_recalibration: bool

    @classmethod
    def from_records(cls, records: Sequence[dict], dense_accuracy: float, strategy: str = "merge",
                     bn_recalibration: bool = True, num_classes: int = 10) -> Sensitivity:
        """Build from records ``{block, strategy, bn_recalibration, kept_filters, accuracy}``.

        ``kept_filters`` is a count (int) or a fraction of the block's width (float <= 1);
        records of other strategies or recalibration settings are ignored.
        """
        dense_accuracy = float(dense_accuracy)
        chosen = [r for r in records if r.get("strategy") == strategy
                  and bool(r.get("bn_recalibration")) == bn_recalibration]
        loss = {}
        for name, width in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True):
            points = {width: 0.0, 0: dense_accuracy - 1 / num_classes}
            for r in chosen:
                if str(r.get("block")) == name:
                    kept = kept_count(r["kept_filters"], width)
                    points[kept] = dense_accuracy - float(r["accuracy"])
            if len(points) == 2:
                raise ValueError(f"no {strategy!r} records (bn_recalibration={bn_recalibration}) "
                                 f"for block {name}")
            ks = np.array(sorted(points))
            curve = np.interp(np.arange(width + 1), ks, [points[k] for k in ks])
            curve = np.maximum.accumulate(curve[::-1])[::-1]  # non-increasing in k
            curve = np.clip(curve, 0.0, None)
            curve[width] = 0.0
            loss[name] = curve
        return cls(dense_accuracy, loss, tuple(chosen), strategy, bn_recalibration)

    def predicted_loss(self, plan: Sequence[int]) -> float:
        """Sum over blocks of each block's loss at its kept width (interactions ignored)."""
        plan = check_plan(plan)
        return float(sum(self.loss[n][k] for n, k in zip(BLOCK_NAMES, plan, strict=True)))


def kept_count(kept_filters, width: int) -> int:
    """A record's ``kept_filters`` as a count: counts pass, fractions (float <= 1) are scaled."""
    if isinstance(kept_filters, float) and kept_filters <= 1 and not kept_filters.is_integer():
        return max(1, round(kept_filters * width))
    return int(kept_filters)


def sensitivity_plan(fraction_of_macs_removed: float, sensitivity: Sensitivity,
                     shortcut: str = DEFAULT_SHORTCUT, round_to: int = 1,
                     tie_break: float = 1e-6) -> tuple[int, ...]:
    """The plan of least predicted accuracy loss that removes at least the target MACs.

    Minimises ``sum_b loss_b(k_b)`` subject to ``sum_b k_b * MACs_per_filter_b <= budget``
    exactly, by dynamic programming over the budget in units of the gcd of the per-filter costs
    (a few thousand units for ResNet20). A tiny convex penalty ``tie_break * (1 - k/width)^2``
    per block breaks ties between equally good plans (e.g. all predicted lossless) in favour of
    spreading the pruning evenly, and makes the optimum use the budget to within one filter of
    some block.
    """
    budget = _budget(fraction_of_macs_removed, shortcut)
    unit = reduce(math.gcd, MACS_PER_FILTER)
    costs = [c // unit for c in MACS_PER_FILTER]
    capacity = budget // unit
    inf = math.inf
    best = np.full(capacity + 1, inf)  # best[j]: least loss of the blocks so far using j units
    best[0] = 0.0
    choices = []
    for name, width, cost in zip(BLOCK_NAMES, DEFAULT_WIDTHS, costs, strict=True):
        ks = list(range(round_to, width + 1, round_to))
        if width not in ks:
            ks.append(width)
        new = np.full(capacity + 1, inf)
        arg = np.zeros(capacity + 1, dtype=np.int64)
        for k in ks:
            loss = sensitivity.loss[name][k] + tie_break * (1 - k / width) ** 2
            shift = k * cost
            if shift > capacity:
                break
            cand = np.full(capacity + 1, inf)
            cand[shift:] = best[:capacity + 1 - shift] + loss
            better = cand < new
            new[better], arg[better] = cand[better], k
        best = new
        choices.append(arg)
    j = int(np.argmin(best))
    if not math.isfinite(best[j]):
        raise ValueError(f"no plan with widths multiple of {round_to} meets the target "
                         f"{fraction_of_macs_removed:.1%}")
    plan = []
    for arg, cost in zip(reversed(choices), reversed(costs), strict=True):
        k = int(arg[j])
        plan.append(k)
        j -= k * cost
    return tuple(reversed(plan))


@torch.no_grad()
def block_sensitivity(model: ResNet, images: Tensor, labels: Tensor, calibration: Tensor,
                      strategy: str = "merge", fractions: Sequence[float] = (0.25, 0.5, 0.75),
                      recalibration_batches: int = 10, seed: int = 0) -> list[dict]:
    """Accuracy of ``model`` with one block pruned at a time, with BN recalibration.

    For each block and each kept fraction (of the block's width, at least one filter), prune
    only that block with ``strategy``, re-estimate BN statistics on ``calibration`` (uint8
    training images) and measure top-1 accuracy on ``images``. Returns records in the format
    of notebook 04's ``results/block_pruning.json``:
    ``{block, strategy, bn_recalibration, kept_filters, accuracy, eval_images}``.
    """
    check_strategy(strategy)
    records = []
    for name, width in zip(BLOCK_NAMES, model.widths, strict=True):
        for k in sorted({max(1, round(f * width)) for f in fractions if round(f * width) < width}):
            pruned = prune_block(model, name, k, strategy, seed=seed)
            recalibrate_bn(pruned, calibration, batches=recalibration_batches)
            acc = accuracy(pruned, images, labels)
            records.append({"block": name, "strategy": strategy, "bn_recalibration": True,
                            "kept_filters": k, "accuracy": acc.value, "eval_images": acc.images})
    return records


def measure_sensitivity(model: ResNet, images: Tensor, labels: Tensor, calibration: Tensor,
                        strategy: str = "merge", fractions: Sequence[float] = (0.25, 0.5, 0.75),
                        recalibration_batches: int = 10, seed: int = 0) -> Sensitivity:
    """:func:`block_sensitivity` plus its baseline: ``model`` itself after BN recalibration on
    the same ``calibration`` images, measured on the same ``images``."""
    baseline = recalibrate_bn(copy.deepcopy(model), calibration, batches=recalibration_batches)
    dense = accuracy(baseline, images, labels).value
    records = block_sensitivity(model, images, labels, calibration, strategy, fractions,
                                recalibration_batches, seed)
    return Sensitivity.from_records(records, dense, strategy, bn_recalibration=True,
                                    num_classes=model.num_classes)


def sensitivity_from_json(path, dense_accuracy: float, eval_images: int,
                          device: str | torch.device, strategy: str = "merge"
                          ) -> tuple[Sensitivity | None, str]:
    """Notebook 04's sweep (``results/block_pruning.json``) as a :class:`Sensitivity`, if usable.

    Usable means: it exists, it was measured on as many test images, on the same kind of device
    (cuda or cpu), its unpruned accuracy equals ``dense_accuracy`` to within 0.1 point or two
    images (the same checkpoint; the sweep runs convolutions in strict fp32, so TF32 may flip an
    image or two), and it has recalibrated records of ``strategy`` for every block. Returns the
    sensitivity (or None) and a sentence saying why.
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return None, f"{path.name} does not exist"
    saved = json.loads(path.read_text(encoding="utf-8"))
    kind = torch.device(device).type
    saved_kind = "cpu" if saved.get("device") == "cpu" else "cuda"  # device_name(): GPU or cpu
    if saved.get("eval_images") != eval_images:
        return None, (f"{path.name} was measured on {saved.get('eval_images')} test images, "
                      f"not {eval_images:,}")
    if saved_kind != kind:
        return None, f"{path.name} was measured on {saved.get('device')!r}, not on {kind}"
    tolerance = max(1e-3, 2.01 / eval_images)
    if abs(float(saved.get("dense_accuracy", -1.0)) - dense_accuracy) > tolerance:
        return None, (f"{path.name} has another unpruned accuracy "
                      f"({saved.get('dense_accuracy')} vs {dense_accuracy}): another checkpoint")
    baseline = saved.get("dense_accuracy_recalibrated") or saved["dense_accuracy"]
    try:
        sens = Sensitivity.from_records(saved.get("records", []), baseline, strategy, True)
    except ValueError as e:
        return None, f"{path.name} is incomplete: {e}"
    return sens, (f"read from {path.name} ({len(sens.measured)} {strategy!r} points with BN "
                  f"recalibration, {eval_images:,} test images, {saved.get('device')})")


# --------------------------------------------------------------------------- pruning


@torch.no_grad()
def prune_network(model: ResNet, plan: Sequence[int] | Mapping[str, int], strategy: str,
                  seed: int = 0) -> ResNet:
    """A copy of ``model`` whose nine blocks keep ``plan`` conv1 filters (``model`` untouched).

    Each block is pruned with :func:`helpers.pruning.prune_block` (the blocks are independent:
    a block's clustering only looks at its own conv1 and bn1). Blocks whose plan equals their
    current width are left as they are. The copy's ``meta`` records the plan and strategy.
    BN statistics are not recalibrated here: call :func:`helpers.pruning.recalibrate_bn`.
    """
    check_strategy(strategy)
    plan = check_plan(plan, model.widths)
    pruned = copy.deepcopy(model)
    for name, k, width in zip(BLOCK_NAMES, plan, model.widths, strict=True):
        if k < width:
            pruned = prune_block(pruned, name, k, strategy, seed=seed)
    pruned.meta = {"plan": list(plan), "strategy": strategy, "seed": seed}
    return pruned


# --------------------------------------------------------------------------- measuring


def compare_latency(models: Mapping[str, nn.Module], batch_size: int,
                    device: str | torch.device = "cpu", rounds: int = 5, repeats: int = 10,
                    warmup: int = 2) -> dict[str, float]:
    """Median milliseconds per forward pass of several models, measured interleaved.

    ``rounds`` times, every model in turn runs :func:`helpers.metrics.latency_ms` (``warmup``
    + ``repeats`` passes, median); the result per model is the median over rounds. Interleaving
    makes a slow phase of the machine (another process, thermal throttling) hit all models
    alike instead of whichever was measured then.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(latency_ms(model, batch_size, device, repeats, warmup))
    return {name: float(np.median(t)) for name, t in times.items()}




@torch.no_grad()
def fold_bn(model: ResNet) -> ResNet:
    """An inference copy of ``model`` with every BN folded into the convolution before it.

    In eval mode a BN is a per-channel affine map, so ``bn(conv(x))`` equals one convolution
    with scaled weights and a bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). The copy
    computes the same function (to float rounding) without the BN passes over memory, which is
    what a deployment would run; it cannot be trained further (its BN layers are gone).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    pairs = [(folded, "conv", "bn")]
    for block in folded.blocks().values():
        pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
        if isinstance(block.shortcut, nn.Sequential) and len(block.shortcut) == 2:
            pairs.append((block.shortcut, "0", "1"))
    for parent, conv, bn in pairs:
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    return folded
