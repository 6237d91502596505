"""The skeleton every experiment shares: an experiment module hands its parameters (a ``params.Params`` dataclass
and its profiles), how to load its data and how to train one run to ``Experiment``; ``run_grid`` resolves the
parameters (``params.resolve_params``), loads the data once, trains or loads (``runs.cached_run``) every run of the
grid (variant x method x seed) and returns an ``ExperimentResult`` of ``RunResult``s.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from racecar_repro import executors, runs
from racecar_repro.experiments.params import Params, resolve_params
from racecar_core.train import progress_label

@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: which experiment, variant, method and seed, and the experiment's resolved parameters."""

    experiment: str                  # the run cache's folder, e.g. "svd_peak", "cifar_fashion_mnist"
    method: str
    seed: int
    variant: str | None = None       # only experiments with variants (the SVD tests: "official", "corrected")
    params: Params | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """``"official/RR/seed0"`` (or ``"RR/seed0"``): the run's name in tables and ``results.json``."""
        return "/".join(([self.variant] if self.variant else []) + [self.method, f"seed{self.seed}"])


@dataclass
class RunResult:
    """What one trained (or cached) run hands back."""

    spec: RunSpec
    config: dict          # what the run cache is keyed by (with the code fingerprint)
    evals: list[dict]     # one record per evaluation: step, task_step, the experiment's measures
    log: list[dict]       # the training loop's loss log
    wall_time: float      # seconds of training (of the run that trained it, when loaded from the cache)
    metrics: dict         # the run's final numbers (JSON-able): accuracies, SVD analysis, forecast scores
    arrays: dict          # tensors for the figures: singular vectors, reconstructions, example fields
    trained_by: dict      # commit, dirty flag, code fingerprint and torch version of the code that trained it
    cached: bool          # loaded from the run cache rather than trained now

    @classmethod
    def from_stored(cls, spec: RunSpec, stored: dict) -> "RunResult":
        """The result of ``runs.cached_run`` as a ``RunResult``."""
        keys = ("config", "evals", "log", "wall_time", "metrics", "arrays", "trained_by", "cached")
        return cls(spec, **{k: stored[k] for k in keys})


EVAL_COORDS = ("step", "task_step", "epoch", "task")


def _scalars(d: dict, prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, float)`` of every number in a nested dict (booleans and non-numbers skipped)."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _scalars(v, key + ".")
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_)):
            yield key, float(v)


@dataclass
class ExperimentResult:
    """Every run of one grid, with the parameters and data that made them."""

    experiment: str                        # e.g. "svd_peak"
    profile: str
    params: Params                         # resolved: the profile with the overrides
    source: str                            # where the data came from, in words
    label: str | None                      # what every figure must say about the data (synthetic, replica, ...)
    data: Any                              # the loaded data every run shared (an ImageSet, the weather splits, ...)
    runs: list[RunResult]
    extras: dict = field(default_factory=dict)  # experiment-wide numbers that belong to no run (weather baselines)

    @property
    def methods(self) -> list[str]:
        return list(self.params["methods"])

    @property
    def seeds(self) -> list[int]:
        return list(self.params["seeds"])

    @property
    def variants(self) -> list[str | None]:
        return list(self.params.get("variants") or [None])

    def select(self, method: str | None = None, variant: str | None = None,
               seed: int | None = None) -> list[RunResult]:
        """The runs that match every given field, in grid order."""
        return [r for r in self.runs if (method is None or r.spec.method == method)
                and (variant is None or r.spec.variant == variant) and (seed is None or r.spec.seed == seed)]

    def one(self, method: str, seed: int, variant: str | None = None) -> RunResult:
        """The run of this method, seed (and variant); a clear error when the grid has none."""
        found = self.select(method, variant, seed)
        if len(found) != 1:
            raise KeyError(f"racecar: {self.experiment} has no run {RunSpec('', method, seed, variant).key}; "
                           f"runs: {[r.spec.key for r in self.runs]}")
        return found[0]

    def curve(self, key: str, method: str, variant: str | None = None,
              x: str = "task_step") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Eval measure ``key`` of a method (and variant) over ``x``: x values, mean and standard deviation (ddof 0)
        over the seeds evaluated at each x (runs stopped early leave fewer seeds at the end)."""
        rows = [(e[x], float(e[key])) for r in self.select(method, variant) for e in r.evals]
        by_x = pd.DataFrame(rows, columns=["x", "v"]).groupby("x")["v"]
        mean, std = by_x.mean(), by_x.std(ddof=0)
        return mean.index.to_numpy(), mean.to_numpy(), std.to_numpy()

    def frame(self) -> pd.DataFrame:
        """Tidy final numbers: one row per run and scalar metric (nested dicts flattened to ``a.b.c``), columns
        ``experiment, variant, method, seed, metric, value``; the across-seed figures are drawn from it."""
        rows = []
        for r in self.runs:
            for metric, value in _scalars(r.metrics):
                rows.append({"experiment": self.experiment, "variant": r.spec.variant, "method": r.spec.method,
                             "seed": r.spec.seed, "metric": metric, "value": value})
        return pd.DataFrame(rows, columns=["experiment", "variant", "method", "seed", "metric", "value"])

    def eval_frame(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy training curves: one row per run, evaluation and scalar measure (``metrics``, default all), columns
        ``variant, method, seed``, the evaluation's coordinates (``step``, ``task_step``, ``epoch``, ``task``: those
        it has), ``metric, value``."""
        rows = []
        for r in self.runs:
            for e in r.evals:
                coords = {k: e[k] for k in EVAL_COORDS if k in e}
                for metric, value in e.items():
                    if metric in EVAL_COORDS or (metrics is not None and metric not in metrics):
                        continue
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        rows.append({"variant": r.spec.variant, "method": r.spec.method, "seed": r.spec.seed,
                                     **coords, "metric": metric, "value": float(value)})
        return pd.DataFrame(rows)

    @property
    def trained_now(self) -> int:
        """How many runs were trained by this call (the others came from the run cache)."""
        return sum(not r.cached for r in self.runs)


