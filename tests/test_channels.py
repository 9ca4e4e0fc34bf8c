"""helpers.study.channels: residual (stage) channels pruned through every writer and reader."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers.data import normalize
from helpers.models import STAGE_WIDTHS, load_model, resnet20, save_model
from helpers.study.channels import (
    STAGES,
    channel_features,
    prune_stage,
    prune_stages,
    readers,
    refit_readers,
    writers,
)


def _random_net(widths=None, seed: int = 0) -> torch.nn.Module:
    """A conv3x3-shortcut ResNet20 with random BN statistics and affine parameters, so that
    no BN is an identity and every writer matters."""
    torch.manual_seed(seed)
    model = resnet20("conv3x3", widths)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.2)
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _duplicated(model, stage: str):
    """A copy whose ``stage`` channels come in identical pairs (2j, 2j+1): every writer's row
    and BN channel 2j+1 copied from 2j; readers untouched."""
    dup = copy.deepcopy(model)
    with torch.no_grad():
        for conv, bn in writers(dup, stage):
            conv.weight[1::2] = conv.weight[0::2]
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name)[1::2] = getattr(bn, name)[0::2]
    return dup


def test_writers_and_readers_are_the_layers_that_touch_the_stage():
    model = _random_net()
    for s, stage in enumerate(STAGES):
        width = STAGE_WIDTHS[s]
        assert all(c.out_channels == width and b.num_features == width
                   for c, b in writers(model, stage))
        ins = [r.in_features if isinstance(r, torch.nn.Linear) else r.in_channels
               for r in readers(model, stage)]
        assert ins == [width] * len(ins)
    assert len(writers(model, "layer1")) == 4 and writers(model, "layer1")[0][0] is model.conv
    assert readers(model, "layer3")[-1] is model.fc
    assert readers(model, "layer2")[-1] is model.layer3[0].shortcut[0]
    assert channel_features(model, "layer2").shape[0] == 32


@pytest.mark.parametrize("stage", STAGES)
def test_pruning_at_full_width_computes_the_same_function(stage):
    model = _random_net((16, 0, 8, 32, 16, 0, 64, 32, 64))  # removed and narrowed blocks too
    x = torch.randn(4, 3, 32, 32)
    full = STAGE_WIDTHS[STAGES.index(stage)]
    torch.testing.assert_close(prune_stage(model, stage, full)(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("stage", STAGES)
def test_duplicated_channels_merge_exactly(stage):
    """Identical channels carry identical activations everywhere, so keeping one of each pair
    and adding the readers' slices changes nothing."""
    model = _duplicated(_random_net((16, 0, 16, 32, 32, 0, 64, 64, 64)), stage)
    half = STAGE_WIDTHS[STAGES.index(stage)] // 2
    pruned = prune_stage(model, stage, half)
    assert pruned.stage_widths[STAGES.index(stage)] == half
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in pruned.parameters()) < sum(
        p.numel() for p in model.parameters())


def test_refit_keeps_the_identity_on_duplicated_channels():
    """The merge already reproduces every reader's output: a least-squares refit finds no
    better weights and leaves the function exact."""
    model = _duplicated(_duplicated(_random_net(), "layer2"), "layer3")
    images = (torch.rand(32, 3, 32, 32) * 255).to(torch.uint8)
    pruned = prune_stages(model, (16, 16, 32), refit_images=images)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-4)
    assert {r["layer"] for r in pruned.meta["refit"]} >= {"layer2.1.conv1", "layer3.0.shortcut",
                                                          "fc"}
    assert all(r["mse_after"] <= 1e-8 for r in pruned.meta["refit"])


def test_refit_brings_a_trained_network_back_toward_the_unpruned_one(lab_root):
    """On the committed network, narrowing stage 3 to 32 channels moves the logits; refitting
    the readers on other images (augmented training images) moves them less."""
    from helpers import paths
    from helpers.data import load_splits

    dense = load_model(paths.CHECKPOINT).eval()
    data = load_splits(root=lab_root, download=False, warn=False)
    x = normalize(data.val_images[:200])
    merged = prune_stages(dense, (16, 32, 32))
    refit = prune_stages(dense, (16, 32, 32), refit_images=data.train_images[:256])
    with torch.no_grad():
        target = dense(x)
        err = {name: float((m(x) - target).square().mean())
               for name, m in {"merged": merged, "refit": refit}.items()}
    assert err["refit"] < 0.5 * err["merged"], err


def test_refit_readers_reports_every_reader_it_fits():
    model = _random_net()
    pruned = prune_stage(model, "layer3", 48)
    x = torch.randn(8, 3, 32, 32)
    reports = refit_readers(model, pruned, x, pruned.meta["kept_channels"])
    assert [r["layer"] for r in reports] == ["layer3.1.conv1", "layer3.2.conv1", "fc"]


def test_a_narrowed_network_can_be_narrowed_again_with_its_refit():
    """Kept channels are counted from the network a call starts from: narrowing twice composes
    them, and the second refit reads the right rows of the first network's projections."""
    images = (torch.rand(16, 3, 32, 32) * 255).to(torch.uint8)
    once = prune_stages(_random_net(), (16, 16, 48), refit_images=images)
    twice = prune_stages(once, (8, 16, 32), refit_images=images)
    assert twice.stage_widths == (8, 16, 32)
    assert set(twice.meta["kept_channels"]) == {"layer1", "layer3"}
    assert all(max(k) < w for k, w in zip(twice.meta["kept_channels"].values(), (16, 48),
                                          strict=True))
    again = prune_stage(prune_stage(_random_net(), "layer3", 48), "layer3", 32)
    assert len(again.meta["kept_channels"]["layer3"]) == 32
    assert max(again.meta["kept_channels"]["layer3"]) < 64


def test_narrowed_network_saves_loads_and_is_rebuilt_by_its_stage_widths(tmp_path):
    pruned = prune_stages(_random_net(), (8, 16, 48))
    assert pruned.stage_widths == (8, 16, 48)
    fresh = resnet20("conv3x3", stage_widths=(8, 16, 48))
    fresh.load_state_dict(pruned.state_dict())  # every shape matches
    save_model(pruned, tmp_path / "narrow.pt")
    back = load_model(tmp_path / "narrow.pt").eval()
    x = torch.randn(2, 3, 32, 32)
    assert back.stage_widths == (8, 16, 48)
    torch.testing.assert_close(back(x), pruned(x))


def test_bad_input_is_refused_with_a_reason():
    model = _random_net()
    with pytest.raises(ValueError, match="conv3x3"):
        prune_stage(resnet20("A"), "layer2", 16)
    with pytest.raises(ValueError, match="conv3x3"):
        resnet20("A", stage_widths=(16, 16, 64))
    with pytest.raises(ValueError, match="unknown stage"):
        prune_stage(model, "layer4", 8)
    with pytest.raises(ValueError, match=r"1\.\.32"):
        prune_stage(model, "layer2", 33)
    with pytest.raises(ValueError, match="stage_widths needs"):
        prune_stages(model, (16, 32))
    with pytest.raises(ValueError, match="at most"):
        prune_stages(prune_stage(model, "layer2", 16), (16, 32, 64))
