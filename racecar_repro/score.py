"""Latitude-weighted forecast scores in the two WeatherBench conventions: xarray in, xarray out.

Every function takes DataArrays or Datasets with a ``lat`` coordinate in degrees.

- **WeatherBench 1** (Rasp et al. 2020, ``score.py``): ``compute_weighted_*``. Weights ``cos(lat)`` over their mean;
  RMSE is the square root of the weighted squared error averaged over time and space at once; ACC is centred, with
  anomalies against the truth's own time mean over the scored period.
- **WeatherBench 2** (Rasp et al. 2024, ``metrics.py``): ``wb2_*``. Weights are the latitude bands' areas
  (``sin`` of the upper minus the lower bound) over their mean, which on an equiangular grid without poles are
  proportional to ``cos(lat)``; RMSE is the square root of the time mean of each time step's spatial MSE; ACC is the
  uncentred correlation of anomalies against a day-of-year/hour climatology at each valid time, then averaged over time.

A missing value (NaN) in a forecast or the truth makes the score NaN, as WeatherBench 2's: a score is never computed
quietly over fewer points than it says.
"""
from __future__ import annotations

from typing import Callable, Hashable, Iterable, TypeVar, Union

import numpy as np
import xarray as xr

ALL_DIMS = getattr(xr, "ALL_DIMS", ...)  # reduce over every dimension at once
XrObj = TypeVar("XrObj", xr.DataArray, xr.Dataset)
Dims = Union[Hashable, Iterable[Hashable], "ellipsis"]  # noqa: F821


def lat_weights(lat: xr.DataArray) -> xr.DataArray:
    """Latitude weights ``cos(lat) / mean(cos(lat))`` on the ``lat`` coordinate (mean exactly 1)."""
    w = np.cos(np.deg2rad(lat))
    return w / w.mean()


def _weights(obj: XrObj, weights: Callable[[xr.DataArray], xr.DataArray] = lat_weights) -> xr.DataArray:
    if "lat" not in obj.coords:
        raise ValueError(f"scores need a 'lat' coordinate in degrees; got coordinates {list(obj.coords)}")
    return weights(obj["lat"])


