"""Tests for racecar_repro.data.official: fetching, verifying and loading the official SVD-test images (no network)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from racecar_repro.data import MissingDataError, official
from racecar_repro.data.availability import AVAILABILITY_CHECKS, availability
from racecar_repro.data.official import fetch_official, has_official, load_official_mnist, load_official_peak

REFUSED = "http://127.0.0.1:9/"  # the discard port: nothing listens, so the connection is refused at once


def _mnist_pixels(name: str) -> np.ndarray:
    d = int(name.split("_")[0])
    img = np.zeros((28, 28), np.uint8)
    img[d:d + 3, 2:26] = 200 + d + (10 if "test" in name else 0)  # digit and split readable from the pixels
    img[0, 0] = 255
    return img


def _peak_pixels(cls: int, i: int) -> np.ndarray:
    img = np.zeros((28, 28, 4), np.uint8)
    img[..., 0] = i  # channel 0 holds the data, as in the official files
    img[4 + 14 * cls, 4 + 14 * cls, 0] = 255
    img[..., 1] = 7  # other channels differ, so reading the wrong one shows
    img[..., 2] = 9
    img[..., 3] = 255
    return img


@pytest.fixture(scope="module")
def fake_source(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder laid out like SVD-example (L-mode MNIST, RGBA peak) and its own checksum table."""
    from PIL import Image

    src = tmp_path_factory.mktemp("svd-example")
    for rel in official.FILES["mnist"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_mnist_pixels(Path(rel).stem), mode="L").save(src / rel)
    for rel in official.FILES["peak"]:
        cls, i = int(Path(rel).parent.name), int(Path(rel).stem)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_peak_pixels(cls, i), mode="RGBA").save(src / rel)
    table = {rel: hashlib.sha256((src / rel).read_bytes()).hexdigest() for files in official.FILES.values()
             for rel in files}
    return src, table


def test_checksum_table_covers_exactly_the_files():
    assert len(official.FILES["mnist"]) == 20 and len(official.FILES["peak"]) == 110
    every = [rel for files in official.FILES.values() for rel in files]
    assert len(set(every)) == len(every) == 130
    assert set(official.SHA256) == set(every)
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in official.SHA256.values())
    assert len(set(official.SHA256.values())) == 130  # no file listed twice under two names
    assert official.OFFICIAL_URL == "https://raw.githubusercontent.com/tum-pbs/racecar/master/SVD-example"


@pytest.mark.parametrize("as_url", [False, True], ids=["folder", "file-url"])
def test_fetch_copies_and_verifies(data_dir, fake_source, as_url):
    src, table = fake_source
    assert official.official_root() == data_dir / "racecar-official"
    assert not has_official("peak", checksums=table)
    source = src.as_uri() if as_url else str(src)
    for dataset in ("mnist", "peak"):
        root = fetch_official(dataset, source, checksums=table)
        assert root == data_dir / "racecar-official"
        assert has_official(dataset, checksums=table)
        assert not has_official(dataset)  # fake images do not match the official checksums
    assert (root / "MNIST" / "0_test.png").read_bytes() == (src / "MNIST" / "0_test.png").read_bytes()
    assert (root / "peak" / "1" / "54.png").is_file()
    assert not list(root.rglob("*.tmp"))


def test_fetch_replaces_only_missing_or_wrong_files(tmp_path, fake_source):
    src, table = fake_source
    root = tmp_path / "official"
    fetch_official("mnist", src, root, checksums=table)
    (root / "MNIST" / "3.png").write_bytes(b"corrupt")
    (root / "MNIST" / "4.png").unlink()
    assert not has_official("mnist", root, checksums=table)
    fetch_official("mnist", src, root, checksums=table)
    assert has_official("mnist", root, checksums=table)
    fetch_official("mnist", REFUSED, root, checksums=table)  # complete: nothing to fetch, the network is not asked


def test_wrong_checksum_is_a_clear_error_and_leaves_nothing(tmp_path, fake_source):
    src, table = fake_source
    root = tmp_path / "official"
    bad = dict(table, **{"MNIST/0.png": "0" * 64})
    with pytest.raises(official.ChecksumError) as info:
        fetch_official("mnist", src, root, checksums=bad)
    msg = str(info.value)
    assert msg.startswith("racecar:") and "MNIST/0.png" in msg
    assert "0" * 64 in msg and table["MNIST/0.png"] in msg
    assert not (root / "MNIST" / "0.png").exists()
    (root / "MNIST").mkdir(parents=True, exist_ok=True)
    (root / "MNIST" / "0.png").write_bytes((src / "MNIST" / "0.png").read_bytes())  # wrong for the `bad` table
    with pytest.raises(official.ChecksumError):
        fetch_official("mnist", src, root, checksums=bad)
    assert not (root / "MNIST" / "0.png").exists()  # a wrong file already in place is removed too
    assert not list(root.rglob("*.tmp"))


