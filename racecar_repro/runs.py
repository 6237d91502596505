"""Run folders keyed by the hash of their config and of the code that trains them: a finished run is loaded, never
trained twice, and never reused by code that could have computed it differently.

``runs/<experiment>/<hash>/`` holds ``config.json``, the loop's ``checkpoint.pt`` and logs while it trains, and
``result.pt`` (+ ``result.pt.sha256``, and ``result.json`` with its scalars) once it is done; the result records which
commit and code trained it (``trained_by``). All writes are atomic, results and checkpoints are checked against their
checksum and loaded without running pickled code, and a lock (``RunLock``, across machines) makes a second process
that asks for the same run wait for the first one's result instead of training it again.
"""
from __future__ import annotations

import ast
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

from racecar_repro import paths
from racecar_core.files import DamagedFile, load_checked, read_json, save_checked, set_aside, write_json

CACHE_VERSION = 3  # bump when a change makes old results wrong beyond what the code fingerprint sees (data files)

# The harness's machinery: how runs are stored, locked, scheduled, plotted and judged. A change to these modules
# cannot change a trained number, so the fingerprint neither covers them nor follows imports through them.
MACHINERY = ("racecar_core.files", "racecar_repro", "racecar_repro.runs", "racecar_repro.executors",
             "racecar_repro.paths", "racecar_repro.provenance", "racecar_repro.plotting",
             "racecar_repro.notebook_runner", "racecar_repro.verdicts", "racecar_repro.experiments.grid")
_PACKAGES = ("racecar_core", "racecar_repro")


def module_file(module: str) -> Path | None:
    """The source file of a project module (``racecar_repro.data.peak``), None for anything else."""
    if module.split(".")[0] not in _PACKAGES:
        return None
    base = paths.ROOT.joinpath(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imported(module: str, source: str) -> set[str]:
    """The project modules that ``source`` (of ``module``) imports anywhere, relative imports resolved."""
    package = module if module_file(module) and module_file(module).name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if module_file(f"{base}.{a.name}") else base for a in node.names]
        found |= {n for n in names if module_file(n)}
    return found


def code_modules(module: str) -> list[str]:
    """The code that can change the numbers of a run trained by ``module`` (an experiment's module): all of
    ``racecar_core`` (the method) and the project modules ``module`` imports, transitively (its data loaders,
    parameters, scores), each package's ``__init__`` with them; not the ``MACHINERY``, nor what only it imports."""
    core = [".".join(f.relative_to(paths.ROOT).with_suffix("").parts).removesuffix(".__init__")
            for f in sorted((paths.ROOT / "racecar_core").rglob("*.py"))]
    todo, seen = [module, *core], set()
    while todo:
        m = todo.pop()
        if m in seen or m in MACHINERY or module_file(m) is None:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]   # importing a.b.c runs a and a.b first
        todo += sorted(_imported(m, module_file(m).read_text()))
    return sorted(seen)


@lru_cache(maxsize=None)
def code_fingerprint(module: str | None = None) -> str:
    """A digest of the torch version and the source of ``code_modules(module)`` (no module: the core alone)."""
    files = [module_file(m) for m in code_modules(module or "racecar_core")]
    return paths.source_digest(files, extra=f"torch {torch.__version__}")


def config_hash(config: dict, code: str | None = None) -> str:
    """A short stable hash of a JSON-able config together with the fingerprint of the code that trains it
    (``code``: the experiment's module, ``code_fingerprint``)."""
    text = json.dumps({"cache_version": CACHE_VERSION, "code": code_fingerprint(code), **config}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_by(code: str | None = None) -> dict[str, Any]:
    """Which code trains a run now: commit, whether the code differed from it, code fingerprint (of ``code``, the
    experiment's module: ``code_fingerprint``), torch version."""
    from racecar_repro.provenance import git_state
    commit, dirty = git_state()
    return {"commit": commit, "git_dirty": dirty, "code_fingerprint": code_fingerprint(code),
            "torch_version": str(torch.__version__)}


def run_path(experiment: str, config: dict, code: str | None = None) -> Path:
    """The folder of the run with this config, trained by ``code`` (the experiment's module; not created)."""
    return paths.runs_dir() / experiment / config_hash(config, code)


def run_dir(experiment: str, config: dict, code: str | None = None) -> Path:
    """The folder of the run with this config and code (created, with its ``config.json``)."""
    d = run_path(experiment, config, code)
    if not (d / "config.json").exists():
        write_json(d / "config.json", config)
    return d


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
            with open(self.path, "x") as f:     # O_CREAT | O_EXCL
                f.write(self.token + "\n")
        except FileExistsError:
            return False
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


def cached_run(experiment: str, config: dict, train: Callable[[Path], dict], code: str | None = None) -> dict:
    """Return the stored result of this config and code (``code``: the experiment's module, ``code_fingerprint``), or
    call ``train(run_dir)``, store its result (with ``trained_by``) and return it. Two processes asking for the same
    run: one trains, the other waits and loads. A damaged result (truncated, corrupted, unreadable) is set aside with
    a ``DamagedRunWarning`` and the run trained again, resuming from its checkpoint. Inside a process group (one run
    on several processes, ``torchrun``) rank 0 takes the lock, looks for the result and tells the other replicas
    whether to train; only rank 0 writes."""
    from racecar_core import distributed
    if distributed.active() and distributed.rank() > 0:  # a replica of a run on several processes: rank 0 decides
        d = run_path(experiment, config, code)
        if not distributed.broadcast_object(None):
            return {"cached": True}
        return {**train(d), "cached": False}                 # trains beside rank 0, which alone writes the folder
    d = run_dir(experiment, config, code)
    result_path = d / "result.pt"
    with RunLock(d):
        result = _stored_result(result_path)
        if distributed.active():
            distributed.broadcast_object(result is None)     # whether the replicas train
        if result is not None:
            result["cached"] = True
            return result
        result = {**train(d), "trained_by": trained_by(code)}
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
