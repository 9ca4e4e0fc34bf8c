"""Int8 networks for ONNX Runtime, and the arithmetic behind them.

An 8-bit tensor stores a float tensor ``x`` as integers ``q`` with a **scale** ``s`` and a
**zero point** ``z`` (the integer that stands for 0.0)::

    q = clip(round(x / s) + z, qmin, qmax)        x ≈ s * (q - z)

``uint8`` covers 0..255, ``int8`` -128..127. :func:`quantize_onnx` asks ONNX Runtime's static
quantizer for the deployed form (QDQ: QuantizeLinear/DequantizeLinear pairs around each
operation, which the runtime fuses into integer kernels): weights ``int8``, symmetric (``z = 0``)
with one scale per output channel; activations ``uint8`` or ``int8`` with one scale and zero
point per tensor, from the range each tensor takes on calibration images (min/max). A
convolution then multiplies 8-bit integers, sums them in ``int32``, and rescales the sum to the
next tensor's 8 bits (lesson 06 writes one out by hand).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime import quantization as ortq
from torch import Tensor, nn

from helpers.onnx_runtime import export

RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
ACTIVATIONS = {"uint8": ortq.QuantType.QUInt8, "int8": ortq.QuantType.QInt8}


def qparams(low: float, high: float, dtype: str = "uint8") -> tuple[float, int]:
    """Scale and zero point of an activation whose calibration range is ``[low, high]``, as
    ONNX Runtime's min/max calibration sets them: the range is first widened to hold 0 (so
    that 0.0, e.g. zero padding, is exact), then spread over the integers of ``dtype``."""
    qmin, qmax = RANGES[dtype]
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / (qmax - qmin) if high > low else 1.0
    return scale, int(round(qmin - low / scale))


def quantize(x: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray,
             dtype: str = "uint8") -> np.ndarray:
    """``x`` as 8-bit integers: round half to even (as ONNX's QuantizeLinear), then clip."""
    low, high = RANGES[dtype]
    return np.clip(np.rint(np.asarray(x) / scale) + zero_point, low, high).astype(dtype)


def dequantize(q: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray
               ) -> np.ndarray:
    """The float values 8-bit integers ``q`` stand for: ``scale * (q - zero_point)``."""
    return (scale * (q.astype(np.int32) - zero_point)).astype(np.float32)


class _Batches(ortq.CalibrationDataReader):
    """The calibration images, fed to the quantizer in batches."""

    def __init__(self, images: Tensor, name: str, batch_size: int):
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        self._batches: Iterator = iter([{name: x[i:i + batch_size]}
                                        for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def preprocess(model: nn.Module) -> bytes:
    """``model`` exported to ONNX (:func:`helpers.onnx_runtime.export`) and prepared for
    quantization by ONNX Runtime's ``quant_pre_process`` (shape inference, constant folding)."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        fp32.write_bytes(export(model.cpu().eval()))
        ortq.quant_pre_process(str(fp32), str(pre))
        return pre.read_bytes()


def constant_adds(graph: bytes) -> list[str]:
    """The Add nodes of a :func:`preprocess`-ed graph with a constant input: what a removed
    block leaves behind (``relu(x + bias)``, :class:`helpers.models.BasicBlock`)."""
    model = onnx.load_from_string(graph)
    constants = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Add" and any(i in constants for i in n.input)]


def quantize_onnx(model: nn.Module, calibration_images: Tensor, activations: str = "uint8",
                  float_adds: bool = False, batch_size: int = 64) -> bytes:
    """``model`` (eval, CPU; fold BN first: :func:`helpers.study.network.fold_bn`) as an int8
    ONNX graph (QDQ): per-channel symmetric ``int8`` weights, ``activations`` (``"uint8"`` or
    ``"int8"``) calibrated by min/max on ``calibration_images`` (normalized, from the training
    split only: the scales are part of the model). ``float_adds``: keep the
    :func:`constant_adds` of removed blocks in float (an int8 add of a constant tensor is slow)."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {sorted(ACTIVATIONS)}, got {activations!r}")
    if len(calibration_images) == 0:
        raise ValueError("quantize_onnx needs at least one calibration image")
    graph = preprocess(model)
    with tempfile.TemporaryDirectory() as tmp:
        pre, int8 = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        pre.write_bytes(graph)
        name = onnx.load_from_string(graph).graph.input[0].name
        ortq.quantize_static(str(pre), str(int8), _Batches(calibration_images, name, batch_size),
                             quant_format=ortq.QuantFormat.QDQ, per_channel=True,
                             activation_type=ACTIVATIONS[activations],
                             weight_type=ortq.QuantType.QInt8,
                             calibrate_method=ortq.CalibrationMethod.MinMax,
                             nodes_to_exclude=constant_adds(graph) if float_adds else [])
        return int8.read_bytes()


def runtime_ops(graph: bytes, threads: int = 1) -> dict[str, int]:
    """How many nodes of each type ONNX Runtime runs for ``graph`` on this CPU, after its graph
    optimizations: ``QLinearConv`` is an integer convolution, ``Conv`` a float one (left between
    DequantizeLinear and QuantizeLinear where no integer kernel fits the types)."""
    import collections

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3  # no warnings
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(options.optimized_model_filepath).graph.node
    return dict(collections.Counter(n.op_type for n in nodes))


def initializers(graph: bytes) -> dict[str, np.ndarray]:
    """Every constant of ``graph`` by name (quantized weights, scales, zero points)."""
    return {t.name: numpy_helper.to_array(t)
            for t in onnx.load_from_string(graph).graph.initializer}


def qdq_params(graph: bytes, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of the first QuantizeLinear or DequantizeLinear of ``graph`` that
    reads ``tensor``: an activation (e.g. ``"images"``) or a quantized weight (its
    ``*_quantized`` initializer)."""
    values = initializers(graph)
    for node in onnx.load_from_string(graph).graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] == tensor:
            return values[node.input[1]], values[node.input[2]]
    raise KeyError(f"no QuantizeLinear or DequantizeLinear reads {tensor!r}")
