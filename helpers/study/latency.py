"""Plans chosen by time: a latency model from measured networks, and the search under a budget.

MACs are a proxy; what a reader wants is time, and time depends on the runtime. CPU
convolutions (oneDNN in PyTorch, ONNX Runtime's own kernels) compute output channels in blocks
of 16 with AVX-512, and ONNX Runtime keeps activations in that blocked layout only between
layers whose channel counts are multiples of the block: a width of 24 can run slower than 32,
and a stage of 8-channel blocks converts its layout once, not once per block. So the candidate
widths of a block (:func:`candidate_widths`) are multiples of :data:`CHANNEL_BLOCK`, plus 8 in
the two narrow stages, plus 0 where the block can be removed; and time is measured for the
three blocks of a stage together.

A **latency table** gives, for one runtime and batch size, the measured milliseconds of the
unpruned network (``dense_ms``) and, for each stage and each combination of its three blocks'
candidate widths, how much faster or slower the whole network runs when only that stage is
changed (``stages[stage]["8,0,16"]``, milliseconds, 0 at full width). Whole networks are timed,
not blocks alone, so that what a runtime does between layers is in every number. It is
measured by :mod:`helpers.study.latency_tables`. A plan's predicted latency is the unpruned
time plus the changes of its three stages (:func:`predict_ms`): additive across stages, exact
within one; checked there against measured whole networks.

:func:`latency_plan` returns the plan of least predicted accuracy loss (the sensitivity
curves of :class:`helpers.plans.Sensitivity`, with the measured cost of removing a block at
width 0) whose predicted latency is within a budget in every table given, e.g. at least 1.5x
faster than the unpruned network in PyTorch and in ONNX Runtime at once. The search is
exhaustive over the candidate widths, so it is exact for the model; :func:`latency_plans`
gives the best few, for a choice that times them (a model of time is only a model).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from helpers.models import BLOCK_NAMES, BLOCKS_PER_STAGE, DEFAULT_WIDTHS, REMOVABLE, STAGE_WIDTHS
from helpers.models import STAGE_NAMES as STAGES

CHANNEL_BLOCK = 16  # output channels an AVX-512 CPU convolution computes together


def _blocked(width: int) -> tuple[int, ...]:
    """8 if ``width`` is at most 32 (where multiples of 16 alone would leave one or two
    widths), then every multiple of :data:`CHANNEL_BLOCK` up to ``width``."""
    half = (8,) if width <= 2 * CHANNEL_BLOCK else ()
    return half + tuple(range(CHANNEL_BLOCK, width + 1, CHANNEL_BLOCK))


def candidate_widths(block: str) -> tuple[int, ...]:
    """The widths a latency table measures for ``block``: 0 if it can be removed, then the
    channel-blocked widths up to its full width (8 in the narrow stages, multiples of
    :data:`CHANNEL_BLOCK`)."""
    if block not in BLOCK_NAMES:
        raise ValueError(f"unknown block {block!r}; blocks: {', '.join(BLOCK_NAMES)}")
    width = DEFAULT_WIDTHS[BLOCK_NAMES.index(block)]
    return ((0,) if block in REMOVABLE else ()) + _blocked(width)


def candidate_stage_widths(stage: str) -> tuple[int, ...]:
    """The residual widths a latency table measures for ``stage`` (:mod:`helpers.study.channels`):
    the channel-blocked widths up to the stage's full width."""
    stage_blocks(stage)  # an unknown stage: the error names the valid ones
    return _blocked(STAGE_WIDTHS[STAGES.index(stage)])


def residual_options() -> list[tuple[int, ...]]:
    """Every combination of the three stages' candidate residual widths (full included)."""
    return list(itertools.product(*(candidate_stage_widths(s) for s in STAGES)))


def stage_blocks(stage: str) -> tuple[str, ...]:
    """The names of the blocks of ``stage`` ("layer2" -> layer2.0, layer2.1, layer2.2)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return tuple(b for b in BLOCK_NAMES if b.startswith(stage + "."))


def stage_key(widths: Sequence[int]) -> str:
    """A stage's three widths as a table key: (8, 0, 16) -> "8,0,16"."""
    return ",".join(str(int(k)) for k in widths)


def stage_options(stage: str) -> list[tuple[int, ...]]:
    """Every combination of the candidate widths of the stage's blocks (full width included)."""
    return list(itertools.product(*(candidate_widths(b) for b in stage_blocks(stage))))


