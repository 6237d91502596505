"""racecar_repro.data.weatherbench2 offline: the format-exact synthetic store, the download path end to end against it
(resume, corrupted chunks, offline, wrong grid), and both layouts loading to the same tensors."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from racecar_repro.data import MissingDataError

from racecar_repro.data.weather_dataset import WeatherDataset
from racecar_repro.data import weatherbench2 as wb2
from wb1_files import write_synthetic_weatherbench
from racecar_repro.data.weatherbench import check_available, is_synthetic, open_weatherbench

YEARS = [2015, 2016]
DAYS = 30  # 2 x 120 six-hourly steps: three blocks of 100


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A synthetic WeatherBench 2 store standing in for the public one."""
    return wb2.write_synthetic_store(tmp_path_factory.mktemp("gcs") / "era5.zarr", YEARS, days_per_year=DAYS)


# ERA5's units, physical range and typical largest magnitude on the 64x32 grid of the store's variables (ECMWF's
# parameter database): the look-alike stays in the range and within a factor 10 of the magnitude
ERA5_RANGES = {"geopotential": (-5e3, 2.6e5, 2e5), "temperature": (170.0, 330.0, 300.0),
               "u_component_of_wind": (-150.0, 150.0, 50.0), "v_component_of_wind": (-150.0, 150.0, 30.0),
               "specific_humidity": (0.0, 0.04, 0.02), "2m_temperature": (180.0, 340.0, 310.0),
               "total_precipitation_6hr": (0.0, 0.1, 0.01),            # metres of water in 6 hours
               "toa_incident_solar_radiation": (0.0, 1361.0 * 3600, 4.9e6)}   # J m-2 in one hour


def test_the_synthetic_store_has_era5s_units_and_magnitudes(source):
    ds = xr.open_zarr(source, consolidated=True)
    for var, (lo, hi, typical) in ERA5_RANGES.items():
        values = ds[var].values
        assert lo <= float(values.min()) and float(values.max()) <= hi, (var, float(values.min()), float(values.max()))
        assert typical / 10 <= float(np.abs(values).max()) <= typical * 10, (var, float(np.abs(values).max()))
    assert float(ds["toa_incident_solar_radiation"].max()) > 4.0e6   # an hourly accumulation, not 6 hours'


def test_the_synthetic_store_has_the_real_format(source):
    meta = json.loads((source / ".zmetadata").read_text())["metadata"]
    assert meta["geopotential/.zarray"]["chunks"] == [100, 13, 64, 32]
    assert meta["geopotential/.zarray"]["dtype"] == "<f4" and meta["geopotential/.zarray"]["zarr_format"] == 2
    ds = xr.open_zarr(source, consolidated=True)
    assert ds["geopotential"].dims == ("time", "level", "longitude", "latitude")
    assert ds["2m_temperature"].dims == ("time", "longitude", "latitude")
    assert ds["land_sea_mask"].dims == ("longitude", "latitude")
    assert ds["level"].values.tolist() == list(wb2.LEVELS) and ds["level"].dtype == np.int64
    assert ds["latitude"].values[0] < ds["latitude"].values[-1] and ds["longitude"].values[-1] == 354.375
    assert ds.sizes["time"] == 2 * 4 * DAYS and (np.diff(ds["time"].values) >= np.timedelta64(6, "h")).all()
    assert set(wb2.LEVEL_VARS.values()) | set(wb2.SURFACE_VARS.values()) | set(wb2.STATIC_VARS.values()) \
        <= set(ds.data_vars)
    assert "NOT ERA5" in ds.attrs["synthetic"] and ds["geopotential"].attrs["units"] == "m**2 s**-2"
    z = ds["geopotential"].isel(time=0).mean(("longitude", "latitude")).values
    assert (np.diff(z) < 0).all()  # height falls with pressure


