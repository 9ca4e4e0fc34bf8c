"""Shared fixtures: a tiny CIFAR-10 written in the official pickle format, the lab copy, and a
folder of results files."""

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(folder: Path, train_per_batch: int = 20, test: int = 10, seed: int = 0) -> Path:
    """Write cifar-10-batches-py with random images in the official layout; returns its parent."""
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else train_per_batch
        entry = {"batch_label": name, "labels": list(rng.integers(0, 10, n)),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "filenames": [f"{i}.png" for i in range(n)]}
        with open(batches / name, "wb") as f:
            pickle.dump(entry, f)
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": train_per_batch}, f)
    return folder


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    return write_cifar(tmp_path / "data")


@pytest.fixture
def tiny_data(cifar_root):
    from helpers.data import load_cifar10

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_cifar10(cifar_root)


@pytest.fixture(scope="session")
def lab_root():
    root = os.environ.get("CIFAR10_ROOT")
    if not root:
        pytest.skip("CIFAR10_ROOT is not set: the real-data checks need it")
    return Path(root)


@pytest.fixture
def tiny_splits(tiny_data):
    """The tiny dataset split like the real one: the last 10 training images are validation."""
    from helpers.data import split_validation

    return split_validation(tiny_data, val_images=10)


@pytest.fixture
def write_results():
    """``write_results(folder, name=data, ...)``: writes ``folder/results/<name>.json`` for each
    keyword and returns that results folder (what scripts read as ``results/``)."""
    def write(folder: Path, **files: dict) -> Path:
        results = Path(folder) / "results"
        results.mkdir(parents=True)
        for name, data in files.items():
            (results / f"{name}.json").write_text(json.dumps(data))
        return results
    return write
