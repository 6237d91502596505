"""Provenance records: which code, environment and parameters produced a result or figure."""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import __version__, paths


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
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
    return {
        "racecar_core_version": __version__,
        "torch_version": torch_version,
        "device": device,
        "python_version": platform.python_version(),
    }


def provenance(
    profile: str, params: dict, data_source: str | None = None, **extra: Any
) -> dict[str, Any]:
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
