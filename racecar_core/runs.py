"""Run folders keyed by the hash of their config: a finished run is loaded, never trained twice.

``runs/<experiment>/<hash>/`` holds ``config.json``, the loop's ``checkpoint.pt`` and logs while it trains, and
``result.pt`` (+ ``result.json`` with its scalars) once it is done. All writes are atomic.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch

from . import paths
from .io import atomic_write, read_json, write_json

CACHE_VERSION = 2  # bump when a change to the code makes old results wrong (2: SRIP schedule, RNG streams)


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-able config."""
    text = json.dumps({"cache_version": CACHE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_dir(experiment: str, config: dict) -> Path:
    """The folder of the run with this config (created, with its ``config.json``)."""
    d = paths.runs_dir() / experiment / config_hash(config)
    if not (d / "config.json").exists():
        write_json(d / "config.json", config)
    return d


def is_done(experiment: str, config: dict) -> bool:
    """Whether a finished result exists for this config."""
    return (paths.runs_dir() / experiment / config_hash(config) / "result.pt").exists()


def _scalars(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: s for k, v in obj.items() if (s := _scalars(v)) is not None}
    if isinstance(obj, (int, float, str, bool)):
        return obj
    if isinstance(obj, list) and all(isinstance(v, (int, float, str, bool)) for v in obj):
        return obj
    return None


def cached_run(experiment: str, config: dict, train: Callable[[Path], dict]) -> dict:
    """Return the stored result of this config, or call ``train(run_dir)``, store its result and return it."""
    d = run_dir(experiment, config)
    result_path = d / "result.pt"
    if result_path.exists():
        result = torch.load(result_path, weights_only=False)
        result["cached"] = True
        return result
    result = train(d)
    atomic_write(result_path, lambda t: torch.save(result, t))
    write_json(d / "result.json", _scalars(result))
    result["cached"] = False
    return result


def load_config(run_path: str | Path) -> dict:
    """The config a run folder was made for."""
    return read_json(Path(run_path) / "config.json")