def per_seed(result: ExperimentResult, method: str, key: str) -> dict[int, float]:
    """``{seed: metrics[key]}`` of a method's runs (through ``result.select``: constructed results work too)."""
    return {r.spec.seed: float(r.metrics[key]) for r in result.select(method)}


def per_run(result: ExperimentResult, extra: Callable[[RunResult], dict] = lambda run: {}) -> dict[str, dict]:
    """``results.json``'s ``per_run``: by run key, every run's metrics, wall time (``wall_time_s``) and
    ``extra(run)``."""
    return {r.spec.key: {**r.metrics, "wall_time_s": r.wall_time, **extra(r)} for r in result.runs}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of the values over seeds."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def measures_table(result: ExperimentResult, measures: Sequence[str]) -> pd.DataFrame:
    """Per method: each measure's mean and standard deviation over seeds (``<measure>_mean``, ``<measure>_std``), the
    number of seeds and the mean wall time per run."""
    rows = []
    for m in result.methods:
        rs = result.select(m)
        row = {"method": m}
        for key in measures:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_sd([r.metrics[key] for r in rs])
        rows.append({**row, "seeds": len(rs), "wall_time_s": float(np.mean([r.wall_time for r in rs]))})
    return pd.DataFrame(rows).set_index("method")


@dataclass
class LoadedData:
    """What an experiment's ``load`` hands back."""

    value: Any                 # the data every run shares
    source: str                # where they came from, in words
    label: str | None = None   # what every figure must say about them (e.g. "SYNTHETIC DATA (not ERA5)")


