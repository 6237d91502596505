"""Tests for the WeatherBench-1 layout loader, its synthetic generator, the normaliser and the dataset (offline)."""
from __future__ import annotations

import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

from racecar_repro.data import MissingDataError

from racecar_repro.data.weather_dataset import WeatherDataset, to_xarray

from racecar_repro.data.availability import availability
from racecar_repro.data.weather_synth import LAT
from wb1_files import SYNTHETIC_TAG, write_synthetic_weatherbench
from racecar_repro.data.weatherbench import (Normalizer, check_available, check_finite, is_synthetic,
                                            open_weatherbench, split_years, var_path)

VARS = ("geopotential_500", "temperature_850", "2m_temperature")
SHORT = {"geopotential_500": "z", "temperature_850": "t", "2m_temperature": "t2m"}
YEARS = (2015, 2016, 2017)
DAYS = 90


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    return write_synthetic_weatherbench(tmp_path_factory.mktemp("wb"), years=YEARS, days_per_year=DAYS)


@pytest.fixture
def root_copy(synth_root, tmp_path) -> Path:
    """A private copy of the synthetic archive, for tests that change or cache things."""
    return Path(shutil.copytree(synth_root, tmp_path / "wb"))


def _raw(root: Path, var: str, year: int) -> xr.DataArray:
    with xr.open_dataset(var_path(root, var, year)) as ds:
        return ds[SHORT[var]].load()


# ---------------------------------------------------------------- generator


def test_generator_writes_the_weatherbench_layout(synth_root):
    base = synth_root / "5.625deg"
    for var in VARS:
        assert sorted(p.name for p in (base / var).iterdir()) == [f"{var}_{y}_5.625deg.nc" for y in YEARS]
    for var, level in (("geopotential_500", 500), ("temperature_850", 850), ("2m_temperature", None)):
        with xr.open_dataset(base / var / f"{var}_2016_5.625deg.nc") as ds:  # plain xarray, no helper
            da = ds[SHORT[var]]
            assert da.dims == ("time", "lat", "lon") and da.dtype == np.float32 and da.shape == (DAYS * 4, 32, 64)
            np.testing.assert_allclose(ds.lat, np.arange(-87.1875, 87.19, 5.625))
            np.testing.assert_allclose(ds.lon, np.arange(0, 354.4, 5.625))
            assert ds.lat.attrs["units"] == "degrees_north" and ds.lon.attrs["units"] == "degrees_east"
            assert da.attrs["units"] == ("m**2 s**-2" if var == "geopotential_500" else "K")
            assert ds.attrs["synthetic"] == SYNTHETIC_TAG
            assert (int(ds.level) == level) if level else ("level" not in ds.coords)
            assert str(ds.time.values[0])[:13] == "2016-01-01T00" and np.all(np.diff(ds.time) == np.timedelta64(6, "h"))
    with xr.open_dataset(base / "constants" / "constants_5.625deg.nc") as c:
        assert {"orography", "lsm", "lat2d"} <= set(c.data_vars) and c.attrs["synthetic"] == SYNTHETIC_TAG
        assert 0 <= float(c.lsm.min()) and float(c.lsm.max()) <= 1 and float(c.orography.max()) > 1000
        np.testing.assert_allclose(c.lat2d[:, 0], LAT)


def test_generator_ranges_and_determinism(synth_root, tmp_path):
    z, t, t2 = (_raw(synth_root, v, 2016) for v in VARS)
    assert 52000 < float(z.mean()) < 56000 and 1000 < float(z.std()) < 5000
    assert 255 < float(t.mean()) < 285 and 270 < float(t2.mean()) < 290
    again = write_synthetic_weatherbench(tmp_path / "a", years=(2016,), days_per_year=DAYS)  # 2016 alone
    np.testing.assert_allclose(_raw(again, "2m_temperature", 2016), t2, atol=1e-3)
    other = write_synthetic_weatherbench(tmp_path / "b", years=(2016,), variables=("temperature_850",), seed=1,
                                         days_per_year=5)
    assert not np.allclose(_raw(other, "temperature_850", 2016), t[:20])


# ---------------------------------------------------------------- loader


