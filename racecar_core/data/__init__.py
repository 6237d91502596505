"""Data sets used by racecar_core: a common ``ImageSet`` container, loaders and an availability registry."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch


@dataclass
class ImageSet:
    """Train/test images in raw pixel units (0..255): x is ``[N,C,H,W]`` (float32 for MNIST and peak, uint8 for
    CIFAR and Fashion-MNIST), y is ``[N]`` int64; ``source`` says where they came from, for people."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    synthetic: bool

    def fingerprint(self) -> str:
        """A digest of the images and labels, not of where they were read from: run caches key on it, so a run is
        found again after the data folder moved or was downloaded afresh, and a different subset is a different run."""
        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().data)
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"ImageSet(train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"synthetic={self.synthetic}, source={self.source!r})")


class MissingDataError(FileNotFoundError):
    """A data set is not on disk and cannot be fetched or generated; the message says how to get it."""


def _check_mnist() -> tuple[bool, str]:
    from racecar_core.data import mnist

    return mnist.check_available()


def _check_peak() -> tuple[bool, str]:
    from racecar_core.data import peak

    return peak.check_available()


def _check_weather_subset(name: str) -> tuple[bool, str]:
    from racecar_core.data import weatherbench, weatherbench2

    sub = weatherbench2.SUBSETS[name]
    return weatherbench.check_available(None, sub["channels"], sub["years"])


# name -> check function returning (available now or generatable offline?, one-line message).
# Other modules add their data sets here, e.g. ``AVAILABILITY_CHECKS["cifar10"] = my_check``.
AVAILABILITY_CHECKS: dict[str, Callable[[], tuple[bool, str]]] = {
    "mnist": _check_mnist,
    "peak": _check_peak,
    # cifar.py is imported only when a check runs (cheap: looks for files, never downloads)
    "cifar10": lambda: __import__("racecar_core.data.cifar", fromlist=["_"]).check_available("cifar10"),
    "cifar100": lambda: __import__("racecar_core.data.cifar", fromlist=["_"]).check_available("cifar100"),
    "fashion_mnist": lambda: __import__("racecar_core.data.cifar", fromlist=["_"]).check_available("fashion_mnist"),
    # real ERA5 (WeatherBench 2 copies or WeatherBench 1 files; synthetic ones do not count): Z500/T850/T2M 1979-2018,
    # and the subsets of notebook 04's quick and paper profiles (what `make data-weather PROFILE=...` fetches)
    "weatherbench": lambda: __import__("racecar_core.data.weatherbench", fromlist=["_"]).check_available(),
    "weatherbench_quick": lambda: _check_weather_subset("quick"),
    "weatherbench_paper": lambda: _check_weather_subset("paper"),
    # the official SVD-test images (tum-pbs/racecar SVD-example), all present with the right sha256
    "mnist_official": lambda: __import__("racecar_core.data.official", fromlist=["_"]).check_available("mnist"),
    "peak_official": lambda: __import__("racecar_core.data.official", fromlist=["_"]).check_available("peak"),
}


def availability(name: str) -> tuple[bool, str]:
    """Return (can data set ``name`` be had now, offline included?, one-line message with the fetch command)."""
    key = name.lower()
    if key not in AVAILABILITY_CHECKS:
        known = ", ".join(sorted(AVAILABILITY_CHECKS))
        raise ValueError(f"unknown data set {name!r}; known data sets: {known}")
    return AVAILABILITY_CHECKS[key]()


if TYPE_CHECKING:  # for type checkers and IDEs; at run time these are loaded lazily by __getattr__
    from racecar_core.data.mnist import load_mnist, mnist_imageset, select_per_class  # noqa: F401
    from racecar_core.data.peak import load_peak_folder, make_peak, write_peak_folder  # noqa: F401
    from racecar_core.data.weather_synth import write_synthetic_weatherbench  # noqa: F401
    from racecar_core.data.cifar import channel_stats, load_classification, split_validation, subset  # noqa: F401
    from racecar_core.data.weather_dataset import WeatherDataset, to_xarray  # noqa: F401
    from racecar_core.data.weatherbench import Normalizer, is_synthetic, open_weatherbench  # noqa: F401
    from racecar_core.data.official import (fetch_official, has_official, load_official_mnist,  # noqa: F401
                                            load_official_peak)

_LAZY = {
    "load_mnist": "mnist", "mnist_imageset": "mnist", "select_per_class": "mnist",
    "make_peak": "peak", "load_peak_folder": "peak", "write_peak_folder": "peak",
    "load_classification": "cifar", "channel_stats": "cifar", "subset": "cifar", "split_validation": "cifar",
    "open_weatherbench": "weatherbench", "WeatherDataset": "weather_dataset", "Normalizer": "weatherbench",
    "to_xarray": "weather_dataset", "is_synthetic": "weatherbench", "write_synthetic_weatherbench": "weather_synth",
    "load_official_mnist": "official", "load_official_peak": "official", "fetch_official": "official",
    "has_official": "official",
}


def __getattr__(name: str):
    """Re-export loaders lazily, so ``python -m racecar_core.data.<module>`` runs without a double import."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"racecar_core.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'racecar_core.data' has no attribute {name!r}")


__all__ = [
    "AVAILABILITY_CHECKS",
    "ImageSet",
    "MissingDataError",
    "availability",
    "fetch_official",
    "has_official",
    "load_mnist",
    "load_official_mnist",
    "load_official_peak",
    "load_peak_folder",
    "make_peak",
    "mnist_imageset",
    "select_per_class",
    "write_peak_folder",
]
