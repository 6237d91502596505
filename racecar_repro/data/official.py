"""The official SVD-test images of the paper (tum-pbs/racecar, folder SVD-example): fetch, verify by sha256, load.

Run ``python -m racecar_repro.data.official all`` (or ``make data-mnist-official`` / ``make data-peak-official``)
once; the files keep their relative paths under ``<data_dir>/racecar-official`` (``MNIST/0.png``, ``peak/0/0.png``).
``--from`` (make: ``FROM=``) takes a local folder laid out like SVD-example, or another URL base.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from racecar_repro.data import ImageSet, MissingDataError
from racecar_repro.data import download
from racecar_repro.data.download import ChecksumError  # noqa: F401 (raised by fetch_official)
from racecar_repro.data.peak import load_peak_folder, read_png
from racecar_core.files import sha256_file
from racecar_repro.paths import data_dir

OFFICIAL_URL = "https://raw.githubusercontent.com/tum-pbs/racecar/master/SVD-example"
DIRNAME = "racecar-official"
DATASETS = ("mnist", "peak")
SUBDIR = {"mnist": "MNIST", "peak": "peak"}
N_PEAK = 55  # images per peak class: 0..49 train, 50..54 test
N_PEAK_TRAIN = 50
TIMEOUT_S = 10.0  # per request: small files; offline or unreachable fails fast instead of hanging
FILES: dict[str, list[str]] = {
    "mnist": [f"MNIST/{d}.png" for d in range(10)] + [f"MNIST/{d}_test.png" for d in range(10)],
    "peak": [f"peak/{c}/{i}.png" for c in (0, 1) for i in range(N_PEAK)],
}
# sha256 of each file of tum-pbs/racecar SVD-example (relative path -> hex digest), kept in official_sha256.json.
SHA256: dict[str, str] = json.loads((Path(__file__).parent / "official_sha256.json").read_text())


def _hint(dataset: str) -> str:
    return (f"`make data-{dataset}-official` (or: python -m racecar_repro.data.official {dataset}); "
            f"add FROM=<folder or URL> (--from) to copy from a local SVD-example folder or a mirror")


def official_root() -> Path:
    """Where the official files live: ``<data_dir>/racecar-official`` (relative paths kept below it)."""
    return data_dir() / DIRNAME


def _expected(rel: str, checksums: Mapping[str, str]) -> str:
    if rel not in checksums:
        raise KeyError(f"racecar: no sha256 for {rel} in the checksum table")
    return checksums[rel].lower()


def _bad_files(dataset: str, root: Path, checksums: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(missing, wrong checksum) relative paths of ``dataset`` under ``root``."""
    if dataset not in FILES:
        raise ValueError(f"racecar: unknown official data set {dataset!r}; choose one of {list(FILES)}")
    missing, wrong = [], []
    for rel in FILES[dataset]:
        path = root / rel
        if not path.is_file():
            missing.append(rel)
        elif sha256_file(path) != _expected(rel, checksums):
            wrong.append(rel)
    return missing, wrong


def has_official(dataset: str, root: str | Path | None = None, checksums: Mapping[str, str] = SHA256) -> bool:
    """True when every file of ``dataset`` ("mnist" or "peak") is under ``root`` with the right sha256."""
    root = Path(root) if root is not None else official_root()
    return not any(_bad_files(dataset, root, checksums))


def fetch_official(dataset: str, source: str | Path | None = None, root: str | Path | None = None,
                   checksums: Mapping[str, str] = SHA256) -> Path:
    """Copy or download each missing or wrong file of ``dataset`` into ``root``, verify its sha256; return root."""
    root = Path(root) if root is not None else official_root()
    source = OFFICIAL_URL if source is None else source
    missing, wrong = _bad_files(dataset, root, checksums)
    todo = sorted(set(missing + wrong), key=FILES[dataset].index)
    if todo and "://" not in str(source) and not Path(source).expanduser().is_dir():
        raise MissingDataError(f"racecar: source folder {source} does not exist; give a folder laid out like "
                               f"SVD-example (MNIST/0.png, peak/0/0.png, ...) or a URL base. "
                               f"Retry with {_hint(dataset)}")
    for rel in todo:
        try:
            download.fetch_verified(source, rel, root / rel, _expected(rel, checksums), _hint(dataset), TIMEOUT_S)
        except OSError as err:
            n_ok = len(FILES[dataset]) - len(todo) + todo.index(rel)
            raise MissingDataError(
                f"racecar: could not fetch the official {dataset} images from {source}: {err}; "
                f"{n_ok} of {len(FILES[dataset])} files are in {root / SUBDIR[dataset]}. "
                f"Retry with {_hint(dataset)}") from err
    return root


