"""Atomic file writes: a result file is either complete or absent, never half-written."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    return _write_then_rename(path, write)


def _write_then_rename(path: str | Path, write: Callable[[str], None]) -> Path:
    """``atomic_write``'s work (``save_checked`` calls it directly for the data file and ``atomic_write`` for the
    checksum file, so that each step can be interrupted on its own in the tests)."""
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
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and hasattr(x, "numel") and x.numel() == 1:  # 0-d torch tensor
        return x.item()
    if hasattr(x, "tolist"):   # numpy arrays and scalars, torch tensors of several values
        return x.tolist()
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return str(x)
    return x


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy/torch values converted), atomically."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------ checked tensor files (run results, checkpoints)
class DamagedFile(RuntimeError):
    """A run file that cannot be trusted: truncated, corrupted, without its checksum, or not loadable as plain data
    (tensors, numbers, strings, lists and dicts)."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksums(side: Path) -> list[tuple[str, int]]:
    """The ``(sha256, size)`` lines of a checksum file; ValueError when it is unreadable."""
    out = [(want, int(size)) for want, size in (line.split() for line in side.read_text().splitlines())]
    if not out:
        raise ValueError("empty")
    return out


def save_checked(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, with its size and SHA-256 in ``<path>.sha256``; a file whose
    checksum file is missing or disagrees is not trusted. Writing never leaves a window in which a sound file looks
    damaged: the checksum file first lists the new checksum (and, when a file is replaced, the checksum of the one in
    place), then the new file is renamed into place, then the checksum file keeps the new one only; a job killed at
    any point, on the first save or a later one, even again after an interrupted save, leaves the old file or the
    new one, each with its checksum."""
    import torch
    path = Path(path)
    side = _sidecar(path)

    def lines(*sums: tuple[str, int]) -> Callable[[str], None]:
        return lambda tmp: Path(tmp).write_text("".join(f"{s} {n}\n" for s, n in sums))

    new: list[tuple[str, int]] = []

    def write(tmp: str) -> None:   # the new file, and its checksum listed before the rename
        torch.save(obj, tmp)
        new.append((sha256_file(tmp), os.path.getsize(tmp)))
        try:
            old = _checksums(side) if path.exists() and side.is_file() else []
        except (OSError, ValueError):
            old = []
        if len(old) > 1:     # an earlier save was interrupted: keep the line of the file actually in place
            current = (sha256_file(path), os.path.getsize(path))
            old = [s for s in old if s == current]
        atomic_write(side, lines(new[0], *old))

    _write_then_rename(path, write)
    atomic_write(side, lines(new[0]))
    return path


def load_checked(path: str | Path, map_location: Any = None) -> Any:
    """What ``save_checked`` wrote, after checking its size and checksum, loaded with ``weights_only=True`` (no
    pickled code is run: a run folder on a shared filesystem may be writable by others). Anything else raises
    ``DamagedFile`` with what is wrong."""
    import pickle

    import torch
    path = Path(path)
    side = _sidecar(path)
    if not side.is_file():
        raise DamagedFile(f"{path}: no checksum file {side.name} (a job killed between the two writes, or a file "
                          "written by older code)")
    try:
        sums = _checksums(side)
    except ValueError:
        raise DamagedFile(f"{path}: its checksum file {side.name} is unreadable") from None
    actual = path.stat().st_size
    if all(actual != n for _, n in sums):
        raise DamagedFile(f"{path}: truncated or grown, {actual} bytes where "
                          f"{' or '.join(str(n) for _, n in sums)} were written")
    if sha256_file(path) not in {s for s, n in sums if n == actual}:
        raise DamagedFile(f"{path}: SHA-256 differs from the one written with it (corrupted or half-synced)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DamagedFile(f"{path}: cannot be loaded as plain data ({type(exc).__name__}: {first})") from None


def set_aside(path: str | Path) -> Path:
    """Rename a damaged ``path`` (and its checksum file) to ``<name>.damaged-<UTC time>``, kept for inspection;
    returns the new path."""
    import time
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    if path.exists():
        os.replace(path, dest)
    side = _sidecar(path)
    if side.exists():
        os.replace(side, _sidecar(dest))
    return dest
