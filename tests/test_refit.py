"""helpers.refit: least-squares reconstruction of a pruned block's conv2.

Random-init models with randomised BN, random inputs, CPU, one thread.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from helpers.pruning import _shrink, keep_indices
from helpers.refit import (
    RIDGE,
    NormalEquations,
    augmented,
    block_io,
    conv2_input,
    normal_equations,
    refit_conv2,
)
from tests.test_pruning import make_model, one_thread  # noqa: F401 (autouse fixture)


def conv2_out(block, x):
    return block.conv2(conv2_input(block, x))


def paired_block(block_name: str = "layer2.1", seed: int = 0):
    """A block whose conv1 filters (and bn1 channels) come in identical pairs 2i, 2i+1."""
    m = make_model(seed)
    b = m.get_submodule(block_name)
    src = torch.arange(b.conv1.out_channels) // 2 * 2
    with torch.no_grad():
        b.conv1.weight.copy_(b.conv1.weight[src])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(b.bn1, name).copy_(getattr(b.bn1, name)[src])
    return m, b


def pruned_copy(b, keep):
    p = copy.deepcopy(b)
    _shrink(p, torch.as_tensor(keep))
    return p


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(24, 32, 16, 16, generator=torch.Generator().manual_seed(0))


def test_refit_reproduces_a_block_of_identical_pairs_exactly(inputs):
    _, b = paired_block()
    target = conv2_out(b, inputs)
    keep = list(range(0, b.conv1.out_channels, 2))  # one filter of each pair
    p = pruned_copy(b, keep)
    plain = conv2_out(p, inputs)
    assert not torch.allclose(plain, target, atol=1e-2)  # the plain selection is not exact
    report = refit_conv2(p, inputs, target, ridge=1e-10)
    assert report.refit and report.mse_after < 1e-10 * report.mse_before
    assert torch.allclose(conv2_out(p, inputs), target, atol=1e-4, rtol=1e-4)
    # the solution is the sum of each pair's conv2 slices
    want = b.conv2.weight[:, 0::2] + b.conv2.weight[:, 1::2]
    assert torch.allclose(p.conv2.weight, want, atol=1e-4)


@pytest.mark.parametrize("strategy", ["l1", "random"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_refit_never_increases_its_calibration_loss(inputs, strategy, k):
    b = make_model(1).get_submodule("layer2.1")
    target = conv2_out(b, inputs)
    p = pruned_copy(b, keep_indices(b, k, strategy, None, seed=k))
    before = F.mse_loss(conv2_out(p, inputs), target).item()
    report = refit_conv2(p, inputs, target)
    after = F.mse_loss(conv2_out(p, inputs), target).item()
    assert report.mse_after <= report.mse_before
    assert after <= before * (1 + 1e-5)
    assert report.mse_before == pytest.approx(before, rel=1e-4)  # the report measures that loss
    assert report.mse_after == pytest.approx(after, rel=1e-4)


def test_a_worse_solve_keeps_the_old_weights(inputs):
    b = make_model(2).get_submodule("layer2.1")
    target = conv2_out(b, inputs)
    p = copy.deepcopy(b)  # unpruned: the old weights are exact, any ridge makes them worse
    old = p.conv2.weight.clone()
    report = refit_conv2(p, inputs, target, ridge=10.0)
    assert not report.refit and report.mse_after == report.mse_before
    assert torch.equal(p.conv2.weight, old)


def test_refit_keeps_dtype_device_and_memory_format(inputs):
    b = make_model(3).get_submodule("layer2.1")
    target = conv2_out(b, inputs)
    p = pruned_copy(b, list(range(7)))
    p.conv2.to(memory_format=torch.channels_last)
    param = p.conv2.weight
    refit_conv2(p, inputs, target)
    assert p.conv2.weight is param and param.dtype == torch.float32
    assert param.is_contiguous(memory_format=torch.channels_last)


def test_subset_of_the_dense_equations_is_the_pruned_blocks(inputs):
    b = make_model(4).get_submodule("layer2.1")
    target = conv2_out(b, inputs)
    dense = normal_equations(b, inputs, target, batch_size=10)
    keep = [3, 0, 17, 9]
    sub = dense.subset(sorted(keep))
    own = normal_equations(pruned_copy(b, sorted(keep)), inputs, target)
    assert isinstance(sub, NormalEquations) and sub.rows == own.rows == 24 * 16 * 16
    assert torch.allclose(sub.xtx, own.xtx, rtol=1e-9, atol=1e-9)
    assert torch.allclose(sub.xty, own.xty, rtol=1e-9, atol=1e-9)
    w_sub, _ = sub.solve(RIDGE)
    w_own, _ = own.solve(RIDGE)
    assert torch.allclose(w_sub, w_own, rtol=1e-6, atol=1e-8)


def test_block_io_gives_what_the_block_sees():
    m = make_model(5)
    images = torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    m.train()
    ins, outs = block_io(m, "layer3.0", images, batch_size=4)
    assert m.training  # the mode is restored
    m.eval()
    seen = {}
    hook = m.get_submodule("layer3.0").register_forward_pre_hook(
        lambda _m, a: seen.setdefault("x", a[0]))
    from helpers.data import normalize
    with torch.no_grad():
        m(normalize(images))
    hook.remove()
    assert ins.shape == (9, 32, 16, 16) and outs.shape == (9, 64, 8, 8)
    assert torch.allclose(ins, seen["x"], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(outs, conv2_out(m.get_submodule("layer3.0"), ins), atol=1e-5)


def test_errors(inputs):
    b = make_model().get_submodule("layer2.1")
    with pytest.raises(ValueError, match="same N"):
        refit_conv2(b, inputs, torch.zeros(3, 32, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        refit_conv2(b, inputs, torch.zeros(24, 16, 16, 16))
    with pytest.raises(ValueError, match="unknown block"):
        block_io(make_model(), "layer9.0", torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_augmented_is_seeded_and_on_the_cpu():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    a, b = augmented(images, 4, seed=1), augmented(images, 4, seed=1)
    assert torch.equal(a, b) and a.shape == (4, 3, 32, 32) and a.dtype == torch.uint8
    assert not torch.equal(augmented(images, 4, seed=2), a)
