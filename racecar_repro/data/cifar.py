"""Image classification sets for the CIFAR ResNet experiment: CIFAR-10, CIFAR-100 and Fashion-MNIST (padded to 32x32).

Run ``python -m racecar_repro.data.cifar cifar10|cifar100|fashion_mnist`` to fetch or prepare one once.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from racecar_repro.data import ImageSet, MissingDataError
from racecar_repro.data.augment import channel_stats  # re-exported: stats of a training set
from racecar_repro.data.download import first_line, has_files, torchvision_splits
from racecar_repro.data.mnist import RAW_FILES
from racecar_core.files import atomic_write
from racecar_repro.paths import data_dir

NAMES = ("cifar10", "cifar100", "fashion_mnist")
SIZE = 32
# torchvision's folder and the files it reads (and md5-checks) for each CIFAR set.
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}
FETCH_HINT = {
    "cifar10": "make data-cifar (or: python -m racecar_repro.data.cifar cifar10)",
    "cifar100": "python -m racecar_repro.data.cifar cifar100",
    "fashion_mnist": "make data-fashion-mnist (i.e. apt-get install -y dataset-fashion-mnist)",
}
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
FASHION_FILES = RAW_FILES  # the same four IDX names as MNIST
SOURCE_NOTE = "SOURCE.txt"  # written beside the prepared Fashion-MNIST files: where they came from


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else data_dir()


def cifar_folder(name: str, root: str | Path | None = None) -> Path:
    """Folder torchvision reads for ``cifar10``/``cifar100``, e.g. ``<root>/cifar-10-batches-py``."""
    return _root(root) / CIFAR_FILES[name][0]


def _load_cifar(name: str, root: Path, download: bool) -> tuple[object, object, str]:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder, files = cifar_folder(name, root), CIFAR_FILES[name][1]
    if has_files(folder, files):
        try:
            tr, te = torchvision_splits(cls, root)
            return tr, te, f"torchvision {cls.__name__} from {folder} (md5-checked)"
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            if not download:
                raise MissingDataError(f"{name}: files in {folder} fail torchvision's md5 check ({err}); delete the "
                                       f"folder and run `{FETCH_HINT[name]}`") from err
    if download:
        try:
            tr, te = torchvision_splits(cls, root, download=True)
            return tr, te, f"torchvision {cls.__name__} downloaded to {folder} (md5-checked)"
        except Exception as err:  # network refused, DNS, HTTP, checksum, ...
            why = f"the download failed ({first_line(err)})"
    else:
        why = "download=False"
    raise MissingDataError(
        f"{name} not found: expected {', '.join(files)} in {folder}, and {why}. Fetch it with `{FETCH_HINT[name]}` on "
        f"a machine with network access (or unpack the python-version tarball from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html into {folder.parent}).")


def fashion_source_dir() -> Path:
    """Folder holding the four Fashion-MNIST ``*.gz`` files (env ``RACECAR_FASHION_MNIST_DIR`` or the Debian path)."""
    return Path(os.environ.get("RACECAR_FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST_DIR)).expanduser()


def fashion_raw_folder(root: str | Path | None = None) -> Path:
    """Folder torchvision reads: ``<root>/FashionMNIST/raw`` with the uncompressed IDX files."""
    return _root(root) / "FashionMNIST" / "raw"


def _has_fashion_source() -> bool:
    return has_files(fashion_source_dir(), [f"{f}.gz" for f in FASHION_FILES])


def prepare_fashion_mnist(root: str | Path | None = None) -> Path:
    """Decompress the four ``*.gz`` of ``fashion_source_dir()`` into ``<root>/FashionMNIST/raw``; return that."""
    src, raw = fashion_source_dir(), fashion_raw_folder(root)
    for f in FASHION_FILES:
        gz = src / f"{f}.gz"
        if not gz.is_file():
            raise MissingDataError(f"fashion_mnist: {gz} missing; run `{FETCH_HINT['fashion_mnist']}`")

        def _w(tmp: str, gz: Path = gz) -> None:
            with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)

        atomic_write(raw / f, _w)
    note = f"decompressed from {src.resolve()}/*.gz\n"
    atomic_write(raw / SOURCE_NOTE, lambda tmp: Path(tmp).write_text(note))
    return raw


def _load_fashion(root: Path, download: bool) -> tuple[object, object, str]:
    from torchvision.datasets import FashionMNIST

    raw = fashion_raw_folder(root)
    if not has_files(raw, FASHION_FILES) and _has_fashion_source():
        prepare_fashion_mnist(root)
    if has_files(raw, FASHION_FILES):
        note = raw / SOURCE_NOTE
        origin = note.read_text().strip() if note.is_file() else "files already there"
        tr, te = torchvision_splits(FashionMNIST, root)
        return tr, te, f"torchvision FashionMNIST from {raw} ({origin})"
    why = f"no {FASHION_FILES[0]}.gz etc. in {fashion_source_dir()}"
    if download:
        try:
            tr, te = torchvision_splits(FashionMNIST, root, download=True)
            return tr, te, f"torchvision FashionMNIST downloaded to {raw}"
        except Exception as err:
            why += f", and the download failed ({first_line(err)})"
    raise MissingDataError(f"fashion_mnist not found: expected {', '.join(FASHION_FILES)} in {raw}; {why}. "
                           f"Run `{FETCH_HINT['fashion_mnist']}`, then "
                           f"`python -m racecar_repro.data.cifar fashion_mnist`.")


def _pad_to(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"images are {h}x{w}, larger than {size}x{size}; crop or resize them first")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))  # zeros


def load_classification(name: str, root: str | Path | None = None, download: bool = True) -> ImageSet:
    """Load ``cifar10``/``cifar100``/``fashion_mnist`` as an ImageSet: x **uint8** ``[N,C,32,32]`` (0..255), y int64."""
    key = name.lower().replace("-", "_")
    if key not in NAMES:
        raise ValueError(f"unknown classification data set {name!r}; choose one of {', '.join(NAMES)}")
    if key == "fashion_mnist":
        tr, te, source = _load_fashion(_root(root), download)
        x = [_pad_to(ds.data.unsqueeze(1)).contiguous() for ds in (tr, te)]  # [N,1,28,28] -> [N,1,32,32], 2 px of 0
    else:
        tr, te, source = _load_cifar(key, _root(root), download)
        x = [torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous() for ds in (tr, te)]
    y = [torch.as_tensor(ds.targets, dtype=torch.int64) for ds in (tr, te)]
    return ImageSet(x[0], y[0], x[1], y[1], source=source, synthetic=False, classes=list(tr.classes))


def _take(x: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    sel = torch.as_tensor(idx, dtype=torch.long)
    return x[sel], y[sel]


def _balanced(y: torch.Tensor, n: int, seed: int, stream: int, classes: list[int]) -> np.ndarray:
    """Sorted indices of ``n`` samples, as equal per class as possible (first ``n % K`` classes get one more)."""
    y_np = y.cpu().numpy()
    k = len(classes)
    picks = []
    for j, c in enumerate(classes):
        want = n // k + (1 if j < n % k else 0)
        idx = np.flatnonzero(y_np == c)
        if len(idx) < want:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than the {want} asked for; lower n")
        picks.append(np.random.default_rng([int(seed), stream, int(c)]).choice(idx, size=want, replace=False))
    return np.sort(np.concatenate(picks))


def subset(data: ImageSet, n_train: int, n_test: int, seed: int = 0) -> ImageSet:
    """Class-balanced, seeded subset with ``n_train``/``n_test`` samples (original order kept) for quick runs."""
    classes = [int(c) for c in torch.unique(data.y_train)]
    xtr, ytr = _take(data.x_train, data.y_train, _balanced(data.y_train, n_train, seed, 0, classes))
    xte, yte = _take(data.x_test, data.y_test, _balanced(data.y_test, n_test, seed, 1, classes))
    src = f"{data.source}; class-balanced subset {n_train} train / {n_test} test (seed {seed})"
    return ImageSet(xtr, ytr, xte, yte, source=src, synthetic=data.synthetic, classes=data.classes)


def split_validation(data: ImageSet, n_val: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Hold out ``n_val`` balanced train images: (rest of train + real test, rest of train + the val images as test)."""
    if not 0 < n_val < len(data.y_train):
        raise ValueError(f"n_val={n_val} must be between 1 and {len(data.y_train) - 1}")
    val_idx = _balanced(data.y_train, n_val, seed, 2, [int(c) for c in torch.unique(data.y_train)])
    keep = np.setdiff1d(np.arange(len(data.y_train)), val_idx)
    xtr, ytr = _take(data.x_train, data.y_train, keep)
    xva, yva = _take(data.x_train, data.y_train, val_idx)
    note = f"; {len(keep)} train / {n_val} class-balanced val held out of train (seed {seed})"
    train = ImageSet(xtr, ytr, data.x_test, data.y_test, source=data.source + note + ", test = real test set",
                     synthetic=data.synthetic)
    val = ImageSet(xtr, ytr, xva, yva, source=data.source + note + ", test = the val images", synthetic=data.synthetic)
    return train, val


