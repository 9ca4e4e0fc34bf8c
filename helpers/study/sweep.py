"""The per-block pruning sweep: validation accuracy against kept filters, block by block.

Every point of the sweep prunes ONE BasicBlock's conv1 of the trained network to ``k`` filters
with one strategy of :mod:`helpers.pruning`, then applies one **treatment**, and measures the
accuracy on held-out images (the 5,000 validation images of :func:`helpers.data.load_splits`)
image by image, without fine-tuning:

- ``"none"``: the pruned network as it is;
- ``"recal"``: BN statistics re-estimated (:func:`helpers.pruning.recalibrate_bn`, on augmented
  training images);
- ``"refit+recal"``: conv2 of the pruned block re-fit by least squares to reproduce the unpruned
  block's conv2 output (:mod:`helpers.refit`), then recalibrated;
- ``"refit"``: the refit alone (not in the default set).

:func:`helpers.study.sweep_check.naive_point` measures one point the way the original work did: copy
the whole network, prune (and refit) it, recalibrate the whole network, and push the images
through a ``DataLoader`` with torchvision transforms, 100 at a time. :class:`BlockSweep` gives
exactly the same numbers (up to float rounding) far faster, because most of that work does not
depend on the point:

- **The network before the block never changes.** The activations entering the block are
  computed once per block (for the evaluation images, in eval mode) and every point starts from
  them.
- **Recalibration upstream does not depend on the pruning either.** In train mode a BN layer
  normalises with the statistics of the current batch, not with its running ones, so during
  recalibration the layers before the pruned block see exactly the same inputs whatever happens
  after them: their recalibrated statistics are those of the unpruned network (computed once),
  and the train-mode activations entering the block are cached once per block for the
  (augmented) recalibration batches. A point then only re-estimates the statistics of the
  pruned block and the layers after it, from those cached batches, which is exactly what
  :func:`~helpers.pruning.recalibrate_bn` on the whole pruned network computes there.
- **One pair of normal equations per block serves every subset strategy's refit.** first,
  nearest, l1 and random keep conv1 filters and bn1 channels unchanged, so the unfolded input
  of the pruned conv2 is a column subset of the unpruned one: ``X^T X`` and ``X^T Y`` are
  accumulated once per block and each refit is a small solve
  (:meth:`helpers.refit.NormalEquations.subset`). centroid and merge change the filters and
  accumulate their own.
- **One clustering per (block, k, folded or not)**, shared by the strategies that use it,
  computed up front, in parallel processes where there are cores to spare.
- **Pruning happens on a CPU copy** of the block, the data stays on the device, the evaluation
  runs in large batches, and per-image correctness is read back once per block.
- **Identical networks are evaluated once**: strategies that keep original filters unchanged
  (first, nearest, l1, random) often keep the same set.

Precision: IEEE fp32 (:func:`ieee_fp32`: no TF32 on CUDA), or, with ``bf16=True``, every forward
pass (evaluation and recalibration, in the sweep and in
:func:`~helpers.study.sweep_check.naive_point` alike) under bfloat16 autocast, which is 2-3x
faster on CPUs with bf16 units. The refit is always computed in float32/float64.

Two modules go with this one: :mod:`helpers.study.sweep_results` holds :class:`SweepResult`
(what a sweep returns) and the functions that read it (paired comparisons, scoreboards, the best
arm); :mod:`helpers.study.sweep_check` holds the naive reference
(:func:`~helpers.study.sweep_check.naive_point`) and the benchmark of this module against it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.data import normalize
from helpers.device import default_device, device_name
from helpers.metrics import ieee_fp32
from helpers.models import BLOCK_NAMES, ResNet
from helpers.pruning import (
    CLUSTER_STRATEGIES,
    STRATEGIES,
    Clustering,
    bn_layers,
    calibration_images,
    check_k,
    check_strategy,
    get_block,
    keep_indices,
    pruned_block,
    recalibrate_bn,
)
from helpers.refit import (
    RIDGE,
    NormalEquations,
    RefitReport,
    apply_refit,
    augmented,
    block_io,
    normal_equations,
)
from helpers.study.clusters import cluster_table
from helpers.study.sweep_results import ALL_TREATMENTS, SweepResult

TREATMENTS = ("none", "recal", "refit+recal")  # the default set; "refit" (alone) also exists
SUBSET_STRATEGIES = ("first", "nearest", "l1", "random")  # keep original filters unchanged
CHANNELS_LAST = torch.channels_last


def check_treatment(treatment: str) -> None:
    if treatment not in ALL_TREATMENTS:
        raise ValueError(f"unknown treatment {treatment!r}; valid treatments: "
                         f"{', '.join(ALL_TREATMENTS)}")


@contextlib.contextmanager
def precision(device: torch.device, bf16: bool):
    """IEEE fp32 (no TF32), or bfloat16 autocast with ``bf16``."""
    with ieee_fp32(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        yield


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


# --------------------------------------------------------------------------- the fast sweep


class BlockSweep:
    """The cached per-block sweep. Build it once, then :meth:`run` any set of points.

    Args:
        model: the trained network (never modified: the sweep works on copies).
        eval_images, eval_labels: uint8 images and labels the accuracy is measured on (the
            validation split).
        recal_images: uint8 training images for BN recalibration (the first
            ``recal_batches x recal_batch_size``, augmented unless ``augment`` is False,
            exactly as :func:`~helpers.pruning.recalibrate_bn` takes them); needed only for
            treatments with recalibration.
        refit_images: uint8 training images for the refit (all of them, augmented, as
            :func:`~helpers.pruning.prune_block` takes them); needed only for refit treatments.
        seed: k-means++ seed, the ``random`` strategy's and the augmentations'.
        bf16: every forward pass under bfloat16 autocast (see the module's docstring).
        eval_batch_size: images per forward pass.
        cluster_jobs: processes for the clusterings (see :func:`cluster_table`).
    """

    def __init__(self, model: ResNet, eval_images: Tensor, eval_labels: Tensor,
                 recal_images: Tensor | None = None, refit_images: Tensor | None = None, *,
                 recal_batches: int = 10, recal_batch_size: int = 256, augment: bool = True,
                 ridge: float = RIDGE, seed: int = 0, device: torch.device | str | None = None,
                 bf16: bool = False, eval_batch_size: int = 2000,
                 cluster_jobs: int | None = None, eval_split: str = "val"):
        self.device = torch.device(device) if device else default_device()
        self.seed, self.eval_batch_size, self.cluster_jobs = seed, eval_batch_size, cluster_jobs
        self.bf16, self.ridge, self.eval_split = bf16, ridge, eval_split
        self.cpu_model = copy.deepcopy(model).cpu().float().eval()  # blocks are pruned here
        self.model = copy.deepcopy(self.cpu_model).to(self.device)
        self.widths = block_widths(self.model)
        self.clusterings: dict[tuple[str, int, bool], Clustering] = {}
        self.refit_x = (augmented(refit_images, seed=seed) if refit_images is not None
                        else None)
        self.eval_y = eval_labels.to(self.device)
        with torch.no_grad(), self._precision():
            self.eval_x = normalize(eval_images.to(self.device)).contiguous(
                memory_format=CHANNELS_LAST)
            self.dense_correct = self._correct(
                _chunked(lambda x: self.model(x), self.eval_x, eval_batch_size)).cpu().numpy()
            self.recal_model, self.recal_x, self.dense_recal_correct = None, [], None
            if recal_images is not None:
                # The unpruned network recalibrated by the library function itself: its BN
                # layers before any pruned block hold what recalibration would give them there.
                self.recal_model = recalibrate_bn(
                    copy.deepcopy(self.model), recal_images, recal_batches, recal_batch_size,
                    augment=augment, seed=seed, bf16=bf16)
                fed = calibration_images(recal_images, recal_batches, recal_batch_size,
                                         augment, seed)
                self.recal_x = [normalize(fed[a:b].to(self.device)).contiguous(
                    memory_format=CHANNELS_LAST)
                    for a, b in _batches(fed, recal_batches, recal_batch_size)]
                self.dense_recal_correct = self._correct(_chunked(
                    lambda x: self.recal_model(x), self.eval_x, eval_batch_size)).cpu().numpy()

    def _precision(self):
        return precision(self.device, self.bf16)

    @property
    def eval_images(self) -> int:
        return len(self.eval_y)

    @property
    def recal_images(self) -> int:
        return sum(len(x) for x in self.recal_x)

    @property
    def refit_images(self) -> int:
        return 0 if self.refit_x is None else len(self.refit_x)

    def _correct(self, logits: Tensor) -> Tensor:
        return logits.argmax(1) == self.eval_y

    # ----------------------------------------------------------------- caches

    def _block_inputs(self, wanted: Sequence[int]) -> Iterator[tuple[int, dict]]:
        """For each wanted block index (in order), what enters that block.

        ``eval``: evaluation activations, original statistics; ``eval_recal``: the same with the
        recalibrated upstream statistics; ``train``: per recalibration batch, the train-mode
        activations (batch statistics: the same for every network that differs only later).
        """
        eb = self.eval_batch_size
        scratch = copy.deepcopy(self.model).train()  # train-mode passes update its stats: a copy
        model_blocks, scratch_blocks = _blocks(self.model), _blocks(scratch)
        recal_blocks = _blocks(self.recal_model) if self.recal_model is not None else []
        cache = {"eval": _chunked(lambda x: _stem(self.model, x), self.eval_x, eb)}
        if self.recal_model is not None:
            cache["eval_recal"] = _chunked(lambda x: _stem(self.recal_model, x), self.eval_x, eb)
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

    def _refit_data(self, name: str) -> tuple[Tensor, Tensor, NormalEquations]:
        """What enters the block and its conv2 output on the refit images (float32, outside
        autocast), and the unpruned block's normal equations."""
        inputs, targets = block_io(self.model, name, self.refit_x)
        return inputs, targets, normal_equations(get_block(self.model, name), inputs, targets)

    def _downstream(self, blocks: Sequence[nn.Module], head_model: ResNet, x: Tensor,
                    logits: bool = False) -> Tensor:
        """Per-image correctness (a device bool vector), or the logits, of ``blocks`` then the
        head on ``x``."""
        out = []
        for i in range(0, len(x), self.eval_batch_size):
            h = x[i:i + self.eval_batch_size]
            for b in blocks:
                h = b(h)
            z = _head(head_model, h)
            out.append(z if logits else z.argmax(1) == self.eval_y[i:i + len(z)])
        return torch.cat(out)

    @staticmethod
    def _recalibrate(blocks: Sequence[nn.Module], batches: Sequence[Tensor]) -> None:
        """Exactly what recalibrate_bn does to these blocks, from their cached inputs.

        recalibrate_bn sets ``momentum = None`` (a cumulative average); BatchNorm then computes
        the factor ``1 / num_batches_tracked`` from a device tensor, which stalls the GPU at
        every layer. The same factor, ``1 / (batch index + 1)``, is set here from the host:
        the arithmetic is identical and nothing waits. (Only BN layers behave differently in
        train mode in a BasicBlock, so putting whole blocks in train mode is the same.)
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

    def _refit(self, pruned: nn.Module, keep: np.ndarray | None, data) -> tuple[nn.Module,
                                                                             RefitReport]:
        """A refit copy of ``pruned``: a solve on the dense equations' sub-matrix for subset
        strategies (``keep`` given), its own normal equations otherwise."""
        inputs, targets, dense = data
        b = copy.deepcopy(pruned)
        eq = dense.subset(keep) if keep is not None else normal_equations(b, inputs, targets)
        return b, apply_refit(b.conv2, eq, self.ridge)

    def _evaluate(self, index: int, cache: dict, pruned: nn.Module, treatment: str,
                  downstream: list[nn.Module], logits: bool = False) -> Tensor:
        if "recal" not in treatment:
            return self._downstream([pruned, *_blocks(self.model)[index + 1:]], self.model,
                                    cache["eval"], logits)
        blocks = [pruned, *downstream]
        self._recalibrate(blocks, cache["train"])
        return self._downstream(blocks, self.recal_model, cache["eval_recal"], logits)

    def _check(self, blocks, ks, strategies, treatments):
        for s in strategies:
            check_strategy(s)
        for t in treatments:
            check_treatment(t)
        for name in blocks:
            block = get_block(self.model, name)
            for k in ks[name]:
                check_k(block, name, k)
        if any("recal" in t for t in treatments) and self.recal_model is None:
            raise ValueError("treatments with BN recalibration need recal_images")
        if any("refit" in t for t in treatments) and self.refit_x is None:
            raise ValueError("treatments with a refit need refit_images")

    @torch.no_grad()
    def point_logits(self, block: str, k: int, strategy: str, treatment: str) -> Tensor:
        """Logits (float32, CPU) of one point, through the cached path (for tests)."""
        self._check([block], {block: [k]}, [strategy], [treatment])
        index = BLOCK_NAMES.index(block)
        with self._precision():
            for i, cache in self._block_inputs([index]):
                downstream = (copy.deepcopy(_blocks(self.recal_model)[i + 1:])
                              if "recal" in treatment else [])
                pruned = self._pruned(block, k, strategy)
                if "refit" in treatment:
                    keep = (keep_indices(get_block(self.cpu_model, block), k, strategy,
                                         self._clustering(block, k, strategy), self.seed)
                            if strategy in SUBSET_STRATEGIES else None)
                    with torch.autocast(self.device.type, enabled=False):
                        pruned, _ = self._refit(pruned, keep, self._refit_data(block))
                return self._evaluate(i, cache, pruned, treatment, downstream,
                                      logits=True).float().cpu()
        raise AssertionError("unreachable")

    @torch.no_grad()
    def run(self, blocks: Sequence[str] | None = None,
            ks: Mapping[str, Sequence[int]] | None = None,
            strategies: Sequence[str] = STRATEGIES, treatments: Sequence[str] = TREATMENTS,
            progress: bool = True) -> SweepResult:
        """Accuracy of every (block, k, strategy, treatment) point.

        Args:
            blocks: block names (default: all nine).
            ks: kept filters per block (default: every k from the width down to 1).
            strategies: strategies of :mod:`helpers.pruning`.
            treatments: of ``"none"``, ``"recal"``, ``"refit"``, ``"refit+recal"``.

        Records come block by block in the order of ``blocks``, then by k as given, strategy,
        and treatment in the order of :data:`~helpers.study.sweep_results.ALL_TREATMENTS`.
        """
        t0 = time.perf_counter()
        if blocks is None:
            blocks = [name for name in BLOCK_NAMES if ks is None or name in ks]
        blocks = list(blocks)
        missing = [name for name in blocks if ks is not None and name not in ks]
        if missing:
            raise ValueError(f"ks gives no k for blocks {missing}")
        ks = {name: list(ks[name]) for name in blocks} if ks is not None else all_ks(self.model)
        self._check(blocks, ks, strategies, treatments)
        treatments = [t for t in ALL_TREATMENTS if t in set(treatments)]
        if not treatments:
            raise ValueError("no treatment asked for")
        needed = [(name, k, s == "merge") for name in blocks for k in ks[name]
                  for s in strategies if s in CLUSTER_STRATEGIES]
        todo = [key for key in dict.fromkeys(needed) if key not in self.clusterings]
        if todo:
            self.clusterings.update(cluster_table(self.cpu_model, todo, self.seed,
                                                  self.cluster_jobs, progress))
        total = sum(len(ks[name]) for name in blocks) * len(strategies) * len(treatments)
        bar = tqdm(total=total, desc="sweep", disable=not progress, mininterval=2.0)
        records, correct, refits, evaluated = [], [], {}, 0
        indices = sorted(BLOCK_NAMES.index(name) for name in blocks)
        with self._precision():
            for i, cache in self._block_inputs(indices):
                name = BLOCK_NAMES[i]
                bar.set_postfix_str(name)
                downstream = (copy.deepcopy(_blocks(self.recal_model)[i + 1:])
                              if any("recal" in t for t in treatments) else [])
                refit_data = None
                if any("refit" in t for t in treatments):
                    with torch.autocast(self.device.type, enabled=False):
                        refit_data = self._refit_data(name)
                block_correct, seen = [], {}
                for k in ks[name]:
                    for s in strategies:
                        keep = key = None
                        if s in SUBSET_STRATEGIES:
                            keep = keep_indices(get_block(self.cpu_model, name), k, s,
                                                self._clustering(name, k, s), self.seed)
                            key = tuple(keep.tolist())
                        pruned = refit = None
                        for t in treatments:
                            if key is not None and (t, key) in seen:
                                c = seen[(t, key)]
                            else:
                                if pruned is None:
                                    pruned = self._pruned(name, k, s)
                                net = pruned
                                if "refit" in t:
                                    if refit is None:
                                        with torch.autocast(self.device.type, enabled=False):
                                            refit, refits[(name, k, s)] = self._refit(
                                                pruned, keep, refit_data)
                                    net = refit
                                c = self._evaluate(i, cache, net, t, downstream)
                                evaluated += 1
                                if key is not None:
                                    seen[(t, key)] = c
                            block_correct.append(c)
                            records.append({"block": name, "strategy": s, "treatment": t,
                                            "kept_filters": int(k)})
                            bar.update()
                block_correct = torch.stack(block_correct).cpu().numpy()
                for r, c in zip(records[len(records) - len(block_correct):], block_correct,
                                strict=True):
                    r["accuracy"] = float(c.mean())
                correct.append(block_correct)
        bar.close()
        order = {name: j for j, name in enumerate(blocks)}
        rank = sorted(range(len(records)), key=lambda j: order[records[j]["block"]])  # stable
        records = [records[j] for j in rank]
        correct = np.concatenate(correct)[rank]
        return SweepResult(
            records, correct, self.eval_images, self.eval_split, self.recal_images,
            self.refit_images, device_name(self.device), "bf16" if self.bf16 else "fp32",
            time.perf_counter() - t0, self.dense_correct, self.dense_recal_correct, evaluated,
            {name: self.widths[name] for name in blocks},
            {key: c for key, c in self.clusterings.items() if key[0] in blocks}, refits)


def sweep(model: ResNet, eval_images: Tensor, eval_labels: Tensor,
          recal_images: Tensor | None = None, refit_images: Tensor | None = None, *,
          blocks: Sequence[str] | None = None, ks: Mapping[str, Sequence[int]] | None = None,
          strategies: Sequence[str] = STRATEGIES, treatments: Sequence[str] = TREATMENTS,
          progress: bool = True, **options) -> SweepResult:
    """Build a :class:`BlockSweep` (``options``: its keyword arguments) and run it;
    ``seconds`` includes building the caches."""
    t0 = time.perf_counter()
    sw = BlockSweep(model, eval_images, eval_labels, recal_images, refit_images, **options)
    result = sw.run(blocks, ks, strategies, treatments, progress)
    result.seconds = time.perf_counter() - t0
    return result
