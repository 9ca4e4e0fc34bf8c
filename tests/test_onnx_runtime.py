"""helpers.onnx_runtime: the networks exported to ONNX and run by ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

from helpers.metrics import compare_latency
from helpers.models import resnet20
from helpers.onnx_runtime import OnnxModel, export, max_abs_difference, to_onnxruntime
from helpers.study.network import fold_bn, prune_network


def _trained_like(widths=None, seed=0):
    """A ResNet20 with random weights and BN statistics, so that folding has work to do."""
    torch.manual_seed(seed)
    model = resnet20(widths=widths)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("plan", [None, (8, 0, 8, 24, 16, 16, 32, 32, 32)])
def test_exported_network_matches_torch_within_1e4(plan):
    model = _trained_like()
    if plan is not None:  # pruned, with one block removed
        model = prune_network(model, plan, "l1")
    folded = fold_bn(model)
    onnx_model = to_onnxruntime(folded, threads=1)
    x = torch.randn(5, 3, 32, 32)  # a batch size the export never saw
    assert max_abs_difference(folded, onnx_model, x) < 1e-4
    assert max_abs_difference(model, onnx_model, x) < 1e-4  # folding kept the function
    assert onnx_model(x[:1]).shape == (1, 10)


def test_a_wrong_export_would_be_caught():
    a, b = fold_bn(_trained_like(seed=0)), fold_bn(_trained_like(seed=1))
    assert max_abs_difference(a, to_onnxruntime(b, 1), torch.randn(3, 3, 32, 32)) > 1e-2


def test_onnx_model_is_timed_like_a_torch_module():
    folded = fold_bn(_trained_like(widths=(2,) * 9))
    table = compare_latency({"torch": folded, "onnx": OnnxModel(export(folded), 1)}, 2,
                            repeats=3, warmup=1, number=1)
    assert list(table.model) == ["torch", "onnx"]
    assert all(len(s) == 3 for s in table.samples_ms)
    with pytest.raises(ValueError, match="threads"):
        OnnxModel(export(folded), threads=0)


def test_predict_runs_an_onnx_session_on_the_cpu_without_being_told():
    """An ONNX Runtime session has no parameters to take a device from: predict (and so
    helpers.study.network.correct) runs it on the CPU, with the same logits as PyTorch."""
    from helpers.metrics import predict

    model = fold_bn(resnet20("conv3x3").eval())
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(predict(to_onnxruntime(model, 1), images), predict(model, images),
                          atol=1e-4)
