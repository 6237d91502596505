"""Where the project keeps things: repository root, data, runs, figures (each overridable by env var)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dir(env: str, default: Path) -> Path:
    return Path(os.environ.get(env, str(default))).expanduser().resolve()


def data_dir() -> Path:
    """Data sets live here (``RACECAR_DATA_DIR``, default ``<repo>/data``)."""
    return _dir("RACECAR_DATA_DIR", ROOT / "data")


def runs_dir() -> Path:
    """Training runs, keyed by config hash (``RACECAR_RUNS_DIR``, default ``<repo>/runs``)."""
    return _dir("RACECAR_RUNS_DIR", ROOT / "runs")


def figures_dir() -> Path:
    """Figures written by the notebooks (``RACECAR_FIGURES_DIR``, default ``<repo>/figures``)."""
    return _dir("RACECAR_FIGURES_DIR", ROOT / "figures")


def source_digest(files: list[Path], extra: str = "", base: Path = ROOT) -> str:
    """The project's one source hash: sha256 over ``extra`` and each file's path (relative to ``base``, the
    repository; its name when outside) and bytes, 16 hex digits; the run cache (``runs.code_fingerprint``) and the
    notebook runner both use it."""
    h = hashlib.sha256(extra.encode())
    for f in sorted(Path(f) for f in files):
        name = f.relative_to(base).as_posix() if f.is_relative_to(base) else f.name
        h.update(b"\0" + name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]
