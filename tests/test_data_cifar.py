"""Tests for racecar_repro.data.cifar (CIFAR / Fashion-MNIST loading, subsets) and racecar_repro.data.augment."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from racecar_repro.data.availability import AVAILABILITY_CHECKS, availability

from racecar_repro.data import ImageSet, MissingDataError
from racecar_repro.data import cifar
from racecar_repro.data.augment import make_transform, normalize, random_crop_flip

DEBIAN = Path(cifar.DEBIAN_FASHION_MNIST_DIR)


def _write_idx_gz(path: Path, arr: np.ndarray) -> None:
    magic = {1: 2049, 3: 2051}[arr.ndim]  # IDX: 0x08 = ubyte, then the number of dimensions
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes())


def _tiny_imageset(n_per_class: int = 20, n_classes: int = 4, c: int = 3) -> ImageSet:
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = torch.randint(0, 256, (len(y), c, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageSet(x, y, x[::2], y[::2], source="tiny", synthetic=True)  # test: every other image, all classes


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(not all((DEBIAN / f"{f}.gz").is_file() for f in cifar.FASHION_FILES),
                    reason=f"Debian Fashion-MNIST files not in {DEBIAN} (apt-get install -y dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_files(data_dir, no_network, monkeypatch):
    monkeypatch.delenv("RACECAR_FASHION_MNIST_DIR", raising=False)
    assert availability("fashion_mnist")[0]
    data = cifar.load_classification("fashion_mnist")
    assert "torchvision FashionMNIST" in data.source and str(DEBIAN) in data.source and not data.synthetic
    assert data.x_train.shape == (60000, 1, 32, 32) and data.x_test.shape == (10000, 1, 32, 32)
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert torch.bincount(data.y_train).tolist() == [6000] * 10 and torch.bincount(data.y_test).tolist() == [1000] * 10
    for x in (data.x_train, data.x_test):  # 2 zero pixels on every side, content inside
        assert not x[..., :2, :].any() and not x[..., -2:, :].any()
        assert not x[..., :2].any() and not x[..., -2:].any()
        assert x[..., 2:30, 2:30].max() == 255
    again = cifar.load_classification("fashion_mnist")  # second time: reads the prepared folder
    assert torch.equal(again.x_test, data.x_test)


def test_fashion_mnist_from_tiny_idx_files(data_dir, no_network, tmp_path, monkeypatch):
    src = tmp_path / "fmnist"
    src.mkdir()
    rng = np.random.default_rng(0)
    parts = {"train": 30, "t10k": 10}
    for prefix, n in parts.items():
        _write_idx_gz(src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(1, 256, (n, 28, 28)).astype(np.uint8))
        _write_idx_gz(src / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setenv("RACECAR_FASHION_MNIST_DIR", str(src))
    ok, msg = availability("fashion_mnist")
    assert ok and str(src) in msg
    data = cifar.load_classification("fashion_mnist")
    assert data.x_train.shape == (30, 1, 32, 32) and data.x_test.shape == (10, 1, 32, 32)
    assert data.y_train.tolist() == [i % 10 for i in range(30)]
    assert (data.x_train[..., 2:30, 2:30] > 0).all() and data.x_train.sum() == data.x_train[..., 2:30, 2:30].sum()
    assert (data_dir / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_fashion_mnist_missing(data_dir, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    ok, msg = availability("fashion_mnist")
    assert not ok and "make data-fashion-mnist" in msg
    with pytest.raises(MissingDataError, match="make data-fashion-mnist"):
        cifar.load_classification("fashion_mnist")


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_names_folder_and_command(data_dir, no_network, name):
    ok, msg = availability(name)
    assert not ok and "racecar_repro.data.cifar" in msg
    with pytest.raises(MissingDataError) as info:
        cifar.load_classification(name)
    text = str(info.value)
    assert str(cifar.cifar_folder(name)) in text and "network refused" in text
    assert cifar.CIFAR_FILES[name][1][0] in text
    if name == "cifar10":
        assert "make data-cifar" in text
    with pytest.raises(MissingDataError, match="download=False"):
        cifar.load_classification(name, download=False)


def test_unknown_name_and_registry():
    with pytest.raises(ValueError, match="cifar10"):
        cifar.load_classification("svhn")
    assert {"cifar10", "cifar100", "fashion_mnist"} <= set(AVAILABILITY_CHECKS)
    from racecar_repro.data.cifar import channel_stats, load_classification, split_validation, subset

    assert load_classification is cifar.load_classification and subset is cifar.subset
    assert channel_stats is cifar.channel_stats and split_validation is cifar.split_validation


# ---------------------------------------------------------------- stats, subsets


def test_channel_stats_match_torch():
    data = _tiny_imageset()
    mean, std = cifar.channel_stats(data.x_train, chunk=7)
    ref = data.x_train.double() / 255
    assert torch.allclose(mean.double(), ref.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), ref.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)
    assert mean.shape == (3,) and mean.dtype == torch.float32
    mean_f, std_f = cifar.channel_stats(data.x_train.double(), chunk=7)  # float path (chunked sums)
    assert torch.allclose(mean_f, mean) and torch.allclose(std_f, std)


def test_subset_is_balanced_and_seeded():
    data = _tiny_imageset()
    a, b, c = cifar.subset(data, 8, 6, seed=1), cifar.subset(data, 8, 6, seed=1), cifar.subset(data, 8, 6, seed=2)
    assert torch.bincount(a.y_train).tolist() == [2, 2, 2, 2] and torch.bincount(a.y_test).tolist() == [2, 2, 1, 1]
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    with pytest.raises(ValueError, match="fewer than"):
        cifar.subset(data, 400, 4)


def test_fingerprint_follows_the_data_not_the_source():
    data = _tiny_imageset()
    moved = ImageSet(data.x_train.clone(), data.y_train, data.x_test, data.y_test, "elsewhere", data.synthetic)
    assert data.fingerprint() == moved.fingerprint() and len(data.fingerprint()) == 16
    assert cifar.subset(data, 40, 20, seed=0).fingerprint() != cifar.subset(data, 40, 20, seed=1).fingerprint()
    relabelled = ImageSet(data.x_train, data.y_train.flip(0), data.x_test, data.y_test, "tiny", True)
    assert relabelled.fingerprint() != data.fingerprint()


def test_split_validation():
    data = _tiny_imageset()
    train, val = cifar.split_validation(data, 12, seed=0)
    assert len(train.y_train) == 68 and len(val.y_test) == 12 and torch.bincount(val.y_test).tolist() == [3] * 4
    assert train.x_train is val.x_train and torch.equal(train.x_test, data.x_test)
    seen = {r.numpy().tobytes() for r in torch.cat([train.x_train, val.x_test])}
    assert len(seen) == 80 and seen == {r.numpy().tobytes() for r in data.x_train}  # a partition of train
    again, _ = cifar.split_validation(data, 12, seed=0)
    assert torch.equal(again.x_train, train.x_train)


# ---------------------------------------------------------------- augmentation


def _reference_crop_flip(x: torch.Tensor, oy: int, ox: int, flip: bool, pad: int) -> torch.Tensor:
    c, h, w = x.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
    padded[:, pad:pad + h, pad:pad + w] = x
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            out[:, i, j] = padded[:, oy + i, ox + (w - 1 - j if flip else j)]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_random_crop_flip_matches_reference(dtype):
    x = (torch.rand(64, 3, 8, 10, generator=torch.Generator().manual_seed(0)) * 255).to(dtype)
    out = random_crop_flip(x, torch.Generator().manual_seed(5), pad=2)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(5), pad=2))  # deterministic
    assert not torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(6), pad=2))
    g = torch.Generator().manual_seed(5)  # the same draws, in the documented order
    oy, ox = torch.randint(0, 5, (64,), generator=g), torch.randint(0, 5, (64,), generator=g)
    flip = torch.randint(0, 2, (64,), generator=g, dtype=torch.bool)
    for k in (0, 1, 17, 63):
        ref = _reference_crop_flip(x[k], int(oy[k]), int(ox[k]), bool(flip[k]), pad=2)
        assert torch.equal(out[k], ref), f"sample {k}"


def test_flip_rate_and_translation_only():
    x = torch.arange(4 * 4, dtype=torch.float32).reshape(1, 1, 4, 4).expand(2000, 3, 4, 4).contiguous()
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)  # no padding: only flips remain
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped ^ same).all()) and 0.45 < flipped.float().mean().item() < 0.55


def test_normalize_and_transform():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 1, 1, 3).expand(2, 2, 1, 3).contiguous()
    y = normalize(x, [0.2, 0.0], [0.5, 1.0])
    assert y.dtype == torch.float32
    assert torch.allclose(y[0, 0, 0], torch.tensor([-0.4, 0.0, 1.6]), atol=1e-6)
    assert torch.allclose(y[0, 1, 0], torch.tensor([0.0, 0.2, 1.0]), atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        normalize(x, [0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    batch = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    mean, std = cifar.channel_stats(batch)
    plain, aug = make_transform(mean, std, False, "cpu"), make_transform(mean, std, True, "cpu")
    assert torch.equal(plain(batch, torch.Generator().manual_seed(0)), normalize(batch, mean, std))
    a = aug(batch, torch.Generator().manual_seed(3))
    expected = normalize(random_crop_flip(batch, torch.Generator().manual_seed(3)), mean, std)
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32 and torch.equal(a, expected)


def test_transform_plugs_into_tensor_batches():
    from racecar_core.train import TensorBatches

    data = _tiny_imageset()
    mean, std = cifar.channel_stats(data.x_train)
    def batches() -> TensorBatches:
        return TensorBatches(data.x_train, data.y_train, 16, seed=0, transform=make_transform(mean, std, True, "cpu"))

    xb, xb2 = batches().batch(3)[0], batches().batch(3)[0]
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32 and torch.equal(xb, xb2)
