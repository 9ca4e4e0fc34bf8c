"""Benchmarks that measure both sides of a comparison in one run, on one machine.

    python -m helpers.study.bench train   # fp32 vs bf16 (vs CUDA graph) steps; seed pipeline
    python -m helpers.study.bench sweep   # cached block-pruning sweep vs the naive one
    python -m helpers.study.bench latency # the committed networks (fp32, int8) on this CPU

Each prints the measured numbers and their ratios; ``--json FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from helpers.data import CIFAR10, PILDataset, load_splits, normalize
from helpers.device import default_device, device_name
from helpers.metrics import synchronize
from helpers.models import resnet20
from helpers.train import TrainConfig, bf16_supported, make_optimizer, make_step

SEED_BATCH = 100  # the original work's DataLoader batch size


def seed_transform():
    """The original work's training augmentation: Pad 4, RandomCrop 32, flip, ToTensor."""
    from torchvision import transforms as T

    return T.Compose([T.Pad(4), T.RandomCrop(32), T.RandomHorizontalFlip(), T.ToTensor()])


def seed_pipeline_seconds_per_epoch(data: CIFAR10, device: torch.device, steps: int = 100,
                                    shortcut: str = "conv3x3") -> float:
    """Seconds per 50k-image epoch of the original pipeline, timed over ``steps`` batches.

    PIL transforms (Pad 4, RandomCrop 32, flip, ToTensor), DataLoader batch 100 without
    workers, fp32, SGD (lr 0.1, momentum 0.9, wd 5e-4); the first 5 batches are warm-up.
    """
    model = resnet20(shortcut).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(PILDataset(data.train_images, data.train_labels, seed_transform()),
                        batch_size=SEED_BATCH, shuffle=True)

    def batches():  # as many epochs as it takes (tiny datasets in tests)
        while True:
            yield from loader

    warmup = 5
    t0 = 0.0
    for i, (x, y) in enumerate(batches()):
        if i == warmup:
            synchronize(device)
            t0 = time.perf_counter()
        if i == warmup + steps:
            break
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    synchronize(device)
    per_batch = (time.perf_counter() - t0) / steps
    return per_batch * len(data.train_labels) / SEED_BATCH


def step_seconds(images: Tensor, labels: Tensor, device: torch.device,
                 variants: dict[str, dict], batch_size: int = 256, steps: int = 5,
                 rounds: int = 3, warmup: int = 2, shortcut: str = "conv3x3") -> dict[str, float]:
    """Median seconds per training step of each variant, measured side by side.

    ``variants`` maps a name to :class:`TrainConfig` overrides (e.g. ``{"bf16": False}``); a
    variant runs in the precision it names, whatever the trainer would choose on this device.
    The variants take turns, ``steps`` steps each, for ``rounds`` rounds after ``warmup``
    steps each, so that a noisy machine slows all of them alike.
    """
    x = normalize(images[:batch_size].to(device)).contiguous(memory_format=torch.channels_last)
    y = labels[:batch_size].to(device)
    runs = {}
    for name, overrides in variants.items():
        cfg = TrainConfig(batch_size=batch_size, **overrides)
        torch.manual_seed(0)
        model = resnet20(shortcut).to(device).to(memory_format=torch.channels_last).train()
        # the precision each variant names, not the trainer's choice (bf16_supported)
        runs[name] = (make_step(model, cfg, device, bf16=cfg.bf16),
                      make_optimizer(model, cfg, device))

    def run(name: str, n: int) -> float:
        step, opt = runs[name]
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(x, y)
            opt.step()
        synchronize(device)
        return (time.perf_counter() - t0) / n

    for name in runs:
        run(name, warmup)
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name in runs:
            times[name].append(run(name, steps))
    return {name: float(np.median(t)) for name, t in times.items()}



