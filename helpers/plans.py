"""Pruning plans: how many conv1 filters each BasicBlock keeps, their exact MACs, and how to
choose them for a MACs target (uniformly, or guided by measured per-block sensitivity).

A *plan* is nine integers, the conv1 width each BasicBlock keeps ("layer1.0" .. "layer3.2").
Pruning conv1 of a block shrinks conv1 and conv2 of that block together, so a block's MACs are
linear in its kept width ``k``::

    MACs(block) = k * (in_planes + planes) * 9 * H_out * W_out  (+ the shortcut's, fixed)

and a plan's MACs have an exact closed form (:func:`plan_macs`, tested against
:func:`helpers.metrics.count_macs`). Two ways to choose a plan for a MACs target:

- :func:`uniform_plan`: keep (as nearly as integers allow) the same fraction of every block.
- :func:`sensitivity_plan`: from per-block curves "accuracy after pruning this block alone to k
  filters" (:class:`Sensitivity`, measured by :func:`helpers.study.network.block_sensitivity` or
  read from notebook 04's ``results/block_pruning.json``), the plan of least *predicted* accuracy
  loss, taking the loss of a plan as the sum of its blocks' losses. Solved exactly by dynamic
  programming over the MACs budget (a knapsack), not greedily.

A third, :func:`depth_plan`, removes whole blocks first: a block kept at 0 filters computes
``relu(x + bias)`` (:class:`helpers.models.BasicBlock`), which also saves the memory-bound
BN, ReLU and addition passes that filter pruning leaves in place; the rest of the budget is
spread uniformly over the other blocks.

All take ``round_to``: widths multiple of 8 run markedly faster in oneDNN's CPU convolutions
than odd widths such as 7, 15 or 30 (notebook 05 times it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np

from helpers.metrics import count_params
from helpers.models import (
    BLOCK_NAMES,
    BLOCKS_PER_STAGE,
    DEFAULT_WIDTHS,
    SHORTCUTS,
    STAGE_WIDTHS,
    check_removable,
    resnet20,
)
from helpers.models import REMOVABLE as REMOVABLE  # the blocks a plan may keep at 0 filters

TREATMENTS = ("none", "recal", "refit+recal")  # what a pruned network got before it was scored

INPUT_SIZE = 32
KERNEL = 3 * 3
DEFAULT_SHORTCUT = "conv3x3"  # the repository's checkpoint (helpers.paths.CHECKPOINT)


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
    """Validate a plan against the current ``widths``: nine integers, 0 <= k <= width (0 removes
    the block's residual branch, allowed for the blocks with an identity shortcut).

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
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= width:
            raise ValueError(f"plan: block {name} must keep an integer number of filters in "
                             f"0..{width} (its conv1 has {width}), got {k!r}")
        out.append(int(k))
    check_removable([name for name, k in zip(BLOCK_NAMES, out, strict=True) if k == 0])
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


def _budget(fraction_of_macs_removed: float, shortcut: str, removed: Sequence[str] = ()) -> int:
    """MACs left to the nine blocks' conv1/conv2 filters by a target (checked reachable: at
    least one filter in every block but the ``removed`` ones, which keep 0)."""
    if not 0 <= fraction_of_macs_removed < 1:
        raise ValueError(f"the fraction of MACs removed must be in [0, 1), "
                         f"got {fraction_of_macs_removed!r}")
    dense = plan_macs(DEFAULT_WIDTHS, shortcut)
    fixed = plan_macs([0] * len(BLOCKS), shortcut)  # stem, shortcuts, fc
    budget = math.floor((1 - fraction_of_macs_removed) * dense) - fixed
    narrowest = _narrowest(1, removed)
    if budget < sum(k * c for k, c in zip(narrowest, MACS_PER_FILTER, strict=True)):
        most = macs_removed(narrowest, shortcut)
        kept = (f"keeping one filter per block but the {len(removed)} removed ones"
                if removed else "keeping one filter per block")
        raise ValueError(f"cannot remove {fraction_of_macs_removed:.1%} of the MACs by pruning "
                         f"conv1 filters: {kept} removes {most:.1%}")
    return budget


def uniform_plan(fraction_of_macs_removed: float, shortcut: str = DEFAULT_SHORTCUT,
                 round_to: int = 1, removed: Sequence[str] = ()) -> tuple[int, ...]:
    """Keep (as nearly as integers allow) the same fraction of every block's filters, removing
    at least the target MACs.

    The plan minimises ``sum_b MACs_b * (1 - k_b / width_b)^2`` (``MACs_b``: the block's MACs
    at full width) within the MACs budget, solved exactly like :func:`sensitivity_plan`: without
    rounding its optimum is one common fraction for every block, and with widths restricted to
    multiples of ``round_to`` (which oneDNN's CPU convolutions run faster, for 8) it is the
    nearest even spread the budget allows, rather than the plan a rounding rule happens to give.
    Blocks named in ``removed`` keep 0 filters (see :func:`depth_plan`).
    """
    removed = check_removable(removed)
    losses = [w * c * (1 - np.arange(w + 1) / w) ** 2
              for w, c in zip(DEFAULT_WIDTHS, MACS_PER_FILTER, strict=True)]
    scale = sum(w * c for w, c in zip(DEFAULT_WIDTHS, MACS_PER_FILTER, strict=True))
    return _least_loss_plan([loss / scale for loss in losses], fraction_of_macs_removed,
                            shortcut, round_to, removed)


def depth_plan(fraction_of_macs_removed: float, removed: Sequence[str],
               shortcut: str = DEFAULT_SHORTCUT, round_to: int = 1) -> tuple[int, ...]:
    """Remove the ``removed`` blocks (0 filters), then :func:`uniform_plan` over the others.

    Which blocks to remove is a measured choice (study/05: in the stage whose depth plans run
    fastest, the block whose removal alone costs least on the selection half,
    :func:`helpers.study.network.removal_accuracy`). If removing them already meets the target
    the other blocks stay whole.
    """
    if not removed:
        raise ValueError("depth_plan needs at least one block to remove")
    return uniform_plan(fraction_of_macs_removed, shortcut, round_to, removed)


def _narrowest(round_to: int, removed: Sequence[str] = ()) -> list[int]:
    """The narrowest plan with widths multiple of ``round_to`` (0 for ``removed`` blocks)."""
    return [0 if n in removed else min(round_to, w)
            for n, w in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True)]


