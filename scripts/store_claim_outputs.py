"""Store each notebook's claim output (smoke profile, sanitised) for nbval to compare against.

    python scripts/store_claim_outputs.py [NOTEBOOK ...]      (default: every notebooks/*.ipynb)

Runs each notebook in the smoke profile (papermill; runs and figures in a temporary folder), takes what its last code
cell, the claim, prints, passes it through ``notebooks/nbval-sanitize.cfg`` (numbers, verdicts and paths become
placeholders, so the stored text holds nothing machine-specific) and stores it in the committed notebook, with the
tag ``nbval-check-output`` on that cell and ``nbval-ignore-output`` on every other code cell. ``make test`` and a bare
``pytest --nbval notebooks/`` then compare the claim cell's new output with it. Re-run after changing what a claim
prints.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SANITIZER = ROOT / "notebooks" / "nbval-sanitize.cfg"
CHECK, IGNORE = "nbval-check-output", "nbval-ignore-output"


def patterns(path: Path = SANITIZER) -> list[tuple[str, str]]:
    """The (regex, replacement) pairs of a sanitizer file, read as nbval reads them."""
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", path.read_text(), flags=re.MULTILINE)


def sanitize(text: str, pairs: Sequence[tuple[str, str]] | None = None) -> str:
    """``text`` with every pattern replaced, in the file's order (what nbval does to both sides)."""
    for regex, replace in patterns() if pairs is None else pairs:
        text = re.sub(regex, replace, text)
    return text


def claim_outputs(executed: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The claim cell's printed output, sanitised, as one stdout stream (nbval compares the joined text)."""
    cell = [c for c in executed.cells if c.cell_type == "code"][-1]
    kinds = {o.output_type for o in cell.outputs}
    if kinds - {"stream"}:
        raise ValueError(f"the claim cell should only print (found {sorted(kinds)}): display tables in an earlier cell")
    text = "".join(o.text for o in cell.outputs if o.name == "stdout")
    return [nbformat.v4.new_output("stream", name="stdout", text=sanitize(text))]


def tag(nb: nbformat.NotebookNode, outputs: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """A copy of ``nb`` with ``outputs`` stored in its last code cell, tagged ``nbval-check-output``, and every other
    code cell tagged ``nbval-ignore-output`` (other tags kept, outputs of other cells cleared); the claim cell's
    execution count is its place among the code cells."""
    nb = copy.deepcopy(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        tags = [t for t in c.metadata.get("tags", []) if t not in (CHECK, IGNORE)]
        c.metadata["tags"] = tags + [CHECK if c is code[-1] else IGNORE]
        c.outputs, c.execution_count = [], None
    code[-1].outputs = outputs
    code[-1].execution_count = len(code)     # nbval compares only cells stored as run
    return nb


def store(path: Path, workdir: Path) -> str:
    """Run ``path`` in the smoke profile and store its sanitised claim output; returns the stored text."""
    import papermill
    from racecar_repro.notebook_runner import kernel_env, temporary_env
    out = workdir / path.name
    with temporary_env(kernel_env("smoke", RACECAR_RUNS_DIR=str(workdir / "runs"),
                                  RACECAR_FIGURES_DIR=str(workdir / "figures"))):
        papermill.execute_notebook(str(path), str(out), kernel_name="python3", cwd=str(path.parent),
                                   progress_bar=False)
    outputs = claim_outputs(nbformat.read(out, as_version=4))
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.write(tag(nb, outputs), path)
    return outputs[0].text


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    with tempfile.TemporaryDirectory(prefix="racecar-claims-") as tmp:
        for path in paths:
            text = store(path.resolve(), Path(tmp))
            print(f"{path.name}: stored\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
