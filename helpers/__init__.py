"""ResNet20 on CIFAR-10, trained fast and pruned by k-means++ clustering of filters.

The core a learner reads, one concept per module:

- :mod:`helpers.paths`   where the repository keeps checkpoints, results and figures
- :mod:`helpers.data`    CIFAR-10 loading, normalization and on-device augmentation
- :mod:`helpers.device`  the default device (CUDA when available) and the name results record
- :mod:`helpers.models`  ResNet20 (any per-block and per-stage widths), checkpoint save/load
- :mod:`helpers.train`   the fast trainer (also used for fine-tuning)
- :mod:`helpers.metrics` parameters, MACs, accuracy with its image count, latency
- :mod:`helpers.pruning` filter clustering and physical pruning of BasicBlocks
- :mod:`helpers.refit`   least-squares reconstruction of a pruned block's conv2 (ThiNet-style)
- :mod:`helpers.stats`   Wilson intervals, exact McNemar paired tests, win rates
- :mod:`helpers.plans`   pruning plans (uniform, sensitivity-guided) and their exact MACs
- :mod:`helpers.onnx_runtime` the network exported to ONNX and run (and timed) in ONNX Runtime
- :mod:`helpers.plots`   figures shared by the notebooks (style, data, training, layer MACs)

- :mod:`helpers.study`: the study machinery (see its docstring)

Core modules import only core modules.
"""

__version__ = "0.1.0"

import warnings as _warnings

with _warnings.catch_warnings():  # without ipywidgets, tqdm.auto falls back to text bars: fine
    _warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401
