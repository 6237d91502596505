"""Atomic file writes: a result file is either complete or absent, never half-written."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results should be readable like any other file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and hasattr(x, "numel") and x.numel() == 1:  # 0-d torch tensor
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return str(x)
    return x


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy/torch values converted), atomically."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False)

    def _w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text + "\n")

    return atomic_write(path, _w)


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)
