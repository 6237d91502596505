"""Keep what a benchmark printed: ``benchmarks/results/<date>-<device>-<name>.txt``, with a header saying which
command, commit, torch and device produced it, so that a number quoted in the README or a notebook has its source in
the repository. ``make bench`` and ``make bench-weather`` save there (``--save DIR``; without it nothing is written).
"""
from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def device_label(device: str) -> str:
    """``cpu``, or the GPU's name as a file-name slug (``nvidia-h100-80gb-hbm3``)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(torch.device(device)).lower()).strip("-")


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + (" with uncommitted changes" if dirty else "")


def save(text: str, name: str, device: str, folder: str | Path) -> Path:
    """Write ``text`` under a header to ``folder/<UTC date>-<device>-<name>.txt`` (atomically; a second run on the
    same day and device replaces the first) and return the path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{now:%Y-%m-%d}-{device_label(device)}-{name}.txt"
    script = Path(sys.argv[0]).resolve()
    script_name = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else script.name
    header = (f"# {' '.join(['python', script_name] + sys.argv[1:])}\n"
              f"# {now:%Y-%m-%d %H:%M} UTC, commit {_commit()}, torch {torch.__version__}, device "
              f"{device_label(device)}, {torch.get_num_threads()} CPU threads\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + text.rstrip("\n") + "\n")
    tmp.replace(path)
    return path
