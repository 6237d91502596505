"""Provenance records: which code, environment and parameters produced a result or figure."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from racecar_core import __version__

from racecar_repro import paths


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: Path | None = None) -> tuple[str, bool | str]:
    """Return (short commit hash, dirty flag) of ``root``; ("unknown", "unknown") without git. Changes under
    ``figures/`` (what the notebooks write) do not count: the flag says whether the *code* differs from the commit."""
    root = Path(root) if root is not None else paths.ROOT
    commit = _git(["rev-parse", "--short", "HEAD"], root)
    if not commit:
        return "unknown", "unknown"
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".", ":!figures"], root)
    return commit, ("unknown" if status is None else bool(status))


@lru_cache(maxsize=1)
def _environment() -> dict[str, str]:
    try:
        import torch
        torch_version = str(torch.__version__)
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # torch missing or CUDA query failing: still record something
        torch_version, device = "unavailable", "cpu"
    return {"racecar_core_version": __version__, "torch_version": torch_version, "device": device,
            "python_version": platform.python_version()}


def _prefixes() -> list[tuple[str, str]]:
    """(absolute prefix, portable name) pairs, longest prefix first: the data dir as ``data`` (wherever
    ``RACECAR_DATA_DIR`` puts it, its layout is that of ``<repo>/data``), the repository root as the empty prefix;
    each as given and with symbolic links resolved."""
    pairs: dict[str, str] = {}
    for base, name in ((paths.ROOT, ""), (paths.data_dir(), "data")):
        for variant in (str(base), os.path.realpath(base)):
            variant = variant.rstrip("/")
            if variant:                       # never the file system's root
                pairs[variant] = name
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def _relativise(text: str, prefixes: list[tuple[str, str]]) -> str:
    for prefix, name in prefixes:
        # the prefix as a whole path: not inside a longer name (``/work/main2``, ``/x/work/main``)
        pattern = re.compile(r"(?<![\w.\-/])" + re.escape(prefix) + r"(/|(?![\w\-]|\.[\w\-]))")
        text = pattern.sub(lambda m, name=name: (name + m.group(1)) if name else ("" if m.group(1) else "."), text)
    return text


def portable(obj: Any) -> Any:
    """``obj`` (a string, path, or dict/list/tuple of them, e.g. a whole ``results.json`` or a provenance record) with
    every absolute path under the repository root written relative to it (``/home/me/racecar/data/MNIST`` ->
    ``data/MNIST``; the root itself -> ``.``) and every path under the data dir (``paths.data_dir()``, also when
    ``RACECAR_DATA_DIR`` puts it elsewhere) as ``data/...``: what a record names is then the same on every machine.
    Paths outside both (e.g. a Debian package's ``/usr/share/datasets/...``) stay as they are. The results and figure
    writers (``plotting.write_results``, ``plotting.save_figure``) apply it to everything they write."""
    return _portable(obj, _prefixes())


def _portable(obj: Any, prefixes: list[tuple[str, str]]) -> Any:
    if isinstance(obj, str):
        return _relativise(obj, prefixes)
    if isinstance(obj, Path):
        return _relativise(str(obj), prefixes)
    if isinstance(obj, dict):
        return {(_relativise(k, prefixes) if isinstance(k, str) else k): _portable(v, prefixes)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_portable(v, prefixes) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj


def provenance(profile: str, params: dict, data_source: str | None = None, **extra: Any) -> dict[str, Any]:
    """Describe the code state, environment, profile, parameters and data behind a result."""
    commit, dirty = git_state()
    record: dict[str, Any] = {
        "git_commit": commit,
        "git_dirty": dirty,
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **_environment(),
        "profile": profile,
        "params": dict(params),
        "data_source": data_source,
    }
    clash = set(extra) & set(record)
    if clash:
        raise ValueError(f"provenance(): extra keys {sorted(clash)} clash with standard keys")
    record.update(extra)
    return record
