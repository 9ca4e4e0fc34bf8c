"""ResNet20 on CIFAR-10, trained fast and pruned by k-means++ clustering of filters.

Modules, one concept each:

- :mod:`helpers.paths`   where the repository keeps checkpoints, results and figures
- :mod:`helpers.data`    CIFAR-10 loading, normalization and on-device augmentation
- :mod:`helpers.models`  ResNet20 (any per-block widths), checkpoint save/load
- :mod:`helpers.train`   the fast trainer (also used for fine-tuning)
- :mod:`helpers.metrics` parameters, MACs, accuracy with its image count, latency
- :mod:`helpers.plots`   figures shared by the notebooks (style, data, training, layer MACs)
- :mod:`helpers.pruning` filter clustering and physical pruning of BasicBlocks
- :mod:`helpers.clusters` many clusterings at once, elbow/silhouette scores, raw vs BN-folded
- :mod:`helpers.refit`   least-squares reconstruction of a pruned block's conv2 (ThiNet-style)
- :mod:`helpers.stats`   Wilson intervals, exact McNemar paired tests, win rates
- :mod:`helpers.sweep`   the fast (cached) per-block pruning sweep and its treatments
- :mod:`helpers.sweep_results` a sweep's records, paired comparisons, scoreboards, best arm
- :mod:`helpers.sweep_check` the naive reference sweep point and the fast-vs-naive benchmark
- :mod:`helpers.plans`   pruning plans (uniform, sensitivity-guided) and their exact MACs
- :mod:`helpers.finetune` resumable fine-tuning with distillation, and a result cache
- :mod:`helpers.cluster_plots` the filter and cluster figures (cluster maps, scores vs null)
- :mod:`helpers.sweep_plots` the block pruning sweep figures (strategy grids, drop heatmaps)
- :mod:`helpers.network_plots` the whole-network figures (Pareto, recovery)
- :mod:`helpers.network` whole-network plans (uniform, sensitivity-guided), prune_network, latency
"""

__version__ = "0.1.0"

import warnings as _warnings

with _warnings.catch_warnings():  # without ipywidgets, tqdm.auto falls back to text bars: fine
    _warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401
