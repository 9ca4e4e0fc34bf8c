"""The per-block pruning sweep: test accuracy against kept filters, block by block.

Every point of the sweep prunes ONE BasicBlock's conv1 of the trained network to ``k`` filters
with one strategy of :mod:`helpers.pruning`, optionally re-estimates the BN statistics
(:func:`helpers.pruning.recalibrate_bn`, on un-augmented training images), and measures test
accuracy, without fine-tuning. The full sweep is 9 blocks x every k x 6 strategies x with and
without recalibration: 4,032 networks.

:func:`naive_point` measures one point the way the original work did: copy the whole network,
prune it, recalibrate the whole network, and push the test set through a ``DataLoader`` with
torchvision transforms, 100 images at a time. :class:`BlockSweep` gives exactly the same numbers
(up to float rounding) far faster, because most of that work does not depend on the point:

- **The network before the block never changes.** The activations entering the block are
  computed once per block (for the test images, in eval mode) and every point starts from them.
- **Recalibration upstream does not depend on the pruning either.** In train mode a BN layer
  normalises with the statistics of the current batch, not with its running ones, so during
  recalibration the layers before the pruned block see exactly the same inputs whatever happens
  after them: their recalibrated statistics are those of the unpruned network (computed once),
  and the train-mode activations entering the block are cached once per block for the
  recalibration batches. A point then only re-estimates the statistics of the pruned block and
  the layers after it, from those cached batches, which is exactly what
  :func:`~helpers.pruning.recalibrate_bn` on the whole pruned network computes there.
- **One clustering per (block, k, folded or not)**, shared by the strategies that use it
  (centroid/first/nearest share the raw one), computed up front, in parallel processes where
  there are cores to spare (sklearn's k-means++ seeding is mostly Python overhead).
- **Pruning happens on a CPU copy** of the block (no device synchronisation), the data stays on
  the device, the evaluation runs in large batches, and correct counts are summed on the device
  and read back once per block.
- **Identical networks are evaluated once**: strategies that keep original filters unchanged
  (first, nearest, l1, random) often keep the same set at large k.

On CUDA both run in IEEE fp32 (:func:`ieee_fp32`: no TF32, which cuDNN would otherwise use for
convolutions), so that fast and naive agree to float rounding.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.clusters import cluster_table
from helpers.data import MEAN, STD, PILDataset, normalize
from helpers.metrics import ieee_fp32
from helpers.models import BLOCK_NAMES, ResNet
from helpers.profile import default_device, device_name
from helpers.pruning import (
    CLUSTER_STRATEGIES,
    STRATEGIES,
    Clustering,
    bn_layers,
    check_k,
    check_strategy,
    get_block,
    keep_indices,
    prune_block,
    pruned_block,
    recalibrate_bn,
)

RECORD_KEYS = ("block", "strategy", "bn_recalibration", "kept_filters", "accuracy")
SUBSET_STRATEGIES = ("first", "nearest", "l1", "random")  # keep original filters unchanged
NAIVE_BATCH = 100  # the original work's evaluation batch size


def _naive_transform():
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
CHANNELS_LAST = torch.channels_last


# --------------------------------------------------------------------------- settings


# --------------------------------------------------------------------------- which points


def block_widths(model: ResNet) -> dict[str, int]:
    """conv1 width of every block."""
    return {name: model.get_submodule(name).conv1.out_channels for name in BLOCK_NAMES}


def all_ks(model: ResNet) -> dict[str, list[int]]:
    """Every k from the block's width down to 1 (the full sweep)."""
    return {name: list(range(w, 0, -1)) for name, w in block_widths(model).items()}


def ks_at_fractions(model: ResNet, kept: Iterable[float],
                    extra: Mapping[str, Iterable[int]] | None = None) -> dict[str, list[int]]:
    """k = round(fraction x width) (at least 1) for each kept fraction, plus ``extra`` ks.

    Returned in decreasing order, without duplicates.
    """
    kept = list(kept)
    out = {}
    for name, w in block_widths(model).items():
        ks = {min(w, max(1, round(f * w))) for f in kept}
        ks |= set((extra or {}).get(name, ()))
        out[name] = sorted(ks, reverse=True)
    return out


