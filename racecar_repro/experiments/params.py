"""An experiment's parameters, typed: one ``Params`` dataclass per experiment (its defaults the paper's settings, its
profiles instances of it), a profile with the caller's overrides checked and coerced (``resolve_params``), the run
cache's key derived from the dataclasses that make a run (``run_config``), and the methods built from them under the
same names in every experiment (``build_method``).
What this module computes can change a run's numbers, so it is part of every run's code fingerprint
(``racecar_repro.runs``); the grid's bookkeeping (``grid``) is not."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator

import torch

from racecar_core.methods import METHODS, Method, make_method
from racecar_core.train import TrainConfig

# An experiment's parameter names for the methods' settings (the fields of racecar_core.methods' classes, whose
# defaults are the only defaults: a profile states every value it changes). ``pre_epochs`` x steps per epoch gives
# Pre's ``pre_steps`` when a profile leaves them None.
METHOD_PARAMS: dict[str, dict[str, str]] = {
    "RR": {"rr_lambda": "lam", "rr_mode": "mode", "rr_reduction": "reduction", "rr_bn_update": "reverse_bn_update",
           "rr_pair_weights": "pair_weights", "rr_norms": "norms"},
    "Ort": {"ort_weight": "weight", "ort_form": "form", "ort_schedule": "schedule"},
    "Pre": {"pre_steps": "pre_steps", "pre_reduction": "reduction", "pre_lr_scale": "pre_lr_scale"},
}
METHOD_PARAM_NAMES = {name for names in METHOD_PARAMS.values() for name in names} | {"pre_epochs"}


def setting(default: Any, *, run: bool = True, choices: Any = None) -> Any:
    """A field of an experiment's ``Params`` with its paper value as ``default`` (a list is copied per instance);
    ``run=False`` marks a setting that changes no run's numbers (the grid: methods, seeds, variants; analysis
    thresholds applied after training; progress bars): it stays out of the run key. ``choices``: the values it may
    take (for a list, each element), checked by ``resolve_params``."""
    meta = {"run": run, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Params(Mapping):
    """An experiment's parameters, typed: one dataclass per experiment whose defaults are the paper's settings, with
    its profiles as instances (``paper = CifarParams()``, ``quick = replace(paper, depth=20, ...)``). It reads like a
    mapping (``p["depth"]``, ``dict(p)``, ``p.get("variants")``) for the notebooks and the figures; ``run_key`` is
    what of it identifies a run in the run cache (``run_config``)."""

    profile: str = setting("", run=False)

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def run_key(self) -> dict[str, Any]:
        """The settings that can change a run's numbers: every field but those marked ``run=False`` and the methods'
        settings (``METHOD_PARAM_NAMES``: each run's method describes its own, ``run_config``)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                if f.metadata.get("run", True) and f.name not in METHOD_PARAM_NAMES}

    def check_choices(self, exp: str) -> None:
        """A ``ValueError`` naming the parameter, the bad value(s) and the choices when a value (or a list's element)
        is not among its field's ``choices``."""
        for f in fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices is None:
                continue
            bad = [v for v in (value if isinstance(value, list) else [value]) if v not in choices]
            if bad:
                shown = bad if isinstance(value, list) else value
                raise ValueError(f"racecar: unknown {f.name} {shown!r} for {exp}; choose from {list(choices)}")


@dataclass
class MethodParams(Params):
    """``Params`` with the methods' settings under their shared names (``METHOD_PARAMS``; None keeps the method's own
    default, ``build_method``), which an experiment redeclares where its protocol changes them, and what every
    experiment has: ``device`` (resolved by ``resolve_params``) and ``progress``."""

    rr_lambda: float | None = setting(None)
    rr_mode: str | None = setting(None)
    rr_reduction: str | None = setting(None)
    rr_bn_update: bool | None = setting(None)
    rr_pair_weights: list | None = setting(None)
    rr_norms: str | None = setting(None)
    ort_weight: float | None = setting(None)
    ort_form: str | None = setting(None)
    ort_schedule: bool | None = setting(None)
    pre_steps: int | None = setting(None)
    pre_epochs: int | None = setting(None)
    pre_reduction: str | None = setting(None)
    pre_lr_scale: float | None = setting(None)
    device: str = setting("auto")
    progress: bool = setting(True, run=False)


def run_config(params: Params, method: Method | dict[str, Method], train: TrainConfig | dict[str, TrainConfig],
               variant: str | None = None, **derived: Any) -> dict[str, Any]:
    """A run's cache key: the experiment's ``run_key``, the variant, the method(s) and training configuration(s)
    (``describe``; one, or a dict by name for a run of two tasks) and ``derived`` (the data's fingerprint, ...)."""
    methods = method.describe() if isinstance(method, Method) else {k: m.describe() for k, m in method.items()}
    configs = train.describe() if isinstance(train, TrainConfig) else {k: c.describe() for k, c in train.items()}
    return {**params.run_key(), **({"variant": variant} if variant else {}), "method": methods, "train": configs,
            **derived}


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
    """``value`` for parameter ``key`` in the form of its ``default``: a scalar becomes a one-element list where the
    default is a list (``seeds=3`` -> ``[3]``, ``-p methods RR``), a tuple a list; elements and scalars of a wrong kind
    are a ``TypeError`` naming the expected form. A default of None accepts anything (the experiment checks it)."""
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


def resolve_params(exp: Any, profile: str, overrides: dict[str, Any]) -> Params:
    """The profile with the non-None ``overrides`` applied: unknown names are errors, values take the profile's form
    (``coerce_param``), the device is resolved, and the values are checked (``choices``, ``exp.resolve``)."""
    if profile not in exp.profiles:
        raise ValueError(f"racecar: unknown profile {profile!r} for {exp.name}; choose one of {list(exp.profiles)}")
    base = exp.profiles[profile]
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(k for k in given if k not in base or k == "profile")
    if unknown:
        raise ValueError(f"racecar: unknown parameter(s) {unknown} for {exp.name}; known: "
                         f"{sorted(k for k in base if k != 'profile')}")
    changes = {k: coerce_param(exp.name, k, v, _form(base, k)) for k, v in given.items()}
    if "device" in base:
        changes["device"] = resolve_device(changes.get("device", base["device"]))
    params = replace(copy.deepcopy(base), profile=profile, **changes)
    params.check_choices(exp.name)
    return exp.resolve(params)


def _form(base: Params, key: str) -> Any:
    """The value an override of ``key`` takes the form of: the profile's; for a method setting the profile leaves None,
    the method dataclass's default (``pre_epochs``: ``build_method``'s 1)."""
    if base[key] is not None or key not in METHOD_PARAM_NAMES:
        return base[key]
    if key == "pre_epochs":
        return 1
    method = next(name for name, names in METHOD_PARAMS.items() if key in names)
    return next(f.default for f in fields(METHODS[method]) if f.name == METHOD_PARAMS[method][key])


def build_method(name: str, params: dict, task: Any, steps_per_epoch: int = 1, **fixed: Any) -> Method:
    """The method ``name`` from an experiment's parameters, with the same names in every experiment
    (``METHOD_PARAMS``: ``rr_lambda`` -> ``RR.lam``, ...); a name the parameters leave out, or set to None, keeps the
    method's own default. Pre's ``pre_steps`` is ``pre_epochs`` (default 1) x ``steps_per_epoch`` when not given.
    ``fixed`` overrides the parameters (what a variant fixes, e.g. the SVD test's batch-norm behaviour)."""
    p = {**params, **fixed}
    settings = {field: p[key] for key, field in METHOD_PARAMS.get(name, {}).items() if p.get(key) is not None}
    if name == "Pre" and p.get("pre_steps") is None:
        epochs = p.get("pre_epochs")
        settings["pre_steps"] = int(1 if epochs is None else epochs) * steps_per_epoch
    return make_method(name, task=task, **settings)
