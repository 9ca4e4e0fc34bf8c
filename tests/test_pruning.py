"""helpers.pruning: physical removal of conv1 filters, strategies, clustering, BN recalibration.

Random-init models with randomised BN parameters and statistics (so that BN folding matters),
on the CPU, with a handful of random images: no dataset needed.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from helpers.data import normalize, random_crop_flip
from helpers.metrics import count_macs, count_params
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS, STAGE_WIDTHS, resnet20
from helpers.pruning import (
    CLUSTER_STRATEGIES,
    STRATEGIES,
    as_plain_model,
    bn_scale_shift,
    calibration_images,
    cluster_filters,
    filter_features,
    keep_indices,
    kmeans,
    prune_block,
    pruned_block,
    recalibrate_bn,
)
from helpers.refit import augmented, block_io

TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One CPU thread for torch and OpenMP (sklearn): these tensors are tiny, and a second
    thread only makes a test crawl when the machine is busy with other work."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN layer non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.weight.copy_(0.5 + torch.rand(n, generator=g))
                bn.bias.copy_(0.2 * torch.randn(n, generator=g))
                bn.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


def make_model(seed: int = 0, shortcut: str = "conv3x3"):
    torch.manual_seed(seed)
    return randomize_bn(resnet20(shortcut), seed).eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def x():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def state(m: nn.Module) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()}


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("block", ["layer1.0", "layer2.0", "layer3.2"])
def test_keeping_every_filter_is_the_identity(model, x, strategy, block):
    width = model.get_submodule(block).conv1.out_channels
    pruned = prune_block(model, block, width, strategy)
    with torch.no_grad():
        assert torch.allclose(pruned(x), model(x), atol=TOL, rtol=0)
    assert pruned.widths == model.widths


def duplicated_block_model(block: str, distinct: int, rescale: bool):
    """A model whose ``block`` conv1 holds ``distinct`` filters, each repeated.

    With ``rescale``, copy j of a filter is its weights times c_j (a power of 2) with BN scale
    and running mean adjusted so that the BN-folded weights and bias are bit-identical: raw
    filters that differ, folded ones that do not.
    """
    m = make_model(3)
    b = m.get_submodule(block)
    width = b.conv1.out_channels
    src = torch.arange(width) % distinct  # filter i copies filter src[i]
    c = (2.0 ** (torch.arange(width) // distinct % 3 - 1)) if rescale else torch.ones(width)
    with torch.no_grad():
        w = b.conv1.weight[src] * c.view(-1, 1, 1, 1)
        b.conv1.weight.copy_(w)
        b.bn1.weight.copy_(b.bn1.weight[src] / c)
        b.bn1.bias.copy_(b.bn1.bias[src])
        b.bn1.running_mean.copy_(b.bn1.running_mean[src] * c)
        b.bn1.running_var.copy_(b.bn1.running_var[src])
    return m


@pytest.mark.parametrize("rescale", [False, True], ids=["identical", "rescaled"])
@pytest.mark.parametrize("block", ["layer1.1", "layer2.0", "layer3.1"])
def test_merge_is_exact_on_duplicated_filters(x, block, rescale):
    distinct = 5
    m = duplicated_block_model(block, distinct, rescale)
    folded = filter_features(m.get_submodule(block), fold_bn=True)
    assert len(np.unique(folded, axis=0)) == distinct  # the folded filters really repeat
    pruned = prune_block(m, block, distinct, "merge")
    assert pruned.get_submodule(block).conv1.out_channels == distinct
    with torch.no_grad():
        ref = m(x)
        assert torch.allclose(pruned(x), ref, atol=TOL, rtol=0)
        # the test has teeth: keeping the 5 filters of largest L1 norm drops whole groups
        assert not torch.allclose(prune_block(m, block, distinct, "l1")(x), ref, atol=1e-3)


# --------------------------------------------------------------------------- shapes and costs


def macs_by_hand(widths, shortcut="conv3x3", num_classes=10) -> int:
    """MACs of resnet20(widths) from conv MACs = out_ch * in_ch * 9 * H_out * W_out."""
    def conv(out_ch, in_ch, hw):
        return out_ch * in_ch * 9 * hw * hw

    total = conv(STAGE_WIDTHS[0], 3, 32)
    in_planes, hw, mids = STAGE_WIDTHS[0], 32, iter(widths)
    for s, planes in enumerate(STAGE_WIDTHS):
        for b in range(3):
            k = next(mids)
            if s > 0 and b == 0:
                hw //= 2
            total += conv(k, in_planes, hw) + conv(planes, k, hw)
            if shortcut == "conv3x3" and (in_planes != planes):
                total += conv(planes, in_planes, hw)
            in_planes = planes
    return total + STAGE_WIDTHS[-1] * num_classes


def test_mac_formula_matches_the_dense_network():
    assert macs_by_hand(DEFAULT_WIDTHS) == count_macs(resnet20("conv3x3"))
    assert macs_by_hand(DEFAULT_WIDTHS, "A") == count_macs(resnet20("A"))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("block", "k"), [("layer1.0", 5), ("layer2.0", 11), ("layer3.1", 1)])
def test_pruned_shapes_params_and_macs(model, x, strategy, block, k):
    pruned = prune_block(model, block, k, strategy)
    b, orig = pruned.get_submodule(block), model.get_submodule(block)
    width, in_ch, planes = orig.conv1.out_channels, orig.conv1.in_channels, orig.conv2.out_channels
    assert b.conv1.weight.shape == (k, in_ch, 3, 3)
    assert b.bn1.weight.shape == b.bn1.running_var.shape == (k,)
    assert b.conv2.weight.shape == (planes, k, 3, 3)
    assert b.bn2.weight.shape == (planes,)  # the residual width is untouched
    widths = list(DEFAULT_WIDTHS)
    widths[BLOCK_NAMES.index(block)] = k
    assert pruned.widths == tuple(widths)
    removed = (width - k) * (in_ch * 9 + 2 + planes * 9)  # conv1 rows, bn1 affine, conv2 slices
    assert count_params(pruned) == count_params(model) - removed
    assert count_macs(pruned) == macs_by_hand(widths)
    plain = as_plain_model(pruned)  # an ordinary resnet20(widths=...) holds the same network
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), pruned(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_input_model_is_untouched(strategy):
    m = make_model(4)
    before, blocks = state(m), [id(b) for b in m.modules()]
    cluster_filters(m, "layer2.1", 7, fold_bn=True)
    prune_block(m, "layer2.1", 7, strategy)
    pruned_block(m, "layer3.0", 9, strategy)
    after = m.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [id(b) for b in m.modules()] == blocks and m.widths == DEFAULT_WIDTHS
    assert not m.training


def test_pruned_block_is_what_prune_block_puts_in_place(model):
    for strategy in STRATEGIES:
        alone = pruned_block(model, "layer2.2", 13, strategy)
        inside = prune_block(model, "layer2.2", 13, strategy).get_submodule("layer2.2")
        sa, si = alone.state_dict(), inside.state_dict()
        assert all(torch.equal(sa[k], si[k]) for k in sa)


# --------------------------------------------------------------------------- strategies


def test_first_keeps_the_lowest_index_of_each_cluster_like_the_original_code(model):
    block, k = "layer2.1", 9
    c = cluster_filters(model, block, k)
    expected = sorted(int(np.flatnonzero(c.labels == j).min()) for j in range(k))
    b = model.get_submodule(block)
    assert keep_indices(b, k, "first", c).tolist() == expected
    kept = prune_block(model, block, k, "first").get_submodule(block)
    assert torch.equal(kept.conv1.weight, b.conv1.weight[expected])
    assert torch.equal(kept.conv2.weight, b.conv2.weight[:, expected])
    # "centroid" keeps the same channels (BN, conv2 slices) but carries the centroids
    cen = prune_block(model, block, k, "centroid").get_submodule(block)
    assert torch.equal(cen.bn1.weight, b.bn1.weight[expected])
    order = np.argsort(c.first)
    want = torch.as_tensor(c.centroids[order], dtype=torch.float32).view_as(cen.conv1.weight)
    assert torch.equal(cen.conv1.weight, want)


def test_nearest_keeps_the_member_closest_to_each_centroid(model):
    block, k = "layer1.2", 6
    c = cluster_filters(model, block, k)
    x = filter_features(model.get_submodule(block))
    for j in range(k):
        members = np.flatnonzero(c.labels == j)
        d = ((x[members] - c.centroids[j]) ** 2).sum(1)
        assert c.nearest[j] == members[d.argmin()]
    assert keep_indices(model.get_submodule(block), k, "nearest", c).tolist() == sorted(c.nearest)


def test_l1_keeps_the_filters_of_largest_l1_norm(model):
    b = model.get_submodule("layer3.0")
    norms = b.conv1.weight.abs().sum((1, 2, 3))
    expected = sorted(torch.topk(norms, 20).indices.tolist())
    assert keep_indices(b, 20, "l1", None).tolist() == expected


def test_merge_folds_bn_and_sums_conv2_slices(model, x):
    """Eval-mode output of each merged channel before the ReLU is centroid-conv + centroid-bias."""
    block, k = "layer2.1", 10
    c = cluster_filters(model, block, k, fold_bn=True)
    b = prune_block(model, block, k, "merge").get_submodule(block)
    scale, shift = bn_scale_shift(b.bn1)
    w_fold = (b.conv1.weight * scale.view(-1, 1, 1, 1)).flatten(1)
    want = torch.as_tensor(c.centroids, dtype=torch.float32)
    old_w2 = model.get_submodule(block).conv2.weight
    order = np.argsort(c.nearest)  # channel j carries cluster order[j]
    assert torch.allclose(torch.cat([w_fold, shift[:, None]], 1), want[order], atol=TOL)
    for j, cluster in enumerate(order):
        members = torch.as_tensor(np.flatnonzero(c.labels == cluster))
        assert torch.allclose(b.conv2.weight[:, j], old_w2[:, members].sum(1), atol=TOL)


def test_keep_indices_say_which_channels_merge_keeps(model):
    """merge keeps each cluster's nearest member's channel (its BN statistics), in index order:
    the channels keep_indices reports."""
    block, k = "layer2.2", 9
    c = cluster_filters(model, block, k, fold_bn=True)
    orig = model.get_submodule(block)
    keep = keep_indices(orig, k, "merge", c)
    b = prune_block(model, block, k, "merge", clustering=c).get_submodule(block)
    assert torch.equal(b.bn1.running_mean, orig.bn1.running_mean[keep])
    assert torch.equal(b.bn1.running_var, orig.bn1.running_var[keep])


def test_a_clustering_knows_its_block_and_features(model):
    c = cluster_filters(model, "layer1.0", 4, fold_bn=True)
    assert (c.block, c.folded) == ("layer1.0", True)
    with pytest.raises(ValueError, match="is of block layer1.0"):
        prune_block(model, "layer1.1", 4, "merge", clustering=c)  # same shapes, another block
    with pytest.raises(ValueError, match="does not fit"):
        prune_block(model, "layer1.0", 4, "nearest", clustering=c)


def test_empty_clusters_are_repaired_when_filters_repeat():
    """More clusters than distinct filters: sklearn leaves some empty; every strategy still
    needs k distinct channels."""
    x = np.repeat(np.random.default_rng(0).normal(size=(4, 5)), 2, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning escapes
        c = kmeans(x, 6)
    assert sorted(set(c.labels.tolist())) == list(range(6))
    assert len(set(c.first.tolist())) == len(set(c.nearest.tolist())) == 6
    assert np.isclose(c.inertia, ((x - c.centroids[c.labels]) ** 2).sum())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("k", [17, -1, 2.5, True, "3"])
def test_k_outside_the_range_is_an_error(model, k):
    with pytest.raises(ValueError, match=r"k must be an integer in 0\.\.16 for block layer1\.1"):
        prune_block(model, "layer1.1", k, "first")
    with pytest.raises(ValueError, match=r"1\.\.16"):
        cluster_filters(model, "layer1.1", k)


def test_unknown_block_or_strategy_is_an_error(model):
    with pytest.raises(ValueError, match="unknown block 'layer4.0'; valid blocks: layer1.0, "
                                         "layer1.1, layer1.2, layer2.0"):
        prune_block(model, "layer4.0", 3, "first")
    with pytest.raises(ValueError, match="unknown strategy 'kmeans'; valid strategies: "
                                         "centroid, first, nearest, merge, l1, random"):
        prune_block(model, "layer1.0", 3, "kmeans")
    with pytest.raises(ValueError, match="needs a clustering"):
        keep_indices(model.get_submodule("layer1.0"), 3, "nearest", None)


def test_a_clustering_that_does_not_fit_is_an_error(model):
    raw = cluster_filters(model, "layer1.0", 4, fold_bn=False)
    with pytest.raises(ValueError, match=r"does not fit: it needs 4 centroids of the 16 folded"):
        prune_block(model, "layer1.0", 4, "merge", clustering=raw)
    with pytest.raises(ValueError, match="does not fit"):
        prune_block(model, "layer1.0", 5, "centroid", clustering=raw)
    with pytest.raises(ValueError, match="does not fit"):
        prune_block(model, "layer2.0", 4, "first", clustering=raw)  # 16 filters, not 32


# --------------------------------------------------------------------------- determinism


def test_fixed_seed_is_deterministic(model):
    a, b = cluster_filters(model, "layer3.1", 20, seed=7), cluster_filters(model, "layer3.1", 20,
                                                                          seed=7)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    for strategy in STRATEGIES:
        s1 = prune_block(model, "layer3.1", 20, strategy, seed=7).state_dict()
        s2 = prune_block(model, "layer3.1", 20, strategy, seed=7).state_dict()
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
    b = model.get_submodule("layer3.1")
    draws = {tuple(keep_indices(b, 20, "random", None, seed=s)) for s in range(5)}
    assert len(draws) > 1  # the seed matters for "random"


def test_reusing_a_clustering_gives_the_same_network(model):
    for strategy in CLUSTER_STRATEGIES:
        c = cluster_filters(model, "layer2.0", 12, fold_bn=strategy == "merge", seed=3)
        s1 = prune_block(model, "layer2.0", 12, strategy, seed=3, clustering=c).state_dict()
        s2 = prune_block(model, "layer2.0", 12, strategy, seed=3).state_dict()
        assert all(torch.equal(s1[k], s2[k]) for k in s1)


# --------------------------------------------------------------------------- recalibration


@pytest.mark.parametrize("augment", [False, True])
def test_recalibrate_bn_equals_statistics_computed_by_hand(augment):
    m = make_model(5)
    images = torch.randint(0, 256, (11, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    batches, batch_size = 3, 4  # 4 + 4 + 3 images (only the first 11 <= 12)
    layers = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in layers]
    # what it feeds: the images themselves, or their augmentation drawn from a seeded generator
    fed = (random_crop_flip(images, generator=torch.Generator().manual_seed(7)) if augment
           else images)
    assert torch.equal(calibration_images(images, batches, batch_size, augment, seed=7), fed)

    # By hand: in train mode each BN normalises with its batch's statistics; record its inputs.
    ref = copy.deepcopy(m).train()
    seen = {i: [] for i in range(len(layers))}
    ref_layers = [mod for mod in ref.modules() if isinstance(mod, nn.BatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(lambda mod, inp, i=i: seen[i].append(inp[0].detach()))
             for i, bn in enumerate(ref_layers)]
    with torch.no_grad():
        for s in range(0, 11, batch_size):
            ref(normalize(fed[s:s + batch_size]))
    for h in hooks:
        h.remove()

    out = recalibrate_bn(m, images, batches=batches, batch_size=batch_size, augment=augment,
                         seed=7)
    assert out is m and not m.training
    for i, bn in enumerate(layers):
        means = torch.stack([z.mean((0, 2, 3)) for z in seen[i]])
        variances = torch.stack([z.var((0, 2, 3), unbiased=True) for z in seen[i]])
        assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5, rtol=1e-4)
        assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-5, rtol=1e-4)
        assert int(bn.num_batches_tracked) == 3
        assert bn.momentum == momenta[i]  # restored


def test_recalibrate_bn_trains_only_bn_and_restores_modes_and_momenta():
    m = make_model(6)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    m.train()
    m.fc.eval()  # a mixed state must come back as it was
    modes = {name: mod.training for name, mod in m.named_modules()}
    during = {}

    def record(mod, _inp, name):
        during.setdefault(name, mod.training)

    hooks = [mod.register_forward_pre_hook(lambda mod, inp, name=name: record(mod, inp, name))
             for name, mod in m.named_modules()]
    recalibrate_bn(m, images, batches=1, batch_size=8)
    for h in hooks:
        h.remove()
    assert {name: mod.training for name, mod in m.named_modules()} == modes
    for name, mod in m.named_modules():
        if name in during:
            assert during[name] == isinstance(mod, nn.BatchNorm2d), name

    def fail(*_):
        raise RuntimeError("boom")

    m.eval()
    hook = m.layer2[0].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        recalibrate_bn(m, images, batches=1, batch_size=8)
    hook.remove()
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert not any(mod.training for mod in m.modules())
    assert all(bn.momentum == 0.1 for bn in bns)


def test_recalibrate_bn_needs_images():
    with pytest.raises(ValueError, match="at least one image"):
        recalibrate_bn(make_model(), torch.zeros(0, 3, 32, 32, dtype=torch.uint8))


# --------------------------------------------------------------------------- refit, layers


def test_prune_block_with_refit_lowers_the_conv2_error_and_keeps_the_rest(model):
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    block, k = "layer2.1", 6
    plain = prune_block(model, block, k, "l1")
    refit = prune_block(model, block, k, "l1", refit_images=images)
    x = normalize(augmented(images, seed=0))
    inputs, target = block_io(model, block, augmented(images, seed=0))

    def err(m):
        return ((block_io(m, block, augmented(images, seed=0))[1] - target) ** 2).mean()

    assert err(refit) < err(plain)
    sp, sr = plain.state_dict(), refit.state_dict()
    changed = [key for key in sp if not torch.equal(sp[key], sr[key])]
    assert changed == [f"{block}.conv2.weight"]  # only conv2 of the pruned block moves
    assert x.shape == (16, 3, 32, 32) and inputs.shape[1] == 32


def test_shrink_keeps_dtype_and_memory_format():
    m = make_model(7).to(memory_format=torch.channels_last)
    b = pruned_block(m, "layer3.0", 9, "l1")
    for conv in (b.conv1, b.conv2):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    d = pruned_block(make_model(7).double(), "layer3.0", 9, "first")
    assert {p.dtype for p in d.parameters()} == {torch.float64}
    assert d.bn1.running_mean.dtype == torch.float64