def distiller_kept(width: int, removed: float = 0.4) -> int:
    """Filters Distiller's L1-ranked filter pruner keeps at a fraction ``removed``.

    Distiller prunes ``floor(removed x width)`` filters (``rounding_fn=math.floor`` in its
    ``L1RankedStructureParameterPruner``): at 40%, 16 -> 10 kept, 32 -> 20, 64 -> 39.
    """
    return width - math.floor(removed * width)


# --------------------------------------------------------------------------- the forward pass


def _stem(model: ResNet, x: Tensor) -> Tensor:
    """What :meth:`ResNet.forward` does before the first block."""
    return F.relu(model.bn(model.conv(x)))


def _head(model: ResNet, x: Tensor) -> Tensor:
    """What :meth:`ResNet.forward` does after the last block."""
    return model.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _blocks(model: ResNet) -> list[nn.Module]:
    return [model.get_submodule(name) for name in BLOCK_NAMES]


def _chunked(fn, x: Tensor, size: int) -> Tensor:
    if len(x) <= size:
        return fn(x)
    return torch.cat([fn(x[i:i + size]) for i in range(0, len(x), size)])


def _batches(images: Tensor, batches: int, batch_size: int) -> list[tuple[int, int]]:
    """The (start, stop) slices :func:`helpers.pruning.recalibrate_bn` feeds, in its order."""
    n = min(len(images), batches * batch_size)
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


# --------------------------------------------------------------------------- results


@dataclass
class SweepResult:
    """Records ``{block, strategy, bn_recalibration, kept_filters, accuracy}`` and their context.

    ``accuracy`` is a fraction of ``eval_images`` test images.
    """

    records: list[dict]
    eval_images: int
    recal_images: int
    device: str
    seconds: float
    dense_accuracy: float  # the unpruned network
    dense_accuracy_recalibrated: float | None  # the unpruned network after recalibration
    evaluated: int = 0  # networks actually run (identical ones are run once)
    widths: dict = field(default_factory=dict)
    clusterings: dict = field(default_factory=dict, repr=False)  # (block, k, folded) -> ...

    def frame(self) -> pd.DataFrame:
        """The records as a DataFrame, with the block's width and the removed fraction."""
        df = pd.DataFrame(self.records, columns=list(RECORD_KEYS))
        df["width"] = df["block"].map(self.widths)
        df["removed"] = df["width"] - df["kept_filters"]
        df["removed_fraction"] = df["removed"] / df["width"]
        recal = (np.nan if self.dense_accuracy_recalibrated is None
                 else self.dense_accuracy_recalibrated)
        baseline = np.where(df["bn_recalibration"], recal, self.dense_accuracy)
        df["drop"] = self.dense_accuracy - df["accuracy"]
        df["drop_from_own_baseline"] = baseline - df["accuracy"]
        return df

    def to_json(self, path: str | os.PathLike, **extra) -> Path:
        """Write ``eval_images``, ``device``, ``sweep_seconds``, ``records`` and context."""
        import json

        out = {"eval_images": self.eval_images, "device": self.device,
               "sweep_seconds": round(self.seconds, 3), "records": self.records,
               "recal_images": self.recal_images, "dense_accuracy": self.dense_accuracy,
               "dense_accuracy_recalibrated": self.dense_accuracy_recalibrated,
               "networks_evaluated": self.evaluated, "widths": self.widths, **extra}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
        return path


# --------------------------------------------------------------------------- the fast sweep