def compute_weighted_mse(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted mean squared error ``mean((f - t)^2 * w)`` over ``mean_dims``."""
    error = da_fc - da_true
    return (error ** 2 * _weights(error)).mean(mean_dims, skipna=False)


def compute_weighted_rmse(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted RMSE ``sqrt(mean((f - t)^2 * w))``, averaged over all ``mean_dims`` at once."""
    return np.sqrt(compute_weighted_mse(da_fc, da_true, mean_dims))


def compute_weighted_mae(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted mean absolute error ``mean(|f - t| * w)`` over ``mean_dims``."""
    error = da_fc - da_true
    return (np.abs(error) * _weights(error)).mean(mean_dims, skipna=False)


def compute_weighted_acc(da_fc: XrObj, da_true: XrObj, mean_dims: Dims = ALL_DIMS) -> XrObj:
    """Latitude-weighted anomaly correlation; anomalies against the truth's time-mean climatology, centred."""
    if "time" not in da_true.dims:
        raise ValueError("ACC needs a 'time' dimension on the truth (its climatology is the mean over time)")
    clim = da_true.mean("time", skipna=False)
    if "time" in da_fc.dims:
        t = np.intersect1d(da_fc["time"].values, da_true["time"].values)
        if t.size == 0:
            raise ValueError("forecast and truth share no valid times")
        fa, a = da_fc.sel(time=t) - clim, da_true.sel(time=t) - clim
    else:
        fa, a = da_fc - clim, da_true - clim
    w = _weights(fa)
    fa_prime, a_prime = fa - fa.mean(mean_dims, skipna=False), a - a.mean(mean_dims, skipna=False)
    return (w * fa_prime * a_prime).sum(mean_dims, skipna=False) / np.sqrt(
        (w * fa_prime ** 2).sum(mean_dims, skipna=False) * (w * a_prime ** 2).sum(mean_dims, skipna=False))


# ------------------------------------------------------------------------------------------- WeatherBench 2


def wb2_lat_weights(lat: xr.DataArray) -> xr.DataArray:
    """WeatherBench 2's weights: the area of each latitude band (``sin(upper) - sin(lower)``, bounds halfway between
    the points, the poles at +-90) over their mean."""
    phi = np.deg2rad(np.asarray(lat.values, dtype=np.float64))
    order = np.argsort(phi)
    s = phi[order]
    bounds = np.concatenate([[-np.pi / 2], (s[1:] + s[:-1]) / 2, [np.pi / 2]])
    area = np.empty_like(phi)
    area[order] = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    return xr.DataArray(area / area.mean(), dims=lat.dims, coords=lat.coords)


def _spatial_mean(x: XrObj, w: xr.DataArray) -> XrObj:
    return (x * w).sum(("lat", "lon"), skipna=False) / (w.sum() * x.sizes["lon"])


def wb2_mse(da_fc: XrObj, da_true: XrObj) -> XrObj:
    """WeatherBench 2's MSE: each time step's area-weighted spatial mean of the squared error, then the time mean."""
    error = da_fc - da_true
    per_time = _spatial_mean(error ** 2, _weights(error, wb2_lat_weights))
    return per_time.mean("time", skipna=False) if "time" in per_time.dims else per_time


def wb2_rmse(da_fc: XrObj, da_true: XrObj) -> XrObj:
    """WeatherBench 2's RMSE: ``sqrt`` of the time-mean MSE (ECMWF's convention, the square root after the mean)."""
    return np.sqrt(wb2_mse(da_fc, da_true))


def window_weights(window_days: int) -> np.ndarray:
    """WeatherBench 2's climatology window: weights falling linearly from the centre day to 0 at both ends, over their
    mean (``window_days`` odd; 1: the day alone)."""
    if window_days < 1 or window_days % 2 == 0:
        raise ValueError(f"window_days must be odd and positive, got {window_days}")
    half = window_days // 2
    w = np.concatenate([np.linspace(0, 1, half + 1), np.linspace(1, 0, half + 1)[1:]]) if half else np.ones(1)
    return w / w.mean()


def _doy_hour_climatology(da: xr.DataArray, window_days: int) -> xr.DataArray:
    from scipy.ndimage import convolve1d
    from scipy.sparse import csr_matrix
    t = da["time"]
    hours = np.unique(t.dt.hour.values)
    year, doy, hour = t.dt.year.values, t.dt.dayofyear.values - 1, np.searchsorted(hours, t.dt.hour.values)
    arr = da.transpose("time", ...).values.astype(np.float64)
    leap = {(y, h) for y, h, d in zip(year, hour, doy) if d == 365}
    fill = np.flatnonzero([d == 364 and (y, h) not in leap for y, h, d in zip(year, hour, doy)])
    keys = np.concatenate([doy * len(hours) + hour, 365 * len(hours) + hour[fill]])   # a non-leap year's day 366:
    data = np.concatenate([arr, arr[fill]])                                            # its day 365, as in WB2
    ok = np.isfinite(data).reshape(len(data), -1)
    over_years = csr_matrix((np.ones(len(keys)), (keys, np.arange(len(keys)))), shape=(366 * len(hours), len(keys)))
    sums = over_years @ np.where(ok, data.reshape(len(data), -1), 0.0)      # the sums over the years, and the counts
    counts = over_years @ ok.astype(np.float64)
    shape = (366, len(hours)) + arr.shape[1:]
    w = window_weights(window_days)           # the weighted mean over the window's days (wrapping) and the years
    num = convolve1d(sums.reshape(shape), w, axis=0, mode="wrap")
    den = convolve1d(counts.reshape(shape), w, axis=0, mode="wrap")
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = num / den                    # missing values left out
    dims = ("dayofyear", "hour") + tuple(d for d in da.transpose("time", ...).dims[1:])
    coords = {"dayofyear": np.arange(1, 367), "hour": hours,
              **{d: da[d].values for d in dims[2:] if d in da.coords}}
    return xr.DataArray(smooth, dims=dims, coords=coords, attrs=da.attrs)


def doy_hour_climatology(truth: XrObj, window_days: int = 61) -> XrObj:
    """A day-of-year/hour climatology of ``truth`` (dims ``dayofyear`` 1..366, ``hour``, then ``truth``'s others), as
    WeatherBench 2 computes its own (``compute_hourly_stat``): per hour, the years stacked by day of year, day 366 of
    a non-leap year filled with its day 365, then the weighted mean over the years and a ``window_days`` window
    (``window_weights``: triangular, centred, wrapping around the year) with missing values left out. (WeatherBench 2
    fills every missing day of a year with its day 365; here only day 366: the same on whole years.)"""
    window_weights(window_days)
    if isinstance(truth, xr.Dataset):
        return xr.Dataset({k: _doy_hour_climatology(v, window_days) for k, v in truth.data_vars.items()},
                          attrs=truth.attrs)
    return _doy_hour_climatology(truth, window_days)


def climatology_at(clim: XrObj, times: xr.DataArray) -> XrObj:
    """The climatology at each of ``times`` (selected by day of year and hour, as WeatherBench 2 does)."""
    doy = xr.DataArray(times.dt.dayofyear.values, dims="time", coords={"time": times.values})
    hour = xr.DataArray(times.dt.hour.values, dims="time", coords={"time": times.values})
    missing = sorted(set(hour.values.tolist()) - set(clim["hour"].values.tolist()))
    if missing:
        raise ValueError(f"the climatology has no hour(s) {missing} (it has {clim['hour'].values.tolist()})")
    return clim.sel(dayofyear=doy, hour=hour).drop_vars(["dayofyear", "hour"])


def wb2_acc(da_fc: XrObj, da_true: XrObj, clim: XrObj) -> XrObj:
    """WeatherBench 2's ACC: at each valid time, the area-weighted uncentred correlation of the forecast's and the
    truth's anomalies against ``clim`` (``doy_hour_climatology``) at that time's day of year and hour; then the mean
    over time."""
    c = climatology_at(clim, da_true["time"])
    fa, a = da_fc - c, da_true - c
    w = _weights(a, wb2_lat_weights)
    per_time = _spatial_mean(fa * a, w) / np.sqrt(_spatial_mean(fa ** 2, w) * _spatial_mean(a ** 2, w))
    return per_time.mean("time", skipna=False)

