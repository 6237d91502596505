"""Run folders keyed by the hash of their config and of the code that trains them: a finished run is loaded, never
trained twice, and never reused by code that could have computed it differently.

``runs/<experiment>/<hash>/`` holds ``config.json``, the loop's ``checkpoint.pt`` and logs while it trains, and
``result.pt`` (+ ``result.pt.sha256``, and ``result.json`` with its scalars) once it is done; the result records which
commit and code trained it (``trained_by``). All writes are atomic, results and checkpoints are checked against their
checksum and loaded without running pickled code, and a file lock makes a second process that asks for the same run
wait for the first one's result instead of training it again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import paths
from .files import DamagedFile, load_checked, read_json, save_checked, set_aside, write_json

CACHE_VERSION = 3  # bump when a change makes old results wrong beyond what the code fingerprint sees (data files)
# Modules that only present results: a change to them cannot change a trained number, so it keeps the cache.
PRESENTATION_MODULES = ("plotting.py", "notebook_runner.py", "provenance.py")


def fingerprinted_files(root: Path | None = None) -> list[Path]:
    """The library's source files that can change a run's numbers: every ``racecar_core/**/*.py`` except the
    presentation modules and the figure modules ``experiments/*_figures.py``."""
    pkg = Path(root) if root is not None else Path(__file__).resolve().parent
    return sorted(p for p in pkg.rglob("*.py")
                  if p.name not in PRESENTATION_MODULES and not p.name.endswith("_figures.py"))


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A digest of the source files that train and evaluate runs (``fingerprinted_files``) and the torch version."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256(f"torch {torch.__version__}".encode())
    for f in fingerprinted_files(pkg):
        h.update(b"\0" + str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-able config together with the code fingerprint."""
    text = json.dumps({"cache_version": CACHE_VERSION, "code": code_fingerprint(), **config}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_by() -> dict[str, Any]:
    """Which code trains a run now: commit, whether the code differed from it, code fingerprint, torch version."""
    from .provenance import git_state
    commit, dirty = git_state()
    return {"commit": commit, "git_dirty": dirty, "code_fingerprint": code_fingerprint(),
            "torch_version": str(torch.__version__)}


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


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` (blocking); without ``fcntl`` (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class DamagedRunWarning(RuntimeWarning):
    """A run's stored file was damaged and the run is trained (or resumed) again."""


def cached_run(experiment: str, config: dict, train: Callable[[Path], dict]) -> dict:
    """Return the stored result of this config and code, or call ``train(run_dir)``, store its result (with
    ``trained_by``) and return it. Two processes asking for the same run: one trains, the other waits and loads.
    The result is stored with its checksum and loaded as plain data (``files.load_checked``: no pickled code runs);
    a damaged one (truncated, corrupted, unreadable) is set aside with a ``DamagedRunWarning`` and the run trained
    again, resuming from its checkpoint."""
    d = run_dir(experiment, config)
    result_path = d / "result.pt"
    with _locked(d):
        if result_path.exists():
            try:
                result = load_checked(result_path)
            except DamagedFile as exc:
                moved = set_aside(result_path)
                warnings.warn(f"racecar: {exc}; set aside as {moved.name}, training the run again (from its "
                              "checkpoint when that one is sound)", DamagedRunWarning, stacklevel=2)
            else:
                result["cached"] = True
                return result
        result = {**train(d), "trained_by": trained_by()}
        save_checked(result_path, result)
        write_json(d / "result.json", _scalars(result))
    result["cached"] = False
    return result


def load_config(run_path: str | Path) -> dict:
    """The config a run folder was made for."""
    return read_json(Path(run_path) / "config.json")
