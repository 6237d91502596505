"""What every experiment shares: turning a profile and overrides into checked parameters."""
from __future__ import annotations

import copy
from typing import Any

import torch


def apply_profile(profiles: dict[str, dict[str, Any]], profile: str, overrides: dict[str, Any],
                  what: str) -> dict[str, Any]:
    """A deep copy of ``profiles[profile]`` with the non-None ``overrides`` applied; unknown names are errors,
    and the device is resolved (``resolve_device``)."""
    if profile not in profiles:
        raise ValueError(f"racecar: unknown profile {profile!r}; choose one of {list(profiles)}")
    params = copy.deepcopy(profiles[profile])
    unknown = sorted(k for k, v in overrides.items() if k not in params and v is not None)
    if unknown:
        raise ValueError(f"racecar: unknown parameter(s) {unknown} for {what}; known: {sorted(params)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    if "device" in params:
        params["device"] = resolve_device(params["device"])
    return params


def rr_method(p: dict[str, Any], task):
    """RR as the experiments configure it: ``rr_lambda``, ``rr_mode``, ``rr_bn_update``, per-element reduction."""
    from ..methods import make_method
    return make_method("RR", task=task, lam=p["rr_lambda"], mode=p["rr_mode"], reduction="mean",
                       reverse_bn_update=p["rr_bn_update"])


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