def _stages(plan: Sequence[int]) -> dict[str, tuple[int, ...]]:
    plan = tuple(int(k) for k in plan)
    if len(plan) != len(BLOCK_NAMES):
        raise ValueError(f"a plan has {len(BLOCK_NAMES)} widths, got {len(plan)}")
    return {s: plan[i * BLOCKS_PER_STAGE:(i + 1) * BLOCKS_PER_STAGE]
            for i, s in enumerate(STAGES)}


def predict_ms(table: Mapping, plan: Sequence[int],
               stage_widths: Sequence[int] | None = None) -> float:
    """Predicted milliseconds of a forward pass of the network with conv1 widths ``plan`` (and
    residual ``stage_widths``, default the full ones).

    ``table``: ``{"dense_ms": ms, "stages": {stage: {"k0,k1,k2": ms}}}``: the unpruned
    network's time, plus for each stage the change of that time when only this stage's three
    blocks have those widths. The prediction is ``dense_ms`` plus the changes of its stages.
    With narrower stages the table also needs ``"residual": {"r1,r2,r3": ms}``, the change when
    only the stages are narrowed; a stage's change of conv1 widths is then scaled by the
    fraction of its residual channels kept (a block's convolutions read or write them): a first
    approximation, checked on whole networks.
    """
    t = narrowed_table(table, STAGE_WIDTHS if stage_widths is None else stage_widths)
    total = t["dense_ms"]
    for stage, widths in _stages(plan).items():
        key = stage_key(widths)
        if key not in t["stages"][stage]:
            raise ValueError(f"the table has no time for {stage} at widths {key} (the candidate "
                             f"widths: helpers.study.latency.candidate_widths)")
        total += t["stages"][stage][key]
    return total


def latency_plans(loss: Mapping[str, np.ndarray], tables: Sequence[Mapping],
                  budgets_ms: Sequence[float], n: int = 1,
                  tie_break: float = 1e-6) -> list[tuple[int, ...]]:
    """The ``n`` plans of least predicted accuracy loss within every latency budget, best
    first (fewer if fewer fit; none if none does).

    Args:
        loss: per block, the predicted accuracy lost (fraction) at each width 0..full
            (``Sensitivity.loss``, ideally with the measured removal cost at width 0); the
            loss of a plan is the sum over its blocks.
        tables: latency tables (:func:`predict_ms`), e.g. PyTorch and ONNX Runtime at batch
            256; only the stage widths every table measured are candidates.
        budgets_ms: one budget per table: the predicted milliseconds a plan may take there.
        tie_break: a tiny penalty on predicted time, so that of equally accurate plans the
            faster comes first.
    """
    if len(tables) != len(budgets_ms) or not tables:
        raise ValueError(f"need one budget per table, got {len(tables)} tables and "
                         f"{len(budgets_ms)} budgets")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    options, stage_loss, stage_ms = [], [], []
    for stage in STAGES:
        keys = sorted(set.intersection(*(set(t["stages"][stage]) for t in tables)),
                      key=lambda k: tuple(map(int, k.split(","))))
        options.append([tuple(map(int, k.split(","))) for k in keys])
        blocks = stage_blocks(stage)
        stage_loss.append(np.array([sum(float(loss[b][k]) for b, k in zip(blocks, w,
                                                                           strict=True))
                                    for w in options[-1]]))
        stage_ms.append(np.array([[float(t["stages"][stage][k]) for k in keys] for t in tables]))
    index = np.indices(tuple(len(o) for o in options)).reshape(len(STAGES), -1)
    total_loss = sum(stage_loss[s][index[s]] for s in range(len(STAGES)))
    times = np.array([float(t["dense_ms"]) for t in tables])[:, None] + sum(
        stage_ms[s][:, index[s]] for s in range(len(STAGES)))
    ok = (times <= np.asarray(budgets_ms, float)[:, None]).all(0)
    score = np.where(ok, total_loss + tie_break * times.sum(0), np.inf)
    best = np.argsort(score, kind="stable")[:min(n, int(ok.sum()))]
    return [tuple(k for s in range(len(STAGES)) for k in options[s][index[s, i]])
            for i in best]


def latency_plan(loss: Mapping[str, np.ndarray], tables: Sequence[Mapping],
                 budgets_ms: Sequence[float], tie_break: float = 1e-6) -> tuple[int, ...] | None:
    """The plan of least predicted accuracy loss within every latency budget; None if none is
    (:func:`latency_plans` with ``n = 1``)."""
    best = latency_plans(loss, tables, budgets_ms, 1, tie_break)
    return best[0] if best else None


