"""Tests for the WeatherBench loader, the synthetic generator and the download script (all offline)."""
from __future__ import annotations

import importlib.util
import io
import shutil
import urllib.error
import zipfile
from email.message import Message
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

from racecar_core.data import MissingDataError, WeatherDataset, availability, to_xarray
from racecar_core.data.weather_synth import LAT, SYNTHETIC_TAG, write_synthetic_weatherbench
from racecar_core.data.weatherbench import (Normalizer, check_available, check_finite, is_synthetic,
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
        assert norm.std[ch] == pytest.approx(a.std(axis=0).mean(), rel=1e-9)
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
    assert "download_weatherbench.py" in str(err.value)


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


# ---------------------------------------------------------------- download script


def _script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "download_weatherbench.py"
    spec = importlib.util.spec_from_file_location("download_weatherbench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeServer:
    """An opener serving fixed bytes per URL, honouring Range, optionally breaking off after ``fail_after`` bytes."""

    def __init__(self, files: dict[str, bytes], fail_after: int | None = None):
        self.files, self.fail_after, self.requests = files, fail_after, []

    def __call__(self, req, timeout=None):
        self.requests.append((req.get_method(), dict(req.header_items())))
        body = self.files[req.full_url]
        start = int(req.get_header("Range", "bytes=0-")[6:].rstrip("-"))
        if start >= len(body) and start:
            raise urllib.error.HTTPError(req.full_url, 416, "range", Message(), None)
        headers = Message()
        headers["Content-Length"] = str(len(body) - start)
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        chunk = body[start:] if req.get_method() == "GET" else b""
        fail = None
        if req.get_method() == "GET":
            fail, self.fail_after = self.fail_after, None
        return _Resp(chunk, headers, 206 if start else 200, fail)


class _Resp(io.BytesIO):
    def __init__(self, data: bytes, headers: Message, status: int, fail_after: int | None):
        super().__init__(data)
        self.headers, self.status, self._fail = headers, status, fail_after

    def getcode(self) -> int:
        return self.status

    def read(self, n: int = -1) -> bytes:
        if self._fail is not None and self.tell() >= self._fail:
            raise ConnectionResetError("connection dropped (test)")
        return super().read(n if self._fail is None or n < 0 else min(n, self._fail - self.tell()) or n)


URL = "https://example.test/archive.zip"


def test_download_url():
    dl = _script()
    assert dl.build_url("geopotential_500") == ("https://dataserv.ub.tum.de/s/m1524895/download?path=%2F5.625deg"
                                                "%2Fgeopotential_500&files=geopotential_500_5.625deg.zip")
    assert dl.build_url("constants").endswith("path=%2F5.625deg%2Fconstants&files=constants_5.625deg.nc")


def test_download_resumes_and_checks_size(tmp_path):
    dl = _script()
    body = bytes(range(256)) * 5000
    server = FakeServer({URL: body}, fail_after=300_000)
    dest = tmp_path / "x.zip"
    assert dl.remote_size(URL, server) == len(body)
    with pytest.raises(ConnectionResetError):
        dl.download(URL, dest, len(body), server, log=lambda s: None)
    part = tmp_path / "x.zip.part"
    assert 0 < part.stat().st_size < len(body) and not dest.exists()
    dl.download(URL, dest, len(body), server, log=lambda s: None)
    assert dest.read_bytes() == body and not part.exists()
    assert server.requests[-1][1]["Range"] == "bytes=300000-"
    with pytest.raises(OSError, match="expected size"):
        dl.download(URL, tmp_path / "y.zip", len(body) + 1, FakeServer({URL: body}), log=lambda s: None)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    (tmp_path / "f.bin.part").write_bytes(body[:1000])  # file:// ignores Range: starts over, still correct
    got = dl.download(src.as_uri(), tmp_path / "f.bin", log=lambda s: None)
    assert got.read_bytes() == body


def test_unzip_into_layout_and_main(synth_root, tmp_path):
    dl = _script()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for y in YEARS:
            zf.write(var_path(synth_root, "t2m", y), f"2m_temperature_{y}_5.625deg.nc")
        zf.writestr("README.txt", "not a data file")
    const = (synth_root / "5.625deg" / "constants" / "constants_5.625deg.nc").read_bytes()
    server = FakeServer({dl.build_url("2m_temperature"): buf.getvalue(), dl.build_url("constants"): const},
                        fail_after=5000)  # the first download breaks off and is resumed by the retry loop
    root = tmp_path / "wb"
    assert dl.main(["--root", str(root), "--vars", "2m_temperature", "constants", "--years", "2016", "2017"],
                   opener=server) == 0
    assert sorted(p.name for p in (root / "5.625deg" / "2m_temperature").iterdir()) == [
        "2m_temperature_2016_5.625deg.nc", "2m_temperature_2017_5.625deg.nc"]
    ds = open_weatherbench(root, ("t2m",), (2016, 2017))
    np.testing.assert_array_equal(ds.t2m.sel(time="2017").values, _raw(synth_root, "2m_temperature", 2017).values)
    assert not (root / "downloads" / "2m_temperature_5.625deg.zip").exists()
    assert any(h.get("Range") == "bytes=5000-" for _, h in server.requests)  # resumed, not restarted
    with pytest.raises(FileNotFoundError, match="1999"):
        zpath = tmp_path / "t.zip"
        zpath.write_bytes(buf.getvalue())
        dl.extract_into_layout(zpath, tmp_path / "other", "2m_temperature", years=(2016, 1999))
