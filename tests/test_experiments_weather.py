"""racecar_repro.experiments.weather: parameters, and a smoke run on the synthetic archive (labelled as such)."""
import numpy as np
import pytest
import xarray as xr

from racecar_repro.experiments import weather


def test_weather_parameters_are_checked():
    p = weather.resolve_params("paper", device="cpu")
    assert (p["train_years"][0], p["train_years"][-1], p["valid_years"], p["test_years"]) == (1979, 2015, [2016],
                                                                                            [2017, 2018])
    assert (p["lead_h"], p["blocks"], p["channels"], p["lr"], p["batch_size"]) == (72, 19, 128, 5e-5, 32)
    with pytest.raises(ValueError, match="source"):
        weather.resolve_params("smoke", source="era6")
    with pytest.raises(ValueError, match="unknown parameter"):
        weather.resolve_params("smoke", leadtime=3)


@pytest.mark.integration
def test_smoke_run_is_labelled_synthetic_and_scores_the_baselines(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))
    result = weather.run("smoke", report=None, epochs=1, methods=["Std", "RR"])
    assert weather.synthetic(result) and "NOT ERA5" in result.source and "SYNTHETIC" in result.label
    assert [r.spec.key for r in result.runs] == ["Std/seed0", "RR/seed0"]
    summary = weather.summary(result)
    assert set(summary) == {"Std", "RR", "persistence", "climatology"}
    claim = weather.claim(result)
    assert set(claim) == {"rr_vs_std"}
    rec = claim["rr_vs_std"]
    assert {"statement", "verdict", "diff", "ci", "n", "measure", "direction", "method", "baseline",
            "excluded"} <= set(rec)
    assert (rec["measure"], rec["direction"], rec["method"], rec["baseline"]) == ("mse_norm", "lower", "RR", "Std")
    assert rec["verdict"] == "too few seeds" and rec["n"] == 1 and rec["ci"] is None   # one seed: no verdict
    assert rec["rr_mse"] == summary["RR"]["all"]["mse_norm"]["mean"]
    assert rec["diff"] == pytest.approx(rec["rr_mse"] - rec["std_mse"])
    assert rec["rr_gain_percent"] == pytest.approx(100 * (rec["std_mse"] - rec["rr_mse"]) / rec["std_mse"])
    assert rec["paper_gain_percent"] == 13.7 and summary["RR"]["z500"]["mae"]["std"] == 0.0   # one seed
    out = weather.results(result)
    assert out["claim"] == claim
    assert out["per_run"]["RR/seed0"]["scores"] == result.one("RR", 0).metrics["scores"]
    assert out["synthetic"] is True and out["sizes"] == weather.sizes(result)
    assert out["climatology"].startswith("WeatherBench 2 climatology copied")  # the synthetic one, same path
    z = out["per_run"]["Std/seed0"]["scores"]["z500"]
    assert set(z) == set(weather.SCORES) and set(out["scores"]) == set(weather.SCORES)
    assert z["rmse_wb2"] == pytest.approx(z["rmse_wb1"], rel=1e-6)  # the same on an equiangular grid without poles
    assert out["rmse_wb1_wb2_max_rel_diff"] < 1e-5 and "same number" in out["rmse_note"]
    assert -1 <= z["acc_wb2"] <= 1 and z["acc_wb2"] != pytest.approx(z["acc_wb1"])
    frame = weather.to_frame(summary)   # what the notebook shows: one RMSE, both ACCs
    assert list(frame.columns) == ["rmse", "mae", "acc_wb1", "acc_wb2", "mse_norm"]
    gains = rec["rr_gain_percent_by_score"]["t850"]
    assert set(gains) == {"rmse", "mae", "mse_norm"}
    t = summary["Std"]["t850"]["rmse_wb1"]["mean"], summary["RR"]["t850"]["rmse_wb1"]["mean"]
    assert gains["rmse"] == pytest.approx(100 * (t[0] - t[1]) / t[0])
    import matplotlib
    matplotlib.use("Agg")
    from racecar_repro.experiments import weather_figures
    fig = weather_figures.gain_heatmap(claim)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["rmse", "mae", "mse_norm"]


