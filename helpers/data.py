"""CIFAR-10: loading the standard pickles, normalization and GPU-side augmentation.

The loader reads the ``cifar-10-batches-py`` pickles directly instead of going through
``torchvision.datasets.CIFAR10``: it is faster (one tensor per split, no PIL), and it accepts
copies whose bytes differ from the official archive (torchvision's md5 check rejects those).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import pickle
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data
from torch import Tensor

from helpers import paths

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"  # the name the archive is downloaded under, in the root
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
OFFICIAL_TEST_IMAGES = 10_000

# Per-channel statistics of the 50,000 training images, on the 0..1 scale.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PADDING = 4  # the random-crop augmentation pads by 4 pixels, as in He et al. 2016
VAL_IMAGES = 5_000  # the last 5,000 training images: every choice is made on them


class CIFAR10(NamedTuple):
    """Both splits as tensors: images uint8 (N, 3, 32, 32), labels int64 (N,)."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]


class DownloadError(RuntimeError):
    """CIFAR-10 had to be downloaded and could not be: the message says where and how to fix."""


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$CIFAR10_ROOT``, else the repository's ``data/``.

    The default is :data:`helpers.paths.DATA` (next to ``checkpoints/``), whatever the working
    directory: a notebook started in ``notebooks/``, papermill or a script run from elsewhere.
    """
    if root is None:
        root = os.environ.get("CIFAR10_ROOT") or paths.DATA
    return Path(root).expanduser()


def _batches_dir(root: Path) -> Path:
    """Accept both the folder holding ``cifar-10-batches-py`` and that folder itself."""
    if (root / META_FILE).exists():
        return root
    return root / FOLDER


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable CIFAR-10 pickle ({type(e).__name__}: {e})") from e


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _read_pickle(path)
    try:
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if len(images) != len(labels):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _read_split(folder: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    parts = [_read_batch(folder / name) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def _fetch(url: str, root: Path) -> None:
    """Download ``url`` into ``root`` under its own name (torchvision's downloader, no check)."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(root), filename=ARCHIVE)


def _download_error(root: Path, what: str) -> DownloadError:
    return DownloadError(
        f"could not download CIFAR-10 from {URL} into {root}: {what}. Fix it either way: set "
        f"the CIFAR10_ROOT environment variable (or pass root=) to a folder that holds {FOLDER}, "
        f"or connect to the internet and run again.")


def _download(root: Path) -> None:
    """Fetch the official archive into ``root`` and extract it there.

    An archive already there whose md5 is not :data:`ARCHIVE_MD5` (left by an interrupted
    download) is deleted and downloaded again, never extracted. A failed network call raises
    :class:`DownloadError`, with the original exception as its cause.
    """
    from torchvision.datasets.utils import check_integrity, extract_archive

    archive = root / ARCHIVE
    if archive.exists() and not check_integrity(str(archive), ARCHIVE_MD5):
        archive.unlink()
    if not archive.exists():
        root.mkdir(parents=True, exist_ok=True)
        try:
            _fetch(URL, root)
        except (OSError, http.client.HTTPException) as e:  # URLError and socket errors too
            raise _download_error(root, f"{type(e).__name__}: {e}") from e
        if not check_integrity(str(archive), ARCHIVE_MD5):
            raise _download_error(root, f"{archive} is not the official archive (md5 mismatch; "
                                  f"it is replaced on the next try)")
    extract_archive(str(archive), str(root))


def load_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> CIFAR10:
    """Load CIFAR-10 as uint8 image tensors, int64 labels and the class names.

    Args:
        root: folder that holds ``cifar-10-batches-py`` (or that folder itself). Defaults to
            ``$CIFAR10_ROOT``, else the repository's ``data/`` (:func:`resolve_root`).
        download: fetch the official archive (md5-checked) when the files are missing; a
            failed download raises :class:`DownloadError`.
    """
    source = ("the root argument" if root is not None else "$CIFAR10_ROOT"
              if os.environ.get("CIFAR10_ROOT") else "the default helpers.paths.DATA")
    root = resolve_root(root)
    folder = _batches_dir(root)
    needed = [folder / n for n in (*TRAIN_FILES, TEST_FILE, META_FILE)]
    missing = [p for p in needed if not p.exists()]
    if missing and download:
        _download(root)
        folder = _batches_dir(root)
        missing = [p for p in needed if not (folder / p.name).exists()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: looked for {folder} (from {source}); missing "
            f"{', '.join(p.name for p in missing)}. Fix it either way: pass download=True "
            f"(needs internet) to fetch the official archive into {root}, or point root= / "
            f"the CIFAR10_ROOT environment variable at a folder that holds {FOLDER}.")
    train_images, train_labels = _read_split(folder, TRAIN_FILES)
    test_images, test_labels = _read_split(folder, (TEST_FILE,))
    meta = _read_pickle(folder / META_FILE)
    if "label_names" not in meta:
        raise ValueError(f"{folder / META_FILE}: malformed, it has no 'label_names'")
    if len(test_images) < OFFICIAL_TEST_IMAGES:
        warnings.warn(
            f"the CIFAR-10 test set in {folder} has only {len(test_images):,} images "
            f"(the official one has {OFFICIAL_TEST_IMAGES:,}): test accuracies are measured "
            f"on {len(test_images):,} images.", stacklevel=2)
    return CIFAR10(train_images, train_labels, test_images, test_labels, list(meta["label_names"]))


class Splits(NamedTuple):
    """Train / validation / test, images uint8 (N, 3, 32, 32), labels int64 (N,).

    The validation images are the last :data:`VAL_IMAGES` of the official training set; every
    choice (a hyper-parameter, a strategy, a pruning plan) is made on them, and the test
    images only measure models that were already chosen.
    """

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]

    def summary(self) -> str:
        """Sizes of the three splits, and a note when the test set is not the official one."""
        text = (f"train {len(self.train_labels):,} / validation {len(self.val_labels):,} / test "
                f"{len(self.test_labels):,} images of {tuple(self.train_images.shape[1:])}, "
                f"{len(self.classes)} classes")
        if len(self.test_labels) < OFFICIAL_TEST_IMAGES:
            text += (f"\nnote: this copy holds {len(self.test_labels):,} of the "
                     f"{OFFICIAL_TEST_IMAGES:,} official test images; test accuracies below are "
                     f"measured on those")
        return text


