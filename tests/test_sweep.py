"""helpers.sweep: the cached per-block sweep gives what the naive whole-network way gives.

CPU, random-init models with randomised BN, a few dozen random images; the real-data check
runs only when CIFAR10_ROOT is set.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from helpers.models import BLOCK_NAMES
from helpers.pruning import STRATEGIES, recalibrate_bn
from helpers.sweep import (
    RECORD_KEYS,
    BlockSweep,
    all_ks,
    distiller_kept,
    ieee_fp32,
    ks_at_fractions,
    naive_point,
    sweep,
)
from tests.test_pruning import make_model, one_thread  # noqa: F401 (autouse fixture)

RECAL = dict(recal_batches=2, recal_batch_size=16)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    test = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (40,), generator=g)
    recal = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    return test, labels, recal


@pytest.fixture(scope="module")
def model(data):
    # Recalibrated once so that its activations are in a sane range for random inputs.
    return recalibrate_bn(make_model(1), data[2], batches=2, batch_size=20)


@pytest.fixture(scope="module")
def bs(model, data):
    test, labels, recal = data
    return BlockSweep(model, test, labels, recal, eval_batch_size=16, **RECAL)


# Every strategy, with and without recalibration, in every stage, downsampling blocks included.
POINTS = [("layer1.0", 7, "merge", True), ("layer1.2", 3, "nearest", False),
          ("layer2.0", 9, "centroid", True), ("layer2.2", 30, "first", True),
          ("layer3.0", 5, "random", True), ("layer3.2", 20, "l1", False),
          ("layer3.1", 40, "merge", False), ("layer2.1", 1, "l1", True)]


@pytest.mark.parametrize(("block", "k", "strategy", "recal"), POINTS)
def test_fast_equals_naive(bs, model, data, block, k, strategy, recal):
    test, labels, images = data
    fast = bs.point_logits(block, k, strategy, recal)
    acc, naive = naive_point(model, block, k, strategy, recal, test, labels, images,
                             return_logits=True, **RECAL)
    assert torch.allclose(fast, naive, atol=1e-4, rtol=1e-4), (fast - naive).abs().max()
    assert (fast.argmax(1) == labels).sum().item() / len(labels) == acc


def test_run_records_match_single_points(bs, model, data):
    ks = {"layer1.1": [16, 5], "layer3.0": [33]}
    res = bs.run(ks=ks, progress=False)
    assert [r["block"] for r in res.records][:2] == ["layer1.1", "layer1.1"]
    assert len(res.records) == 3 * len(STRATEGIES) * 2
    assert res.evaluated <= len(res.records)
    assert res.eval_images == 40 and res.recal_images == 32
    for r in res.records:
        assert tuple(r) == RECORD_KEYS and isinstance(r["kept_filters"], int)
        assert 0 <= r["accuracy"] <= 1
    by_key = {(r["block"], r["kept_filters"], r["strategy"], r["bn_recalibration"]): r["accuracy"]
              for r in res.records}
    for key in [("layer1.1", 5, "merge", True), ("layer3.0", 33, "random", False),
                ("layer1.1", 5, "first", False), ("layer1.1", 5, "nearest", True)]:
        logits = bs.point_logits(*key)
        assert by_key[key] == (logits.argmax(1) == data[1]).sum().item() / len(data[1])
    # keeping every filter: the dense network, recalibrated or not
    for s in STRATEGIES:
        assert by_key[("layer1.1", 16, s, False)] == res.dense_accuracy
        assert by_key[("layer1.1", 16, s, True)] == res.dense_accuracy_recalibrated


def test_sweep_function_and_json(tmp_path, model, data):
    test, labels, recal = data
    res = sweep(model, test[:8], labels[:8], recal, blocks=["layer3.2"], ks={"layer3.2": [2]},
                strategies=("l1", "merge"), recalibration=(True,), progress=False, **RECAL)
    assert [(r["strategy"], r["bn_recalibration"]) for r in res.records] == [
        ("l1", True), ("merge", True)]
    assert res.seconds > 0 and res.device == "cpu"
    df = res.frame()
    assert set(df.columns) >= {*RECORD_KEYS, "width", "removed", "removed_fraction", "drop"}
    assert df.width.tolist() == [64, 64] and df.removed.tolist() == [62, 62]
    path = res.to_json(tmp_path / "r" / "block_pruning.json", profile="ci")
    saved = json.loads(path.read_text())
    assert {"eval_images", "device", "sweep_seconds", "records"} <= set(saved)
    assert saved["eval_images"] == 8 and saved["records"] == res.records
    assert saved["profile"] == "ci"


def test_the_model_given_is_untouched(data):
    m = make_model(2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    b = BlockSweep(m, data[0][:4], data[1][:4], data[2], **RECAL)
    b.run(ks={"layer2.0": [3]}, progress=False)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_errors(bs, model, data):
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.32 for block layer2\.0"):
        bs.run(ks={"layer2.0": [33]}, progress=False)
    with pytest.raises(ValueError, match="unknown block 'layer0.1'; valid blocks"):
        bs.run(blocks=["layer0.1"], ks={"layer0.1": [1]}, progress=False)
    with pytest.raises(ValueError, match="valid strategies"):
        bs.run(ks={"layer2.0": [3]}, strategies=("kmeans",), progress=False)
    with pytest.raises(ValueError, match="ks gives no k for blocks"):
        bs.run(blocks=["layer2.0"], ks={"layer1.0": [3]}, progress=False)
    no_recal = BlockSweep(model, data[0][:4], data[1][:4])
    with pytest.raises(ValueError, match="need recal_images"):
        no_recal.run(ks={"layer2.0": [3]}, progress=False)
    assert no_recal.run(ks={"layer2.0": [3]}, recalibration=(False,), progress=False).records


def test_which_ks():
    m = make_model()
    ks = all_ks(m)
    assert list(ks) == list(BLOCK_NAMES) and ks["layer1.0"] == list(range(16, 0, -1))
    assert sum(len(v) for v in ks.values()) * len(STRATEGIES) * 2 == 4032
    assert ks_at_fractions(m, (0.5, 0.25, 0.01))["layer3.0"] == [32, 16, 1]
    assert ks_at_fractions(m, (0.5,), extra={"layer1.0": [10]})["layer1.0"] == [10, 8]
    assert [distiller_kept(w) for w in (16, 32, 64)] == [10, 20, 39]


def test_ieee_fp32_restores_the_settings():
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):  # torch < 2.9: the legacy flags
        before = torch.backends.cudnn.allow_tf32
        with ieee_fp32():
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.allow_tf32 == before
        return
    before = conv.fp32_precision
    with ieee_fp32():
        assert conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert conv.fp32_precision == before


def test_fast_equals_naive_on_real_images(lab_root):
    from helpers.data import load_cifar10

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = load_cifar10(lab_root)
    m = recalibrate_bn(make_model(6), d.train_images[:256], batches=2, batch_size=128)
    test, labels, recal = d.test_images[:100], d.test_labels[:100], d.train_images[:64]
    b = BlockSweep(m, test, labels, recal, recal_batches=2, recal_batch_size=32)
    res = b.run(ks={"layer2.1": [12]}, strategies=("merge", "first"), progress=False)
    for r in res.records:
        acc = naive_point(m, r["block"], r["kept_filters"], r["strategy"], r["bn_recalibration"],
                          test, labels, recal, recal_batches=2, recal_batch_size=32)
        assert acc == r["accuracy"]


def test_head_to_head_and_win_rates():
    from helpers.sweep import SweepResult, head_to_head, win_rates

    acc = {("merge", True): [0.5, 0.4, 0.9], ("l1", True): [0.4, 0.4, 0.9],
           ("first", True): [0.3, 0.5, 0.9]}
    records = [{"block": "layer1.0", "strategy": s, "bn_recalibration": r, "kept_filters": k,
                "accuracy": a[i]}
               for (s, r), a in acc.items() for i, k in enumerate((8, 4, 16))]
    res = SweepResult(records, 10, 5, "cpu", 1.0, 0.9, 0.9, widths={"layer1.0": 16})
    h = head_to_head(res.frame(), ("merge", True), [("l1", True), ("first", True)])
    assert h.kept_filters.tolist() == [8, 4]  # k = width (16) is not a point
    assert h.margin.round(6).tolist() == [0.1, -0.1] and h.best_rival.tolist()[1] == "first + recal"
    w = win_rates(h)
    assert w.loc["layer1.0", "beats l1 + recal"] == 0.5  # a tie is not a win
    assert w.loc["layer1.0", "beats first + recal"] == 0.5
    assert w.loc["all blocks", "beats all"] == 0.5 and w.loc["all blocks", "points"] == 2
