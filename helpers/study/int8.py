"""Int8 beside pruning: the committed networks quantized for ONNX Runtime, scored and timed.

    python -m helpers.study.int8                 # cpu profile: writes results/int8.json
    python -m helpers.study.int8 --profile ci    # a quick run into a temporary folder

What a deployment engineer would try first on a CPU is int8, not pruning. Each committed
network (``checkpoints/``: unpruned, the 50% MACs headline, the network chosen by latency) is
BN-folded and run in ONNX Runtime as:

- ``fp32``: the float network;
- ``int8 U8S8`` and ``int8 S8S8``: static quantization (:func:`helpers.study.quantize
  .quantize_onnx`: QDQ, per-channel int8 weights) with uint8 or int8 activations, calibrated on
  the first ``calibration_images`` training images (never a validation or test image);
- ``int8 U8S8, float adds`` for a network with removed blocks: the constant adds those blocks
  leave behind kept in float;
- ``dynamic`` for the unpruned network: ``quantize_dynamic`` (weights only, activations
  quantized on the fly), for comparison.

Each is scored on the selection and confirmation halves of the validation split and on the test
images, and timed in ONNX Runtime against the unpruned fp32 network in the same interleaved
rounds, in ``processes`` fresh processes (:func:`helpers.study.latency_tables.process_timings`;
ONNX Runtime's threads sleep between runs, see :class:`helpers.onnx_runtime.OnnxModel`), at
each batch size. The activation type is chosen by that measurement: the faster of U8S8 and S8S8
on the unpruned network at batch 256 (median of the processes' medians). The record names the
CPU, the thread count and the versions.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from helpers import paths
from helpers.data import load_splits, normalize, selection_confirmation
from helpers.models import load_model
from helpers.onnx_runtime import OnnxModel, export
from helpers.study import network, quantize
from helpers.study.bench import LATENCY_NETWORKS
from helpers.study.latency_tables import machine, process_summary, process_timings
from helpers.study.profile import Int8Sizes, outputs, resolve_profile, sizes
from helpers.study.quantize import constant_adds, preprocess, quantize_onnx

REFERENCE = "unpruned fp32"  # every speed-up is over this network, in the same rounds
ACTIVATION_TYPES = {"U8S8": "uint8", "S8S8": "int8"}  # ONNX Runtime's names: activations, weights


def dynamic_onnx(model: torch.nn.Module) -> bytes:
    """``quantize_dynamic``: int8 weights, activations quantized at run time (for comparison)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "dyn.onnx"
        pre.write_bytes(preprocess(model))
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8)
        return out.read_bytes()


def variants(folded: dict[str, torch.nn.Module], calibration: torch.Tensor) -> dict[str, bytes]:
    """Every ONNX graph the study compares, by name (``"<network> <form>"``)."""
    graphs = {}
    for name, net in folded.items():
        graphs[f"{name} fp32"] = export(net)
        for label, activations in ACTIVATION_TYPES.items():
            graphs[f"{name} int8 {label}"] = quantize_onnx(net, calibration, activations)
        if constant_adds(preprocess(net)):
            graphs[f"{name} int8 U8S8, float adds"] = quantize_onnx(net, calibration, "uint8",
                                                                    float_adds=True)
    graphs[f"{next(iter(folded))} dynamic"] = dynamic_onnx(next(iter(folded.values())))
    return graphs


def scores(graphs: dict[str, bytes], images: dict[str, tuple], threads: int) -> dict[str, dict]:
    """Accuracy of each graph on each named set of (uint8 images, labels)."""
    out = {}
    for name, graph in graphs.items():
        model = OnnxModel(graph, threads)
        out[name] = {k: float(network.correct(model, x, y).mean()) for k, (x, y) in images.items()}
    return out