def split_validation(data: CIFAR10, val_images: int = VAL_IMAGES) -> Splits:
    """Hold out the last ``val_images`` training images as the validation split."""
    n = len(data.train_labels)
    if not 0 < val_images < n:
        raise ValueError(f"val_images must be between 1 and {n - 1} (the training set has "
                         f"{n:,} images), got {val_images}")
    cut = n - val_images
    return Splits(data.train_images[:cut], data.train_labels[:cut], data.train_images[cut:],
                  data.train_labels[cut:], data.test_images, data.test_labels, data.classes)


def selection_confirmation(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the selection and the confirmation half of ``n`` validation images.

    The rule, fixed before any result was seen: even positions (0, 2, 4, ...) select, odd
    positions (1, 3, 5, ...) confirm. The validation split is the last 5,000 training images in
    the order of the official files, which are not sorted by class, so the halves are two
    interleaved samples of it (2,500 and 2,500 of 5,000; for odd ``n`` the selection half has
    one more). Every choice (plan, block, schedule, clustering rule) is made on the selection
    half; the chosen networks are reported on the confirmation half, which no choice saw.
    """
    if n < 2:
        raise ValueError(f"need at least 2 validation images to split in halves, got {n}")
    positions = np.arange(n)
    return positions[0::2], positions[1::2]


def load_splits(root: str | os.PathLike | None = None, download: bool = False,
                val_images: int = VAL_IMAGES, warn: bool = True) -> Splits:
    """:func:`load_cifar10`, then :func:`split_validation`: train 45,000 / val 5,000 / test.

    ``warn=False`` silences the incomplete-test-set warning (:meth:`Splits.summary` says it).
    """
    with warnings.catch_warnings():
        if not warn:
            warnings.filterwarnings("ignore", message="the CIFAR-10 test set")
        return split_validation(load_cifar10(root, download), val_images)


def fingerprint(images: Tensor, labels: Tensor) -> str:
    """A short hash of images and labels: tells whether two runs saw the same data."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(tuple(images.shape)).encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    h.update(labels.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@functools.cache
def _mean_std(device: torch.device) -> tuple[Tensor, Tensor]:
    # cached per device: building them anew would copy host->GPU (and synchronise) every step
    return (torch.tensor(MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(STD, device=device).view(1, 3, 1, 1))


def normalize(images: Tensor) -> Tensor:
    """uint8 (or 0..1 float) images -> float32, zero mean and unit std per channel."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255
    mean, std = _mean_std(x.device)
    return (x - mean) / std


def random_crop_flip(images: Tensor, padding: int = PADDING,
                     generator: torch.Generator | None = None) -> Tensor:
    """Per-sample random crop from a zero padding of ``padding`` pixels, then random h-flip.

    Works on a whole batch (N, C, H, W) of any dtype on its own device, in one gather: the
    crop offsets and flips are drawn independently for every image.
    """
    n, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    flip = torch.rand(n, 1, device=dev, generator=generator) < 0.5
    rows = dy + torch.arange(h, device=dev)
    cols_fwd = torch.arange(w, device=dev)
    cols = dx + torch.where(flip, cols_fwd.flip(0), cols_fwd)
    idx = torch.arange(n, device=dev).view(n, 1, 1, 1)
    ch = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[idx, ch, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


class PILDataset(torch.utils.data.Dataset):
    """uint8 images served one by one as PIL images through a torchvision transform.

    The way the original work fed its models (a ``DataLoader`` over PIL images); kept for the
    benchmarks and the naive reference sweep.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform):
        self.images = images.cpu().permute(0, 2, 3, 1).numpy()
        self.labels, self.transform = labels.cpu(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])
