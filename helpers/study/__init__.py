"""The study machinery: what the reproduction notebooks (``study/*.ipynb``) run on the core.

- :mod:`helpers.study.profile`  run profiles (full, cpu, ci) and the one table of their sizes
- :mod:`helpers.study.training` notebook 02's training run by profile, and its CLI
  (``python -m helpers.study.training --profile cpu``)
- :mod:`helpers.study.clusters` many clusterings at once, elbow/silhouette scores, raw vs BN-folded
- :mod:`helpers.study.cluster_plots` the filter and cluster figures (cluster maps, scores vs null)
- :mod:`helpers.study.sweep`    the fast (cached) per-block pruning sweep and its treatments
- :mod:`helpers.study.sweep_results` a sweep's records, paired comparisons, scoreboards, best arm
- :mod:`helpers.study.sweep_check` the naive reference sweep point, the fast-vs-naive benchmark
- :mod:`helpers.study.sweep_plots` the block pruning sweep figures (strategy grids, heatmaps)
- :mod:`helpers.study.network`  whole-network plans, prune_network, recovery, latency
- :mod:`helpers.study.network_plots` the whole-network figures (Pareto, recovery, runtimes)
- :mod:`helpers.study.latency_tables` measuring the latency tables of :mod:`helpers.study.latency`
  in PyTorch and ONNX Runtime (``python -m helpers.study.latency_tables``)
- :mod:`helpers.study.latency_plans` the network chosen by those tables under a latency budget,
  fine-tuned, scored and timed (``python -m helpers.study.latency_plans``)
- :mod:`helpers.study.finetune` resumable fine-tuning with distillation, and a result cache
- :mod:`helpers.study.channels` residual (stage) channels pruned through every writer and reader
- :mod:`helpers.study.latency`  plans by time: a latency model of measured networks, search by
  budget
- :mod:`helpers.study.quantize` int8 networks for ONNX Runtime (QDQ), and the 8-bit arithmetic
- :mod:`helpers.study.int8`     the committed networks in int8, scored and timed
  (``python -m helpers.study.int8``)
- :mod:`helpers.study.int8_plan` pruning chosen by an int8 latency table, fine-tuned and timed
  (``python -m helpers.study.int8_plan``)
- :mod:`helpers.study.bench`    benchmarks of the trainer and of the sweep
  (``python -m helpers.study.bench``)

These modules import the core (:mod:`helpers`) and each other; no core module imports them.
"""
