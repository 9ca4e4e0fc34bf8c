"""Figures of notebook 05 (whole-network pruning): plans, speed, recovery, fine-tuning, Pareto.

Every figure that joins fine-tuned networks by a line joins only networks fine-tuned for the
same number of epochs (:func:`pareto_by_epochs`), and says how many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.plots import STRATEGY_COLORS, STRATEGY_MARKERS

STAGE_LABELS = {"none": "pruned", "recal": "+ BN recalibration",
                "refit+recal": "+ conv2 refit + BN recalibration", "finetuned": "+ fine-tuning"}
GOAL_POINTS = 0.5  # the target: at most this many points below the reference


def pareto_front(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (no more cost and more accuracy), by cost."""
    order = np.lexsort((-acc, cost))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.array(front, dtype=np.int64)


def recovery(ladder: pd.DataFrame, reference: float, eval_images: int):
    """What each step buys: accuracy after every step, one group of bars per strategy.

    ``ladder``: rows ``{strategy, stage, accuracy}`` with ``stage`` a key of
    :data:`STAGE_LABELS`; the dashed line is the reference (better unpruned network).
    """
    d = ladder.assign(step=ladder.stage.map(STAGE_LABELS), accuracy=100 * ladder.accuracy)
    order = [v for k, v in STAGE_LABELS.items() if k in set(ladder.stage)]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    sns.barplot(d, x="strategy", y="accuracy", hue="step", hue_order=order, palette="Blues",
                ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.axhline(100 * reference, color="black", lw=1, ls="--")
    ax.set(xlabel="which filters stay", ylabel=f"accuracy (%), {eval_images:,} val. images",
           ylim=(0, 100))
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("What each step recovers (dashed: the better unpruned network)", fontsize=11)
    fig.tight_layout()
    return fig


def finetune_curves(histories: Mapping[str, Sequence[dict]], reference: float | None = None):
    """Validation accuracy after every fine-tuning epoch, one line per run."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    images = None
    for name, history in histories.items():
        ax.plot([r["epoch"] for r in history], [100 * r["val_accuracy"] for r in history],
                marker=".", label=name)
        images = images or (history[-1].get("val_images") if history else None)
    if reference is not None:
        ax.axhline(100 * reference, color="black", ls="--", lw=1, label="reference")
        ax.axhspan(100 * reference - GOAL_POINTS, 100 * reference, color="green", alpha=0.08)
    ax.set_xlabel("fine-tuning epoch")
    n = f", {images:,} images" if images else ""
    ax.set_ylabel(f"validation accuracy (%){n}")
    ax.set_title("Fine-tuning with distillation from the unpruned network", fontsize=11)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sensitivity_and_plans(sensitivity, plans: dict[str, tuple[int, ...]],
                          widths: tuple[int, ...], blocks: tuple[str, ...]):
    """Left: the predicted accuracy loss of each block against the fraction it keeps (dots:
    measured). Right: the fraction of filters each plan keeps in every block."""
    from helpers.plans import kept_count

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2),
                                   gridspec_kw={"width_ratios": [1, 1.4]})
    colors = sns.color_palette("viridis", len(blocks))
    for color, name, width in zip(colors, blocks, widths, strict=True):
        curve = 100 * sensitivity.loss[name]
        ax1.plot(np.arange(width + 1) / width, curve, color=color, label=name)
        pts = [r for r in sensitivity.measured if r["block"] == name]
        baseline = sensitivity.dense_accuracy
        ax1.scatter([kept_count(r["kept_filters"], width) / width for r in pts],
                    [100 * (baseline - r["accuracy"]) for r in pts], color=color, s=18)
    ax1.set_xlabel("fraction of the block's conv1 filters kept")
    ax1.set_ylabel("predicted accuracy loss (points)")
    ax1.set_title(f"Sensitivity of each block ({sensitivity.strategy}, "
                  f"{sensitivity.treatment}, pruned alone)", fontsize=10)
    ax1.legend(fontsize=7, ncol=3)
    ax1.set_ylim(bottom=-1)
    rows = [{"plan": label, "block": b, "kept": k / w}
            for label, plan in plans.items() for b, k, w in zip(blocks, plan, widths, strict=True)]
    sns.barplot(pd.DataFrame(rows), x="block", y="kept", hue="plan", ax=ax2, palette="tab20")
    ax2.set_ylabel("fraction of conv1 filters kept")
    ax2.set_xlabel("")
    ax2.set_title("Plans: filters kept per block")
    # below the axes: inside, the legend hid the bars of the last blocks
    ax2.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1),
               frameon=False)
    fig.tight_layout()
    return fig


def speed_against_macs(plans: pd.DataFrame, dense_macs: float, min_speedup: float):
    """Measured CPU speed-up of every plan against its MACs ratio.

    ``plans``: rows ``{target, allocation, macs, speedup}`` (one per plan; plans with the same
    widths share a time). The dotted diagonal is a speed-up equal to the MACs ratio, the
    dashed line the speed goal.
    """
    d = plans.drop_duplicates("plan").assign(ratio=dense_macs / plans.macs)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sns.scatterplot(d, x="ratio", y="speedup", hue="allocation", style="allocation", s=60, ax=ax)
    top = max(d.ratio.max(), d.speedup.max()) * 1.05
    ax.plot([1, top], [1, top], color="grey", lw=1, ls=":", label="speed-up = MACs ratio")
    ax.axhline(min_speedup, color="black", lw=1, ls="--", label=f"goal: {min_speedup:g}x")
    for t, g in d.groupby("target"):
        ax.annotate(f"{t:.0%}", (g.ratio.mean(), g.speedup.max()), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.set(xlabel="MACs ratio (unpruned / pruned)", ylabel="speed-up, CPU, batch 256",
           xlim=(1, top), ylim=(1, top))
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Fewer MACs against faster: each plan, timed", fontsize=11)
    fig.tight_layout()
    return fig


def removal_choice(removal: pd.DataFrame, min_speedup: float, eval_images: int,
                   removed: Sequence[str] = ()):
    """For each removable block: validation accuracy with it removed alone, against the speed-up
    of the depth plan around it (error bars: ``speedup_low`` to ``speedup_high``).

    ``removal``: rows ``{block, accuracy, speedup, speedup_low, speedup_high}``
    (:func:`helpers.study.network.removal_accuracy` joined with
    :func:`helpers.study.network.speed_table`); the blocks in ``removed`` (the choice) are drawn
    filled. The dashed line is the speed goal.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    stage = removal.block.str.slice(0, 6)
    for (name, g), color in zip(stage.groupby(stage), sns.color_palette(n_colors=3),
                                strict=False):
        rows = removal.loc[g.index]
        err = [rows.speedup - rows.speedup_low, rows.speedup_high - rows.speedup]
        ax.errorbar(100 * rows.accuracy, rows.speedup, yerr=err, fmt="none", ecolor=color,
                    lw=1)
        chosen = rows.block.isin(removed)
        ax.scatter(100 * rows.accuracy[~chosen], rows.speedup[~chosen], s=50,
                   facecolors="none", edgecolors=color, label=f"a block of {name}")
        ax.scatter(100 * rows.accuracy[chosen], rows.speedup[chosen], s=70, color=color,
                   edgecolors="black", zorder=5)
    # labels alternately above and below, in order of accuracy: neighbours no longer overlap
    for i, r in enumerate(removal.sort_values("accuracy").itertuples()):
        ax.annotate(r.block, (100 * r.accuracy, r.speedup), textcoords="offset points",
                    xytext=(5, 5) if i % 2 else (5, -12), fontsize=8)
    ax.axhline(min_speedup, color="black", lw=1, ls="--", label=f"goal: {min_speedup:g}x")
    ax.set(xlabel=f"accuracy with the block removed (%), {eval_images:,} validation images",
           ylabel="speed-up of its depth plan\n(CPU, batch 256)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Which block to remove (filled: the choice)", fontsize=11)
    fig.tight_layout()
    return fig


# a rule (strategy) is its colour and marker (helpers.plots); an allocation is the marker's fill
ALLOCATION_FILLS = {"uniform": "none", "sensitivity": "full", "depth": "left"}
FRONT_STYLES = ("--", ":", "-.")  # one line style per fine-tuning budget


def _point(ax, x, y, strategy: str, allocation: str, size: float = 7, **kw):
    """Networks of one rule and allocation: the rule's colour and marker, filled by allocation."""
    return ax.plot(x, y, ls="none", marker=STRATEGY_MARKERS.get(strategy, "o"), ms=size,
                   color=STRATEGY_COLORS.get(strategy), mec=STRATEGY_COLORS.get(strategy),
                   fillstyle=ALLOCATION_FILLS.get(allocation, "full"), **kw)


def pareto_by_epochs(result: Mapping, title: str = ""):
    """Accuracy against MACs from ``results/network_pruning.json``, each Pareto front drawn
    only through points of the same fine-tuning budget.

    Left: every candidate plan after prune + refit + recal (0 epochs) on the selection half,
    where the choices were made, with the unpruned network and their front. Right: after
    fine-tuning, on the confirmation half, which no choice saw: the chosen network of every
    other target and every plan tried at the headline target, one front (line style) per number
    of epochs; the headline network (larger, labelled); the unpruned network and its fine-tuned
    control, which share the unpruned MACs, drawn apart and labelled. In both panels a rule has
    its colour and marker (:data:`helpers.plots.STRATEGY_COLORS`, ``STRATEGY_MARKERS``) and an
    allocation its fill (:data:`ALLOCATION_FILLS`); the legends sit below the axes.
    """
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.8))
    _before_finetuning(ax0, result)
    _after_finetuning(ax1, result)
    for ax in (ax0, ax1):  # below the axes, so that no legend covers a point
        ax.legend(fontsize=7, ncol=3 if ax is ax0 else 2, loc="upper center",
                  bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _before_finetuning(ax, result: Mapping) -> None:
    cand = pd.DataFrame(result["candidates"])
    for (strategy, allocation), g in cand.groupby(["strategy", "allocation"]):
        _point(ax, g.macs / 1e6, 100 * g.accuracy, strategy, allocation,
               label=f"{strategy}, {allocation}")
    dense = result["dense_selection_accuracy"]
    cost = np.r_[cand.macs.to_numpy(float), result["dense_macs"]] / 1e6
    acc = 100 * np.r_[cand.accuracy.to_numpy(float), dense]
    front = pareto_front(cost, acc)
    ax.plot(cost[front], acc[front], color="gray", lw=1, ls="--", zorder=1,
            label="Pareto front (0 epochs)")
    ax.scatter([result["dense_macs"] / 1e6], [100 * dense], marker="X", s=90,
               c="black", zorder=6, label="unpruned")
    ax.set(xlabel="MACs per image (millions)",
           ylabel=f"accuracy (%), selection half ({result['selection_images']:,} images)",
           title="Before fine-tuning: prune + refit + recal (where the plans were chosen)")


def finetuned_points(result: Mapping) -> pd.DataFrame:
    """Every fine-tuned pruned network of a result: ``target, strategy, allocation, macs,
    epochs, acc_confirmation, headline`` (the chosen network of each target, and every plan
    tried at the headline target; a network listed twice is kept once)."""
    rows = [{"target": r["target"], "strategy": r["strategy"], "allocation": r["allocation"],
             "macs": r["macs"], "epochs": r["finetune_epochs"],
             "acc_confirmation": r["acc_confirmation"], "headline": r["headline"]}
            for r in result["records"]]
    rows += [{"target": result["headline_target"], "strategy": p["strategy"],
              "allocation": p["allocation"], "macs": p["macs"], "epochs": p["finetune_epochs"],
              "acc_confirmation": p["acc_confirmation"], "headline": False}
             for p in result["headline_plans"]]
    d = pd.DataFrame(rows).sort_values("headline", ascending=False)
    return d.drop_duplicates(["target", "strategy", "allocation", "epochs"]).reset_index(drop=True)


def _after_finetuning(ax, result: Mapping, gap: float = 1.2) -> None:
    """``gap``: how far (M MACs) the unpruned network and its control are drawn apart."""
    ft, dense_m = result["finetune"], result["dense_macs"] / 1e6
    pts = finetuned_points(result)
    for style, (epochs, g) in zip(FRONT_STYLES * 3, pts.groupby("epochs"), strict=False):
        x, y = g.macs.to_numpy(float) / 1e6, 100 * g.acc_confirmation.to_numpy(float)
        if len(g) > 1:
            front = pareto_front(x, y)
            ax.plot(x[front], y[front], color="gray", lw=1, ls=style, zorder=1,
                    label=f"front of the {epochs}-epoch networks")
        for r in g.itertuples():
            _point(ax, [r.macs / 1e6], [100 * r.acc_confirmation], r.strategy, r.allocation,
                   size=11 if r.headline else 7, zorder=6)
            if r.headline:
                ax.annotate(f"headline: {r.strategy} {r.allocation}, {epochs} epochs",
                            (r.macs / 1e6, 100 * r.acc_confirmation), textcoords="offset points",
                            xytext=(60, 14), ha="center", fontsize=8,
                            arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.8})
    for (strategy, allocation), _ in pts.groupby(["strategy", "allocation"]):
        _point(ax, [], [], strategy, allocation, label=f"{strategy}, {allocation}")
    for dx, key, marker, text in (
            (-gap, "dense_confirmation_accuracy", "X", "unpruned"),
            (gap, "dense_finetuned_confirmation_accuracy", "h",
             f"control: unpruned\n+ {ft['headline_epochs']} epochs")):
        ax.scatter([dense_m + dx], [100 * result[key]], marker=marker, s=100, c="black",
                   zorder=6)
        ax.annotate(text, (dense_m + dx, 100 * result[key]), textcoords="offset points",
                    xytext=(0, 14) if dx < 0 else (0, -30), ha="center", fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.8})
    reference = max(result["dense_confirmation_accuracy"],
                    result["dense_finetuned_confirmation_accuracy"])
    ax.axhspan(100 * reference - GOAL_POINTS, 100 * reference, color="green", alpha=0.1,
               label=f"within {GOAL_POINTS} point of the better unpruned network")
    low = min(100 * pts.acc_confirmation.min(), 100 * reference)
    ax.set(xlabel=f"MACs per image (millions); unpruned and control drawn {gap:g} M apart",
           ylabel=f"accuracy (%), confirmation half ({result['confirmation_images']:,} images)",
           title="After fine-tuning (each front: one epoch budget; points as on the left)",
           ylim=(low - 1.5, 100 * reference + 1.2),
           xlim=(pts.macs.min() / 1e6 - 3, dense_m + 3))


