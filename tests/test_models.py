import math

import numpy as np
import pytest
import torch

from helpers.metrics import count_macs, count_params, layer_table
from helpers.models import BLOCK_NAMES, DEFAULT_WIDTHS, load_model, resnet20, save_model


def closed_form_macs(widths, shortcut):
    """Conv + linear MACs of a CIFAR ResNet20 computed from its definition (He et al. 2016)."""
    macs = 3 * 16 * 9 * 32 * 32  # stem
    in_planes = 16
    for i, mid in enumerate(widths):
        stage = i // 3
        planes, size = (16, 32, 64)[stage], (32, 16, 8)[stage]
        macs += in_planes * mid * 9 * size * size + mid * planes * 9 * size * size
        if shortcut == "conv3x3" and in_planes != planes:
            macs += in_planes * planes * 9 * size * size
        in_planes = planes
    return macs + 64 * 10


@pytest.mark.parametrize("shortcut,params", [("A", 269_722), ("conv3x3", 292_954)])
def test_published_parameter_counts(shortcut, params):
    # 269,722 is the widely published ResNet20 (option A) count; conv3x3 adds two 3x3 convs + BNs
    assert count_params(resnet20(shortcut)) == params


@pytest.mark.parametrize("shortcut", ["A", "conv3x3"])
@pytest.mark.parametrize("widths", [None, (8, 16, 4, 32, 1, 20, 64, 7, 33)])
def test_macs_match_closed_form(shortcut, widths):
    model = resnet20(shortcut, widths)
    assert count_macs(model) == closed_form_macs(widths or DEFAULT_WIDTHS, shortcut)


@pytest.mark.parametrize("shortcut", ["A", "conv3x3"])
@pytest.mark.parametrize("widths", [None, (8, 16, 4, 32, 1, 20, 64, 7, 33)])
def test_layer_table_rows_match_the_per_layer_formulas(shortcut, widths):
    # Every row against what its module's shapes give: a conv computes
    # C_in / groups * C_out * kh * kw MACs per output pixel, a linear layer C_in * C_out; a conv
    # or linear layer has one weight per MAC of a pixel (+ a bias per output), a BN two per
    # channel; the rest none. Their sums are the closed forms and the published counts.
    model = resnet20(shortcut, widths)
    table = layer_table(model)
    expected_macs = expected_params = 0
    for row in table.itertuples():
        m = model.get_submodule(row.layer)
        if isinstance(m, torch.nn.Conv2d):
            per_pixel = m.in_channels // m.groups * m.out_channels * math.prod(m.kernel_size)
            assert row.output[0] == m.out_channels
            macs = per_pixel * row.output[1] * row.output[2]
            params = per_pixel + (m.out_channels if m.bias is not None else 0)
        elif isinstance(m, torch.nn.Linear):
            macs = m.in_features * m.out_features
            params = macs + (m.out_features if m.bias is not None else 0)
        elif isinstance(m, torch.nn.BatchNorm2d):
            macs, params = 0, 2 * m.num_features
        else:
            macs, params = 0, 0
        assert (row.MACs, row.params) == (macs, params), row.layer
        expected_macs, expected_params = expected_macs + macs, expected_params + params
    n_convs = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    assert (table.type.isin(["Conv2d", "Linear"])).sum() == n_convs  # none left out
    assert expected_macs == closed_form_macs(widths or DEFAULT_WIDTHS, shortcut)
    if widths is None:
        assert expected_params == {"A": 269_722, "conv3x3": 292_954}[shortcut]


def test_forward_shape_and_widths():
    widths = (3, 5, 7, 9, 11, 13, 15, 17, 19)
    model = resnet20("conv3x3", widths)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [model.get_submodule(b).conv1.out_channels for b in BLOCK_NAMES] == list(widths)
    assert [model.get_submodule(b).conv2.in_channels for b in BLOCK_NAMES] == list(widths)


