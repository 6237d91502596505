#!/usr/bin/env python
"""Side-by-side statistics of the peak training images: the official set vs the generated replica.

The replica is ``make_peak(n, n_test, seed, cache=False)`` for each ``--seed`` (mean and spread over the seeds); the
official set (or any folder in the same ``<class>/<i>.png`` layout, e.g. an older replica written with
``python -m racecar_repro.data.peak --out DIR``) is read with ``load_peak_folder``. The statistics are those of
``racecar_repro.data.peak.image_statistics`` on the training images (the first ``--n-train`` per class).
Example: ``python scripts/peak_statistics.py --official shared/reference/official-data/peak --seed 0 1 2 3 4``;
without ``--official`` it prints the replica's alone.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from racecar_repro.data.peak import GENERATOR_VERSION, image_statistics, load_peak_folder, make_peak


def folder_statistics(folder: str | Path, n_train_per_class: int = 50) -> dict[str, float]:
    """``image_statistics`` of the training images of a folder in the official layout."""
    data = load_peak_folder(folder, n_train_per_class=n_train_per_class)
    return image_statistics(data.x_train, data.y_train)


def replica_statistics(seeds: Sequence[int], n_train_per_class: int = 50,
                       n_test_per_class: int = 5) -> list[dict[str, float]]:
    """``image_statistics`` of the training images of the replica, one dict per seed."""
    out = []
    for seed in seeds:
        data = make_peak(n_train_per_class, n_test_per_class, seed, cache=False)
        out.append(image_statistics(data.x_train, data.y_train))
    return out


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def format_table(columns: dict[str, dict[str, float]], spread: dict[str, float] | None = None,
                 reference: str | None = None) -> str:
    """A text table: one row per statistic, one column per set; ``spread`` (sd over seeds) is shown after the
    replica column, and ``reference`` adds the replica's relative deviation from that column."""
    names = list(columns)
    keys: list[str] = []
    for col in columns.values():
        keys += [k for k in col if k not in keys]
    head = [f"{'statistic':28s}"] + [f"{n:>18s}" for n in names]
    if spread is not None:
        head.append(f"{'replica sd':>11s}")
    if reference is not None:
        head.append(f"{'replica/' + reference:>18s}")
    lines = [" ".join(head), "-" * len(" ".join(head))]
    for k in keys:
        row = [f"{k:28s}"] + [f"{_fmt(columns[n].get(k, float('nan'))):>18s}" for n in names]
        if spread is not None:
            row.append(f"{_fmt(spread.get(k, float('nan'))):>11s}")
        if reference is not None:
            ref, rep = columns[reference].get(k), columns["replica"].get(k)
            ratio = rep / ref if ref not in (None, 0) and rep is not None else float("nan")
            row.append(f"{_fmt(ratio):>18s}")
        lines.append(" ".join(row))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", default=None, help="folder of the official peak PNGs (<class>/<i>.png)")
    ap.add_argument("--folder", action="append", default=[], metavar="LABEL=PATH",
                    help="another folder in the same layout to show as a column (repeatable)")
    ap.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="replica seeds (mean over them)")
    ap.add_argument("--n-train", type=int, default=50, help="training images per class")
    ap.add_argument("--n-test", type=int, default=5, help="test images per class (replica)")
    ap.add_argument("--json", default=None, help="also write all numbers (per seed too) to this JSON file")
    args = ap.parse_args(argv)

    columns: dict[str, dict[str, float]] = {}
    if args.official:
        columns["official"] = folder_statistics(args.official, args.n_train)
    for item in args.folder:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--folder wants LABEL=PATH, got {item!r}")
        columns[label] = folder_statistics(path, args.n_train)
    per_seed = replica_statistics(args.seed, args.n_train, args.n_test)
    keys = list(per_seed[0])
    columns["replica"] = {k: float(np.mean([s[k] for s in per_seed])) for k in keys}
    spread = {k: float(np.std([s[k] for s in per_seed])) for k in keys} if len(per_seed) > 1 else None
    print(f"peak training images ({args.n_train} per class); replica: generator v{GENERATOR_VERSION}, "
          f"mean over seeds {args.seed}")
    print(format_table(columns, spread, reference="official" if args.official else None))
    if args.json:
        Path(args.json).write_text(json.dumps({"columns": columns, "replica_per_seed": dict(zip(map(str, args.seed),
                                                                                                per_seed))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