def test_download_copies_the_subset_and_resumes_after_an_interruption(source, tmp_path, monkeypatch):
    real, calls = wb2._write_block, []

    def flaky(sub, store, block, **kw):
        calls.append(block)
        if len(calls) == 2:
            raise KeyboardInterrupt("connection lost (test)")
        return real(sub, store, block, **kw)

    monkeypatch.setattr(wb2, "_write_block", flaky)
    with pytest.raises(KeyboardInterrupt):
        wb2.download(source, tmp_path, ["z500", "t850", "t2m"], YEARS, progress=False, log=lambda s: None)
    manifest = json.loads(wb2.manifest_path(tmp_path).read_text())
    assert list(manifest["blocks"]) == ["0"] and not manifest["complete"] and not wb2.has_store(tmp_path)
    with pytest.raises(MissingDataError, match="incomplete.*resume"):
        open_weatherbench(tmp_path, years=YEARS)
    lines: list[str] = []
    store = wb2.download(source, tmp_path, ["z500", "t850", "t2m"], YEARS, progress=False, log=lines.append)
    assert calls == [0, 1, 1, 2]  # block 0 was not fetched again
    # printed before it starts: 240 steps x 5 fields (z and t at both levels asked for, t2m) x 32 x 64 x 4 bytes
    assert "240 time steps, 9.8 MB" in lines[0]
    assert "2 of 3 blocks fetched now, 1 already there" in lines[-1]
    assert wb2.has_store(tmp_path) and wb2.verify(tmp_path) == []
    copy, src = xr.open_zarr(store, consolidated=True), xr.open_zarr(source, consolidated=True)
    assert copy["geopotential"].level.values.tolist() == [500, 850] and "u_component_of_wind" not in copy
    np.testing.assert_array_equal(copy["temperature"].values, src["temperature"].sel(level=[500, 850]).values)
    np.testing.assert_array_equal(copy["land_sea_mask"].values, src["land_sea_mask"].values)


def test_the_copy_reads_each_source_chunk_once_and_says_how_much(source, tmp_path):
    """2016 is steps 120-239 of the source, 20 steps into its second chunk of 100: both blocks of the copy touch the
    third chunk, which is read once (10.6 MB a chunk: 100 steps of all 13 levels), not once per block."""
    lines: list[str] = []
    wb2.download(source, tmp_path, ["z500"], [2016], progress=False, log=lines.append)
    assert "120 time steps, 1.0 MB to write" in lines[0] and "reads 2 source chunks of 100 steps, 21.3 MB" in lines[0]
    assert "(21.3 MB read, 1.0 MB written before compression)" in lines[-1]
    copy, src = xr.open_zarr(wb2.store_path(tmp_path)), xr.open_zarr(source)
    np.testing.assert_array_equal(copy["geopotential"].values,
                                  src["geopotential"].sel(level=[500], time=slice("2016", "2016")).values)


def test_a_corrupted_chunk_is_found_and_fetched_again(source, tmp_path):
    quiet = dict(progress=False, log=lambda s: None)
    store = wb2.download(source, tmp_path, ["z500"], [2016], **quiet)
    chunk = store / "geopotential" / "1.0.0.0"
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-8] + bytes(8))
    assert wb2.verify(tmp_path) == ["geopotential/1.0.0.0"]

    def lost(sub, store, block, **kw):
        raise KeyboardInterrupt("connection lost (test)")

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:  # the repair is interrupted: the copy must not count as complete
        mp.setattr(wb2, "_write_block", lost)
        with pytest.raises(KeyboardInterrupt):
            wb2.download(source, tmp_path, ["z500"], [2016], progress=False, log=lines.append)
    assert not wb2.has_store(tmp_path)
    wb2.download(source, tmp_path, ["z500"], [2016], progress=False, log=lines.append)
    assert any("block 1" in x and "corrupted" in x for x in lines) and "1 of 2 blocks fetched now" in lines[-1]
    assert chunk.read_bytes() == good and wb2.verify(tmp_path) == []
    with pytest.raises(ValueError, match="holds another WeatherBench 2 subset"):
        wb2.download(source, tmp_path, ["z500", "t850"], [2016], **quiet)


