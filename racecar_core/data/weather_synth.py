"""A small synthetic stand-in for WeatherBench (NOT ERA5), written in exactly the archive's netCDF layout.

Three latent fields follow a linear stochastic model: every zonal wavenumber at every latitude is advected eastward by a
latitude-dependent zonal wind, damped (more strongly at high wavenumbers, like diffusion) and forced by noise that is
smooth in latitude. Z500, T850 and T2M are climatologies (latitude, season; T2M also orography, land-sea contrast and a
daily cycle in local solar time) plus mixtures of the latent fields, so a 72 h forecast is partly predictable from the
last few states. The noise of each year is seeded by ``(seed, year)`` and the model is spun up over the last 120 days
of the year before the first one written (damping e^-20), so a year's data do not depend on which other years are
written (to float32 precision). Run ``python -m racecar_core.data.weather_synth --root DIR``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from racecar_core.data.weatherbench import RESOLUTION, constants_path, var_path, var_spec
from racecar_core.files import atomic_write

SYNTHETIC_TAG = "racecar_core.data.weather_synth (NOT ERA5)"
GENERATOR_VERSION = 1
START_YEAR = 1979  # first year of the WeatherBench archive
SPIN_UP_DAYS = 120
LAT = np.linspace(-87.1875, 87.1875, 32)
LON = np.arange(64) * 5.625
K_MAX = 8  # highest zonal wavenumber of the latent fields
N_BASIS = 6  # meridional basis functions of the forcing
R_EARTH = 6.371e6
JET_SPEED = np.array([15.0, 10.0, 6.0])  # m/s, peak zonal wind that advects each latent field
TAU_DAYS = 10.0  # damping time of the gravest modes
NU_PER_DAY = 0.004  # extra damping rate nu * k^2 (1/day)
LATENT_STD = 1.46  # std of the raw latent fields (measured: 1.00 after rescaling, 2016, seed 0): rescaled to about unit std

# what the loader's variable table (short name, level, units) does not hold: the names CF attributes give them
VAR_NAMES = {
    "geopotential_500": {"long_name": "Geopotential", "standard_name": "geopotential"},
    "temperature_850": {"long_name": "Temperature", "standard_name": "air_temperature"},
    "2m_temperature": {"long_name": "2 metre temperature"},
}


def _basis() -> np.ndarray:
    """Forcing patterns in latitude [N_BASIS, lat], times a cos(lat) envelope for k >= 1: [K+1, N_BASIS, lat]."""
    phi = np.deg2rad(LAT)
    b = np.stack([np.cos(j * (phi + np.pi / 2)) for j in range(N_BASIS)]) / np.sqrt(N_BASIS)
    env = np.where(np.arange(K_MAX + 1)[:, None] == 0, 1.0, np.cos(phi)[None, :])
    return b[None, :, :] * env[:, None, :]


def _rates() -> tuple[np.ndarray, np.ndarray]:
    """Complex growth rate per day [field, k, lat] (advection and damping) and forcing spectrum per k."""
    phi = np.deg2rad(LAT)
    u = JET_SPEED[:, None] * np.sin(2 * phi) ** 2 - 3.0 * np.cos(phi) ** 4  # jets at 45 deg, weak tropical easterlies
    omega = u / (R_EARTH * np.cos(phi)) * 86400.0  # rad/day
    k = np.arange(K_MAX + 1)
    damp = 1.0 / TAU_DAYS + NU_PER_DAY * k ** 2
    rate = -1j * k[None, :, None] * omega[:, None, :] - damp[None, :, None]
    spectrum = np.where(k == 0, 0.6, k * np.exp(-k / 3.0))
    return rate, spectrum


def _latent(years: Sequence[int], hours_step: int, seed: int) -> dict[int, np.ndarray]:
    """Integrate the latent model over the years; return {year: grid fields [T, 3, lat, lon]} for the requested years."""
    rate, spectrum = _rates()
    dt = hours_step / 24.0
    prop = np.exp(rate * dt)
    noise_amp = spectrum[None, :, None] * np.sqrt(1.0 - np.abs(prop) ** 2)
    basis = _basis()

    def forcing(year: int) -> np.ndarray:
        n = int(round((pd.Timestamp(year + 1, 1, 1) - pd.Timestamp(year, 1, 1)) / pd.Timedelta(hours=hours_step)))
        rng = np.random.default_rng([seed, hours_step, year])
        c = rng.standard_normal((n, 3, K_MAX + 1, 1, N_BASIS)) + 1j * rng.standard_normal((n, 3, K_MAX + 1, 1, N_BASIS))
        c[:, :, 0] = c[:, :, 0].real * np.sqrt(2.0)
        return (c @ basis)[..., 0, :] * noise_amp

    state = np.zeros((3, K_MAX + 1, LAT.size), complex)
    for f in forcing(min(years) - 1)[-int(SPIN_UP_DAYS * 24 / hours_step):]:  # the tail of the year before
        state = prop * state + f
    wanted, out = set(int(y) for y in years), {}
    for year in range(min(wanted), max(wanted) + 1):
        forc = forcing(year)
        hist = np.empty_like(forc)
        for i in range(forc.shape[0]):
            state = prop * state + forc[i]
            hist[i] = state
        if year in wanted:
            spec = np.zeros(hist.shape[:2] + (LAT.size, LON.size // 2 + 1), complex)
            spec[..., :K_MAX + 1] = np.moveaxis(hist, 2, 3) * (LON.size / 2)
            spec[..., 0] = spec[..., 0].real * 2
            out[year] = np.fft.irfft(spec, n=LON.size, axis=-1) / LATENT_STD
    return out


def geography() -> dict[str, np.ndarray]:
    """Fixed (seed-independent) land-sea mask in 0..1, orography in m and lat2d/lon2d in degrees, each [lat, lon]."""
    rng = np.random.default_rng(20200212)
    phi, lam = np.meshgrid(np.deg2rad(LAT), np.deg2rad(LON), indexing="ij")

    def smooth() -> np.ndarray:
        f = np.zeros_like(phi)
        for k in range(5):
            for j in range(5):
                f += rng.standard_normal() * np.cos(k * lam + rng.uniform(0, 2 * np.pi)) * np.cos(j * (phi + np.pi / 2))
        return (f - f.mean()) / f.std()

    land = smooth()
    lsm = 1.0 / (1.0 + np.exp(-(land - np.quantile(land, 0.68)) / 0.15))
    lsm = np.where(LAT[:, None] < -66.0, 1.0, lsm)  # an Antarctica
    oro = lsm * (150.0 + 2200.0 / (1.0 + np.exp(-2.0 * smooth())))
    oro = np.where(LAT[:, None] < -66.0, 2600.0, oro)
    return {"orography": oro, "lsm": lsm, "lat2d": np.rad2deg(phi), "lon2d": np.rad2deg(lam)}


def physical_fields(latent: np.ndarray, times: pd.DatetimeIndex, geo: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map latent fields [T, 3, lat, lon] at ``times`` to z (m^2/s^2), t850 and t2m (K), each [T, lat, lon]."""
    phi = np.deg2rad(LAT)[None, :, None]
    doy = np.asarray(times.day_of_year, float)[:, None, None]
    season = np.cos(2 * np.pi * (doy - 196.0) / 365.25) * np.sin(phi)  # > 0 in the local summer
    env = 0.3 + 0.7 * np.sin(phi) ** 2  # weather is weaker in the tropics
    d0, d1, d2 = env * latent[:, 0], env * latent[:, 1], env * latent[:, 2]
    z = 50000.0 + 8000.0 * np.cos(phi) ** 2 + 900.0 * season + 2200.0 * d0
    t_anom = 6.0 * (0.75 * d0 + 0.66 * d1)
    t850 = 249.0 + 36.0 * np.cos(phi) ** 2 + 7.0 * season + t_anom
    hour = np.asarray(times.hour, float)[:, None, None]
    lst = (hour + LON[None, None, :] / 15.0) % 24.0
    lsm, oro = geo["lsm"][None], geo["orography"][None]
    diurnal = (1.0 + 7.0 * lsm) * np.cos(2 * np.pi * (lst - 14.0) / 24.0) * np.cos(phi)
    t2m = (260.0 + 45.0 * np.cos(phi) ** 2 + (6.0 + 10.0 * lsm) * season - 0.0065 * oro
           + 0.7 * t_anom + 3.0 * d2 + diurnal)
    return {"geopotential_500": z, "temperature_850": t850, "2m_temperature": t2m}


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


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write a synthetic WeatherBench look-alike."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="writes <root>/5.625deg/...")
    p.add_argument("--years", type=int, nargs="+", default=[2015, 2016, 2017])
    p.add_argument("--hours-step", type=int, default=6)
    p.add_argument("--days-per-year", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    root = write_synthetic_weatherbench(a.root, a.years, hours_step=a.hours_step, seed=a.seed,
                                        days_per_year=a.days_per_year)
    print(f"synthetic WeatherBench (NOT ERA5) written to {root / RESOLUTION}")


if __name__ == "__main__":
    main()