def test_missing_source_file_is_missing_data_error(tmp_path, fake_source):
    src, table = fake_source
    partial = tmp_path / "partial"
    for rel in official.FILES["peak"][:-1]:
        (partial / rel).parent.mkdir(parents=True, exist_ok=True)
        (partial / rel).write_bytes((src / rel).read_bytes())
    root = tmp_path / "official"
    with pytest.raises(MissingDataError, match=r"racecar:.*peak/1/54\.png.*make data-peak-official.*FROM="):
        fetch_official("peak", partial, root, checksums=table)
    assert len(list((root / "peak").rglob("*.png"))) == 109  # the verified ones stay: a retry resumes
    with pytest.raises(MissingDataError, match="make data-mnist-official"):
        fetch_official("mnist", tmp_path / "no-such-folder", root, checksums=table)
    with pytest.raises(MissingDataError, match="make data-mnist-official"):
        fetch_official("mnist", (tmp_path / "no-such-folder").as_uri(), root, checksums=table)


def test_unreachable_url_fails_fast(tmp_path, fake_source):
    import time

    _, table = fake_source
    t0 = time.perf_counter()
    with pytest.raises(MissingDataError) as info:
        fetch_official("peak", REFUSED, tmp_path / "official", checksums=table)
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    assert msg.startswith("racecar:") and "127.0.0.1:9/peak/0/0.png" in msg
    assert "make data-peak-official" in msg and "FROM=" in msg and "0 of 110" in msg
    assert not (tmp_path / "official" / "peak").exists()


def test_unknown_dataset():
    with pytest.raises(ValueError, match="racecar: unknown official data set 'cifar'"):
        has_official("cifar")


def test_load_official_mnist(tmp_path, fake_source):
    src, table = fake_source
    root = fetch_official("mnist", src, tmp_path / "official", checksums=table)
    data = load_official_mnist(root, checksums=table)
    for x, y, extra in ((data.x_train, data.y_train, 0), (data.x_test, data.y_test, 10)):
        assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.tolist() == list(range(10))
        assert float(x.min()) == 0 and float(x.max()) == 255
        for d in range(10):  # label d is the image d.png (or d_test.png)
            assert float(x[d, 0, d, 5]) == 200 + d + extra
    assert data.synthetic is False
    assert "official SVD-test MNIST images (tum-pbs/racecar SVD-example), checksums verified" in data.source
    assert str(root / "MNIST") in data.source


def test_load_official_peak(tmp_path, fake_source):
    src, table = fake_source
    root = fetch_official("peak", src, tmp_path / "official", checksums=table)
    data = load_official_peak(root, checksums=table)
    assert data.x_train.shape == (100, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.x_train.dtype == torch.float32
    assert data.y_train.tolist() == [0] * 50 + [1] * 50 and data.y_test.tolist() == [0] * 5 + [1] * 5
    assert float(data.x_train.min()) >= 0 and float(data.x_train.max()) == 255
    # channel 0: image i has background i (train 0..49, test 50..54) and its class's bright pixel
    assert data.x_train[:50, 0, 20, 20].tolist() == list(range(50))
    assert data.x_test[:5, 0, 20, 20].tolist() == list(range(50, 55))
    assert float(data.x_train[50, 0, 18, 18]) == 255 and float(data.x_test[0, 0, 4, 4]) == 255
    assert data.synthetic is False
    assert "official peak images (tum-pbs/racecar SVD-example), checksums verified" in data.source
    assert str(root / "peak") in data.source


def test_loaders_refuse_missing_or_wrong_files(tmp_path, fake_source):
    src, table = fake_source
    root = tmp_path / "official"
    with pytest.raises(MissingDataError, match="racecar:.*make data-mnist-official"):
        load_official_mnist(root, checksums=table)
    with pytest.raises(MissingDataError, match="racecar:.*make data-peak-official"):
        load_official_peak(root, checksums=table)
    fetch_official("peak", src, root, checksums=table)
    (root / "peak" / "0" / "7.png").write_bytes((root / "peak" / "0" / "8.png").read_bytes())
    with pytest.raises(MissingDataError, match=r"wrong sha256 \(peak/0/7\.png\)"):
        load_official_peak(root, checksums=table)


def test_availability_checks(data_dir):
    assert {"mnist_official", "peak_official"} <= set(AVAILABILITY_CHECKS)
    for name, target in (("mnist_official", "make data-mnist-official"), ("peak_official", "make data-peak-official")):
        ok, msg = availability(name)
        assert not ok and target in msg and str(data_dir / "racecar-official") in msg


def test_cli(tmp_path, fake_source, monkeypatch, capsys):
    src, table = fake_source
    monkeypatch.setattr(official, "SHA256", table)
    root = tmp_path / "official"
    assert official.main(["all", "--from", str(src), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "official mnist: 20 files verified" in out and "20 fetched" in out
    assert "official peak: 110 files verified" in out and "110 fetched" in out
    assert official.main(["peak", "--from", REFUSED, "--root", str(root)]) == 0  # all present: no network needed
    assert "0 fetched" in capsys.readouterr().out
    assert official.main(["mnist", "--from", REFUSED, "--root", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("racecar:") and "make data-mnist-official" in err
    with pytest.raises(SystemExit):
        official.main(["cifar"])