RUNTIME_KEYS = {"PyTorch": "speedup_cpu_batch", "ONNX Runtime": "onnxruntime_speedup_batch"}


def speed_by_runtime(result: Mapping, batch_size: int = 256, title: str = ""):
    """"MACs are not time": measured speed-up against the MACs removed, in both runtimes.

    One point per chosen network of ``results/network_pruning.json`` and runtime (PyTorch
    eager and ONNX Runtime, BN-folded, CPU), with its 95% interval as an error bar, and a star
    for each network chosen by latency (``latency_plans``); the dotted curve is what the MACs
    promise (speed-up = MACs ratio), the dashed line the speed goal.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    recs = sorted(result["records"], key=lambda r: r["target"])
    removed = np.array([100 * (1 - r["macs"] / result["dense_macs"]) for r in recs])
    for (name, key), color in zip(RUNTIME_KEYS.items(), sns.color_palette(n_colors=2),
                                  strict=True):
        k = f"{key}{batch_size}"
        y = np.array([r[k] for r in recs])
        err = [y - [r[f"{k}_low"] for r in recs], [r[f"{k}_high"] for r in recs] - y]
        ax.errorbar(removed, y, yerr=err, fmt="o-", color=color, capsize=3, label=name)
        for r, x, v in zip(recs, removed, y, strict=True):
            if r["headline"]:
                ax.annotate("headline", (x, v), textcoords="offset points", xytext=(6, -12),
                            fontsize=8, color=color)
    latency = {"PyTorch": "speedup_torch_batch", "ONNX Runtime": "speedup_onnxruntime_batch"}
    for (name, key), color in zip(latency.items(), sns.color_palette(n_colors=2), strict=True):
        for r in result.get("latency_plans", []):  # chosen by time, not MACs: stars
            k, x = f"{key}{batch_size}", 100 * (1 - r["macs"] / result["dense_macs"])
            ax.errorbar([x], [r[k]], yerr=[[r[k] - r[f"{k}_low"]], [r[f"{k}_high"] - r[k]]],
                        fmt="*", ms=13, color=color, mec="black", capsize=3,
                        label=f"{name}, plan chosen by latency")
            removed = np.r_[removed, x]
    grid = np.linspace(0, removed.max() + 5, 50)
    ax.plot(grid, 1 / (1 - grid / 100), color="gray", ls=":", label="speed-up = MACs ratio")
    ax.axhline(result["min_speedup"], color="black", lw=1, ls="--",
               label=f"goal: {result['min_speedup']:g}x")
    ax.set(xlabel="MACs removed (%)",
           ylabel=f"measured speed-up, batch {batch_size}\n(BN-folded, CPU, "
                  f"{result['cpu_threads']} threads)",
           ylim=(0.9, max(3.5, ax.get_ylim()[1])))
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "MACs are not time: the same networks in two runtimes", fontsize=10)
    fig.tight_layout()
    return fig


HEADLINE_MARKERS = {"PyTorch": "o", "ONNX Runtime": "s"}  # one marker style per runtime


def headline(points: Sequence[Mapping], confirmation_images: int, cpu: str, cpu_threads: int,
             batch_size: int = 256, spread: str = "95% interval"):
    """The README's figure: accuracy against measured speed-up of the committed networks.

    ``points``: one mapping per network, ``{"label", "accuracy", "unpruned", "speed"}`` with
    ``speed`` ``{runtime: (median, low, high)}`` for each key of :data:`HEADLINE_MARKERS`
    (the unpruned network: 1 in both). One colour per network, one marker per runtime (filled:
    PyTorch, open: ONNX Runtime), the timings' ``spread`` as error bars; the legend sits outside
    the axes. ``cpu``: the CPU model the speed-ups were measured on (they differ between CPUs).
    """
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    colors = sns.color_palette("deep", len(points))
    for p, color in zip(points, colors, strict=True):
        y = 100 * p["accuracy"]
        if p["unpruned"]:  # the reference: 1x in both runtimes, one star
            color = "black"
            ax.plot([1], [y], marker="*", ms=16, color=color, ls="", zorder=3)
        for runtime, marker in HEADLINE_MARKERS.items():
            x, low, high = p["speed"][runtime]
            if not p["unpruned"]:
                ax.errorbar([x], [y], xerr=[[x - low], [high - x]], fmt=marker, ms=9, capsize=3,
                            color=color, mfc=color if runtime == "PyTorch" else "white",
                            mew=2, zorder=3)
        xs = [v[0] for v in p["speed"].values()]
        ax.annotate(p["label"] + (" (1× in both)" if p["unpruned"] else ""),
                    (sum(xs) / len(xs), y), textcoords="offset points", xytext=(0, 10),
                    ha="center", fontsize=9, color=color, fontweight="bold")
    handles = [plt.Line2D([], [], marker=m, ls="", color="gray", mfc="gray" if r == "PyTorch"
                          else "white", mew=2, ms=8, label=r) for r, m in HEADLINE_MARKERS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9,
              title="runtime", title_fontsize=9)
    xs = [v[2] for p in points for v in p["speed"].values()]
    ys = [100 * p["accuracy"] for p in points]
    ax.set(xlim=(0.8, max(xs) + 0.3), ylim=(min(ys) - 0.6, max(ys) + 0.4),
           xlabel=f"measured speed-up at batch {batch_size} (BN-folded; bars: {spread})",
           ylabel=f"accuracy (%), {confirmation_images:,}\nconfirmation images")
    ax.set_title(f"Measured on {cpu}, {cpu_threads} threads: accuracy of the committed networks "
                 f"on {confirmation_images:,} validation images\n(the confirmation half) against "
                 f"their speed-up over the unpruned network", fontsize=10)
    fig.tight_layout()
    return fig
