"""Notebook 02's training run: a profile's recipe, training images and state file, and its CLI.

``python -m helpers.study.training --profile cpu`` runs it from a shell, with the same seed,
data, recipe and state file as the notebook, so a run started there (e.g. in the background,
with ``nohup``) is resumed, or found finished, by the notebook's training cell. The trainer
itself is :func:`helpers.train.train`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from helpers.data import Splits
from helpers.study.profile import outputs, sizes
from helpers.train import TrainConfig, train


def profile_config(profile: str, seed: int = 0) -> TrainConfig:
    """The training recipe of a profile (:data:`helpers.study.profile.SIZES`), checkpointed
    every epoch on the CPU, where an epoch takes about a minute."""
    s = sizes(profile).train
    return TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                       warmup_epochs=s.warmup_epochs, seed=seed,
                       checkpoint_every=10 if s.epochs >= 100 else 1)


def profile_data(data: Splits, profile: str) -> Splits:
    """The training images a profile uses: all of the training split, or its first ``n``."""
    n = sizes(profile).train.train_images
    if n is None:
        return data
    return data._replace(train_images=data.train_images[:n], train_labels=data.train_labels[:n])


def state_path(profile: str) -> Path:
    """Where a profile's resumable training state lives (next to the model it produces)."""
    return outputs(profile).checkpoints / f"train_state_{profile}.pt"


def main(argv: list[str] | None = None) -> None:
    """``python -m helpers.study.training --profile cpu``: notebook 02's training run, from a shell.

    Same seed, data, recipe and state file as the notebook, so a run started here (e.g. in the
    background, with ``nohup``) is resumed, or found finished, by the notebook's training cell.
    """
    import argparse

    from helpers.data import load_splits
    from helpers.models import resnet20
    from helpers.study.profile import PROFILES, resolve_profile

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--profile", default="auto", choices=PROFILES)
    parser.add_argument("--shortcut", default="conv3x3", choices=("A", "conv3x3"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="CIFAR-10 folder (default $CIFAR10_ROOT)")
    args = parser.parse_args(argv)
    profile = resolve_profile(args.profile)
    data = profile_data(load_splits(args.root), profile)
    torch.manual_seed(args.seed)
    model = resnet20(args.shortcut)

    def log(record: dict) -> None:
        print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in record.items()), flush=True)

    train(model, data, profile_config(profile, args.seed), checkpoint=state_path(profile),
          callback=log, progress=False)


if __name__ == "__main__":
    main()