@dataclass(frozen=True)
class Experiment:
    """What makes an experiment its own; ``run_grid`` runs it.

    ``load(params) -> LoadedData``; ``train(spec, data) -> (config, fit)``: the run's cache key and the function that
    trains it in a run folder and returns ``{"config", "evals", "log", "wall_time", "metrics", "arrays"}``;
    ``folder(params)``: the run cache's folder name; ``resolve(params) -> params`` checks values (and may resolve
    choices like ``data="auto"``); ``extras(params, data)``: experiment-wide numbers beside the runs;
    ``resources[profile]``: what one run needs on a cluster (``gpus_per_node``, ``cpus_per_task``, ``mem_gb``,
    ``timeout_min``; the user's Slurm settings override them, ``executors.job_resources``).
    """

    name: str
    profiles: dict[str, Params]
    load: Callable[[dict], LoadedData]
    train: Callable[[RunSpec, Any], tuple[dict, Callable[[Path], dict]]]
    folder: Callable[[dict], str]
    resolve: Callable[[dict], dict] = lambda params: params
    extras: Callable[[dict, Any], dict] | None = None
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def code(self) -> str:
        """The module that trains this experiment's runs: its code fingerprint keys the run cache
        (``runs.code_fingerprint``)."""
        return self.train.__module__

    def run(self, profile: str = "quick", report: Callable[[str], None] | None = print,
            executor: str | None = None, workers: int | None = None, resubmit: bool | None = None,
            **overrides: Any) -> "ExperimentResult":
        """Train (or load) every run of the profile's grid with ``overrides`` (``run_grid``; ``resubmit``: submit the
        runs whose earlier cluster job failed again)."""
        return run_grid(self, profile, overrides, report, executor, workers, resubmit)

    def resolve_params(self, profile: str = "quick", **overrides: Any) -> dict[str, Any]:
        """The profile's parameters with ``overrides`` applied; unknown names and bad values are errors."""
        return resolve_params(self, profile, overrides)


def grid(exp: Experiment, params: Params) -> list[RunSpec]:
    """Every run of the grid, variants outermost, then methods, then seeds."""
    folder = exp.folder(params)
    return [RunSpec(folder, m, int(s), v, params)
            for v in params.get("variants") or [None] for m in params["methods"] for s in params["seeds"]]


def run_grid(exp: Experiment, profile: str, overrides: dict[str, Any],
             report: Callable[[str], None] | None = print, executor: str | None = None,
             workers: int | None = None, resubmit: bool | None = None) -> ExperimentResult:
    """Resolve the parameters, load the data, train or load every run (one line each to ``report``). With the
    ``local``, ``torchrun`` or ``slurm`` executor the runs not in the cache are trained first (``executors``: worker
    processes; ``torchrun`` groups of ``workers`` processes per run, setting ``replicas``; submitit jobs)."""
    kind, n = executors.resolve(executor, workers)
    if kind == "torchrun":  # each run on n processes: a setting of the runs themselves (in their cache key)
        if "replicas" not in exp.profiles.get(profile, {}):
            if report is not None:
                report(f"[{exp.name}] has no data-parallel path (no 'replicas' parameter): its runs train inline")
            kind = "inline"
        else:
            overrides = {**overrides, "replicas": n}
    elif (kind == "slurm" and os.environ.get("RACECAR_REPLICAS") and overrides.get("replicas") is None
          and "replicas" in exp.profiles.get(profile, {})):    # make figures EXECUTOR=slurm REPLICAS=4
        overrides = {**overrides, "replicas": int(os.environ["RACECAR_REPLICAS"])}
    params = resolve_params(exp, profile, overrides)
    loaded = exp.load(params)
    specs = grid(exp, params)
    by_worker: set[str] = set()
    if kind != "inline":
        folders = {s.key: runs.run_path(s.experiment, exp.train(s, loaded.value)[0], exp.code) for s in specs}
        missing = [s for s in specs if not (folders[s.key] / "result.pt").exists()]
        if kind == "local":
            by_worker = set(executors.train_in_workers(exp, params, missing, n, report))
        elif kind == "torchrun":
            by_worker = set(executors.train_with_torchrun(exp, params, missing, n, report))
        else:
            by_worker = set(executors.train_with_submitit(exp, params, missing, report,
                                                          folders=folders, resubmit=resubmit))
    results = []
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        config, fit = exp.train(spec, loaded.value)
        with progress_label(f"{spec.key} ({i}/{len(specs)})"):
            stored = runs.cached_run(spec.experiment, config, fit, exp.code)
        if spec.key in by_worker:
            stored = {**stored, "cached": False}          # trained now, by a worker
        results.append(RunResult.from_stored(spec, stored))
        if report is not None:
            how = "loaded from the run cache" if stored["cached"] else "trained"
            report(f"[{exp.name}] run {i}/{len(specs)} {spec.key}: {how} ({time.perf_counter() - t0:.1f} s)")
    extras = exp.extras(params, loaded.value) if exp.extras else {}
    return ExperimentResult(exp.name, profile, params, loaded.source, loaded.label, loaded.value, results, extras)
