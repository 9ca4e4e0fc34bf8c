"""Filter-level pruning of a BasicBlock's conv1 by k-means++ clustering, and baselines.

Only conv1's output channels of a block can go: conv2's output must keep its width for the
residual addition. Removing channel ``c`` of conv1 removes row ``c`` of conv1, channel ``c`` of
bn1 and input slice ``c`` of conv2, so a pruned network is an ordinary ``resnet20(widths=...)``.

Strategies (``k`` = filters kept):

- ``"centroid"``: the original work's replacement: each cluster keeps its first member's
  channel (its BN parameters and conv2 slice) with the conv1 weights replaced by the centroid.
- ``"first"``: keep the lowest-index member of each cluster unchanged (what the original code
  really did).
- ``"nearest"``: keep the member nearest the centroid unchanged (what its README describes).
- ``"merge"``: fold bn1 into conv1, cluster the folded filters together with their biases,
  keep one channel per cluster carrying the centroid, and give it the SUM of its members'
  conv2 input slices. Exact when the members of each cluster are identical.
- ``"l1"``: keep the k filters of largest L1 norm (Li et al. 2017).
- ``"random"``: keep k filters drawn at random.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor, nn

from helpers.data import normalize
from helpers.models import BLOCK_NAMES, BasicBlock, ResNet, check_removable, resnet20
from helpers.refit import RIDGE, augmented, refit_block

STRATEGIES = ("centroid", "first", "nearest", "merge", "l1", "random")
CLUSTER_STRATEGIES = ("centroid", "first", "nearest", "merge")
KMEANS_RESTARTS = 10  # k-means++ seedings per clustering; the best inertia wins


@dataclass(frozen=True)
class Clustering:
    """k-means++ clusters of one block's conv1 filters (rows of ``features``)."""

    labels: np.ndarray  # (width,) cluster of every filter
    centroids: np.ndarray  # (k, features)
    nearest: np.ndarray  # (k,) index of the member nearest each centroid
    first: np.ndarray  # (k,) lowest member index of each cluster
    inertia: float  # sum of squared distances to the centroids
    block: str | None = None  # whose filters (set by cluster_filters / cluster_table)
    folded: bool | None = None  # clustered BN-folded filters with their bias (as merge needs)


def get_block(model: ResNet, block: str) -> BasicBlock:
    """The BasicBlock called ``block`` ("layer2.0" style), with a helpful error."""
    if block not in BLOCK_NAMES:
        raise ValueError(f"unknown block {block!r}; valid blocks: {', '.join(BLOCK_NAMES)}")
    return model.get_submodule(block)


def check_k(block_module: BasicBlock, block: str, k: int, zero: bool = False) -> None:
    """``k`` must be a count of filters the block has, 1..width (0..width with ``zero``)."""
    width, low = block_module.conv1.out_channels, 0 if zero else 1
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not low <= k <= width:
        raise ValueError(f"k must be an integer in {low}..{width} for block {block} "
                         f"(its conv1 has {width} filters), got {k!r}")


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """The per-channel affine map y = scale * x + shift that an eval-mode BN applies."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def filter_features(block: BasicBlock, fold_bn: bool = False) -> np.ndarray:
    """conv1's filters as rows (width, in*3*3); with ``fold_bn``, bn1 folded in plus its bias."""
    w = block.conv1.weight.detach().float().flatten(1)
    if not fold_bn:
        return w.cpu().numpy().astype(np.float64)
    scale, shift = bn_scale_shift(block.bn1)
    return torch.cat([w * scale[:, None], shift[:, None]], 1).cpu().numpy().astype(np.float64)