class BlockSweep:
    """The cached per-block sweep. Build it once, then :meth:`run` any set of points.

    Args:
        model: the trained network (never modified: the sweep works on copies).
        test_images, test_labels: uint8 images and labels the accuracy is measured on.
        recal_images: uint8 training images for BN recalibration (the first
            ``recal_batches x recal_batch_size``, un-augmented, in order, as
            :func:`~helpers.pruning.recalibrate_bn` takes them); needed only for points with
            recalibration.
        seed: k-means++ seed (and the ``random`` strategy's).
        eval_batch_size: test images per forward pass.
        cluster_jobs: processes for the clusterings (see :func:`cluster_table`).
    """

    def __init__(self, model: ResNet, test_images: Tensor, test_labels: Tensor,
                 recal_images: Tensor | None = None, *, recal_batches: int = 10,
                 recal_batch_size: int = 256, seed: int = 0,
                 device: torch.device | str | None = None, eval_batch_size: int = 2000,
                 cluster_jobs: int | None = None):
        self.device = torch.device(device) if device else default_device()
        self.seed, self.eval_batch_size, self.cluster_jobs = seed, eval_batch_size, cluster_jobs
        self.cpu_model = copy.deepcopy(model).cpu().float().eval()  # blocks are pruned here
        self.model = copy.deepcopy(self.cpu_model).to(self.device)
        self.widths = block_widths(self.model)
        self.clusterings: dict[tuple[str, int, bool], Clustering] = {}
        with torch.no_grad(), ieee_fp32():
            self.test_x = normalize(test_images.to(self.device)).contiguous(
                memory_format=CHANNELS_LAST)
            self.test_y = test_labels.to(self.device)
            self.dense_accuracy = self._accuracy(
                _chunked(lambda x: self.model(x), self.test_x, eval_batch_size))
            self.recal_model, self.recal_x = None, []
            self.dense_accuracy_recalibrated = None
            if recal_images is not None:
                # The unpruned network recalibrated by the library function itself: its BN
                # layers before any pruned block hold what recalibration would give them there.
                self.recal_model = recalibrate_bn(copy.deepcopy(self.model), recal_images,
                                                  recal_batches, recal_batch_size)
                self.recal_x = [normalize(recal_images[a:b].to(self.device)).contiguous(
                    memory_format=CHANNELS_LAST)
                    for a, b in _batches(recal_images, recal_batches, recal_batch_size)]
                self.dense_accuracy_recalibrated = self._accuracy(
                    _chunked(lambda x: self.recal_model(x), self.test_x, eval_batch_size))

    @property
    def eval_images(self) -> int:
        return len(self.test_y)

    @property
    def recal_images(self) -> int:
        return sum(len(x) for x in self.recal_x)

    def _accuracy(self, logits: Tensor) -> float:
        return (logits.argmax(1) == self.test_y).sum().item() / len(self.test_y)

    # ----------------------------------------------------------------- caches

    def _block_inputs(self, wanted: Sequence[int]) -> Iterator[tuple[int, dict]]:
        """For each wanted block index (in order), what enters that block.

        ``eval``: test activations, original statistics; ``eval_recal``: test activations with
        the recalibrated upstream statistics; ``train``: per recalibration batch, the train-mode
        activations (batch statistics: the same for every network that differs only later).
        """
        eb = self.eval_batch_size
        scratch = copy.deepcopy(self.model).train()  # train-mode passes update its stats: a copy
        model_blocks, scratch_blocks = _blocks(self.model), _blocks(scratch)
        recal_blocks = _blocks(self.recal_model) if self.recal_model is not None else []
        cache = {"eval": _chunked(lambda x: _stem(self.model, x), self.test_x, eb)}
        if self.recal_model is not None:
            cache["eval_recal"] = _chunked(lambda x: _stem(self.recal_model, x), self.test_x, eb)
            cache["train"] = [_stem(scratch, x) for x in self.recal_x]
        last = max(wanted)
        for i in range(last + 1):
            if i in wanted:
                yield i, cache
            if i == last:
                break
            cache["eval"] = _chunked(model_blocks[i], cache["eval"], eb)
            if self.recal_model is not None:
                cache["eval_recal"] = _chunked(recal_blocks[i], cache["eval_recal"], eb)
                cache["train"] = [scratch_blocks[i](x) for x in cache["train"]]

    def _downstream(self, blocks: Sequence[nn.Module], head_model: ResNet, x: Tensor,
                    logits: bool = False) -> Tensor:
        """Correct count (a device scalar), or the logits, of ``blocks`` then the head on ``x``."""
        out = []
        for i in range(0, len(x), self.eval_batch_size):
            h = x[i:i + self.eval_batch_size]
            for b in blocks:
                h = b(h)
            z = _head(head_model, h)
            out.append(z if logits else (z.argmax(1) == self.test_y[i:i + len(z)]).sum())
        return torch.cat(out) if logits else torch.stack(out).sum()

    @staticmethod
    def _recalibrate(blocks: Sequence[nn.Module], batches: Sequence[Tensor]) -> None:
        """Exactly what recalibrate_bn does to these blocks, from their cached inputs.

        recalibrate_bn sets ``momentum = None`` (a cumulative average); BatchNorm then computes
        the factor ``1 / num_batches_tracked`` from a device tensor, which stalls the GPU at
        every layer. The same factor, ``1 / (batch index + 1)``, is set here from the host:
        the arithmetic is identical and nothing waits.
        """
        layers = [bn for b in blocks for bn in bn_layers(b)]
        momenta = [bn.momentum for bn in layers]
        for bn in layers:
            bn.reset_running_stats()
        for b in blocks:
            b.train()
        for j, x in enumerate(batches):
            for bn in layers:
                bn.momentum = 1.0 / (j + 1)
            for b in blocks:
                x = b(x)
        for bn, m in zip(layers, momenta, strict=True):
            bn.momentum = m
        for b in blocks:
            b.eval()

    # ----------------------------------------------------------------- points

    def _clustering(self, block: str, k: int, strategy: str) -> Clustering | None:
        if strategy not in CLUSTER_STRATEGIES:
            return None
        key = (block, k, strategy == "merge")
        if key not in self.clusterings:
            self.clusterings.update(cluster_table(self.cpu_model, [key], self.seed, jobs=1,
                                                  progress=False))
        return self.clusterings[key]

    def _pruned(self, block: str, k: int, strategy: str) -> nn.Module:
        b = pruned_block(self.cpu_model, block, k, strategy, self.seed,
                         self._clustering(block, k, strategy))
        # Pageable host memory, non_blocking: the copy is staged at once and the host does not
        # wait for the device to finish the previous point (a blocking copy would).
        return b.to(self.device, non_blocking=True).eval()

    def _evaluate_point(self, index: int, cache: dict, pruned: nn.Module, recal: bool,
                        downstream: list[nn.Module], logits: bool = False) -> Tensor:
        if not recal:
            return self._downstream([pruned, *_blocks(self.model)[index + 1:]], self.model,
                                    cache["eval"], logits)
        blocks = [pruned, *downstream]
        self._recalibrate(blocks, cache["train"])
        return self._downstream(blocks, self.recal_model, cache["eval_recal"], logits)

    def _check(self, blocks, ks, strategies, recalibration):
        for s in strategies:
            check_strategy(s)
        for name in blocks:
            block = get_block(self.model, name)
            for k in ks[name]:
                check_k(block, name, k)
        if any(recalibration) and self.recal_model is None:
            raise ValueError("points with BN recalibration need recal_images")

    @torch.no_grad()
    def point_logits(self, block: str, k: int, strategy: str, bn_recalibration: bool) -> Tensor:
        """Test logits (CPU) of one point, through the cached path (for tests)."""
        self._check([block], {block: [k]}, [strategy], [bn_recalibration])
        index = BLOCK_NAMES.index(block)
        with ieee_fp32():
            for i, cache in self._block_inputs([index]):
                downstream = copy.deepcopy(_blocks(self.recal_model)[i + 1:]) if (
                    bn_recalibration) else []
                pruned = self._pruned(block, k, strategy)
                return self._evaluate_point(i, cache, pruned, bn_recalibration, downstream,
                                            logits=True).float().cpu()
        raise AssertionError("unreachable")

    @torch.no_grad()
    def run(self, blocks: Sequence[str] | None = None,
            ks: Mapping[str, Sequence[int]] | None = None,
            strategies: Sequence[str] = STRATEGIES,
            recalibration: Sequence[bool] = (False, True),
            progress: bool = True) -> SweepResult:
        """Accuracy of every (block, k, strategy, recalibration) point.

        Args:
            blocks: block names (default: all nine).
            ks: kept filters per block (default: every k from the width down to 1).
            strategies: strategies of :mod:`helpers.pruning`.
            recalibration: which of without (False) / with (True) BN recalibration.

        Records come block by block in the order of ``blocks``, then by k as given, strategy,
        and without before with recalibration.
        """
        t0 = time.perf_counter()
        if blocks is None:
            blocks = [name for name in BLOCK_NAMES if ks is None or name in ks]
        blocks = list(blocks)
        missing = [name for name in blocks if ks is not None and name not in ks]
        if missing:
            raise ValueError(f"ks gives no k for blocks {missing}")
        ks = {name: list(ks[name]) for name in blocks} if ks is not None else all_ks(self.model)
        # Without before with: a point's pruned block is evaluated as is, then recalibrated.
        recalibration = sorted({bool(r) for r in recalibration})
        self._check(blocks, ks, strategies, recalibration)
        needed = [(name, k, s == "merge") for name in blocks for k in ks[name]
                  for s in strategies if s in CLUSTER_STRATEGIES]
        todo = [key for key in dict.fromkeys(needed) if key not in self.clusterings]
        if todo:
            self.clusterings.update(cluster_table(self.cpu_model, todo, self.seed,
                                                  self.cluster_jobs, progress))
        total = sum(len(ks[name]) for name in blocks) * len(strategies) * len(recalibration)
        bar = tqdm(total=total, desc="sweep", disable=not progress, mininterval=1.0)
        records, evaluated = [], 0
        indices = sorted(BLOCK_NAMES.index(name) for name in blocks)
        with ieee_fp32():
            for i, cache in self._block_inputs(indices):
                name = BLOCK_NAMES[i]
                bar.set_postfix_str(name)
                downstream = (copy.deepcopy(_blocks(self.recal_model)[i + 1:])
                              if True in recalibration else [])
                counts, seen = [], {}
                for k in ks[name]:
                    for s in strategies:
                        key = None
                        if s in SUBSET_STRATEGIES:
                            keep = keep_indices(get_block(self.cpu_model, name), k, s,
                                                self._clustering(name, k, s), self.seed)
                            key = tuple(keep.tolist())
                        pruned = None
                        for recal in recalibration:
                            if key is not None and (recal, key) in seen:
                                count = seen[(recal, key)]
                            else:
                                if pruned is None:
                                    pruned = self._pruned(name, k, s)
                                count = self._evaluate_point(i, cache, pruned, recal, downstream)
                                evaluated += 1
                                if key is not None:
                                    seen[(recal, key)] = count
                            counts.append(count)
                            records.append({"block": name, "strategy": s,
                                            "bn_recalibration": recal, "kept_filters": int(k)})
                            bar.update()
                for r, c in zip(records[len(records) - len(counts):],
                                torch.stack(counts).tolist(), strict=True):
                    r["accuracy"] = c / self.eval_images
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        order = {name: j for j, name in enumerate(blocks)}
        records.sort(key=lambda r: order[r["block"]])  # the order asked for (stable)
        return SweepResult(records, self.eval_images, self.recal_images,
                           device_name(self.device), time.perf_counter() - t0,
                           self.dense_accuracy, self.dense_accuracy_recalibrated, evaluated,
                           {name: self.widths[name] for name in blocks},
                           {key: c for key, c in self.clusterings.items() if key[0] in blocks})


