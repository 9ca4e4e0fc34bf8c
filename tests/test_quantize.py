"""helpers.study.quantize: the 8-bit arithmetic, the int8 ONNX graph, and a convolution by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.onnx_runtime import OnnxModel
from helpers.study.quantize import (
    constant_adds,
    dequantize,
    initializers,
    preprocess,
    qdq_params,
    quantize,
    quantize_onnx,
    runtime_ops,
)


def test_quantize_rounds_half_to_even_clips_and_round_trips_within_half_a_step():
    assert quantize(np.array([0.5, 1.5, 2.5, -0.5]), 1.0, 0, "int8").tolist() == [0, 2, 2, 0]
    assert quantize(np.array([-10.0, 300.0]), 1.0, 0, "uint8").tolist() == [0, 255]
    assert quantize(np.array([-200.0, 200.0]), 1.0, 0, "int8").tolist() == [-128, 127]
    x = np.random.default_rng(0).uniform(-1, 3, 1000).astype(np.float32)
    scale, zero = 4 / 255, 64  # 0 at 64: the range [-64, 191] steps covers [-1, 3]
    back = dequantize(quantize(x, scale, zero, "uint8"), scale, zero)
    assert np.abs(back - x).max() <= scale / 2 + 1e-6
    wrong = dequantize(quantize(x, scale, zero, "uint8"), scale, zero + 1)  # seeded defect
    assert np.abs(wrong - x).max() > scale / 2


def _conv_graph(seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    images = torch.randn(64, 3, 32, 32)
    return conv, images, quantize_onnx(conv, images, batch_size=16)


def _by_hand(graph: bytes, x: np.ndarray, x_zero_shift: int = 0) -> np.ndarray:
    """One int8 convolution with its ReLU, as ONNX Runtime's integer kernel computes it: 8-bit
    input and weights, an int32 sum, rescaled to the output's 8 bits (the lesson's check)."""
    w = initializers(graph)
    sx, zx = qdq_params(graph, "images")
    sw, zw = qdq_params(graph, "0.weight_quantized")
    sb, zb = qdq_params(graph, "0.bias_quantized")
    sy, zy = qdq_params(graph, "logits_QuantizeLinear_Input")
    qx = quantize(x, sx, zx, "uint8").astype(np.int64) - (zx + x_zero_shift)
    qw = w["0.weight_quantized"].astype(np.int64) - zw.reshape(-1, 1, 1, 1)
    acc = F.conv2d(torch.from_numpy(qx).double(), torch.from_numpy(qw).double(), padding=1)
    acc = acc.numpy() + (w["0.bias_quantized"] - zb).reshape(1, -1, 1, 1)  # int32 exact
    assert np.allclose(sb, sx * sw, rtol=1e-6)  # the bias is stored at the sum's scale
    y = acc * (sx * sw).reshape(1, -1, 1, 1)
    return dequantize(quantize(y, sy, zy, "uint8"), sy, zy)  # clipping at zy is the ReLU


def test_a_convolution_by_hand_matches_onnx_runtimes_int8_kernel_to_one_step():
    conv, images, graph = _conv_graph()
    x = images[:4].numpy()
    ort = OnnxModel(graph, threads=1)(torch.from_numpy(x)).numpy()
    sy, _ = qdq_params(graph, "logits_QuantizeLinear_Input")
    # ONNX Runtime rescales the int32 sum in fixed point: its rounding may differ by one step
    assert np.abs(_by_hand(graph, x) - ort).max() <= sy * 1.001
    assert np.abs(ort - conv(torch.from_numpy(x)).detach().numpy()).max() < 0.1 * float(
        conv(images).max())
    # seeded defect: the input's zero point off by one moves outputs by many steps
    assert np.abs(_by_hand(graph, x, x_zero_shift=1) - ort).max() > 2 * sy


def test_quantize_onnx_weights_are_per_channel_symmetric_int8():
    _, _, graph = _conv_graph(1)
    w = initializers(graph)["0.weight_quantized"]
    scale, zero = qdq_params(graph, "0.weight_quantized")
    assert w.dtype == np.int8 and scale.shape == (8,) and not zero.any()
    assert np.abs(w).reshape(8, -1).max(axis=1).tolist() == [127] * 8  # each channel's max


def test_quantize_onnx_refuses_bad_arguments():
    conv = nn.Conv2d(3, 4, 3).eval()
    with pytest.raises(ValueError, match="activations must be one of"):
        quantize_onnx(conv, torch.randn(2, 3, 32, 32), activations="int4")
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_onnx(conv, torch.randn(0, 3, 32, 32))
    with pytest.raises(KeyError, match="no QuantizeLinear or DequantizeLinear reads"):
        qdq_params(quantize_onnx(conv, torch.randn(2, 3, 32, 32)), "nothing")


def test_constant_adds_are_the_removed_blocks_and_stay_float_when_asked():
    import onnx

    from helpers.models import resnet20
    from helpers.study.network import fold_bn

    torch.manual_seed(0)
    plan = (16, 0, 0, 32, 0, 32, 64, 64, 64)  # three blocks removed
    net = fold_bn(resnet20("conv3x3", plan).eval())
    assert len(constant_adds(preprocess(net))) == 3
    assert constant_adds(preprocess(fold_bn(resnet20("conv3x3").eval()))) == []
    images = torch.randn(8, 3, 32, 32)

    def int8_adds(graph):  # the adds ONNX Runtime will run on int8 (a Q after them)
        nodes = onnx.load_from_string(graph).graph.node
        quantized = {n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
        return sum(n.op_type == "Add" and n.output[0] in quantized for n in nodes)

    assert int8_adds(quantize_onnx(net, images)) == 9  # every block's add, removed or not
    assert int8_adds(quantize_onnx(net, images, float_adds=True)) == 6


def test_runtime_ops_count_integer_convolutions_with_uint8_activations():
    """With uint8 activations ONNX Runtime runs every convolution of ResNet20 as an integer
    QLinearConv (what makes U8S8 fast on x86); the float network has none."""
    from helpers.models import resnet20
    from helpers.study.network import fold_bn

    torch.manual_seed(0)
    net = fold_bn(resnet20("conv3x3").eval())
    convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    ops = runtime_ops(quantize_onnx(net, torch.randn(8, 3, 32, 32), "uint8"))
    assert ops.get("QLinearConv") == convs and "Conv" not in ops
    from helpers.onnx_runtime import export

    assert "QLinearConv" not in runtime_ops(export(net))
