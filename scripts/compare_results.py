"""Compare the ``results.json`` of two figure folders: did a change of code change any number?

    python scripts/compare_results.py BEFORE_FIGURES AFTER_FIGURES

Every ``<notebook>/results.json`` under BEFORE must exist under AFTER with every value equal (floats to a relative
1e-9), except what may differ between two runs of the same code: the provenance, wall-clock times (keys ending in
``time_s``) and which commit trained a run (``trained_by``). Keys that only AFTER has are listed, not failed.
Exit status 0 when nothing changed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

IGNORED_KEYS = ("provenance", "trained_by")
IGNORED_SUFFIX = "time_s"


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIX)


def differences(before: Any, after: Any, where: str = "", rel: float = 1e-9) -> Iterator[str]:
    """Every place where ``after`` differs from ``before`` (``+ path`` for keys only ``after`` has)."""
    if isinstance(before, dict) and isinstance(after, dict):
        for k in before:
            if _ignored(k):
                continue
            if k not in after:
                yield f"- {where}/{k}: missing after"
            else:
                yield from differences(before[k], after[k], f"{where}/{k}", rel)
        for k in after:
            if k not in before and not _ignored(k):
                yield f"+ {where}/{k}: new"
    elif isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            yield f"! {where}: {len(before)} items before, {len(after)} after"
        else:
            for i, (b, a) in enumerate(zip(before, after)):
                yield from differences(b, a, f"{where}[{i}]", rel)
    elif isinstance(before, float) or isinstance(after, float):
        b, a = float(before), float(after) if isinstance(after, (int, float)) else math.nan
        same = (math.isnan(b) and math.isnan(a)) or math.isclose(b, a, rel_tol=rel, abs_tol=1e-12)
        if not same:
            yield f"! {where}: {before!r} -> {after!r}"
    elif before != after:
        yield f"! {where}: {before!r} -> {after!r}"


def compare(before_dir: Path, after_dir: Path) -> tuple[list[str], list[str]]:
    """(changes, additions) over every ``*/results.json`` of ``before_dir``."""
    changes, additions = [], []
    found = sorted(Path(before_dir).glob("*/results.json"))
    if not found:
        changes.append(f"! no */results.json under {before_dir}")
    for path in found:
        name = path.parent.name
        other = Path(after_dir) / name / "results.json"
        if not other.exists():
            changes.append(f"! {name}: no results.json after")
            continue
        for d in differences(json.loads(path.read_text()), json.loads(other.read_text()), name):
            (additions if d.startswith("+") else changes).append(d)
    return changes, additions


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    changes, additions = compare(args.before, args.after)
    for line in additions + changes:
        print(line)
    n = len(list(Path(args.before).glob("*/results.json")))
    print(f"{n} results.json compared: {len(changes)} changed value(s), {len(additions)} new key(s)")
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