def sweep(model: ResNet, test_images: Tensor, test_labels: Tensor,
          recal_images: Tensor | None = None, *, blocks: Sequence[str] | None = None,
          ks: Mapping[str, Sequence[int]] | None = None,
          strategies: Sequence[str] = STRATEGIES, recalibration: Sequence[bool] = (False, True),
          recal_batches: int = 10, recal_batch_size: int = 256, seed: int = 0,
          device: torch.device | str | None = None, eval_batch_size: int = 2000,
          cluster_jobs: int | None = None, progress: bool = True) -> SweepResult:
    """Build a :class:`BlockSweep` and run it; ``seconds`` includes building the caches."""
    t0 = time.perf_counter()
    sw = BlockSweep(model, test_images, test_labels, recal_images, recal_batches=recal_batches,
                    recal_batch_size=recal_batch_size, seed=seed, device=device,
                    eval_batch_size=eval_batch_size, cluster_jobs=cluster_jobs)
    result = sw.run(blocks, ks, strategies, recalibration, progress)
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- reading results


def head_to_head(df: pd.DataFrame, challenger: tuple[str, bool],
                 rivals: Sequence[tuple[str, bool]]) -> pd.DataFrame:
    """The challenger's accuracy against each rival's at every (block, k < width).

    ``df`` is :meth:`SweepResult.frame`; strategies are given as ``(strategy, recalibrated)``.
    One row per point: the accuracies, ``best_rival`` (the best of the rivals there) and
    ``margin`` = challenger - best rival (a fraction; > 0: the challenger wins).
    """
    d = df[df.kept_filters < df.width]
    table = d.pivot_table(index=["block", "width", "kept_filters"],
                          columns=["strategy", "bn_recalibration"], values="accuracy")
    name = lambda s, r: f"{s}{' + recal' if r else ''}"  # noqa: E731
    out = pd.DataFrame({name(*c): table[c] for c in [challenger, *rivals]})
    rival_cols = [name(*r) for r in rivals]
    out["best_rival"] = out[rival_cols].idxmax(axis=1)
    out["margin"] = out[name(*challenger)] - out[rival_cols].max(axis=1)
    order = {b: i for i, b in enumerate(dict.fromkeys(df.block))}
    out = out.reset_index()
    out["_order"] = out.block.map(order)
    out = out.sort_values(["_order", "kept_filters"], ascending=[True, False])
    return out.drop(columns="_order").reset_index(drop=True)


