"""The network in a second runtime: exported to ONNX and run by ONNX Runtime on the CPU.

A speed-up measured in PyTorch says how PyTorch runs the pruned widths. A deployment often runs
the network elsewhere, and another runtime may cost channels differently (ONNX Runtime's CPU
convolutions work on blocks of channels), so the speed-up is measured there too.

- :func:`export` writes a model (in eval mode, e.g. BN-folded) as an ONNX graph with a
  variable batch size, with the TorchScript-based exporter (``dynamo=False``: it needs no
  extra package, and handles ResNet20's ops).
- :class:`OnnxModel` is an ONNX Runtime session behind the ``nn.Module`` interface: tensor in,
  tensor out. :func:`helpers.metrics.compare_latency` therefore times it interleaved with
  PyTorch models, or with other sessions, exactly as it times those.
- :func:`max_abs_difference`: how far the exported outputs are from PyTorch's on the same
  images (float rounding only: about 1e-5 for logits of ResNet20).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from helpers.metrics import INPUT_SHAPE

OPSET = 17


@torch.no_grad()
def export(model: nn.Module) -> bytes:
    """The ONNX graph of ``model`` in eval mode (on the CPU), for any batch size."""
    model = model.cpu().eval()
    x = torch.zeros(1, *INPUT_SHAPE[1:])
    f = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    return f.getvalue()


class OnnxModel(nn.Module):
    """An ONNX Runtime CPU session that behaves like an eval-mode ``nn.Module``.

    ``threads`` sets the session's intra-op threads (one inter-op thread), as
    ``torch.set_num_threads`` does for PyTorch. ``spinning=False`` (the default) lets those
    threads sleep after a run: ONNX Runtime's own default keeps them spinning on the cores for
    a while, and when models are timed in turn on 2 cores the spinning threads of one slow the
    next. ``.to()``, ``.eval()`` and channels-last conversions are no-ops (it has no
    parameters); the input is made contiguous before it is handed over, a copy of a few
    megabytes at batch 256, which counts in its time.
    """

    def __init__(self, graph: bytes, threads: int = 2, spinning: bool = False):
        super().__init__()
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.threads = threads
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: Tensor) -> Tensor:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def to_onnxruntime(model: nn.Module, threads: int = 2, spinning: bool = False) -> OnnxModel:
    """``model`` exported (:func:`export`) and loaded in an ONNX Runtime session."""
    return OnnxModel(export(model), threads, spinning)


@torch.no_grad()
def max_abs_difference(model: nn.Module, onnx_model: OnnxModel, images: Tensor) -> float:
    """Largest absolute difference of the logits of ``model`` (PyTorch, CPU, fp32) and of its
    export, on the same (float, normalized) ``images``."""
    model = model.cpu().eval()
    return float((model(images.cpu()) - onnx_model(images)).abs().max())