def _fake_result(values: dict[str, list[float]]):
    """A stand-in ExperimentResult: per method, the normalised MSE over all variables of seeds 0, 1, ..."""
    from types import SimpleNamespace
    runs = {m: [SimpleNamespace(spec=SimpleNamespace(seed=s, key=f"{m}/seed{s}"),
                                metrics={"scores": {"z500": {"rmse_wb1": 10 * v, "rmse_wb2": 10 * v, "mae": 5 * v,
                                                             "acc_wb1": 0.9, "acc_wb2": 0.8, "mse_norm": v},
                                                    "all": {"mse_norm": v}}})
                for s, v in enumerate(vals)] for m, vals in values.items()}
    return SimpleNamespace(methods=list(values), select=lambda m: runs[m], runs=[r for v in runs.values() for r in v],
                           extras={"baselines": {}})


def test_the_weather_claim_is_a_paired_verdict_over_seeds():
    std = [0.0123, 0.0125, 0.0121, 0.0124, 0.0122]
    clear = weather.claim(_fake_result({"Std": std, "RR": [v - 0.0017 + 1e-5 * i for i, v in enumerate(std)]}))
    rec = clear["rr_vs_std"]
    assert rec["verdict"] == "shown" and rec["n"] == 5 and rec["ci"][1] < 0 and rec["seeds"] == [0, 1, 2, 3, 4]
    assert rec["rr_gain_percent"] == pytest.approx(100 * 0.00168 / np.mean(std), rel=1e-6)
    worse = weather.claim(_fake_result({"Std": std, "RR": [v + 0.002 + 1e-5 * i for i, v in enumerate(std)]}))
    assert worse["rr_vs_std"]["verdict"] == "contradicted"
    tie = weather.claim(_fake_result({"Std": std, "RR": [v + d for v, d in zip(std, (1e-4, -1e-4, 2e-4, -2e-4, 0))]}))
    assert tie["rr_vs_std"]["verdict"] == "not shown"
    alone = weather.claim(_fake_result({"Std": std}))["rr_vs_std"]
    assert alone["verdict"] == "too few seeds" and alone["n"] == 0 and alone["rr_gain_percent"] is None
    assert alone["rr_gain_percent_by_score"] is None


def test_summary_spreads_are_sample_standard_deviations_over_seeds():
    from types import SimpleNamespace
    runs = [SimpleNamespace(metrics={"scores": {"z500": {"mae": v}}}) for v in (1.0, 2.0, 4.0)]
    result = SimpleNamespace(methods=["Std"], select=lambda m: runs, extras={"baselines": {}})
    s = weather.summary(result)["Std"]["z500"]["mae"]
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_make_data_weather_fetches_what_each_profile_reads(profile):
    from racecar_repro.data import weatherbench2 as wb2
    p = weather.resolve_params(profile, device="cpu")
    sub = wb2.SUBSETS[profile]
    request = {"variables": wb2.variables_for(sub["channels"]), "years": list(sub["years"]), "static": [1]}
    years = p["train_years"] + p["valid_years"] + p["test_years"]
    assert wb2.covers(request, p["input_variables"] + p["variables"], years)
    if profile == "paper":  # the authors' setup: 38 fields x 3 times + 3 constants
        assert len(p["input_variables"]) * len(p["offsets_h"]) + 3 == 117
        assert (p["leaky_slope"], p["bn_momentum"], p["bn_eps"], p["l2"]) == (0.3, 0.01, 1e-3, 1e-5)


@pytest.mark.integration
def test_the_quick_profile_runs_offline_on_the_synthetic_store(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))
    result = weather.run("quick", report=None, source="synthetic", synthetic_days=12, epochs=1, methods=["Std"], seeds=0,
                         device="cpu")
    p = result.params
    assert (p["channels"], p["blocks"], p["train_years"][0]) == (32, 3, 2010) and weather.synthetic(result)
    assert weather.sizes(result)["train"] == 6 * 17  # per year: 12 h apart from day 0 12:00 (12 h back) to day 8 12:00 (+72 h)
    store = next((data_dir / "weatherbench2-synthetic").glob("source_*.zarr"))
    assert sorted(xr.open_zarr(store).data_vars) == ["2m_temperature", "geopotential", "geopotential_at_surface",
                                                     "land_sea_mask", "temperature"]