def win_rates(h2h: pd.DataFrame) -> pd.DataFrame:
    """Per block (and over all blocks): share of points where the challenger of
    :func:`head_to_head` is strictly more accurate than each rival, and than all of them."""
    challenger = h2h.columns[3]
    rivals = list(h2h.columns[4:-2])
    rows = []
    for block, g in [*h2h.groupby("block", sort=False), ("all blocks", h2h)]:
        row = {"block": block, "points": len(g)}
        for r in rivals:
            row[f"beats {r}"] = (g[challenger] > g[r]).mean()
        row["beats all"] = (g["margin"] > 0).mean()
        row["ties best"] = (g["margin"] == 0).mean()
        row["loses to best"] = (g["margin"] < 0).mean()
        rows.append(row)
    return pd.DataFrame(rows).set_index("block")


# --------------------------------------------------------------------------- the naive way


@torch.no_grad()
def naive_point(model: ResNet, block: str, k: int, strategy: str, bn_recalibration: bool,
                test_images: Tensor, test_labels: Tensor, recal_images: Tensor | None = None,
                *, recal_batches: int = 10, recal_batch_size: int = 256, seed: int = 0,
                device: torch.device | str | None = None, return_logits: bool = False):
    """One sweep point the slow way, as the original work measured it (reference/benchmark).

    Deep-copies and prunes the whole network (clustering included), recalibrates all of its BN
    layers when asked, then evaluates it on the test set through a ``DataLoader`` (PIL images,
    torchvision ``ToTensor`` + ``Normalize``, batch 100). Returns the accuracy (a fraction), and
    the logits too with ``return_logits``.
    """
    device = torch.device(device) if device else default_device()
    with ieee_fp32():
        net = copy.deepcopy(model).float().to(device).eval()
        pruned = prune_block(net, block, k, strategy, seed=seed)
        if bn_recalibration:
            if recal_images is None:
                raise ValueError("bn_recalibration=True needs recal_images")
            recalibrate_bn(pruned, recal_images, recal_batches, recal_batch_size)
        pruned.eval()
        test_set = PILDataset(test_images, test_labels, _naive_transform())
        loader = torch.utils.data.DataLoader(test_set, batch_size=NAIVE_BATCH, shuffle=False)
        correct, outputs = 0, []
        for x, y in loader:
            z = pruned(x.to(device))
            correct += int((z.argmax(1).cpu() == y).sum())
            if return_logits:
                outputs.append(z.float().cpu())
    acc = correct / len(test_labels)
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
                 **common)
    fast_per_point = fast.seconds / len(fast.records)
    picks = [fast.records[round(i)] for i in np.linspace(0, len(fast.records) - 1, points)]
    t0 = time.perf_counter()
    diffs = []
    for r in picks:
        acc = naive_point(model, r["block"], r["kept_filters"], r["strategy"],
                          r["bn_recalibration"], test_x, test_y, recal, **common)
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