def time_graphs(graphs: dict[str, bytes], S: Int8Sizes, threads: int, reference: str):
    """The ONNX graphs timed against ``reference`` in ONNX Runtime, at ``S.batch_sizes``, in
    ``S.processes`` fresh processes of ``S.rounds`` rounds
    (:func:`helpers.study.latency_tables.process_timings`; each process loads them from files):
    one row per process, batch size and graph."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {}
        for name, graph in graphs.items():
            (path := Path(tmp) / f"{len(spec)}.onnx").write_bytes(graph)
            spec[name] = str(path)
        return process_timings(spec, ("onnxruntime",), S.batch_sizes, S.processes, S.rounds, 1,
                               threads, reference=reference)


def speed_fields(summary, name: str) -> dict[str, float]:
    """``speedup_batch256``, ``speedup_low_batch256``, ``speedup_high_batch256`` and
    ``median_ms_batch256`` (each batch size) of network ``name`` in a
    :func:`helpers.study.latency_tables.process_summary`."""
    return {f"{key}_batch{r.batch_size}": float(getattr(r, key))
            for r in summary[summary.model == name].itertuples()
            for key in ("speedup", "speedup_low", "speedup_high", "median_ms")}


def chosen_activations(table, batch: int = 256, reference: str = "unpruned") -> str:
    """The faster activation type on the unpruned network at ``batch``: its label."""
    speed = {label: float(table[(table.model == f"{reference} int8 {label}")
                                & (table.batch_size == batch)].speedup.iloc[0])
             for label in ACTIVATION_TYPES}
    return max(speed, key=speed.get)


def speed_figure(record: dict, batch: int = 256):
    """Speed-up over the unpruned float network of every graph of ``record`` (results/int8.json)
    at ``batch``, one group of bars per network, the slowest and fastest process as the range."""
    import matplotlib.pyplot as plt

    rows = [r for r in record["rows"] if f"speedup_batch{batch}" in r]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.2))
    forms = list(dict.fromkeys(r["network"].split(" ", 1)[1] for r in rows))
    colors = dict(zip(forms, plt.get_cmap("tab10").colors, strict=False))
    for i, r in enumerate(rows):
        mid, low, high = (r[f"{k}_batch{batch}"] for k in ("speedup", "speedup_low",
                                                            "speedup_high"))
        ax.barh(i, mid, color=colors[r["network"].split(" ", 1)[1]], alpha=0.85)
        ax.errorbar(mid, i, xerr=[[mid - low], [high - mid]], color="black", capsize=3)
    ax.axvline(1, color="gray", ls=":", lw=1)
    ax.set(yticks=range(len(rows)), yticklabels=[r["network"] for r in rows],
           xlabel=f"speed-up over {record['reference']} at batch {batch} (bars: median of "
                  f"{record['processes']} processes; lines: slowest to fastest)")
    ax.invert_yaxis()
    ax.set_title(f"ONNX Runtime on {record['cpu']}, {record['threads']} threads", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", help="cpu (writes results/int8.json) or ci")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    profile = resolve_profile(a.profile)
    S, out = sizes(profile).int8, outputs(profile)
    start = time.perf_counter()
    nets = {name.split()[0]: paths.CHECKPOINTS / f  # unpruned, 50%, latency
            for name, f in LATENCY_NETWORKS.items() if (paths.CHECKPOINTS / f).exists()}
    if "unpruned" not in nets:
        raise SystemExit(f"no {paths.CHECKPOINT}: the unpruned network is the reference")
    folded = {n: network.fold_bn(load_model(f, "cpu").eval()) for n, f in nets.items()}
    data = load_splits(download=True, warn=False)
    calibration = normalize(data.train_images[:S.calibration_images])
    val_x, val_y = data.val_images[:S.eval_images], data.val_labels[:S.eval_images]
    sel, conf = selection_confirmation(len(val_y))
    graphs = variants(folded, calibration)
    print(f"{len(graphs)} graphs: {', '.join(graphs)}", flush=True)
    acc = scores(graphs, {"selection": (val_x[sel], val_y[sel]),
                          "confirmation": (val_x[conf], val_y[conf]),
                          "test": (data.test_images, data.test_labels)}, a.threads)
    table = process_summary(time_graphs(graphs, S, a.threads, REFERENCE))
    choice = chosen_activations(table)
    ops = {name: quantize.runtime_ops(graph) for name, graph in graphs.items()}
    rows = [{"network": name, **{f"acc_{k}": v for k, v in acc[name].items()},
             "integer_convs": ops[name].get("QLinearConv", 0) + ops[name].get("ConvInteger", 0),
             "float_convs": ops[name].get("Conv", 0),
             **speed_fields(table, name)}
            for name in graphs]
    record = {"profile": profile, "device": "cpu", **machine(a.threads), "processes": S.processes,
              "rounds": S.rounds, "batch_sizes": list(S.batch_sizes), "reference": REFERENCE,
              "ort_spinning": False, "calibration_images": S.calibration_images,
              "calibration_split": "train", "eval_images": len(val_y), "eval_split": "val",
              "selection_images": int(len(sel)),
              "confirmation_images": int(len(conf)), "test_images": len(data.test_labels),
              "activations_chosen": choice, "date": time.strftime("%Y-%m-%d"),
              "seconds": round(time.perf_counter() - start), "rows": rows}
    path = out.results / "int8.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"on {record['cpu']}, {a.threads} threads; speed-up over {REFERENCE} in ONNX Runtime "
          f"(median of {S.processes} processes, slowest-fastest); activations chosen: {choice}")
    for r in rows:
        speed = "  ".join(f"b{b} {r[f'speedup_batch{b}']:.2f}x ({r[f'speedup_low_batch{b}']:.2f}"
                          f"-{r[f'speedup_high_batch{b}']:.2f})" for b in S.batch_sizes)
        print(f"  {r['network']:30s} conf {100 * r['acc_confirmation']:.2f}%  test "
              f"{100 * r['acc_test']:.1f}%  convs int/float {r['integer_convs']}/"
              f"{r['float_convs']}  {speed}")
    print(f"wrote {path} in {record['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
