"""Execute the paper notebooks incrementally: ``python -m racecar_repro.notebook_runner --profile quick``."""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from racecar_repro import paths

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


@dataclass
class Outcome:
    """What happened to one notebook in one invocation."""

    notebook: str
    profile: str
    seconds: float
    figures: int
    status: str

    @property
    def failed(self) -> bool:
        return self.status.startswith("FAILED")


def select(notebooks: list[Path], only: str | None) -> list[Path]:
    """Keep the notebooks whose name or stem matches the glob ``only``; error if none match."""
    if not only:
        return notebooks
    chosen = [p for p in notebooks if fnmatch.fnmatch(p.name, only) or fnmatch.fnmatch(p.stem, only)]
    if not chosen:
        names = ", ".join(p.name for p in notebooks) or "(none found)"
        raise ValueError(f"--only {only!r} matches no notebook; available: {names}")
    return chosen


def requirements(notebook: Path, profile: str | None = None, key: str = "requires") -> list[str]:
    """Data sets a notebook declares in its metadata ``{"racecar": {"requires": [...], "optional": [...]}}``.

    Without a ``requires`` data set the notebook is skipped; ``optional`` ones (used when present, like the official
    SVD-test images) only make it re-run when they arrive. Either may also map profiles to lists, with ``"default"``
    for the others: ``{"smoke": ["fashion_mnist"], "default": ["cifar10"]}``.
    """
    meta = json.loads(Path(notebook).read_text(encoding="utf-8")).get("metadata", {})
    req = meta.get("racecar", {}).get(key, [])
    if isinstance(req, dict):
        req = req.get(profile, req.get("default", []))
    if isinstance(req, str):
        req = [req]
    if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
        raise ValueError(f"{notebook.name}: metadata racecar.{key} must be a list of names")
    return req


def check_data(names: list[str]) -> list[tuple[str, bool, str]]:
    """Ask ``racecar_repro.data.availability`` about each required data set."""
    if not names:
        return []
    try:
        from racecar_repro.data.availability import availability
    except ImportError as exc:
        return [(n, False, f"cannot check data set {n!r}: racecar_repro.data.availability "
                           f"not importable ({exc})") for n in names]
    return [(n, bool(ok), str(msg)) for n, (ok, msg) in zip(names, map(availability, names))]


def stamp_hash(notebook: Path, profile: str, data: list[tuple[str, bool, str]],
               root: Path | None = None) -> str:
    """``paths.source_digest`` (the run cache's hash) of the notebook and every source file of both packages (a
    notebook's output depends on its plots too; its runs come from the run cache), with the profile and the data
    availability messages."""
    root = Path(root) if root is not None else paths.ROOT
    code = [p for pkg in ("racecar_core", "racecar_repro") for p in (root / pkg).rglob("*.py") if p.is_file()]
    extra = f"profile\0{profile}" + "".join(f"\0data\0{name}\0{ok}\0{msg}" for name, ok, msg in data)
    return paths.source_digest([Path(notebook).resolve(), *code], extra, base=root)


