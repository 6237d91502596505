"""Test helper: the synthetic weather model (``racecar_repro.data.weather_synth``, NOT ERA5) written in WeatherBench 1's
netCDF archive layout (``<root>/5.625deg/<var>/<var>_<year>_5.625deg.nc`` and constants), so that the tests load it
through the library's WeatherBench 1 loader, as a user's archive would be."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from racecar_core.files import atomic_write
from racecar_repro.data.weather_synth import GENERATOR_VERSION, LAT, LON, _latent, geography, physical_fields
from racecar_repro.data.weatherbench import constants_path, var_path, var_spec

SYNTHETIC_TAG = "racecar_repro.data.weather_synth (NOT ERA5)"
START_YEAR = 1979  # first year of the WeatherBench archive
# what the loader's variable table (short name, level, units) does not hold: the names CF attributes give them
VAR_NAMES = {
    "geopotential_500": {"long_name": "Geopotential", "standard_name": "geopotential"},
    "temperature_850": {"long_name": "Temperature", "standard_name": "air_temperature"},
    "2m_temperature": {"long_name": "2 metre temperature"},
}


def _coords() -> dict[str, xr.DataArray]:
    return {"lat": xr.DataArray(LAT, dims="lat", attrs={"units": "degrees_north", "long_name": "latitude"}),
            "lon": xr.DataArray(LON, dims="lon", attrs={"units": "degrees_east", "long_name": "longitude"})}


def _attrs(seed: int, hours_step: int, days_per_year: int | None) -> dict[str, object]:
    return {"synthetic": SYNTHETIC_TAG, "synthetic_seed": seed, "synthetic_hours_step": hours_step,
            "synthetic_days_per_year": -1 if days_per_year is None else days_per_year,
            "synthetic_version": GENERATOR_VERSION, "Conventions": "CF-1.6"}


def _is_current(path: Path, attrs: dict[str, object]) -> bool:
    """True when ``path`` exists and was written by this generator with the same settings."""
    if not path.is_file():
        return False
    with xr.open_dataset(path) as ds:
        return all(ds.attrs.get(k) == v for k, v in attrs.items())


def _write(ds: xr.Dataset, path: Path) -> None:
    enc = {v: {"dtype": "float32", "zlib": True, "complevel": 4, "shuffle": True} for v in ds.data_vars}
    if "time" in ds.coords:
        enc["time"] = {"units": f"hours since {START_YEAR}-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"}
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4", encoding=enc))


def write_synthetic_weatherbench(root: str | Path, years: Sequence[int] = (2015, 2016, 2017),
                                 variables: Sequence[str] = ("geopotential_500", "temperature_850", "2m_temperature"),
                                 hours_step: int = 6, seed: int = 0, days_per_year: int | None = None,
                                 overwrite: bool = False) -> Path:
    """Write synthetic WeatherBench files ``<root>/5.625deg/<var>/<var>_<year>_5.625deg.nc`` plus constants; return root.

    ``days_per_year`` keeps only the first days of each year (tiny test sets); files written before with the same
    settings are kept unless ``overwrite``.
    """
    root = Path(root)
    unknown = [v for v in variables if v not in VAR_NAMES]
    if unknown:
        raise ValueError(f"unknown variable(s) {unknown}; the generator writes {sorted(VAR_NAMES)}")
    if hours_step <= 0 or 24 % hours_step:
        raise ValueError(f"hours_step must divide 24, got {hours_step}")
    if not years or min(years) < START_YEAR:
        raise ValueError(f"years must be non-empty and >= {START_YEAR}, got {tuple(years)}")
    attrs, geo = _attrs(seed, hours_step, days_per_year), geography()
    const_path = constants_path(root)
    if overwrite or not _is_current(const_path, attrs):
        units = {"orography": "m", "lsm": "(0 - 1)", "lat2d": "degrees_north", "lon2d": "degrees_east"}
        _write(xr.Dataset({k: (("lat", "lon"), v.astype(np.float32), {"units": units[k]}) for k, v in geo.items()},
                          coords=_coords(), attrs=attrs), const_path)
    paths = {(v, y): var_path(root, v, y) for v in variables for y in years}
    todo = sorted({y for (v, y), p in paths.items() if overwrite or not _is_current(p, attrs)})
    if not todo:
        return root
    for year, latent in _latent(todo, hours_step, seed).items():
        times = pd.date_range(f"{year}-01-01", periods=latent.shape[0], freq=f"{hours_step}h")
        if days_per_year is not None:
            keep = times < pd.Timestamp(year, 1, 1) + pd.Timedelta(days=days_per_year)
            times, latent = times[keep], latent[keep]
        fields = physical_fields(latent, times, geo)
        for var in variables:
            spec = var_spec(var)
            short, level, var_attrs = spec.short, spec.level, {"units": spec.units, **VAR_NAMES[var]}
            coords = {"time": times, **_coords()}
            if level is not None:
                coords["level"] = xr.DataArray(np.int32(level), attrs={"units": "millibars", "long_name": "pressure_level"})
            da = xr.DataArray(fields[var].astype(np.float32), dims=("time", "lat", "lon"), coords=coords, attrs=var_attrs)
            _write(xr.Dataset({short: da}, attrs=attrs), paths[(var, year)])
    return root
