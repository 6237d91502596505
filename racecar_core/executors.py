"""Where the runs of a grid are trained: ``inline`` (in this process, one after another: the default) or ``local``
(``workers`` processes on this machine, e.g. one per GPU, each pinned to its device and to its share of the CPU
cores). Either way the results come back through the run cache: a worker trains a run into its run folder, the grid
then loads it like any cached run, so what a figure shows does not depend on where a run was trained.

Choose with ``run(..., executor="local", workers=4)`` or, without touching a notebook, the environment
(``RACECAR_EXECUTOR=local RACECAR_WORKERS=4``; ``make figures EXECUTOR=local WORKERS=4`` sets them).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

EXECUTORS = ("inline", "local")


def resolve(executor: str | None, workers: int | None) -> tuple[str, int]:
    """The executor and worker count from the arguments, else ``RACECAR_EXECUTOR`` / ``RACECAR_WORKERS``, else
    ``inline``; ``local`` defaults to one worker per GPU, or two on a CPU-only machine."""
    executor = executor or os.environ.get("RACECAR_EXECUTOR") or "inline"
    if executor not in EXECUTORS:
        raise ValueError(f"racecar: unknown executor {executor!r}; use one of {EXECUTORS} "
                         "(RACECAR_EXECUTOR / make figures EXECUTOR=...)")
    if executor == "inline":
        return executor, 1
    if workers is None and os.environ.get("RACECAR_WORKERS"):
        workers = int(os.environ["RACECAR_WORKERS"])
    if workers is None:
        import torch
        workers = torch.cuda.device_count() or 2
    if workers < 1:
        raise ValueError(f"racecar: workers must be at least 1, got {workers}")
    return executor, workers


_WORKER: dict[str, Any] = {}


def _init_worker(devices: "mp.Queue", threads: int) -> None:
    """Pin this worker to the next free GPU (when there are GPUs) and to ``threads`` CPU threads."""
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    torch.set_num_threads(threads)
    _WORKER["device"] = device


def _train_one(blob: bytes, key: str) -> str:
    """In a worker: rebuild the experiment and its parameters, load the data once per worker, train run ``key``
    into the run cache."""
    from . import runs
    from .experiments.grid import grid, resolve_params
    from .train import progress_label
    exp, profile, overrides = pickle.loads(blob)
    params = resolve_params(exp, profile, overrides)
    cache_key = (exp.name, profile, repr(sorted(overrides.items())))
    if _WORKER.get("data_key") != cache_key:
        _WORKER["data"], _WORKER["data_key"] = exp.load(params).value, cache_key
    spec = next(s for s in grid(exp, params) if s.key == key)
    config, fit = exp.train(spec, _WORKER["data"])
    with progress_label(f"{spec.key} (worker {os.getpid()})"):
        runs.cached_run(spec.experiment, config, fit)
    return key


def train_in_workers(exp: Any, profile: str, overrides: dict[str, Any], keys: Sequence[str], workers: int,
                     report: Callable[[str], None] | None = print) -> list[str]:
    """Train the runs ``keys`` of the grid in ``workers`` processes (spawned; each pinned to a GPU when there are
    GPUs, and to its share of this process's CPU cores); returns the keys in the order they finished. A run that
    fails raises here with its key."""
    import cloudpickle
    import torch

    from .notebook_runner import cpu_threads
    if not keys:
        return []
    workers = min(workers, len(keys))
    ctx = mp.get_context("spawn")
    devices = ctx.Queue()
    gpus = torch.cuda.device_count()
    for i in range(workers):
        devices.put(i % gpus if gpus else None)
    threads = max(1, cpu_threads() // workers)
    blob = cloudpickle.dumps((exp, profile, dict(overrides)))
    done = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(devices, threads)) as pool:
        futures = {pool.submit(_train_one, blob, key): key for key in keys}
        for future in as_completed(futures):
            key = futures[future]
            try:
                future.result()
            except Exception as exc:
                raise RuntimeError(f"racecar: run {key} failed in a worker: {type(exc).__name__}: {exc}") from exc
            done.append(key)
            if report is not None:
                report(f"[{exp.name}] {key}: trained by a worker ({len(done)}/{len(keys)})")
    return done