def _figures(figdir: Path) -> dict[Path, tuple[int, int, int]]:
    """The PNG and PDF files under ``figdir``, each with (inode, mtime, size): a file whose triple changed is new."""
    stats = {p: p.stat() for p in (figdir.rglob("*") if figdir.is_dir() else [])
             if p.suffix.lower() in (".png", ".pdf") and p.is_file()}
    return {p: (st.st_ino, st.st_mtime_ns, st.st_size) for p, st in stats.items()}


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def temporary_env(values: dict[str, str]) -> Iterator[None]:
    """Set the environment variables ``values`` for the ``with`` block (kernels started in it inherit them), then
    restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kernel_env(profile: str, **extra: str) -> dict[str, str]:
    """What a notebook kernel gets: RACECAR_PROFILE, the repository on its PYTHONPATH, and the cores this process
    may use as torch's threads (``cpu_threads``: a cgroup quota is respected, where torch would count the host's
    cores) unless ``OMP_NUM_THREADS`` is set (the runner itself only waits); plus ``extra``."""
    pp = [str(paths.ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    threads = os.environ.get("OMP_NUM_THREADS") or str(cpu_threads())
    return {"RACECAR_PROFILE": profile, "PYTHONPATH": os.pathsep.join(pp), **{k: threads for k in THREAD_VARS},
            **extra}


TQDM = re.compile(r"(?P<desc>[^\r\n:|]*):\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
                  r"\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+)")


class Progress:
    """What a notebook's kernel prints, as it prints it: everything to the notebook's log file, and to the terminal
    the notebook's own lines (the grid's ``run i/n method/seedS`` lines, claims, warnings) and its training
    progress bars condensed to ``<method> step n/total, ETA m:ss``, updated in place on a terminal and at most every
    ``every`` seconds otherwise (CI logs). Pass as papermill's ``stdout_file`` and ``stderr_file``."""

    def __init__(self, log, out=None, every: float = 10.0, prefix: str = "    | ") -> None:
        self.log, self.out, self.every, self.prefix = log, out or sys.stdout, every, prefix
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.last_bar, self.bar_shown = float("-inf"), False
        self.pending = ""

    def _bar(self, m: re.Match) -> None:
        done = m["n"] == m["total"]
        now = time.monotonic()
        if not (self.tty or done or now - self.last_bar >= self.every):
            return
        self.last_bar = now
        eta = "done" if done else f"ETA {m['eta']}"
        text = f"{self.prefix}{m['desc'].strip() or 'training'} step {m['n']}/{m['total']}, {eta} ({m['elapsed']})"
        if self.tty:
            self.out.write("\r" + text.ljust(78) + ("\n" if done else ""))
            self.bar_shown = not done
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def _line(self, line: str) -> None:
        if self.bar_shown:
            self.out.write("\n")
            self.bar_shown = False
        self.out.write(self.prefix + line + "\n")
        self.out.flush()

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        self.pending += text
        *parts, self.pending = re.split(r"(?<=[\r\n])", self.pending)
        for part in parts:
            body = part.rstrip("\r\n")
            m = TQDM.search(body)
            if m:
                self._bar(m)
            elif body.strip():
                self._line(body)
        m = TQDM.search(self.pending)               # a bar that has not ended its line yet
        if m:
            self._bar(m)
            self.pending = ""
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def cpu_threads() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _short_error(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def run_one(notebook: Path, profile: str, build_dir: Path, force: bool = False, out=None) -> Outcome:
    """Run (or skip, or find up to date) one notebook; never raises for notebook errors. What the kernel prints goes
    to ``<build_dir>/<profile>/<stem>.log`` and, condensed (``Progress``), to ``out`` (default: stdout)."""
    stem, t0 = notebook.stem, time.perf_counter()
    figdir, before = paths.figures_dir() / stem, None

    def outcome(status: str) -> Outcome:
        new = 0 if before is None else sum(before.get(p) != sig for p, sig in _figures(figdir).items())
        return Outcome(notebook.name, profile, time.perf_counter() - t0, new, status)

    try:
        data = check_data(requirements(notebook, profile))
        optional = check_data(requirements(notebook, profile, "optional"))
    except Exception as exc:  # bad metadata or availability() crashing
        return outcome(f"FAILED: {_short_error(exc)}")
    missing = [msg for _, ok, msg in data if not ok]
    if missing:
        return outcome("skipped: " + " | ".join(missing))

    out_dir = Path(build_dir) / profile
    stamp_path = out_dir / f"{stem}.stamp"
    digest = stamp_hash(notebook, profile, data + optional)  # fetching optional data (official images) re-runs it
    if (not force and stamp_path.is_file() and stamp_path.read_text().strip() == digest
            and (figdir / "results.json").is_file()):
        return outcome("up to date")

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    before = _figures(figdir)
    try:
        import papermill
        with temporary_env(kernel_env(profile)), open(out_dir / f"{stem}.log", "w") as log:
            progress = Progress(log, out)
            papermill.execute_notebook(str(notebook), str(out_dir / f"{stem}.ipynb"), parameters={"profile": profile},
                                       kernel_name="python3", cwd=str(notebook.parent), progress_bar=False,
                                       stdout_file=progress, stderr_file=progress)
    except Exception as exc:
        return outcome(f"FAILED: {_short_error(exc)}")
    stamp_path.write_text(digest + "\n")
    return outcome("ran" if (figdir / "results.json").is_file() else "ran (warning: no results.json)")


def format_table(outcomes: list[Outcome]) -> str:
    """Render the end-of-run summary as a plain-text table."""
    rows = [("notebook", "profile", "time (s)", "figures", "status")]
    rows += [(o.notebook, o.profile, f"{o.seconds:.1f}", str(o.figures), o.status) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)] + [6]
    rows.insert(1, tuple("-" * w for w in widths))
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 if any notebook failed)."""
    ap = argparse.ArgumentParser(prog="python -m racecar_repro.notebook_runner", description=__doc__)
    ap.add_argument("--profile", default="quick", help="run profile passed to each notebook")
    ap.add_argument("--only", default=None, help="glob on notebook name/stem, e.g. '03_*'")
    ap.add_argument("--force", action="store_true", help="re-run even if up to date")
    ap.add_argument("--notebooks-dir", type=Path, default=paths.ROOT / "notebooks")
    ap.add_argument("--build-dir", type=Path, default=paths.ROOT / "build")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.profile):
        ap.error(f"invalid profile name {args.profile!r}")
    if not args.notebooks_dir.is_dir():
        ap.error(f"notebooks directory not found: {args.notebooks_dir}")
    try:
        notebooks = select(sorted(p for p in args.notebooks_dir.glob(NOTEBOOK_GLOB) if p.is_file()), args.only)
    except ValueError as exc:
        ap.error(str(exc))
    if not notebooks:
        print(f"no notebooks matching {NOTEBOOK_GLOB} in {args.notebooks_dir}")
        return 0
    outcomes = []
    for i, nb in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb.name} (profile {args.profile}) ...", flush=True)
        o = run_one(nb, args.profile, args.build_dir, force=args.force)
        print(f"    {o.status} ({o.seconds:.1f} s)", flush=True)
        executed = args.build_dir / args.profile / f"{nb.stem}.ipynb"
        log = executed.with_suffix(".log")
        if o.status.startswith(("ran", "FAILED")) and log.is_file():
            print(f"    full log: {log}", flush=True)
        if o.failed and executed.is_file():
            print(f"    executed copy with the traceback: {executed}", flush=True)
        outcomes.append(o)
    print("\n" + format_table(outcomes), flush=True)
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
