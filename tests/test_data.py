import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import paths
from helpers.data import MEAN, PADDING, STD, load_cifar10, normalize, random_crop_flip, resolve_root
from tests.conftest import CLASSES, write_cifar


def test_loads_fixture(cifar_root):
    with pytest.warns(UserWarning, match="only 10 images"):
        d = load_cifar10(cifar_root)
    assert d.train_images.shape == (100, 3, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (10, 3, 32, 32)
    assert d.train_labels.dtype == torch.int64 and d.classes == CLASSES
    # the pixels are the pickle's rows, channel-planar, in file order
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        entry = pickle.load(f)
    assert np.array_equal(d.train_images[20].numpy().reshape(-1), entry["data"][0])
    assert d.train_labels[20] == entry["labels"][0]


def test_root_from_env_and_batches_folder(cifar_root, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(cifar_root))
    with pytest.warns(UserWarning):
        assert len(load_cifar10().train_labels) == 100
    with pytest.warns(UserWarning):
        assert len(load_cifar10(cifar_root / "cifar-10-batches-py").test_labels) == 10


def test_default_root_is_the_repository_data_folder(tmp_path, monkeypatch):
    """Not ./data: a notebook in notebooks/, papermill or a script elsewhere finds the same."""
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    assert paths.DATA == paths.ROOT / "data" == paths.CHECKPOINTS.parent / "data"
    for cwd in (tmp_path, paths.ROOT / "helpers"):  # elsewhere, and inside the repository
        monkeypatch.chdir(cwd)
        assert resolve_root() == paths.DATA and resolve_root().is_absolute()
    monkeypatch.setenv("CIFAR10_ROOT", "")  # set but empty: the default too
    assert resolve_root() == paths.DATA


def test_env_and_root_argument_win_over_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "env"))
    assert resolve_root() == tmp_path / "env"
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CIFAR10_ROOT")
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_root("~/x") == Path.home() / "x"


def test_missing_data_says_where_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10(tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "download=True" in msg and "CIFAR10_ROOT" in msg
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match=r"\$CIFAR10_ROOT"):
        load_cifar10()


def test_truncated_file_is_named(cifar_root):
    path = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(cifar_root)


def test_malformed_file_is_named(cifar_root):
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"labels": [1, 2]}, f)
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(cifar_root)


def test_full_test_set_gives_no_warning(tmp_path):
    root = write_cifar(tmp_path, train_per_batch=2, test=10_000)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_cifar10(root).test_labels) == 10_000


def test_normalize_matches_definition():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1)
    assert torch.allclose(normalize(x), expected)


def test_crop_flip_is_a_crop_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)  # no zeros: padding is visible
    g = torch.Generator().manual_seed(1)
    out = random_crop_flip(x, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (PADDING,) * 4)
    flips, offsets = 0, set()
    for i in range(len(x)):
        crops = {(dy, dx): padded[i, :, dy:dy + 32, dx:dx + 32]
                 for dy in range(2 * PADDING + 1) for dx in range(2 * PADDING + 1)}
        found = [(*o, f) for o, c in crops.items() for f in (False, True)
                 if torch.equal(c.flip(-1) if f else c, out[i])]
        assert found, f"image {i} is not a (flipped) crop inside the padding"
        flips += found[0][2]
        offsets.add(found[0][:2])
    assert 0 < flips < len(x)  # both outcomes happen
    assert len(offsets) > 10  # offsets vary per sample
    assert torch.equal(out, random_crop_flip(x, generator=torch.Generator().manual_seed(1)))


def test_lab_copy(lab_root):
    with pytest.warns(UserWarning, match="1,000 images"):
        d = load_cifar10(lab_root)
    assert len(d.train_labels) == 50_000 and len(d.test_labels) == 1_000
    assert torch.bincount(d.train_labels).tolist() == [5000] * 10
    mean = d.train_images.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(MEAN), atol=1e-3)
    assert os.path.isdir(lab_root)


def test_download_true_fetches_into_an_empty_folder(tmp_path, monkeypatch):
    """A fresh Colab runtime: no data anywhere, download=True fetches instead of failing."""
    import helpers.data as data

    calls = []

    def fake_download(root):  # writes what the official archive extracts to
        calls.append(root)
        write_cifar(root, train_per_batch=4, test=10)

    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    monkeypatch.setattr(data, "_download", fake_download)
    root = tmp_path / "empty"
    with pytest.raises(FileNotFoundError):
        load_cifar10(root)  # without download=True: a clear error, nothing fetched
    assert calls == []
    with pytest.warns(UserWarning, match="only 10 images"):
        d = load_cifar10(root, download=True)
    assert calls == [root] and len(d.train_labels) == 20 and len(d.test_labels) == 10
    with pytest.warns(UserWarning):
        load_cifar10(root, download=True)  # present now: not fetched again
    assert calls == [root]

    monkeypatch.setattr(paths, "DATA", tmp_path / "repo" / "data")  # the default root
    monkeypatch.chdir(root)  # anywhere else
    with pytest.warns(UserWarning):
        s = data.load_splits(download=True, val_images=5)
    assert calls == [root, tmp_path / "repo" / "data"]
    assert (len(s.train_labels), len(s.val_labels), len(s.test_labels)) == (15, 5, 10)


# ------------------------------------------------------------- selection and confirmation


@pytest.mark.parametrize("n", [2, 5, 500, 5000])
def test_selection_and_confirmation_halves_split_the_validation_images(n):
    from helpers.data import selection_confirmation

    sel, conf = selection_confirmation(n)
    assert len(np.intersect1d(sel, conf)) == 0  # no image in both
    assert sorted(np.r_[sel, conf].tolist()) == list(range(n))  # every image in one
    assert len(sel) == (n + 1) // 2 and len(conf) == n // 2
    assert (sel % 2 == 0).all() and (conf % 2 == 1).all()  # the documented rule


def test_selection_and_confirmation_are_the_same_whatever_the_caller():
    from helpers.data import selection_confirmation

    a, b = selection_confirmation(5000), selection_confirmation(5000)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # no seed, no drift
    with pytest.raises(ValueError, match="at least 2"):
        selection_confirmation(1)
