"""Run folders keyed by the hash of their config and of the code that trains them: a finished run is loaded, never
trained twice, and never reused by code that could have computed it differently.

``runs/<experiment>/<hash>/`` holds ``config.json``, the loop's ``checkpoint.pt`` and logs while it trains, and
``result.pt`` (+ ``result.pt.sha256``, and ``result.json`` with its scalars) once it is done; the result records which
commit and code trained it (``trained_by``). All writes are atomic, results and checkpoints are checked against their
checksum and loaded without running pickled code, and a lock (``RunLock``: a file created exclusively, with a heartbeat,
that holds across machines on a shared filesystem and is broken when its owner is gone) makes a second process that
asks for the same run wait for the first one's result instead of training it again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

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


def run_path(experiment: str, config: dict) -> Path:
    """The folder of the run with this config (not created)."""
    return paths.runs_dir() / experiment / config_hash(config)


def run_dir(experiment: str, config: dict) -> Path:
    """The folder of the run with this config (created, with its ``config.json``)."""
    d = run_path(experiment, config)
    if not (d / "config.json").exists():
        write_json(d / "config.json", config)
    return d


def is_done(experiment: str, config: dict) -> bool:
    """Whether a finished result exists for this config."""
    return (run_path(experiment, config) / "result.pt").exists()


def _scalars(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: s for k, v in obj.items() if (s := _scalars(v)) is not None}
    if isinstance(obj, (int, float, str, bool)):
        return obj
    if isinstance(obj, list) and all(isinstance(v, (int, float, str, bool)) for v in obj):
        return obj
    return None


class LockTimeout(TimeoutError):
    """A run folder stayed locked by a live owner for longer than the caller would wait."""


class RunLock:
    """An exclusive lock on a run folder that holds across machines on a shared filesystem.

    The lock is the file ``<folder>/.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on
    NFS v3 and later; no ``flock``/``lockf``, which NFS clients may not share across machines); it names its owner
    (host, pid, a random token). While it is held a daemon thread refreshes its modification time every
    ``heartbeat`` seconds. Another process waits (polling every ``poll`` seconds, ``timeout`` at most: then
    ``LockTimeout``) and breaks the lock when its owner is gone: on the same host, when the pid no longer runs; on any
    host, when the heartbeat is older than ``stale_after`` seconds (a job killed by the scheduler, a node that died).
    Breaking renames the file aside (``.lock.stale-<time>``), which only one waiter can do, and says so.
    """

    def __init__(self, folder: Path, heartbeat: float = 30.0, stale_after: float = 600.0, poll: float = 0.2,
                 timeout: float | None = None, report: Callable[[str], None] | None = None) -> None:
        self.path = Path(folder) / ".lock"
        self.heartbeat, self.stale_after, self.poll, self.timeout = heartbeat, stale_after, poll, timeout
        self.report = report or (lambda msg: warnings.warn(msg, StaleLockWarning, stacklevel=3))
        self.token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- owner
    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self.token + "\n")
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        while not self._try_create():
            self._break_if_stale()
            if self.timeout is not None and time.monotonic() - start > self.timeout:
                raise LockTimeout(f"racecar: {self.path.parent} is locked by {self.owner() or 'an unknown owner'} "
                                  f"(heartbeat {self.age():.0f} s ago); waited {self.timeout:.0f} s")
            time.sleep(self.poll)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="racecar-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.owner() == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    # ---------------------------------------------------------------- waiters
    def owner(self) -> str | None:
        """The lock file's owner line (``host pid token``), or None when there is none."""
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def age(self) -> float:
        """Seconds since the owner's last heartbeat (0 when there is no lock)."""
        try:
            return max(0.0, time.time() - self.path.stat().st_mtime)
        except OSError:
            return 0.0

    def stale_reason(self, owner: str | None) -> str | None:
        """Why the current lock is stale (its owner is gone), or None while its owner may be alive."""
        if owner is None:
            return None
        parts = owner.split()
        host, pid = (parts[0], int(parts[1])) if len(parts) >= 2 and parts[1].isdigit() else ("", -1)
        if host == socket.gethostname() and pid > 0 and not _pid_alive(pid):
            return f"its owner {host}:{pid} is no longer running"
        age = self.age()
        if age > self.stale_after:
            return (f"its owner {host or '?'}:{pid} has not refreshed it for {age:.0f} s "
                    f"(limit {self.stale_after:.0f} s)")
        return None

    def _break_if_stale(self) -> None:
        owner = self.owner()
        reason = self.stale_reason(owner)
        if reason is None:
            return
        aside = self.path.with_name(f".lock.stale-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:         # another waiter broke it first
            return
        moved = aside.read_text().strip() if aside.exists() else None
        if moved != owner:                # a new owner took the lock between our look and the rename: give it back
            with contextlib.suppress(FileExistsError, FileNotFoundError):
                os.link(aside, self.path)
                os.remove(aside)
            return
        self.report(f"racecar: broke the lock of {self.path.parent}: {reason}; its run resumes from its checkpoint")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StaleLockWarning(RuntimeWarning):
    """A run folder's lock was left by an owner that is gone, and was broken."""


class DamagedRunWarning(RuntimeWarning):
    """A run's stored file was damaged and the run is trained (or resumed) again."""


def cached_run(experiment: str, config: dict, train: Callable[[Path], dict]) -> dict:
    """Return the stored result of this config and code, or call ``train(run_dir)``, store its result (with
    ``trained_by``) and return it. Two processes asking for the same run: one trains, the other waits and loads.
    The result is stored with its checksum and loaded as plain data (``files.load_checked``: no pickled code runs);
    a damaged one (truncated, corrupted, unreadable) is set aside with a ``DamagedRunWarning`` and the run trained
    again, resuming from its checkpoint. Inside a process group (one run on several processes, ``torchrun``) rank 0
    takes the lock, looks for the result and tells the other replicas whether to train; only rank 0 writes."""
    from . import distributed
    if distributed.active() and distributed.rank() > 0:  # a replica of a run on several processes: rank 0 decides
        d = run_path(experiment, config)
        if not distributed.broadcast_object(None):
            return {"cached": True}
        return {**train(d), "cached": False}                 # trains beside rank 0, which alone writes the folder
    d = run_dir(experiment, config)
    result_path = d / "result.pt"
    with RunLock(d):
        result = _stored_result(result_path)
        if distributed.active():
            distributed.broadcast_object(result is None)     # whether the replicas train
        if result is not None:
            result["cached"] = True
            return result
        result = {**train(d), "trained_by": trained_by()}
        save_checked(result_path, result)
        write_json(d / "result.json", _scalars(result))
    result["cached"] = False
    return result


def _stored_result(path: Path) -> dict | None:
    """The finished result at ``path``; None when there is none, or when it was damaged (then set aside, warned)."""
    if not path.exists():
        return None
    try:
        return load_checked(path)
    except DamagedFile as exc:
        moved = set_aside(path)
        warnings.warn(f"racecar: {exc}; set aside as {moved.name}, training the run again (from its checkpoint "
                      "when that one is sound)", DamagedRunWarning, stacklevel=3)
        return None


def load_config(run_path: str | Path) -> dict:
    """The config a run folder was made for."""
    return read_json(Path(run_path) / "config.json")