def kmeans(features: np.ndarray, k: int, seed: int = 0) -> Clustering:
    """sklearn's k-means++ on the rows of ``features``."""
    km = KMeans(n_clusters=k, init="k-means++", n_init=KMEANS_RESTARTS, random_state=seed)
    with warnings.catch_warnings():  # "fewer distinct clusters than n_clusters": repaired below
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit_predict(features)
    centroids = km.cluster_centers_.copy()
    inertia = float(km.inertia_)
    # With fewer distinct filters than k (duplicated filters), sklearn leaves clusters empty.
    # Give each empty cluster a filter of its own, taken from the largest cluster (its member
    # farthest from the centroid), so that every strategy keeps k distinct channels.
    for c in np.flatnonzero(np.bincount(labels, minlength=k) == 0):
        source = int(np.bincount(labels, minlength=k).argmax())
        members = np.flatnonzero(labels == source)
        moved = members[((features[members] - centroids[source]) ** 2).sum(1).argmax()]
        labels[moved] = c
        centroids[c] = features[moved]
        centroids[source] = features[labels == source].mean(0)
        inertia = float(((features - centroids[labels]) ** 2).sum())
    dist = ((features[:, None, :] - centroids[None]) ** 2).sum(-1)  # (width, k)
    nearest, first = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        first[c] = members.min()
        nearest[c] = members[dist[members, c].argmin()]
    return Clustering(labels, centroids, nearest, first, inertia)


def cluster_filters(model: ResNet, block: str, k: int, fold_bn: bool = False,
                    seed: int = 0) -> Clustering:
    """Cluster the conv1 filters of ``block`` into ``k`` groups with k-means++."""
    b = get_block(model, block)
    check_k(b, block, k)
    return replace(kmeans(filter_features(b, fold_bn), k, seed), block=block, folded=fold_bn)


