"""Tests for racecar_repro.score: latitude-weighted RMSE/MSE/MAE/ACC against hand computations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from racecar_repro.score import (compute_weighted_acc, compute_weighted_mae, compute_weighted_mse,
                                compute_weighted_rmse, lat_weights)

LAT = np.linspace(-87.1875, 87.1875, 32)
LON = np.arange(64) * 5.625


def _field(seed: int, n_time: int = 10) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.normal(size=(n_time, 32, 64)), dims=("time", "lat", "lon"),
                        coords={"time": pd.date_range("2017-01-01", periods=n_time, freq="12h"), "lat": LAT, "lon": LON})


def _w() -> np.ndarray:
    w = np.cos(np.deg2rad(LAT))
    return (w / w.mean())[None, :, None]


def test_weights_mean_to_one():
    w = lat_weights(xr.DataArray(LAT, dims="lat", coords={"lat": LAT}))
    assert float(w.mean()) == pytest.approx(1.0) and float(w.max()) == pytest.approx(np.cos(np.deg2rad(LAT[16])) / np.cos(np.deg2rad(LAT)).mean())


def test_constant_offset():
    truth = _field(0)
    assert float(compute_weighted_rmse(truth + 3.0, truth)) == pytest.approx(3.0)
    assert float(compute_weighted_mae(truth - 2.5, truth)) == pytest.approx(2.5)
    assert float(compute_weighted_mse(truth + 2.0, truth)) == pytest.approx(4.0)
    ds_fc, ds_true = xr.Dataset({"z500": truth + 10.0, "t850": truth - 1.0}), xr.Dataset({"z500": truth, "t850": truth})
    out = compute_weighted_rmse(ds_fc, ds_true)
    assert isinstance(out, xr.Dataset) and float(out.z500) == pytest.approx(10.0) and float(out.t850) == pytest.approx(1.0)


def test_against_hand_computation():
    fc, truth = _field(1), _field(2)
    err = fc.values - truth.values
    assert float(compute_weighted_mse(fc, truth)) == pytest.approx((err ** 2 * _w()).mean())
    assert float(compute_weighted_rmse(fc, truth)) == pytest.approx(np.sqrt((err ** 2 * _w()).mean()))
    assert float(compute_weighted_mae(fc, truth)) == pytest.approx((np.abs(err) * _w()).mean())
    per_time = compute_weighted_rmse(fc, truth, mean_dims=("lat", "lon"))
    assert per_time.dims == ("time",)
    np.testing.assert_allclose(per_time.values, np.sqrt((err ** 2 * _w()).mean(axis=(1, 2))))
    clim = truth.values.mean(0)
    fa, a = fc.values - clim, truth.values - clim
    fa, a = fa - fa.mean(), a - a.mean()
    w = np.broadcast_to(_w(), fa.shape)
    acc = (w * fa * a).sum() / np.sqrt((w * fa ** 2).sum() * (w * a ** 2).sum())
    assert float(compute_weighted_acc(fc, truth)) == pytest.approx(acc)


def test_acc_limits_and_time_alignment():
    truth = _field(3)
    assert float(compute_weighted_acc(truth, truth)) == pytest.approx(1.0)
    clim = truth.mean("time")
    assert float(compute_weighted_acc(2 * clim - truth, truth)) == pytest.approx(-1.0)  # anomalies flipped
    sub = truth.isel(time=slice(2, 8))  # the forecast covers fewer times: scored on the shared ones
    assert float(compute_weighted_acc(sub, truth)) == pytest.approx(1.0)
    assert abs(float(compute_weighted_acc(_field(4), truth))) < 0.1


def test_missing_lat_is_an_error():
    da = _field(0).rename(lat="latitude")
    with pytest.raises(ValueError, match="lat"):
        compute_weighted_rmse(da, da)


# ---------------------------------------------------------------- WeatherBench 2


def test_wb2_weights_are_band_areas_and_proportional_to_cos_lat_here():
    from racecar_repro.score import wb2_lat_weights
    w = wb2_lat_weights(xr.DataArray(LAT, dims="lat", coords={"lat": LAT})).values
    edges = np.deg2rad(np.concatenate([[-90.0], (LAT[1:] + LAT[:-1]) / 2, [90.0]]))
    area = np.sin(edges[1:]) - np.sin(edges[:-1])
    np.testing.assert_allclose(w, area / area.mean())
    np.testing.assert_allclose(w, _w()[0, :, 0], rtol=1e-12)  # equiangular, no poles: exactly cos(lat) / mean
    flipped = wb2_lat_weights(xr.DataArray(LAT[::-1], dims="lat", coords={"lat": LAT[::-1]})).values
    np.testing.assert_allclose(flipped, w[::-1])


def test_wb2_rmse_takes_the_root_after_the_time_mean():
    from racecar_repro.score import wb2_mse, wb2_rmse
    fc, truth = _field(1), _field(2)
    err2 = (fc.values - truth.values) ** 2
    per_time = (err2 * _w()).mean(axis=(1, 2))  # the spatial weighted mean of each time step
    assert float(wb2_mse(fc, truth)) == pytest.approx(per_time.mean())
    assert float(wb2_rmse(fc, truth)) == pytest.approx(np.sqrt(per_time.mean()))
    assert float(wb2_rmse(fc, truth)) != pytest.approx(np.sqrt(per_time).mean())  # not the mean of per-step RMSEs
    assert float(wb2_rmse(fc, truth)) == pytest.approx(float(compute_weighted_rmse(fc, truth)))  # same grid: same


def test_wb1_and_wb2_rmse_are_the_same_number_on_this_grid_and_only_there():
    """Notebook 04 shows one RMSE: on the 5.625 deg grid (equiangular, outermost rows half a spacing from the poles)
    WeatherBench 2's band-area weights equal WeatherBench 1's cos(lat) weights normalised to mean 1, and with the same
    grid at every time step the time mean of spatial means is the mean over all dimensions."""
    from racecar_repro.score import wb2_rmse
    rng = np.random.default_rng(7)
    for n_time in (1, 3, 17):
        for scale in (1.0, 1e3):   # K and m^2/s^2 sized errors
            fc, truth = _field(10 + n_time, n_time) * scale, _field(20 + n_time, n_time) * scale
            fc = fc + rng.normal(size=n_time)[:, None, None] * scale   # errors that vary between time steps
            wb1, wb2 = float(compute_weighted_rmse(fc, truth)), float(wb2_rmse(fc, truth))
            assert wb1 == pytest.approx(wb2, rel=1e-12, abs=0)
    ds_fc = xr.Dataset({"z500": _field(1), "t850": _field(3)})
    ds_truth = xr.Dataset({"z500": _field(2), "t850": _field(4)})
    for var in ("z500", "t850"):
        assert float(compute_weighted_rmse(ds_fc, ds_truth)[var]) == pytest.approx(
            float(wb2_rmse(ds_fc, ds_truth)[var]), rel=1e-12, abs=0)
    # a grid with rows on the poles (the 1.5 deg WeatherBench 2 grid's kind): band areas are not cos(lat) there
    lat = np.linspace(-90, 90, 13)
    coords = {"time": pd.date_range("2017-01-01", periods=4, freq="6h"), "lat": lat, "lon": LON}
    err = np.zeros((4, 13, 64))
    err[:, [0, -1]] = 1.0   # errors on the polar rows only: cos(lat) gives them no weight, their bands' area some
    truth = xr.DataArray(np.zeros_like(err), dims=("time", "lat", "lon"), coords=coords)
    assert float(compute_weighted_rmse(truth + err, truth)) == pytest.approx(0.0, abs=1e-6)
    assert float(wb2_rmse(truth + err, truth)) > 0.05


@pytest.mark.integration
def test_wb2_acc_per_valid_time_against_the_day_of_year_hour_climatology():
    from racecar_repro.score import climatology_at, doy_hour_climatology, wb2_acc
    times = pd.date_range("2015-01-01", "2016-12-31 18:00", freq="6h")
    rng = np.random.default_rng(0)
    cycle = np.cos(2 * np.pi * times.day_of_year.values / 365.25)[:, None, None] + times.hour.values[:, None, None] / 6
    truth = xr.DataArray(cycle * 10 + rng.normal(size=(len(times), 32, 64)), dims=("time", "lat", "lon"),
                         coords={"time": times, "lat": LAT, "lon": LON})
    clim = doy_hour_climatology(truth, window_days=1)
    assert clim.dims == ("dayofyear", "hour", "lat", "lon") and clim.sizes["dayofyear"] == 366
    jan1 = truth.sel(time=["2015-01-01T06:00", "2016-01-01T06:00"]).mean("time")
    np.testing.assert_allclose(clim.sel(dayofyear=1, hour=6).values, jan1.values)  # mean over the years
    smooth = doy_hour_climatology(truth, window_days=5)     # weights 0, 1/2, 1, 1/2, 0 (triangular)
    np.testing.assert_allclose(smooth.sel(dayofyear=3, hour=0).values,
                               (clim.sel(dayofyear=[2, 4], hour=0).sum("dayofyear") / 2
                                + clim.sel(dayofyear=3, hour=0)).values / 2)
    np.testing.assert_allclose(smooth.sel(dayofyear=1, hour=0).values,  # wraps around the year
                               (clim.sel(dayofyear=[366, 2], hour=0).sum("dayofyear") / 2
                                + clim.sel(dayofyear=1, hour=0)).values / 2)
    test = truth.sel(time=slice("2016-03-01", "2016-03-10"))
    fc = test + rng.normal(size=test.shape)
    c = climatology_at(smooth, test["time"]).values
    fa, a = fc.values - c, test.values - c
    w = np.broadcast_to(_w(), fa.shape)
    per_time = (w * fa * a).sum((1, 2)) / np.sqrt((w * fa ** 2).sum((1, 2)) * (w * a ** 2).sum((1, 2)))
    assert float(wb2_acc(fc, test, smooth)) == pytest.approx(per_time.mean())
    assert float(wb2_acc(test, test, smooth)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no hour"):
        climatology_at(smooth.sel(hour=[0, 12]), test["time"])


def test_the_climatology_smooths_as_weatherbench2_a_spike_into_its_triangular_window():
    """Known answers: one year of zeros with a 1 on day 100 at 00 UTC gives, with WeatherBench 2's 61-day window, the
    triangle ``w_k / sum(w)`` around day 100 (0 at +-30 days, 1/30 at the centre); a non-leap year's day 366 is its
    day 365 (a 2 there shows on day 366 and wraps into day 1); a linear trend keeps its value at the centre."""
    from racecar_repro.score import doy_hour_climatology, window_weights
    w = window_weights(61)
    assert w.shape == (61,) and w[0] == w[-1] == 0 and w.mean() == pytest.approx(1) and w[30] == pytest.approx(61 / 30)
    times = pd.date_range("2015-01-01", "2015-12-31 18:00", freq="6h")          # 2015: not a leap year
    x = np.zeros(len(times))
    x[(times.day_of_year == 100) & (times.hour == 0)] = 1.0
    x[(times.day_of_year == 365) & (times.hour == 6)] = 2.0
    da = xr.DataArray(x, dims="time", coords={"time": times})
    clim = doy_hour_climatology(da)
    spike = clim.sel(hour=0).values
    np.testing.assert_allclose(spike[99 - 30:99 + 31], w / w.sum(), atol=1e-15)
    assert spike[99] == pytest.approx(1 / 30) and spike[:99 - 29].max() == 0 and spike[99 + 30:].max() == 0
    six = clim.sel(hour=6)
    assert float(six.sel(dayofyear=366)) == pytest.approx(2 * (w[30] + w[29]) / w.sum())   # days 365 and 366 hold 2
    assert float(six.sel(dayofyear=1)) == pytest.approx(2 * (w[29] + w[28]) / w.sum())     # wrapped: 366, 365 back
    ramp = doy_hour_climatology(xr.DataArray(times.day_of_year.values.astype(float), dims="time",
                                             coords={"time": times}))
    np.testing.assert_allclose(ramp.sel(hour=12, dayofyear=slice(40, 300)).values, np.arange(40, 301))
    with pytest.raises(ValueError, match="odd"):
        window_weights(60)


def test_a_missing_value_makes_every_score_nan_as_in_weatherbench2():
    """One NaN in the forecast: WeatherBench 2's MSE is NaN; a score that skipped it would be quietly too low."""
    from racecar_repro import score
    times = pd.date_range("2016-01-01", periods=4, freq="6h")
    rng = np.random.default_rng(0)
    truth = xr.DataArray(rng.normal(size=(4, 32, 64)), dims=("time", "lat", "lon"),
                         coords={"time": times, "lat": LAT, "lon": LON})
    fc = truth + rng.normal(size=truth.shape)
    fc[1, 5, 7] = np.nan
    clim = score.doy_hour_climatology(truth, window_days=1)
    for value in (score.compute_weighted_rmse(fc, truth), score.compute_weighted_mae(fc, truth),
                  score.compute_weighted_acc(fc, truth), score.wb2_rmse(fc, truth), score.wb2_acc(fc, truth, clim)):
        assert np.isnan(float(value))
    assert np.isfinite(float(score.wb2_rmse(fc.fillna(0), truth)))
