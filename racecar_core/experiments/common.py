"""What every experiment shares: turning a profile and overrides into checked parameters."""
from __future__ import annotations

import copy
from typing import Any

import torch


def apply_profile(profiles: dict[str, dict[str, Any]], profile: str, overrides: dict[str, Any],
                  what: str) -> dict[str, Any]:
    """A deep copy of ``profiles[profile]`` with the non-None ``overrides`` applied; unknown names are errors,
    and ``device="auto"`` becomes ``cuda`` when there is a GPU, else ``cpu``."""
    if profile not in profiles:
        raise ValueError(f"racecar: unknown profile {profile!r}; choose one of {list(profiles)}")
    params = copy.deepcopy(profiles[profile])
    unknown = sorted(k for k, v in overrides.items() if k not in params and v is not None)
    if unknown:
        raise ValueError(f"racecar: unknown parameter(s) {unknown} for {what}; known: {sorted(params)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    if params.get("device") == "auto":
        params["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return params
