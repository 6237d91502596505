"""Latitude-weighted forecast scores as in WeatherBench's ``score.py`` (Rasp et al. 2020): xarray in, xarray out.

Every function takes DataArrays or Datasets with a ``lat`` coordinate in degrees; weights are ``cos(lat)`` divided by
their mean over the latitudes, so they average to 1 and a constant error ``e`` has weighted RMSE ``|e|``.
"""
from __future__ import annotations

from typing import Hashable, Iterable, TypeVar, Union

import numpy as np
import xarray as xr

ALL_DIMS = getattr(xr, "ALL_DIMS", ...)  # reduce over every dimension at once
XrObj = TypeVar("XrObj", xr.DataArray, xr.Dataset)
Dims = Union[Hashable, Iterable[Hashable], "ellipsis"]  # noqa: F821


def lat_weights(lat: xr.DataArray) -> xr.DataArray:
    """Latitude weights ``cos(lat) / mean(cos(lat))`` on the ``lat`` coordinate (mean exactly 1)."""
    w = np.cos(np.deg2rad(lat))
    return w / w.mean()


def _weights(obj: XrObj) -> xr.DataArray:
    if "lat" not in obj.coords:
        raise ValueError(f"scores need a 'lat' coordinate in degrees; got coordinates {list(obj.coords)}")
    return lat_weights(obj["lat"])


def compute_weighted_mse(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted mean squared error ``mean((f - t)^2 * w)`` over ``mean_dims``."""
    error = da_fc - da_true
    return (error ** 2 * _weights(error)).mean(mean_dims)


def compute_weighted_rmse(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted RMSE ``sqrt(mean((f - t)^2 * w))``, averaged over all ``mean_dims`` at once."""
    return np.sqrt(compute_weighted_mse(da_fc, da_true, mean_dims))


def compute_weighted_mae(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted mean absolute error ``mean(|f - t| * w)`` over ``mean_dims``."""
    error = da_fc - da_true
    return (np.abs(error) * _weights(error)).mean(mean_dims)


def compute_weighted_acc(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted anomaly correlation; anomalies against the truth's time-mean climatology, centred."""
    if "time" not in da_true.dims:
        raise ValueError("ACC needs a 'time' dimension on the truth (its climatology is the mean over time)")
    clim = da_true.mean("time")
    if "time" in da_fc.dims:
        t = np.intersect1d(da_fc["time"].values, da_true["time"].values)
        if t.size == 0:
            raise ValueError("forecast and truth share no valid times")
        fa, a = da_fc.sel(time=t) - clim, da_true.sel(time=t) - clim
    else:
        fa, a = da_fc - clim, da_true - clim
    w = _weights(fa)
    fa_prime, a_prime = fa - fa.mean(mean_dims), a - a.mean(mean_dims)
    return (w * fa_prime * a_prime).sum(mean_dims) / np.sqrt(
        (w * fa_prime ** 2).sum(mean_dims) * (w * a_prime ** 2).sum(mean_dims))