def test_open_round_trip_and_splits(synth_root):
    ds = open_weatherbench(synth_root, ("z500", "t850", "t2m"), YEARS)
    assert list(ds.data_vars) == ["z500", "t850", "t2m"] and ds.z500.dims == ("time", "lat", "lon")
    assert is_synthetic(ds) and ds.sizes["time"] == 3 * DAYS * 4
    np.testing.assert_array_equal(ds.t850.sel(time="2016").values, _raw(synth_root, "temperature_850", 2016).values)
    assert split_years("train", YEARS) == (2015,) and split_years("valid", YEARS) == (2016,)
    assert split_years("test", YEARS) == (2017,) and split_years("test") == (2017, 2018)
    assert len(split_years("train")) == 37
    sub = open_weatherbench(synth_root, ("geopotential_500",), (2016,), step_hours=12)
    assert np.all(sub.time.dt.hour.isin([0, 12])) and sub.sizes["time"] == DAYS * 2


def test_normalizer_matches_numpy_and_is_cached(root_copy, monkeypatch):
    norm = Normalizer.for_training(root_copy, (2015,))
    assert norm.source.startswith("computed")
    for var, ch in zip(VARS, ("z500", "t850", "t2m")):
        a = _raw(root_copy, var, 2015).values.astype(np.float64)
        assert norm.mean[ch] == pytest.approx(a.mean(), rel=1e-9)
        assert norm.std[ch] == pytest.approx(a.std(), rel=1e-9)
    cache = list((root_copy / "5.625deg").glob("normalization_*.json"))
    assert len(cache) == 1
    monkeypatch.setattr(Normalizer, "compute", classmethod(lambda cls, ds: pytest.fail("recomputed")))
    again = Normalizer.for_training(root_copy, (2015,))
    assert again.source.startswith("cache") and again == norm


def test_dataset_shapes_targets_and_subsampling(synth_root):
    d = WeatherDataset.from_root(synth_root, (2016,), train_years=(2015,))
    n_in = 3 * 3 + 3
    x, y = d[5]
    assert x.shape == (n_in, 32, 64) and y.shape == (3, 32, 64) and x.dtype == y.dtype == torch.float32
    assert len(d.input_channels) == n_in and d.in_memory
    init = d.init_times[5]
    assert np.all((d.valid_times - d.init_times) == np.timedelta64(72, "h"))
    assert np.all(np.diff(d.init_times) == np.timedelta64(12, "h")) and np.all(d.init_times.astype("M8[h]").astype(int) % 12 == 0)
    n = d.normalizer
    for k, (var, ch) in enumerate(zip(VARS, ("z500", "t850", "t2m"))):
        raw = _raw(synth_root, var, 2016)
        np.testing.assert_allclose(y[k].numpy() * n.std[ch] + n.mean[ch], raw.sel(time=d.valid_times[5]), rtol=1e-6)
        prev = raw.sel(time=init - np.timedelta64(6, "h")).values
        np.testing.assert_allclose(x[3 + k].numpy(), (prev - n.mean[ch]) / n.std[ch], atol=1e-5)
    X, Y = d.tensors()
    assert X.shape == (len(d), n_in, 32, 64) and torch.equal(X[5], x) and torch.equal(Y[5], y)
    assert len(d) == DAYS * 2 - 7  # t-12h and t+72h inside the 90 days
    lazy = WeatherDataset.from_root(synth_root, (2016,), train_years=(2015,), in_memory=False)
    assert not lazy.in_memory and torch.equal(lazy[5][0], x) and torch.equal(lazy[5][1], y)
    dense = WeatherDataset.from_root(synth_root, (2016,), train_years=(2015,), sample_every_h=6,
                                     input_offsets_h=(0, -24), target_vars=("z500",), constants=False)
    assert dense[0][0].shape == (6, 32, 64) and dense[0][1].shape == (1, 32, 64) and len(dense) == DAYS * 4 - 16


