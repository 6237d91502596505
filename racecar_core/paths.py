"""Where the project keeps things: repository root, data, runs, figures (each overridable by env var)."""
from __future__ import annotations

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
