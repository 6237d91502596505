"""The skeleton every experiment shares: parameters from a profile, a grid of runs, one cached run each, typed results.

An experiment module defines its profiles, how to load its data and how to train one run, and hands them to
``Experiment``; ``run_grid`` does the rest:

    params  = resolve_params(exp, profile, overrides)  # the profile, overridden; unknown names are errors
    data    = exp.load(params)                         # once, shared by every run
    for spec in grid(exp, params):                     # variant x method x seed
        stored = runs.cached_run(...)                  # trained, or loaded when this code trained it before
    -> ExperimentResult(params, data, [RunResult, ...])

``build_method`` turns the same parameter names (``rr_lambda``, ``ort_weight``, ...) into a method in every
experiment.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .. import executors, runs
from ..methods import Method, make_method
from ..train import progress_label

# The methods' parameters, with the same names and defaults in every experiment; a profile overrides what it needs.
METHOD_DEFAULTS: dict[str, Any] = dict(
    rr_lambda=1e-3, rr_mode="full", rr_reduction="mean", rr_bn_update=False, rr_pair_weights=None, rr_norms="batch",
    ort_weight=1e-2, ort_form="srip", ort_schedule=False,
    pre_steps=None, pre_epochs=1, pre_reduction="sum", pre_lr_scale=1.0,
)


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: which experiment, variant, method and seed, and the experiment's resolved parameters."""

    experiment: str                  # the run cache's folder, e.g. "svd_peak", "cifar_fashion_mnist"
    method: str
    seed: int
    variant: str | None = None       # only experiments with variants (the SVD tests: "official", "corrected")
    params: dict = field(default_factory=dict, compare=False, repr=False)

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
    params: dict                           # resolved: the profile with the overrides
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
        """Eval measure ``key`` of a method (and variant) over ``x``: x values, mean and population standard deviation
        (ddof 0) over the seeds evaluated at each x (runs stopped early at different steps leave fewer seeds at the
        end)."""
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
    profiles: dict[str, dict[str, Any]]
    load: Callable[[dict], LoadedData]
    train: Callable[[RunSpec, Any], tuple[dict, Callable[[Path], dict]]]
    folder: Callable[[dict], str]
    resolve: Callable[[dict], dict] = lambda params: params
    extras: Callable[[dict, Any], dict] | None = None
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self, profile: str = "quick", report: Callable[[str], None] | None = print,
            executor: str | None = None, workers: int | None = None, resubmit: bool | None = None,
            **overrides: Any) -> "ExperimentResult":
        """Train (or load) every run of the profile's grid, with ``overrides``, and return the typed results;
        ``executor``/``workers``: where the runs train (``racecar_core.executors``); ``resubmit``: submit the
        runs whose earlier cluster job failed again (``slurm``)."""
        return run_grid(self, profile, overrides, report, executor, workers, resubmit)

    def resolve_params(self, profile: str = "quick", **overrides: Any) -> dict[str, Any]:
        """The profile's parameters with ``overrides`` applied; unknown names and bad values are errors."""
        return resolve_params(self, profile, overrides)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when there is a GPU, else ``cpu``; asking for a GPU that is not there is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"racecar: device {device!r} asked for, but torch sees no CUDA GPU here; use device='auto' "
                         "(GPU when present) or 'cpu'")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ValueError(f"racecar: unknown device {device!r}; use 'auto', 'cpu' or 'cuda' (or 'cuda:1', ...)")
    return device