def test_offline_fails_at_once_naming_what_is_needed(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(MissingDataError, match="storage.googleapis.com.*1959-2022-6h-64x32.*internet"):
        wb2.open_source(wb2.ERA5_STORE)
    assert wb2.main(["--years", "2016", "--root", "/nonexistent/never-written"]) == 2


def test_wrong_grid_and_nan_are_clear_errors(source, tmp_path):
    ds = xr.open_zarr(source, consolidated=True)
    with pytest.raises(ValueError, match="not on the 64 x 32 equiangular"):
        wb2.check_grid(ds.isel(latitude=slice(0, 31)), "a 64x31 store")
    bad = ds[["2m_temperature"]].isel(time=slice(0, 40)).load()
    bad["2m_temperature"][5, 3, 3] = np.nan
    bad.attrs = {}
    bad.to_zarr(tmp_path / "nan.zarr", consolidated=True, zarr_format=2)
    wb2.download(tmp_path / "nan.zarr", tmp_path / "copy", ["t2m"], [2015], static=False, progress=False,
                 log=lambda s: None)
    nan_store = ds[["2m_temperature"]].isel(time=slice(0, 40)).load()
    nan_store["2m_temperature"][:] = np.nan
    nan_store.attrs = {}
    nan_store.to_zarr(tmp_path / "allnan.zarr", consolidated=True, zarr_format=2)
    with pytest.raises(ValueError, match="only NaN for \\['2m_temperature'\\].*64x33"):
        wb2.download(tmp_path / "allnan.zarr", tmp_path / "copy2", ["t2m"], [2015], static=False, progress=False,
                     log=lambda s: None)
    with pytest.raises(ValueError, match="t2m: NaN/inf values at 2015-01-02T06"):
        WeatherDataset.from_root(tmp_path / "copy", [2015], input_vars=["t2m"], target_vars=["t2m"],
                                 input_offsets_h=[0], lead_h=6, sample_every_h=6, constants=False)


def _rewrite_wb1(src: Path, dst: Path) -> None:
    """A WeatherBench-1 copy with latitude/longitude names and latitudes from north to south."""
    for f in src.rglob("*.nc"):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with xr.open_dataset(f) as ds:
            ds.load().rename({"lat": "latitude", "lon": "longitude"}).isel(latitude=slice(None, None, -1)).to_netcdf(out)


@pytest.mark.integration
def test_both_layouts_load_to_the_same_tensors(source, tmp_path):
    wb1 = write_synthetic_weatherbench(tmp_path / "wb1", YEARS, hours_step=6, days_per_year=DAYS)
    _rewrite_wb1(wb1, tmp_path / "wb1-renamed")
    root2 = tmp_path / "wb2"
    wb2.download(source, root2, ["z500", "t850", "t2m"], YEARS, progress=False, log=lambda s: None)
    kw = dict(train_years=[2015], input_offsets_h=[0, -6, -12], lead_h=72, sample_every_h=12)
    sets = {name: WeatherDataset.from_root(root, [2016], **kw)
            for name, root in (("wb1", wb1), ("wb1-renamed", tmp_path / "wb1-renamed"), ("wb2", root2))}
    x1, y1 = sets["wb1"].tensors()
    for name in ("wb1-renamed", "wb2"):
        x, y = sets[name].tensors()
        assert x.shape == x1.shape == (len(sets["wb1"]), 12, 32, 64) and y.shape == y1.shape
        assert (x[:, :9] == x1[:, :9]).all() and (y == y1).all()  # the variables: identical
        assert np.allclose(x[:, 9:], x1[:, 9:], atol=1e-5)  # constants: orography via geopotential / g
        assert (sets[name].valid_times == sets["wb1"].valid_times).all()
    assert sets["wb2"].input_channels == sets["wb1"].input_channels
    assert is_synthetic(open_weatherbench(root2, years=[2016]))
    ok, msg = check_available(root2, years=YEARS)
    assert not ok and "synthetic (NOT ERA5)" in msg and "make data-weather" in msg
    with pytest.raises(ValueError, match="multiples of 6 h"):
        open_weatherbench(root2, years=[2016], step_hours=3)
    with pytest.raises(MissingDataError, match="holds the years 2015-2016, not \\[2014\\]"):
        open_weatherbench(root2, years=[2014])
    shutil.rmtree(tmp_path / "wb1-renamed")


@pytest.mark.integration
def test_the_paper_profile_reads_117_channels_and_the_cli_fetches_a_profile_subset(source, tmp_path, monkeypatch,
                                                                                     capsys):
    monkeypatch.setenv("RACECAR_DATA_DIR", str(tmp_path / "data"))
    assert len(wb2.RASP_INPUTS) == 38
    moved = tmp_path / "moved.zarr"      # a climatology path that is not there (weatherbench2 issue 214)
    code = wb2.main(["--subset", "quick", "--source", str(source), "--years", "2015-2016", "--climatology-source",
                     str(moved)])
    assert code == 0 and wb2.has_store(wb2.default_root() / "custom")   # the ERA5 copy is kept, no traceback
    assert f"no climatology at {moved}" in capsys.readouterr().err
    assert wb2.open_climatology(wb2.default_root() / "custom", ["z500"]) is None
    root = wb2.default_root() / "paper"
    wb2.download(source, root, wb2.RASP_INPUTS, YEARS, progress=False, log=lambda s: None)
    assert wb2.find_root(["z500", "u250"], [2016]) == root  # the custom copy has no u: the paper copy is found
    assert wb2.find_root(["z500"], [2016]) == wb2.default_root() / "custom"
    assert wb2.find_root(["z500"], [2014]) is None
    assert wb2.channels_of(["z", "2m_temperature", "tp"], [500, 850]) == ["z500", "z850", "t2m", "tp"]
    with pytest.raises(ValueError, match="give --levels"):
        wb2.channels_of(["temperature"])
    with pytest.raises(ValueError, match="unknown WeatherBench 2 channel 'z555'"):
        wb2.channels_of(["z"], [555])
    assert "PROFILE=paper" in wb2.fetch_command(["q925", "t2m"], [1990]) and "PROFILE=quick" in \
        wb2.fetch_command(["z500"], [2012])
    ds = WeatherDataset.from_root(root, [2016], train_years=[2015], input_vars=wb2.RASP_INPUTS,
                                  input_offsets_h=[0, -6, -12], lead_h=72, sample_every_h=24)
    x, y = ds.tensors()
    assert x.shape[1] == 117 and y.shape[1] == 3 and ds.input_channels[-3:] == ["orography", "lsm", "lat2d"]
    assert ds.input_channels[:3] == ["z50@+0h", "z250@+0h", "z500@+0h"] and "tisr@-12h" in ds.input_channels
    assert torch.isfinite(x).all() and float(x[:, :114].std()) == pytest.approx(1.0, abs=0.3)



@pytest.mark.integration
def test_the_climatology_is_copied_checked_and_used_for_wb2_acc(source, tmp_path):
    from racecar_repro.score import doy_hour_climatology
    clim_src = wb2.write_synthetic_climatology(tmp_path / "clim_src.zarr", source)
    assert xr.open_zarr(clim_src)["geopotential"].dims == ("hour", "dayofyear", "level", "longitude", "latitude")
    root = tmp_path / "copy"
    wb2.download(source, root, ["z500", "t850", "t2m"], YEARS, progress=False, log=lambda s: None)
    assert wb2.open_climatology(root, ["z500"]) is None  # not copied yet
    lines: list[str] = []
    wb2.download_climatology(clim_src, root, ["z500", "t850", "t2m"], log=lines.append)
    clim = wb2.open_climatology(root, ["z500", "t2m"])
    assert clim["z500"].dims == ("dayofyear", "hour", "lat", "lon") and clim.sizes["dayofyear"] == 366
    truth = open_weatherbench(root, ["z500"], YEARS)["z500"].load()
    expected = doy_hour_climatology(truth)
    np.testing.assert_allclose(clim["z500"].values, expected.values, rtol=1e-6)
    wb2.download_climatology(clim_src, root, ["z500", "t850", "t2m"], log=lines.append)
    assert "already in" in lines[-1]
    f = next((root / wb2.CLIMATOLOGY_NAME / "2m_temperature").glob("0.*"))
    f.write_bytes(f.read_bytes()[:-4] + bytes(4))
    assert wb2.open_climatology(root, ["t2m"]) is None  # a damaged copy is not used


def test_precipitation_enters_on_a_log_scale_with_mean_zero(source, tmp_path):
    from racecar_repro.data.weatherbench import Normalizer
    root = tmp_path / "tp"
    wb2.download(source, root, ["tp"], YEARS, progress=False, log=lambda s: None)
    ds = open_weatherbench(root, ["tp"], YEARS)
    raw = xr.open_zarr(source)["total_precipitation_6hr"].transpose("time", "latitude", "longitude").values
    np.testing.assert_allclose(ds["tp"].values, np.log(raw + 1e-3) - np.log(1e-3), rtol=1e-5, atol=1e-7)
    assert (raw > 0).any() and ds["tp"].attrs["units"] == "log(1 + tp / 1 mm)"
    norm = Normalizer.compute(ds.load())
    assert norm.mean["tp"] == 0.0 and norm.std["tp"] == pytest.approx(float(ds["tp"].std()))