def test_state_dict_names_of_the_original_work():
    keys = set(resnet20("conv3x3").state_dict())
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = {"conv.weight", "fc.weight", "fc.bias"} | {f"bn.{n}" for n in bn}
    for s in range(1, 4):
        for b in range(3):
            p = f"layer{s}.{b}."
            expected |= {p + "conv1.weight", p + "conv2.weight"}
            expected |= {p + f"bn{i}.{n}" for i in (1, 2) for n in bn}
            if s > 1 and b == 0:
                expected |= {p + "shortcut.0.weight"} | {p + f"shortcut.1.{n}" for n in bn}
    assert keys == expected
    fresh = resnet20("conv3x3")
    fresh.load_state_dict(resnet20("conv3x3").state_dict(), strict=True)


@pytest.mark.parametrize("bad,match", [((16,) * 8, "9 integers"), ((16,) * 8 + (-1,), "layer3.2"),
                                       ((16,) * 8 + (2.5,), "non-negative integer")])
def test_bad_widths(bad, match):
    with pytest.raises(ValueError, match=match):
        resnet20(widths=bad)


def test_bad_shortcut():
    with pytest.raises(ValueError, match="conv3x3"):
        resnet20("B")


def test_save_load_roundtrip(tmp_path):
    model = resnet20("conv3x3", (4, 16, 16, 32, 8, 32, 64, 64, 1)).eval()
    save_model(model, tmp_path / "m.pt", note="hello", accuracy=0.5,
               torch_version=torch.__version__, count=np.int64(3))  # non-plain types too
    loaded = load_model(tmp_path / "m.pt").eval()
    assert loaded.widths == model.widths and loaded.shortcut == "conv3x3"
    assert loaded.meta == {"note": "hello", "accuracy": 0.5,
                           "torch_version": str(torch.__version__), "count": 3}
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))


def test_load_mismatch_names_both_shapes(tmp_path):
    save_model(resnet20(widths=(4,) + DEFAULT_WIDTHS[1:]), tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["widths"] = list(DEFAULT_WIDTHS)  # metadata now disagrees with the weights
    torch.save(ckpt, tmp_path / "bad.pt")
    both_shapes = r"layer1\.0\.conv1\.weight.*\(4, 16, 3, 3\).*\(16, 16, 3, 3\)"
    with pytest.raises(ValueError, match=both_shapes):
        load_model(tmp_path / "bad.pt")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_load_corrupt_file_names_it_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt.pt is not a readable model checkpoint") as e:
        load_model(path)
    assert "weights_only=False" not in str(e.value)


def test_load_foreign_checkpoint_names_missing_keys(tmp_path):
    torch.save({"model": resnet20().state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt is not a checkpoint of save_model"):
        load_model(tmp_path / "foreign.pt")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_model(tmp_path / "nope.pt")


@pytest.mark.parametrize("shortcut", ["A", "conv3x3"])
def test_layer_groups_partition_the_layer_table(shortcut):
    from helpers.metrics import LAYER_PARTS, STAGES, layer_groups

    model = resnet20(shortcut)
    table = layer_table(model)
    for by, order in (("part", LAYER_PARTS), ("stage", STAGES)):
        groups = layer_groups(table, by)
        assert list(groups.index) == list(order)  # every layer in exactly one known group
        assert groups.params.sum() == count_params(model)
        assert groups.MACs.sum() == count_macs(model)
        assert groups["% of MACs"].sum() == pytest.approx(100)
    # the two projections: 3x3 convs 16->32 and 32->64 plus their BN (weight and bias)
    projection = 9 * 16 * 32 + 2 * 32 + 9 * 32 * 64 + 2 * 64
    assert layer_groups(table).params["shortcut"] == (projection if shortcut == "conv3x3" else 0)


def test_layer_part_and_groups_reject_unknown_input():
    from helpers.metrics import layer_groups, layer_part

    assert layer_part("layer2.0.shortcut.1") == "shortcut" and layer_part("bn") == "batch norm"
    with pytest.raises(ValueError, match="not a layer name"):
        layer_part("head")
    with pytest.raises(ValueError, match="by must be"):
        layer_groups(layer_table(resnet20()), by="block")


def test_block_parameters_keep_their_order():
    # state_dict order is part of every cached result's key (finetune.model_fingerprint):
    # conv1, bn1, conv2, bn2, as the original work registers them
    keys = [k.split(".")[2] for k in resnet20("conv3x3").state_dict() if k.startswith("layer1.0.")]
    assert list(dict.fromkeys(keys)) == ["conv1", "bn1", "conv2", "bn2"]
