"""The tables of torchvision's classifier families that RR is tested on, made from the test itself
(tests/test_reverse_torchvision_zoo.py: ``ZOO`` and ``UNSUPPORTED``) and written between the ``zoo-table`` markers of
README.md (by status) and docs/reverse-pass.md (by family).

    python scripts/zoo_table.py            # rewrite both tables
    python scripts/zoo_table.py --check    # exit 1 when a table differs from the test
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {"README.md": "status", "docs/reverse-pass.md": "family"}
MARKERS = re.compile(r"(<!-- zoo-table -->\n).*?(<!-- /zoo-table -->)", re.S)


def _zoo() -> tuple[list, dict]:
    spec = importlib.util.spec_from_file_location("zoo", ROOT / "tests" / "test_reverse_torchvision_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ZOO, module.UNSUPPORTED


def table(kind: str) -> str:
    """``status``: one row for the families that train, one per reason they do not; ``family``: one row each."""
    zoo, unsupported = _zoo()
    if kind == "family":
        rows = [f"| {name} | {size}x{size} | " + (f"not yet: {unsupported[name]}" if name in unsupported else
                                                  "trains (two RR steps, every weight a finite gradient)") + " |"
                for name, size, _ in zoo]
        return "\n".join(["| smallest model of the family | input | RR |", "|---|---|---|", *rows]) + "\n"
    ok = [name for name, _, _ in zoo if name not in unsupported]
    reasons: dict[str, list[str]] = {}
    for name, why in unsupported.items():
        reasons.setdefault(why, []).append(name)
    rows = [f"| trains ({len(ok)} of {len(zoo)}) | {', '.join(ok)} | |",
            *[f"| not yet | {', '.join(names)} | {why} |" for why, names in reasons.items()]]
    return "\n".join(["| RR | torchvision families (smallest model of each) | why |", "|---|---|---|", *rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a table differs from the test")
    args = parser.parse_args(argv)
    stale = []
    for rel, kind in FILES.items():
        path = ROOT / rel
        text = path.read_text()
        if not MARKERS.search(text):
            raise SystemExit(f"racecar: {rel} has no <!-- zoo-table --> ... <!-- /zoo-table --> markers")
        new = MARKERS.sub(lambda m: m.group(1) + table(kind) + m.group(2), text)
        if new != text:
            stale.append(rel)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"racecar: the zoo table of {', '.join(stale)} differs from the test; run python scripts/zoo_table.py")
        return 1
    print(("checked: " if args.check else "written: ") + ", ".join(FILES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