def check_available(name: str, root: str | Path | None = None) -> tuple[bool, str]:
    """Availability check for the registry: looks for files only, never downloads."""
    if name == "fashion_mnist":
        raw, src = fashion_raw_folder(root), fashion_source_dir()
        if has_files(raw, FASHION_FILES):
            return True, f"fashion_mnist: prepared files in {raw}"
        if _has_fashion_source():
            return True, f"fashion_mnist: gz files in {src}; prepared into {raw} on first use"
        return False, f"fashion_mnist: not in {raw} nor {src}; run `{FETCH_HINT[name]}`"
    if has_files(cifar_folder(name, root), CIFAR_FILES[name][1]):
        return True, f"{name}: files in {cifar_folder(name, root)} (md5s checked on load)"
    return False, f"{name}: not in {cifar_folder(name, root)}; run `{FETCH_HINT[name]}` with network access"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fetch or prepare one data set and say what happened."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=NAMES)
    ap.add_argument("--root", default=None, help="data root (default: RACECAR_DATA_DIR or <repo>/data)")
    ap.add_argument("--no-download", action="store_true", help="do not try the network")
    args = ap.parse_args(argv)
    try:
        data = load_classification(args.name, args.root, download=not args.no_download)
    except MissingDataError as err:
        print(f"error: {err}")
        return 1
    mean, std = channel_stats(data.x_train)
    print(f"{args.name} ready: train {tuple(data.x_train.shape)}, test {tuple(data.x_test.shape)}, "
          f"{len(torch.unique(data.y_train))} classes")
    print(f"source: {data.source}")
    print(f"train channel mean {[round(v, 4) for v in mean.tolist()]}, std {[round(v, 4) for v in std.tolist()]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
