"""Which data sets can be had now (on disk, or generated or fetched offline), each with the command that gets it."""
from __future__ import annotations

import importlib
from typing import Callable


def _check(module: str, *args) -> Callable[[], tuple[bool, str]]:
    """``racecar_repro.data.<module>.check_available(*args)``, imported when the check runs (it never downloads)."""
    return lambda: importlib.import_module(f"racecar_repro.data.{module}").check_available(*args)


def _check_weather_subset(name: str) -> tuple[bool, str]:
    from racecar_repro.data import weatherbench, weatherbench2

    sub = weatherbench2.SUBSETS[name]
    return weatherbench.check_available(None, sub["channels"], sub["years"])


# name -> check function returning (available now or generatable offline?, one-line message).
# Other modules add their data sets here, e.g. ``AVAILABILITY_CHECKS["cifar10"] = my_check``.
AVAILABILITY_CHECKS: dict[str, Callable[[], tuple[bool, str]]] = {
    "mnist": _check("mnist"),
    "peak": _check("peak"),
    "cifar10": _check("cifar", "cifar10"),
    "cifar100": _check("cifar", "cifar100"),
    "fashion_mnist": _check("cifar", "fashion_mnist"),
    # real ERA5 (WeatherBench 2 copies or WeatherBench 1 files; synthetic ones do not count): Z500/T850/T2M 1979-2018,
    # and the subsets of notebook 04's quick and paper profiles (what `make data-weather PROFILE=...` fetches)
    "weatherbench": _check("weatherbench"),
    "weatherbench_quick": lambda: _check_weather_subset("quick"),
    "weatherbench_paper": lambda: _check_weather_subset("paper"),
    # the official SVD-test images (tum-pbs/racecar SVD-example), all present with the right sha256
    "mnist_official": _check("official", "mnist"),
    "peak_official": _check("official", "peak"),
}


def availability(name: str) -> tuple[bool, str]:
    """Return (can data set ``name`` be had now, offline included?, one-line message with the fetch command)."""
    key = name.lower()
    if key not in AVAILABILITY_CHECKS:
        known = ", ".join(sorted(AVAILABILITY_CHECKS))
        raise ValueError(f"unknown data set {name!r}; known data sets: {known}")
    return AVAILABILITY_CHECKS[key]()