def narrowed_table(table: Mapping, stage_widths: Sequence[int]) -> dict:
    """The table a network of residual ``stage_widths`` is predicted by: ``dense_ms`` plus the
    residual change, every stage's entries scaled by the share of its channels kept (at the
    full widths, the table's own numbers)."""
    stage_widths = tuple(int(r) for r in stage_widths)
    extra = 0.0
    if stage_widths != STAGE_WIDTHS:
        key = stage_key(stage_widths)
        if key not in table.get("residual", {}):
            raise ValueError(f"the table has no time for residual widths {key} (the candidate "
                             f"widths: helpers.study.latency.candidate_stage_widths)")
        extra = float(table["residual"][key])
    return {"dense_ms": float(table["dense_ms"]) + extra,
            "stages": {s: {k: float(v) * r / full for k, v in table["stages"][s].items()}
                       for s, r, full in zip(STAGES, stage_widths, STAGE_WIDTHS, strict=True)}}


def predicted_loss(loss: Mapping[str, np.ndarray], plan: Sequence[int],
                   stage_loss: Mapping[str, Mapping] | None = None,
                   stage_widths: Sequence[int] | None = None) -> float:
    """The accuracy a plan is predicted to lose (fraction): its blocks' ``loss`` at their
    widths plus, for each narrowed stage, ``stage_loss[stage][width]``."""
    stage_widths = STAGE_WIDTHS if stage_widths is None else stage_widths
    return sum(float(loss[b][k]) for b, k in zip(BLOCK_NAMES, plan, strict=True)) + sum(
        float(stage_loss[s][r]) for s, r, full in zip(STAGES, stage_widths, STAGE_WIDTHS,
                                                      strict=True) if r != full)


def residual_latency_plans(loss: Mapping[str, np.ndarray], stage_loss: Mapping[str, Mapping],
                           tables: Sequence[Mapping], budgets_ms: Sequence[float],
                           n: int = 1, tie_break: float = 1e-6
                           ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """:func:`latency_plans` over residual widths too: the ``n`` pairs ``(plan, stage_widths)``
    of least predicted loss within every budget, best first.

    ``stage_loss[stage][r]``: the accuracy lost (fraction) by narrowing ``stage`` alone to
    ``r`` residual channels. A stage absent from ``stage_loss`` stays at its full width; a
    stage given must have a loss for every candidate width, and the tables a time for every
    combination of the stages given (else ValueError: a missing measurement is an error, not a
    plan left out). A pair's loss is :func:`predicted_loss`; its time is predicted by
    :func:`narrowed_table`.
    """
    for s, by_width in stage_loss.items():
        missing = [r for r in candidate_stage_widths(s)[:-1] if r not in by_width]
        if missing:
            raise ValueError(f"no loss measured for {s} at residual widths {missing} (measure "
                             f"them: helpers.study.latency_plans.stage_sensitivity)")
    found = []
    for widths in residual_options():
        narrowed = [(s, r) for s, r, full in zip(STAGES, widths, STAGE_WIDTHS, strict=True)
                    if r != full]
        if any(s not in stage_loss for s, _ in narrowed):
            continue  # a stage without losses given stays at its full width
        if narrowed and not all(stage_key(widths) in t.get("residual", {}) for t in tables):
            raise ValueError(f"a table has no time for residual widths {stage_key(widths)} "
                             f"(python -m helpers.study.latency_tables --residual-only)")
        scaled = [narrowed_table(t, widths) for t in tables]
        for plan in latency_plans(loss, scaled, budgets_ms, n, tie_break):
            ms = sum(predict_ms(t, plan) for t in scaled)
            found.append((predicted_loss(loss, plan, stage_loss, widths) + tie_break * ms,
                          plan, tuple(widths)))
    found.sort(key=lambda f: f[0])
    return [(plan, widths) for _, plan, widths in found[:n]]


def removal_aware_loss(loss: Mapping[str, np.ndarray],
                       removal_loss: Mapping[str, float]) -> dict[str, np.ndarray]:
    """``loss`` with the measured accuracy lost by removing a block (fraction) at width 0.

    A sensitivity curve measured at a few kept fractions knows nothing of width 0 (it assumes
    chance accuracy there); removing a block with an identity shortcut costs far less, and
    :func:`helpers.study.network.removal_accuracy` measures it.
    """
    out = {b: np.asarray(c, float).copy() for b, c in loss.items()}
    for block, lost in removal_loss.items():
        if block not in REMOVABLE:
            raise ValueError(f"{block} cannot be removed")
        out[block][0] = max(float(lost), 0.0)
    return out
