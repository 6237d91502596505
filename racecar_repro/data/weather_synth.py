"""The model of a small synthetic stand-in for WeatherBench (NOT ERA5).

Three latent fields follow a linear stochastic model: every zonal wavenumber at every latitude is advected eastward by a
latitude-dependent zonal wind, damped (more strongly at high wavenumbers, like diffusion) and forced by noise that is
smooth in latitude. Z500, T850 and T2M are climatologies (latitude, season; T2M also orography, land-sea contrast and a
daily cycle in local solar time) plus mixtures of the latent fields, so a 72 h forecast is partly predictable from the
last few states. The noise of each year is seeded by ``(seed, year)`` and the model is spun up over the last 120 days
of the year before the first one written (damping e^-20), so a year's data do not depend on which other years are
written (to float32 precision). ``weatherbench2.write_synthetic_store`` writes them as a WeatherBench 2 store;
the tests write them in WeatherBench 1's netCDF layout (``tests/wb1_files.py``) to test that loader.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

GENERATOR_VERSION = 1
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