def feasible_round_to(fraction_of_macs_removed: float, round_to: int,
                      shortcut: str = DEFAULT_SHORTCUT, removed: Sequence[str] = ()) -> int:
    """``round_to``, or the largest of its divisors that can still reach the target.

    Widths multiple of 8 cannot go below 8 filters, so they remove at most 65.6% of ResNet20's
    MACs (conv3x3 shortcut): a 70% target falls back to multiples of 4.
    """
    for r in sorted((d for d in range(1, round_to + 1) if round_to % d == 0), reverse=True):
        if plan_macs(_narrowest(r, removed), shortcut) <= plan_macs(DEFAULT_WIDTHS, shortcut) * (
                1 - fraction_of_macs_removed):
            return r
    raise ValueError(f"no plan can remove {fraction_of_macs_removed:.1%} of the MACs")


def describe(plan: Sequence[int], shortcut: str = DEFAULT_SHORTCUT) -> dict:
    """A plan's widths, MACs, share of the MACs removed and parameters, for tables."""
    plan = check_plan(plan)
    return {"widths": plan, "macs": plan_macs(plan, shortcut),
            "macs_removed": macs_removed(plan, shortcut), "params": plan_params(plan, shortcut)}


def _least_loss_plan(losses: Sequence[np.ndarray], fraction_of_macs_removed: float,
                     shortcut: str, round_to: int, removed: Sequence[str] = ()) -> tuple[int, ...]:
    """Widths ``k_b`` (multiples of ``round_to``, or the full width; 0 for ``removed`` blocks)
    minimising
    ``sum_b losses[b][k_b]`` subject to ``sum_b k_b * MACs_per_filter_b <= budget``, exactly:
    dynamic programming over the budget in units of the gcd of the per-filter costs (a few
    thousand units for ResNet20)."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
    budget = _budget(fraction_of_macs_removed, shortcut, removed)
    unit = reduce(math.gcd, MACS_PER_FILTER)
    costs = [c // unit for c in MACS_PER_FILTER]
    capacity = budget // unit
    best = np.full(capacity + 1, math.inf)  # best[j]: least loss of the blocks so far, j units
    best[0] = 0.0
    choices = []
    for name, loss, width, cost in zip(BLOCK_NAMES, losses, DEFAULT_WIDTHS, costs, strict=True):
        ks = list(range(round_to, width + 1, round_to))
        if width not in ks:
            ks.append(width)
        if name in removed:
            ks = [0]
        new = np.full(capacity + 1, math.inf)
        arg = np.zeros(capacity + 1, dtype=np.int64)
        for k in ks:
            shift = k * cost
            if shift > capacity:
                break
            cand = np.full(capacity + 1, math.inf)
            cand[shift:] = best[:capacity + 1 - shift] + loss[k]
            better = cand < new
            new[better], arg[better] = cand[better], k
        best = new
        choices.append(arg)
    j = int(np.argmin(best))
    if not math.isfinite(best[j]):
        most = macs_removed(_narrowest(round_to, removed), shortcut)
        raise ValueError(f"cannot remove {fraction_of_macs_removed:.1%} of the MACs with widths "
                         f"multiple of {round_to}: at most {most:.1%}")
    plan = []
    for arg, cost in zip(reversed(choices), reversed(costs), strict=True):
        k = int(arg[j])
        plan.append(k)
        j -= k * cost
    return tuple(reversed(plan))


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
    treatment: str  # "none", "recal" or "refit+recal": what each pruned network got

    @classmethod
    def from_records(cls, records: Sequence[dict], dense_accuracy: float, strategy: str = "l1",
                     treatment: str = "refit+recal", num_classes: int = 10) -> Sensitivity:
        """Build from records ``{block, strategy, treatment, kept_filters, accuracy}``.

        ``kept_filters`` is a count (int) or a fraction of the block's width (float <= 1);
        records of other strategies or treatments are ignored. A record without ``treatment``
        but with ``bn_recalibration`` (the older format) counts as "recal" or "none".
        """
        if treatment not in TREATMENTS:
            raise ValueError(f"treatment must be one of {TREATMENTS}, got {treatment!r}")
        dense_accuracy = float(dense_accuracy)
        chosen = [r for r in records if r.get("strategy") == strategy
                  and record_treatment(r) == treatment]
        loss = {}
        for name, width in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True):
            points = {width: 0.0, 0: dense_accuracy - 1 / num_classes}
            for r in chosen:
                if str(r.get("block")) == name:
                    kept = kept_count(r["kept_filters"], width)
                    points[kept] = dense_accuracy - float(r["accuracy"])
            if len(points) == 2:
                raise ValueError(f"no {strategy!r} records ({treatment}) for block {name}")
            ks = np.array(sorted(points))
            curve = np.interp(np.arange(width + 1), ks, [points[k] for k in ks])
            curve = np.maximum.accumulate(curve[::-1])[::-1]  # non-increasing in k
            curve = np.clip(curve, 0.0, None)
            curve[width] = 0.0
            loss[name] = curve
        return cls(dense_accuracy, loss, tuple(chosen), strategy, treatment)

    def predicted_loss(self, plan: Sequence[int]) -> float:
        """Sum over blocks of each block's loss at its kept width (interactions ignored)."""
        plan = check_plan(plan)
        return float(sum(self.loss[n][k] for n, k in zip(BLOCK_NAMES, plan, strict=True)))