def bench_train(args) -> dict:
    device = torch.device(args.device) if args.device else default_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_splits(args.root)
    if args.train_images:
        data = data._replace(train_images=data.train_images[:args.train_images],
                             train_labels=data.train_labels[:args.train_images])
    out = {"device": device_name(device), "torch_version": torch.__version__,
           "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "bf16_supported": bf16_supported(device, args.batch_size)}
    variants = {"fp32": {"bf16": False, "cuda_graph": False},
                "bf16": {"bf16": True, "cuda_graph": False}}
    if device.type == "cuda":
        variants["bf16 + CUDA graph"] = {"bf16": True, "cuda_graph": True}
    step = step_seconds(data.train_images, data.train_labels, device, variants,
                        batch_size=args.batch_size, steps=args.steps, rounds=args.rounds)
    out["step_seconds"] = step
    out["bf16_speedup_vs_fp32"] = step["fp32"] / step["bf16"]
    print(f"device {out['device']}, torch {out['torch_version']}, {out['threads']} threads, "
          f"batch {args.batch_size}; the trainer chooses "
          f"{'bf16' if out['bf16_supported'] else 'fp32'} (helpers.train.bf16_supported)")
    print(f"training step, median of {args.rounds} interleaved rounds of {args.steps} steps:")
    for name, sec in step.items():
        print(f"  {name:18s} {1000 * sec:8.1f} ms/step  ({step['fp32'] / sec:.2f}x fp32)")
    if args.seed_steps:
        out["seed_pipeline_seconds_per_epoch"] = seed_pipeline_seconds_per_epoch(
            data, device, args.seed_steps)
        out["trainer_seconds_per_epoch"] = step_seconds_per_epoch = (
            min(step.values()) * len(data.train_labels) / args.batch_size)
        out["speedup_vs_seed"] = out["seed_pipeline_seconds_per_epoch"] / step_seconds_per_epoch
        print(f"seed pipeline (PIL + DataLoader batch {SEED_BATCH}, fp32): "
              f"{out['seed_pipeline_seconds_per_epoch']:.1f} s per {len(data.train_labels):,}"
              f"-image epoch (timed over {args.seed_steps} batches)")
        print(f"this trainer's fastest step: {step_seconds_per_epoch:.1f} s per epoch -> "
              f"{out['speedup_vs_seed']:.1f}x")
    return out


def bench_sweep(args) -> dict:
    from helpers.study.sweep_check import benchmark

    return benchmark(device=args.device, root=args.root)


LATENCY_NETWORKS = {"unpruned": "resnet20.pt", "50% MACs": "resnet20_pruned50.pt",
                    "latency": "resnet20_latency.pt"}  # in checkpoints/; the first: reference
# bench latency also times the network chosen for int8 (helpers.study.int8_plan), when written
INT8_CHOSEN = {"int8 plan": "resnet20_int8plan.pt"}


def int8_graphs(spec: dict[str, str], folder: Path, root: str | None = None,
                calibration_images: int = 512) -> dict[str, str]:
    """Each checkpoint of ``spec`` BN-folded and quantized to int8 for ONNX Runtime
    (:func:`helpers.study.quantize.quantize_onnx`: uint8 activations, the constant adds of
    removed blocks kept float), calibrated on the first training images: ``{"<name> int8":
    path of its .onnx file in folder}``."""
    from helpers.models import load_model
    from helpers.study.network import fold_bn
    from helpers.study.quantize import quantize_onnx

    calibration = normalize(load_splits(root=root, download=True, warn=False)
                            .train_images[:calibration_images])
    out = {}
    for name, checkpoint in spec.items():
        graph = quantize_onnx(fold_bn(load_model(checkpoint, "cpu").eval()), calibration,
                              "uint8", float_adds=True)
        (path := folder / f"{len(out)}.onnx").write_bytes(graph)
        out[f"{name} int8"] = str(path)
    return out


def bench_latency(args) -> dict:
    """The committed networks, BN-folded, against the unpruned one on this CPU, in PyTorch and
    ONNX Runtime at the same thread count: ``--processes`` fresh processes (at least 3) of
    ``--rounds`` interleaved rounds each (:func:`helpers.study.latency_tables.process_timings`,
    ONNX Runtime's threads not spinning between runs: see
    :func:`helpers.study.latency_tables.in_runtime`); a verdict against the 1.5x goal reads the
    spread between the processes. ``--int8`` (the default) adds each network quantized to int8
    (:func:`int8_graphs`, ONNX Runtime only; it reads the first training images to calibrate).
    """
    from helpers import paths
    from helpers.study.latency_plans import GOAL
    from helpers.study.latency_tables import RUNTIMES, machine, process_summary, process_timings

    spec = {name: str(paths.CHECKPOINTS / f) for name, f in (LATENCY_NETWORKS | INT8_CHOSEN)
            .items() if (paths.CHECKPOINTS / f).exists()}
    if "unpruned" not in spec:
        raise SystemExit(f"no {paths.CHECKPOINTS / LATENCY_NETWORKS['unpruned']}: the unpruned "
                         f"network is the reference (make checkpoints, or study/02)")
    batches = (256, 1) if args.batch1 else (256,)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.int8:  # ONNX Runtime only: each network in int8 (uint8 activations, float adds)
            spec |= int8_graphs(spec, Path(tmp), args.root)
        per = process_timings(spec, RUNTIMES, batches, args.processes, args.rounds, 1,
                              args.threads)
    table = process_summary(per, GOAL)
    out = machine(args.threads) | {"processes": args.processes, "rounds": args.rounds,
                                   "ort_spinning": False, "goal_speedup": GOAL,
                                   "seconds": round(time.perf_counter() - start, 1),
                                   "rows": table.to_dict("records")}
    print(f"on {out['cpu']}, {args.threads} threads (torch {out['torch_version']}, onnxruntime "
          f"{out['onnxruntime_version']}): BN-folded networks against the unpruned one, "
          f"{args.processes} fresh processes x {args.rounds} interleaved rounds, in "
          f"{out['seconds']:g} s")
    print("speed-up: median of the processes' medians (slowest-fastest process); verdict "
          f"against {GOAL:g}x: met if the slowest process reaches it, missed if the fastest "
          "does not")
    for r in table.itertuples():
        print(f"  {r.runtime:12s} batch {r.batch_size:3d} {r.model:14s} {r.median_ms:8.2f} ms  "
              f"{r.speedup:.2f}x ({r.speedup_low:.2f}-{r.speedup_high:.2f})"
              + ("" if r.model == "unpruned" else f"  {r.verdict}"))
    return out


COMMANDS = {"train": bench_train, "sweep": bench_sweep, "latency": bench_latency}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.study.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--root", default=None, help="CIFAR-10 root (default: $CIFAR10_ROOT)")
    parser.add_argument("--batch-size", type=int, default=256, help="training batch (train)")
    parser.add_argument("--steps", type=int, default=5, help="steps per round (train)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (train: 3, latency: 15 per process)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (latency)")
    parser.add_argument("--processes", type=int, default=3,
                        help="fresh timing processes, at least 3 (latency)")
    parser.add_argument("--batch1", action="store_true", help="also time batch 1 (latency)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the networks in int8, ONNX Runtime (latency)")
    parser.add_argument("--seed-steps", type=int, default=20,
                        help="seed-pipeline batches to time, 0 to skip (train)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="use only the first N training images (quick runs)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 15 if args.command == "latency" else 3
    out = COMMANDS[args.command](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
