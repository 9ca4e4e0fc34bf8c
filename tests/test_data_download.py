"""Downloading CIFAR-10 without a network: failures are clear, partial archives are replaced."""

import hashlib
import http.client
import io
import socket
import tarfile
import urllib.error
import urllib.request

import pytest

import helpers.data as data
from helpers import paths
from tests.conftest import write_cifar


def _archive(tmp_path) -> bytes:
    """A tar.gz laid out like the official archive (cifar-10-batches-py/...), small."""
    src = write_cifar(tmp_path / "src", train_per_batch=2, test=10)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / data.FOLDER, arcname=data.FOLDER)
    return buf.getvalue()


def _offline(*args, **kwargs):
    raise urllib.error.URLError("Name or service not known")


def _assert_names_url_folder_and_fixes(msg: str, root) -> None:
    assert data.URL in msg and str(root) in msg
    assert "CIFAR10_ROOT" in msg and data.FOLDER in msg and "internet" in msg


def test_network_failure_names_url_folder_and_fixes(tmp_path, monkeypatch):
    err = urllib.error.URLError("Name or service not known")

    def fetch(url, root):
        raise err

    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    monkeypatch.setattr(data, "_fetch", fetch)
    root = tmp_path / "empty"
    with pytest.raises(data.DownloadError) as e:
        data.load_cifar10(root, download=True)
    assert isinstance(e.value, RuntimeError) and e.value.__cause__ is err
    _assert_names_url_folder_and_fixes(str(e.value), root)
    assert "Name or service not known" in str(e.value)

    monkeypatch.setattr(paths, "DATA", tmp_path / "repo" / "data")  # load_splits, default root
    with pytest.raises(data.DownloadError) as e:
        data.load_splits(download=True)
    _assert_names_url_folder_and_fixes(str(e.value), tmp_path / "repo" / "data")


@pytest.mark.parametrize("err", [socket.gaierror(-2, "Name or service not known"),
                                 TimeoutError("timed out"), ConnectionResetError(104, "reset"),
                                 http.client.IncompleteRead(b"partial")])
def test_socket_and_connection_errors_too(tmp_path, monkeypatch, err):
    def fetch(url, root):
        raise err

    monkeypatch.setattr(data, "_fetch", fetch)
    with pytest.raises(data.DownloadError) as e:
        data.load_cifar10(tmp_path, download=True)
    assert e.value.__cause__ is err
    _assert_names_url_folder_and_fixes(str(e.value), tmp_path)


def test_offline_through_torchvision_downloader(tmp_path, monkeypatch):
    """The real _fetch (torchvision's download_url), with urllib's network call failing."""
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(data.DownloadError) as e:
        data.load_cifar10(tmp_path / "root", download=True)
    assert isinstance(e.value.__cause__, urllib.error.URLError)
    _assert_names_url_folder_and_fixes(str(e.value), tmp_path / "root")


def test_partial_archive_is_deleted_and_downloaded_again(tmp_path, monkeypatch):
    full = _archive(tmp_path)
    monkeypatch.setattr(data, "ARCHIVE_MD5", hashlib.md5(full).hexdigest())
    root = tmp_path / "root"
    root.mkdir()
    archive = root / data.ARCHIVE
    archive.write_bytes(full[: len(full) // 2])  # what an interrupted download leaves
    calls = []

    def fetch(url, folder):  # records whether the partial archive was still there
        calls.append((url, folder, archive.exists()))
        archive.write_bytes(full)

    monkeypatch.setattr(data, "_fetch", fetch)
    with pytest.warns(UserWarning, match="only 10 images"):
        d = data.load_cifar10(root, download=True)
    assert calls == [(data.URL, root, False)]
    assert archive.read_bytes() == full and len(d.train_labels) == 10


def test_interrupted_download_is_replaced_on_the_next_try(tmp_path, monkeypatch):
    full = _archive(tmp_path)
    monkeypatch.setattr(data, "ARCHIVE_MD5", hashlib.md5(full).hexdigest())
    archive = tmp_path / data.ARCHIVE
    calls = []

    def cut_off(url, folder):
        calls.append("cut")
        archive.write_bytes(full[:100])
        raise ConnectionResetError(104, "Connection reset by peer")

    def complete(url, folder):
        calls.append(("full", archive.exists()))
        archive.write_bytes(full)

    monkeypatch.setattr(data, "_fetch", cut_off)
    with pytest.raises(data.DownloadError, match="ConnectionResetError"):
        data.load_cifar10(tmp_path, download=True)
    monkeypatch.setattr(data, "_fetch", complete)
    with pytest.warns(UserWarning, match="only 10 images"):
        assert len(data.load_cifar10(tmp_path, download=True).test_labels) == 10
    assert calls == ["cut", ("full", False)]


def test_wrong_archive_is_named_then_replaced(tmp_path, monkeypatch):
    """A captive portal's page saved as the archive: named, not extracted, replaced next time."""
    full = _archive(tmp_path)
    monkeypatch.setattr(data, "ARCHIVE_MD5", hashlib.md5(full).hexdigest())
    archive = tmp_path / data.ARCHIVE
    monkeypatch.setattr(data, "_fetch", lambda url, folder: archive.write_bytes(b"<html>"))
    with pytest.raises(data.DownloadError, match="md5") as e:
        data.load_cifar10(tmp_path, download=True)
    assert str(archive) in str(e.value) and not (tmp_path / data.FOLDER).exists()
    monkeypatch.setattr(data, "_fetch", lambda url, folder: archive.write_bytes(full))
    with pytest.warns(UserWarning):
        data.load_cifar10(tmp_path, download=True)
    assert archive.read_bytes() == full


def test_complete_archive_is_extracted_without_downloading(tmp_path, monkeypatch):
    full = _archive(tmp_path)
    monkeypatch.setattr(data, "ARCHIVE_MD5", hashlib.md5(full).hexdigest())
    (tmp_path / data.ARCHIVE).write_bytes(full)
    monkeypatch.setattr(data, "_fetch", _offline)
    with pytest.warns(UserWarning):
        assert len(data.load_cifar10(tmp_path, download=True).train_labels) == 10