def _kind(value: Any) -> str | None:
    """``"number"``, ``"bool"``, ``"str"``, ``"list"``, ``"dict"`` or None (anything else)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    for kind, types in (("str", str), ("list", (list, tuple)), ("dict", dict)):
        if isinstance(value, types):
            return kind
    return None


def _scalar(exp: str, key: str, value: Any, default: Any, form: str) -> Any:
    """``value`` checked against the kind of ``default`` (numbers for numbers, an integral float becoming an int
    where the default is one; 0 / 1 for booleans)."""
    kind, want = _kind(value), _kind(default)
    if want is None or kind == want:
        if want == "number" and isinstance(default, int) and isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if want == "bool" and kind == "number" and value in (0, 1):
        return bool(value)
    names = {"number": "a number", "bool": "True or False", "str": "a string", "dict": "a dict"}
    raise TypeError(f"racecar: parameter {key!r} of {exp} expects {names.get(want, want)}{form}, got "
                    f"{type(value).__name__} {value!r}")


def coerce_param(exp: str, key: str, value: Any, default: Any) -> Any:
    """``value`` for parameter ``key`` in the form of its profile ``default``: a scalar where the default is a list
    becomes a one-element list (``seeds=3`` -> ``[3]``, papermill's ``-p methods RR`` -> ``["RR"]``), a tuple a list,
    list elements and scalars are checked against the default's kind; a wrong kind is a ``TypeError`` naming the
    parameter and the expected form. Defaults of None accept anything (the experiment checks them)."""
    if default is None:
        return list(value) if isinstance(value, tuple) else value
    if isinstance(default, list):
        example = f" (e.g. {key}={default!r}; with papermill: -y '{key}: {list(default)!r}')"
        if _kind(value) in ("number", "bool", "str"):
            value = [value]
        elif _kind(value) != "list":
            raise TypeError(f"racecar: parameter {key!r} of {exp} expects a list{example}, got "
                            f"{type(value).__name__} {value!r}")
        kinds = {_kind(x) for x in default if x is not None}
        if len(kinds) == 1:
            first = next(x for x in default if x is not None)
            return [None if x is None else _scalar(exp, f"{key}[{i}]", x, first, example)
                    for i, x in enumerate(value)]
        return list(value)
    return _scalar(exp, key, value, default, f" (e.g. {key}={default!r})")


def resolve_params(exp: Experiment, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of the profile with the non-None ``overrides`` applied: unknown names are errors, values take the form
    of the profile's (``coerce_param``: ``seeds=3`` -> ``[3]``, a string where a number belongs is a ``TypeError``),
    the device is resolved, and the experiment checks the values (``exp.resolve``)."""
    if profile not in exp.profiles:
        raise ValueError(f"racecar: unknown profile {profile!r} for {exp.name}; choose one of {list(exp.profiles)}")
    params = copy.deepcopy(exp.profiles[profile])
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(k for k in given if k not in params)
    if unknown:
        raise ValueError(f"racecar: unknown parameter(s) {unknown} for {exp.name}; known: {sorted(params)}")
    for k, v in given.items():
        params[k] = coerce_param(exp.name, k, v, params[k])
    if "device" in params:
        params["device"] = resolve_device(params["device"])
    return {"profile": profile, **exp.resolve(params)}


def grid(exp: Experiment, params: dict) -> list[RunSpec]:
    """Every run of the grid, variants outermost, then methods, then seeds."""
    folder = exp.folder(params)
    return [RunSpec(folder, m, int(s), v, params)
            for v in params.get("variants") or [None] for m in params["methods"] for s in params["seeds"]]


def run_grid(exp: Experiment, profile: str, overrides: dict[str, Any],
             report: Callable[[str], None] | None = print, executor: str | None = None,
             workers: int | None = None, resubmit: bool | None = None) -> ExperimentResult:
    """Resolve the parameters, load the data, train or load every run of the grid (one line per run to
    ``report``), and return the typed results. With the ``local``, ``torchrun`` or ``slurm`` executor the runs not
    in the cache are trained first by worker processes (``executors.train_in_workers``), by ``torchrun`` process
    groups, one run on ``workers`` processes at a time (``executors.train_with_torchrun``; it sets the parameter
    ``replicas``), or by submitit jobs (``executors.train_with_submitit``), then loaded like any cached run."""
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
        folders = {s.key: runs.run_path(s.experiment, exp.train(s, loaded.value)[0]) for s in specs}
        missing = [key for key, folder in folders.items() if not (folder / "result.pt").exists()]
        if kind == "local":
            by_worker = set(executors.train_in_workers(exp, profile, overrides, missing, n, report))
        elif kind == "torchrun":
            by_worker = set(executors.train_with_torchrun(exp, profile, overrides, missing, n, report))
        else:
            by_worker = set(executors.train_with_submitit(exp, profile, overrides, missing, report,
                                                          folders=folders, resubmit=resubmit))
    results = []
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        config, fit = exp.train(spec, loaded.value)
        with progress_label(f"{spec.key} ({i}/{len(specs)})"):
            stored = runs.cached_run(spec.experiment, config, fit)
        if spec.key in by_worker:
            stored = {**stored, "cached": False}          # trained now, by a worker
        results.append(RunResult.from_stored(spec, stored))
        if report is not None:
            how = "loaded from the run cache" if stored["cached"] else "trained"
            report(f"[{exp.name}] run {i}/{len(specs)} {spec.key}: {how} ({time.perf_counter() - t0:.1f} s)")
    extras = exp.extras(params, loaded.value) if exp.extras else {}
    return ExperimentResult(exp.name, profile, params, loaded.source, loaded.label, loaded.value, results, extras)


def build_method(name: str, params: dict, task: Any, steps_per_epoch: int = 1, **fixed: Any) -> Method:
    """The method ``name`` from an experiment's parameters, with the same names in every experiment.

    RR: ``rr_lambda``, ``rr_mode``, ``rr_reduction``, ``rr_bn_update``, ``rr_pair_weights``, ``rr_norms``; Ort:
    ``ort_weight``, ``ort_form``, ``ort_schedule``; Pre: ``pre_steps`` per layer (or ``pre_epochs`` x
    ``steps_per_epoch`` when ``pre_steps`` is None), ``pre_reduction``, ``pre_lr_scale``. Missing names take
    ``METHOD_DEFAULTS``; ``fixed`` overrides both (what a variant fixes, e.g. the SVD test's batch-norm behaviour).
    """
    p = {**METHOD_DEFAULTS, **params, **fixed}
    if name == "RR":
        return make_method("RR", task=task, lam=p["rr_lambda"], mode=p["rr_mode"], reduction=p["rr_reduction"],
                           reverse_bn_update=p["rr_bn_update"], pair_weights=p["rr_pair_weights"],
                           norms=p["rr_norms"])
    if name == "Ort":
        return make_method("Ort", task=task, weight=p["ort_weight"], form=p["ort_form"], schedule=p["ort_schedule"])
    if name == "Pre":
        pre_steps = p["pre_steps"] if p["pre_steps"] is not None else p["pre_epochs"] * steps_per_epoch
        return make_method("Pre", task=task, pre_steps=pre_steps, reduction=p["pre_reduction"],
                           pre_lr_scale=p["pre_lr_scale"])
    return make_method(name, task=task)