def record_treatment(record: Mapping) -> str:
    """A sweep record's treatment; the older ``bn_recalibration`` flag maps to "recal"/"none"."""
    if "treatment" in record:
        return str(record["treatment"])
    return "recal" if record.get("bn_recalibration") else "none"


def kept_count(kept_filters, width: int) -> int:
    """A record's ``kept_filters`` as a count of filters out of ``width``.

    Integers are counts. A float <= 1 is a fraction of the width (1.0 is the whole block, not
    one filter), scaled and rounded to at least one filter; a larger float must be a whole
    number and is a count.
    """
    if isinstance(kept_filters, bool):
        raise ValueError(f"kept_filters must be a count or a fraction, got {kept_filters!r}")
    if isinstance(kept_filters, (float, np.floating)):
        if 0 < kept_filters <= 1:
            return max(1, round(float(kept_filters) * width))
        if not float(kept_filters).is_integer():
            raise ValueError(f"kept_filters {kept_filters!r} is neither a fraction in (0, 1] "
                             f"nor a whole number of filters")
    count = int(kept_filters)
    if not 0 <= count <= width:
        raise ValueError(f"kept_filters {kept_filters!r} is not a count in 0..{width}")
    return count


def sensitivity_plan(fraction_of_macs_removed: float, sensitivity: Sensitivity,
                     shortcut: str = DEFAULT_SHORTCUT, round_to: int = 1,
                     tie_break: float = 1e-6) -> tuple[int, ...]:
    """The plan of least predicted accuracy loss that removes at least the target MACs.

    Minimises ``sum_b loss_b(k_b)`` subject to ``sum_b k_b * MACs_per_filter_b <= budget``
    exactly, by dynamic programming over the budget in units of the gcd of the per-filter costs
    (a few thousand units for ResNet20), with widths multiple of ``round_to``. A tiny convex
    penalty ``tie_break * (1 - k/width)^2``
    per block breaks ties between equally good plans (e.g. all predicted lossless) in favour of
    spreading the pruning evenly, and makes the optimum use the budget to within one filter of
    some block.
    """
    losses = [sensitivity.loss[name] + tie_break * (1 - np.arange(w + 1) / w) ** 2
              for name, w in zip(BLOCK_NAMES, DEFAULT_WIDTHS, strict=True)]
    return _least_loss_plan(losses, fraction_of_macs_removed, shortcut, round_to)