def _members(clustering: Clustering, c: int) -> np.ndarray:
    members = np.flatnonzero(clustering.labels == c)
    return members if len(members) else clustering.nearest[c:c + 1]


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` with the dtype and memory format of ``old``'s weight."""
    fmt = (torch.channels_last if old.weight.ndim == 4 and not old.weight.is_contiguous()
           and old.weight.is_contiguous(memory_format=torch.channels_last)
           else torch.contiguous_format)
    new = new.to(old.weight.dtype)
    return new.to(memory_format=fmt) if old.weight.ndim == 4 else new


@torch.no_grad()
def _shrink(block: BasicBlock, keep: Tensor) -> None:
    """Keep only channels ``keep`` of conv1/bn1 and the matching conv2 input slices.

    The new layers are built on the block's device with the dtype and memory format of the
    ones they replace.
    """
    k = len(keep)
    conv1, bn1, conv2 = block.conv1, block.bn1, block.conv2
    dev = conv1.weight.device  # built on the block's device: no host round trip
    keep = keep.to(dev)
    with warnings.catch_warnings():  # k = 0: empty weights, nothing to initialise
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        new1 = nn.Conv2d(conv1.in_channels, k, 3, conv1.stride, 1, bias=False, device=dev)
        new2 = nn.Conv2d(k, conv2.out_channels, 3, 1, 1, bias=False, device=dev)
    new1, new2 = _like(new1, conv1), _like(new2, conv2)
    new1.weight.copy_(conv1.weight[keep])
    newbn = _like(nn.BatchNorm2d(k, eps=bn1.eps, momentum=bn1.momentum, device=dev), bn1)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(newbn, name).copy_(getattr(bn1, name)[keep])
    newbn.num_batches_tracked.copy_(bn1.num_batches_tracked)
    new2.weight.copy_(conv2.weight[:, keep])
    for new in (new1, newbn, new2):
        new.train(block.training)
    block.conv1, block.bn1, block.conv2 = new1, newbn, new2


@torch.no_grad()
def _merge(block: BasicBlock, clustering: Clustering) -> None:
    """Replace each cluster by one channel: folded centroid in, summed conv2 slices out.

    The kept channel keeps its representative's (nearest member's) BN statistics and the conv1
    weights are unfolded through them, so eval-mode output equals centroid-conv + centroid-bias
    exactly, while the pre-BN statistics stay close to the original ones (BN recalibration
    then only adjusts them).
    """
    old_w2 = block.conv2.weight.clone()
    order = np.argsort(clustering.nearest)  # channels in index order, as keep_indices says
    rep = torch.as_tensor(clustering.nearest[order], device=block.conv1.weight.device)
    _shrink(block, rep)
    cent = torch.as_tensor(clustering.centroids[order], dtype=torch.float32, device=rep.device)
    w_fold, b_fold = cent[:, :-1].view_as(block.conv1.weight), cent[:, -1]
    scale, _ = bn_scale_shift(block.bn1)
    dead = scale.abs() < 1e-12  # a zero BN scale cannot be unfolded: use an identity BN
    block.bn1.weight[dead] = 1.0
    block.bn1.running_var[dead] = 1.0 - block.bn1.eps
    block.bn1.running_mean[dead] = 0.0
    scale, _ = bn_scale_shift(block.bn1)
    block.conv1.weight.copy_(w_fold / scale.view(-1, 1, 1, 1))
    block.bn1.bias.copy_(b_fold + block.bn1.running_mean * scale)
    for j, c in enumerate(order):
        members = torch.as_tensor(_members(clustering, c), device=rep.device)
        block.conv2.weight[:, j] = old_w2[:, members].sum(1)


def keep_indices(block: BasicBlock, k: int, strategy: str, clustering: Clustering | None,
                 seed: int = 0) -> np.ndarray:
    """Which conv1 channels a strategy keeps (sorted)."""
    check_strategy(strategy)
    if strategy in CLUSTER_STRATEGIES and clustering is None:
        raise ValueError(f"strategy {strategy!r} needs a clustering (see cluster_filters)")
    if strategy in ("centroid", "first"):
        return np.sort(clustering.first)
    if strategy in ("nearest", "merge"):
        return np.sort(clustering.nearest)
    width = block.conv1.out_channels
    if strategy == "l1":
        norms = block.conv1.weight.detach().abs().sum((1, 2, 3)).cpu().numpy()
        return np.sort(np.argsort(-norms, kind="stable")[:k])
    return np.sort(np.random.default_rng(seed).choice(width, k, replace=False))


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")


def _check_clustering(b: BasicBlock, block: str, k: int, strategy: str,
                      clustering: Clustering) -> None:
    """A precomputed clustering must be of this block's filters, with k clusters, folded or not
    as the strategy needs."""
    width = b.conv1.out_channels
    dims = b.conv1.weight[0].numel() + (strategy == "merge")
    if (len(clustering.labels) != width or clustering.centroids.shape != (k, dims)):
        kind = "folded (fold_bn=True)" if strategy == "merge" else "raw (fold_bn=False)"
        raise ValueError(
            f"the clustering given for {strategy!r} on block {block} does not fit: it needs "
            f"{k} centroids of the {width} {kind} filters ({dims} features each), got "
            f"{clustering.centroids.shape[0]} centroids of {clustering.centroids.shape[1]} "
            f"features for {len(clustering.labels)} filters")
    if clustering.block is not None and clustering.block != block:
        raise ValueError(f"the clustering given for {strategy!r} on block {block} is of block "
                         f"{clustering.block}")
    if clustering.folded is not None and clustering.folded != (strategy == "merge"):
        raise ValueError(f"the clustering given for {strategy!r} on block {block} does not fit: "
                         f"it needs {'folded' if strategy == 'merge' else 'raw'} filters")


@torch.no_grad()
def pruned_block(model: ResNet, block: str, k: int, strategy: str, seed: int = 0,
                 clustering: Clustering | None = None) -> BasicBlock:
    """A pruned copy of one block of ``model`` (``model`` is untouched).

    This is the block that :func:`prune_block` puts in place; on its own it lets a caller (the
    per-block sweep of :mod:`helpers.study.sweep`) prune without copying the whole network.
    ``k = 0`` removes every filter whatever the strategy: the block's residual branch becomes bn2's
    per-channel constant (see :class:`helpers.models.BasicBlock`).
    """
    check_strategy(strategy)
    original = get_block(model, block)
    check_k(original, block, k, zero=True)
    if k == 0:
        check_removable([block])
        b = copy.deepcopy(original)
        _shrink(b, torch.zeros(0, dtype=torch.long))
        return b
    if strategy in CLUSTER_STRATEGIES:
        if clustering is None:
            clustering = cluster_filters(model, block, k, fold_bn=strategy == "merge", seed=seed)
        else:
            _check_clustering(original, block, k, strategy, clustering)
    b = copy.deepcopy(original)
    if strategy == "merge":
        _merge(b, clustering)
    else:
        keep = keep_indices(b, k, strategy, clustering, seed)
        if strategy == "centroid":  # the first member's channel carries the centroid
            order = np.argsort(clustering.first)
            w = torch.as_tensor(clustering.centroids[order], dtype=b.conv1.weight.dtype)
            _shrink(b, torch.as_tensor(keep, device=b.conv1.weight.device))
            b.conv1.weight.copy_(w.view_as(b.conv1.weight))
        else:
            _shrink(b, torch.as_tensor(keep, device=b.conv1.weight.device))
    return b


@torch.no_grad()
def prune_block(model: ResNet, block: str, k: int, strategy: str, seed: int = 0,
                clustering: Clustering | None = None, refit_images: Tensor | None = None,
                ridge: float = RIDGE) -> ResNet:
    """A copy of ``model`` whose ``block`` keeps ``k`` conv1 filters (``model`` is untouched).

    Args:
        clustering: a precomputed :func:`cluster_filters` result to reuse (it must be of the
            folded filters for ``"merge"``, of the raw ones for the other clustering strategies).
        refit_images: uint8 training images (about 1,000): when given, conv2 of the pruned
            block is re-fit by least squares to reproduce the unpruned block's conv2 output on
            them, with the training augmentation (seeded ``seed``); see
            :func:`helpers.refit.refit_block`. BN statistics are not recalibrated here: call
            :func:`recalibrate_bn` after.
        ridge: the refit's ridge (relative to the mean diagonal of its normal equations).
    """
    new = pruned_block(model, block, k, strategy, seed, clustering)
    if refit_images is not None:
        refit_block(model, block, new, refit_images, ridge=ridge, seed=seed)
    pruned = copy.deepcopy(model)
    pruned.meta = {}
    stage, index = block.split(".")
    getattr(pruned, stage)[int(index)] = new
    widths = list(pruned.widths)
    widths[BLOCK_NAMES.index(block)] = int(k)
    pruned.widths = tuple(widths)
    return pruned


def as_plain_model(model: ResNet) -> ResNet:
    """Rebuild a pruned model as a fresh ``resnet20(widths=...)`` with the same weights."""
    plain = resnet20(model.shortcut, model.widths, model.num_classes, model.stage_widths)
    plain.load_state_dict(model.state_dict())
    return plain.to(next(model.parameters()).device)


def bn_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def calibration_images(images: Tensor, batches: int = 10, batch_size: int = 256,
                       augment: bool = True, seed: int = 0) -> Tensor:
    """The uint8 images :func:`recalibrate_bn` feeds: the first ``batches x batch_size`` of
    ``images``, with the training augmentation (seeded, drawn on the CPU) unless ``augment`` is
    False."""
    n = min(len(images), batches * batch_size)
    if n == 0:
        raise ValueError("recalibrate_bn needs at least one image")
    return augmented(images, n, seed) if augment else images[:n]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: Tensor, batches: int = 10, batch_size: int = 256,
                   *, augment: bool = True, seed: int = 0, bf16: bool = False) -> nn.Module:
    """Re-estimate every BN layer's running statistics on training images, in place.

    The statistics are reset and replaced by the exact average over ``batches`` batches of
    ``batch_size`` of ``images`` (uint8, in the given order), passed without gradients with
    only the BN layers in train mode. The network's BN statistics were learned on AUGMENTED
    images (random crop from a 4-pixel zero padding, random flip), so by default the same
    augmentation is applied here (:func:`calibration_images`, generator seeded ``seed``):
    un-augmented images have other statistics (less zero border, no flips), and
    recalibrating on them costs a trained network accuracy. ``bf16`` runs the passes under
    bfloat16 autocast (on the model's device). The momenta and every module's train/eval mode
    are restored, whatever happens. Returns ``model``.
    """
    x = calibration_images(images, batches, batch_size, augment, seed)
    device = next(model.parameters()).device
    layers = bn_layers(model)
    momenta = [bn.momentum for bn in layers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average = exact mean over the batches
            bn.train()
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for i in range(0, len(x), batch_size):
                batch = normalize(x[i:i + batch_size].to(device))
                model(batch.contiguous(memory_format=torch.channels_last))
    finally:
        for bn, m in zip(layers, momenta, strict=True):
            bn.momentum = m
        for m, training in modes:
            m.training = training
    return model
