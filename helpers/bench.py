"""Benchmarks that measure both sides of a comparison in one run, on one machine.

    python -m helpers.bench train   # this trainer (eager and CUDA-graphed) vs the seed pipeline
    python -m helpers.bench sweep   # cached block-pruning sweep vs the naive one

Each prints the measured numbers and their ratios; ``--json FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from helpers.data import CIFAR10, PILDataset, load_cifar10
from helpers.models import resnet20
from helpers.profile import default_device, device_name
from helpers.train import TrainConfig, train

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
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        if i == warmup + steps:
            break
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_batch = (time.perf_counter() - t0) / steps
    return per_batch * len(data.train_labels) / SEED_BATCH


def trainer_seconds_per_epoch(data: CIFAR10, device: torch.device, epochs: int = 3,
                              cuda_graph: bool = True, shortcut: str = "conv3x3") -> float:
    """Median seconds per epoch of :func:`helpers.train.train` (first epoch excluded)."""
    cfg = TrainConfig(epochs=epochs, cuda_graph=cuda_graph)
    no_test = data._replace(test_images=data.test_images[:0], test_labels=data.test_labels[:0])
    history = train(resnet20(shortcut), no_test, cfg, device=device, progress=False)
    return float(np.median([h["seconds"] for h in history[1:]]))


def bench_train(args) -> dict:
    device = torch.device(args.device) if args.device else default_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_cifar10(args.root)
    if args.train_images:
        data = data._replace(train_images=data.train_images[:args.train_images],
                             train_labels=data.train_labels[:args.train_images])
    out = {"device": device_name(device),
           "torch_version": torch.__version__, "train_images": len(data.train_labels)}
    out["seed_pipeline_seconds_per_epoch"] = seed_pipeline_seconds_per_epoch(data, device,
                                                                             args.seed_steps)
    out["eager_seconds_per_epoch"] = trainer_seconds_per_epoch(data, device, args.epochs, False)
    if device.type == "cuda":
        out["graphed_seconds_per_epoch"] = trainer_seconds_per_epoch(data, device, args.epochs)
    best = min(v for k, v in out.items() if k in ("eager_seconds_per_epoch",
                                                   "graphed_seconds_per_epoch"))
    out["speedup_vs_seed"] = out["seed_pipeline_seconds_per_epoch"] / best
    if "graphed_seconds_per_epoch" in out:
        out["graph_speedup_vs_eager"] = (out["eager_seconds_per_epoch"]
                                         / out["graphed_seconds_per_epoch"])
    print(f"device {out['device']}, torch {out['torch_version']}, "
          f"{out['train_images']:,} training images per epoch")
    print(f"seed pipeline (PIL + DataLoader batch {SEED_BATCH}, fp32): "
          f"{out['seed_pipeline_seconds_per_epoch']:.2f} s/epoch (timed over {args.seed_steps} "
          f"batches)")
    print(f"this trainer, eager:        {out['eager_seconds_per_epoch']:.2f} s/epoch")
    if "graphed_seconds_per_epoch" in out:
        print(f"this trainer, CUDA graph:   {out['graphed_seconds_per_epoch']:.2f} s/epoch "
              f"({out['graph_speedup_vs_eager']:.2f}x eager)")
    print(f"speed-up of the fastest trainer over the seed pipeline: "
          f"{out['speedup_vs_seed']:.1f}x")
    return out


def bench_sweep(args) -> dict:
    from helpers.sweep import benchmark

    return benchmark(device=args.device, root=args.root)


COMMANDS = {"train": bench_train, "sweep": bench_sweep}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--root", default=None, help="CIFAR-10 root (default: $CIFAR10_ROOT)")
    parser.add_argument("--epochs", type=int, default=3, help="trainer epochs to time (train)")
    parser.add_argument("--seed-steps", type=int, default=100,
                        help="seed-pipeline batches to time (train)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="use only the first N training images (quick runs)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    out = COMMANDS[args.command](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