ALLOCATIONS = ("uniform", "sensitivity", "depth")


def plan_for(fraction_of_macs_removed: float, allocation: str,
             shortcut: str = DEFAULT_SHORTCUT, round_to: int = 1,
             sensitivity: Sensitivity | None = None,
             removed: Sequence[str] = ()) -> tuple[int, ...]:
    """The plan of one allocation at a target, widths multiple of ``round_to`` where the
    target allows it (:func:`feasible_round_to`): :func:`uniform_plan`,
    :func:`sensitivity_plan` (which needs ``sensitivity``) or :func:`depth_plan` (which needs
    the ``removed`` blocks)."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if removed and allocation != "depth":
        raise ValueError(f"removed blocks {tuple(removed)} need the 'depth' allocation, "
                         f"not {allocation!r}")
    if allocation == "depth":
        removed = check_removable(removed)
        r = feasible_round_to(fraction_of_macs_removed, round_to, shortcut, removed)
        return depth_plan(fraction_of_macs_removed, removed, shortcut, r)
    r = feasible_round_to(fraction_of_macs_removed, round_to, shortcut)
    if allocation == "uniform":
        return uniform_plan(fraction_of_macs_removed, shortcut, r)
    if sensitivity is None:
        raise ValueError("a sensitivity-guided plan needs the blocks' sensitivity")
    return sensitivity_plan(fraction_of_macs_removed, sensitivity, shortcut, r)