def test_to_xarray_recovers_physical_units(synth_root):
    d = WeatherDataset.from_root(synth_root, (2017,), train_years=(2015,))
    out = to_xarray(d.tensors()[1], d)
    assert set(out.data_vars) == {"z500", "t850", "t2m"} and out.z500.dims == ("time", "lat", "lon")
    assert out.z500.attrs["units"] == "m**2 s**-2" and is_synthetic(out)
    raw = _raw(synth_root, "geopotential_500", 2017).sel(time=d.valid_times)
    np.testing.assert_allclose(out.z500.values, raw.values, rtol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        to_xarray(torch.zeros(3, 3, 32, 64), d)


def test_missing_year_names_file_and_command(synth_root):
    with pytest.raises(MissingDataError) as err:
        open_weatherbench(synth_root, ("t2m",), (2016, 2018))
    assert "2m_temperature_2018_5.625deg.nc" in str(err.value) and "make data-weather" in str(err.value)
    assert "make data-weather PROFILE=quick" in str(err.value)  # the quick subset (2010-2018) holds t2m 2016, 2018


def test_nan_and_grid_mismatch_are_errors(root_copy):
    path = var_path(root_copy, "t850", 2016)
    with xr.open_dataset(path) as ds:
        bad = ds.load()
    bad["t"][7, 3, 4] = np.nan
    bad.to_netcdf(path)
    with pytest.raises(ValueError, match="NaN"):
        ds = open_weatherbench(root_copy, ("t850",), (2016,))
        try:  # with dask the archive opens lazily and is checked when loaded (as WeatherDataset does)
            check_finite(ds)
        finally:
            ds.close()
    other = var_path(root_copy, "t2m", 2015)  # a file not opened above (a lazily opened one may stay open)
    with xr.open_dataset(other) as ds:
        shifted = ds.load().assign_coords(lon=ds.lon + 1.0)
    shifted.to_netcdf(var_path(root_copy, "t2m", 2016))
    with pytest.raises(ValueError, match="grid mismatch"):
        open_weatherbench(root_copy, ("t2m",), (2015, 2016))


def test_availability_check(tmp_path, monkeypatch, synth_root):
    monkeypatch.setenv("RACECAR_DATA_DIR", str(tmp_path))
    ok, msg = availability("weatherbench")
    assert not ok and "make data-weather" in msg
    root = Path(shutil.copytree(synth_root, tmp_path / "weatherbench"))
    ok, msg = check_available(root, years=(2016,))
    assert not ok and "synthetic" in msg
    for var in VARS:
        with netCDF4.Dataset(var_path(root, var, 2016), "a") as nc:
            nc.delncattr("synthetic")
    assert check_available(root, years=(2016,))[0]


def test_synthetic_task_is_learnable(synth_root):
    """A linear least-squares fit (per latitude and zonal wavenumber) beats persistence and climatology at 72 h."""
    tr = WeatherDataset.from_root(synth_root, (2015,), sample_every_h=6, constants=False)
    va = WeatherDataset.from_root(synth_root, (2016,), train_years=(2015,), sample_every_h=6, constants=False)
    (xt, yt), (xv, yv) = tr.tensors(), va.tensors()

    def feats(x: torch.Tensor) -> np.ndarray:
        f = np.fft.rfft(x.numpy().astype(np.float64), axis=-1)
        return np.concatenate([f, np.ones_like(f[:, :1])], 1).transpose(2, 3, 0, 1)  # [lat, k, N, features]

    a, b = feats(xt), np.fft.rfft(yt.numpy().astype(np.float64), axis=-1).transpose(2, 3, 0, 1)
    ah = a.conj().transpose(0, 1, 3, 2)
    beta = np.linalg.solve(ah @ a + 1e-3 * np.eye(a.shape[-1]), ah @ b)
    pred = np.fft.irfft((feats(xv) @ beta).transpose(2, 3, 0, 1), n=64, axis=-1)
    w = np.cos(np.deg2rad(LAT))[None, None, :, None]

    def rmse(p: np.ndarray) -> np.ndarray:
        return np.sqrt(((p - yv.numpy()) ** 2 * w / w.mean()).mean(axis=(0, 2, 3)))

    linear, persistence, climatology = rmse(pred), rmse(xv[:, :3].numpy()), rmse(yt.numpy().mean(0, keepdims=True))
    assert np.all(linear < persistence) and np.all(linear < climatology)
    assert linear[0] < 0.9 * climatology[0] and linear[0] < 0.75 * persistence[0]