def _require(dataset: str, root: Path, checksums: Mapping[str, str]) -> None:
    missing, wrong = _bad_files(dataset, root, checksums)
    if missing or wrong:
        parts = [f"{len(x)} {what} ({', '.join(x[:5])}{', ...' if len(x) > 5 else ''})"
                 for what, x in (("missing", missing), ("with a wrong sha256", wrong)) if x]
        raise MissingDataError(f"racecar: the official {dataset} images in {root / SUBDIR[dataset]} are incomplete: "
                               f"{' and '.join(parts)} of {len(FILES[dataset])} files. Fetch them with "
                               f"{_hint(dataset)}")


def load_official_mnist(root: str | Path | None = None, checksums: Mapping[str, str] = SHA256) -> ImageSet:
    """The official SVD-test MNIST digits: one train (``d.png``) and one test (``d_test.png``) image per digit."""
    root = Path(root) if root is not None else official_root()
    _require("mnist", root, checksums)
    folder = root / SUBDIR["mnist"]
    x = {s: torch.from_numpy(np.stack([read_png(folder / f"{d}{s}.png") for d in range(10)])).float().unsqueeze(1)
         for s in ("", "_test")}
    y = torch.arange(10, dtype=torch.int64)
    return ImageSet(x[""], y, x["_test"], y.clone(), synthetic=False,
                    source=("official SVD-test MNIST images (tum-pbs/racecar SVD-example), checksums verified, "
                            f"from {folder}"))


def load_official_peak(root: str | Path | None = None, checksums: Mapping[str, str] = SHA256) -> ImageSet:
    """The official peak images (RGBA, channel 0): per class 0..49 train, 50..54 test."""
    root = Path(root) if root is not None else official_root()
    _require("peak", root, checksums)
    folder = root / SUBDIR["peak"]
    data = load_peak_folder(folder, n_train_per_class=N_PEAK_TRAIN)
    data.synthetic = False
    data.source = f"official peak images (tum-pbs/racecar SVD-example), checksums verified, from {folder}"
    return data


def check_available(dataset: str, root: str | Path | None = None) -> tuple[bool, str]:
    """Availability check for the registry: all official files present with the right sha256 (never downloads)."""
    root = Path(root) if root is not None else official_root()
    name = f"{dataset}_official"
    if has_official(dataset, root):
        return True, f"{name}: {len(FILES[dataset])} official files verified in {root / SUBDIR[dataset]}"
    return False, f"{name}: not (all) in {root / SUBDIR[dataset]}; run {_hint(dataset)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fetch and verify the official MNIST and/or peak images, and say what was done."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=[*DATASETS, "all"])
    ap.add_argument("--from", dest="source", default=None, help="URL base (http, https, file) or a local folder "
                    f"laid out like SVD-example (default {OFFICIAL_URL})")
    ap.add_argument("--root", default=None, help="where to put the files (default: <data_dir>/racecar-official)")
    args = ap.parse_args(argv)
    root = Path(args.root) if args.root else official_root()
    for dataset in DATASETS if args.dataset == "all" else (args.dataset,):
        n_bad = sum(map(len, _bad_files(dataset, root, SHA256)))
        try:
            fetch_official(dataset, args.source, root, checksums=SHA256)  # the table as it is now
        except (MissingDataError, ChecksumError) as err:
            print(err, file=sys.stderr)
            return 1
        n = len(FILES[dataset])
        print(f"official {dataset}: {n} files verified (sha256) in {root / SUBDIR[dataset]}; "
              f"{n_bad} fetched from {args.source or OFFICIAL_URL}, {n - n_bad} already present")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
