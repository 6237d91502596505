"""WeatherBench forecasting, Std vs RR (the paper's Fig. 1d): Z500, T850, T2M 72 h ahead at 5.625 deg, every
(method, seed) one cached run, scored with WeatherBench's metrics beside persistence and climatology; on ERA5 or a
labelled synthetic look-alike (``source="synthetic"``, NOT ERA5). The protocol: notebooks/04_weatherbench.ipynb.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import xarray as xr

from racecar_repro import paths, score, verdicts
from racecar_repro.data.weather_dataset import WeatherDataset, to_xarray
from racecar_repro.data import weatherbench2 as wb2
from racecar_repro.data.weatherbench import default_root, is_synthetic
from racecar_core.models import weather_resnet
from racecar_core.models.weather_resnet import KERAS
from racecar_core.train import TensorBatches, TrainConfig, fit
from racecar_repro.experiments.grid import Experiment, ExperimentResult, LoadedData, RunSpec, mean_sd, per_run
from racecar_repro.experiments.params import MethodParams, build_method, run_config, setting

PAPER = {"Std": 0.0123, "RR": 0.0106}   # Fig. 1d: latitude-weighted error, normalised units
PAPER_GAIN_PERCENT = 13.7               # as the paper states it (its rounded errors above give 13.8)
PAPER_EXAMPLE_TIME = "2019-08-09T22:00"
SOURCES = ("weatherbench", "synthetic")


@dataclass
class WeatherParams(MethodParams):
    """The Fig. 1d experiment; the defaults are the authors' setup (Rasp & Thuerey's network and inputs, Keras's
    defaults; see notebook 04)."""

    source: str = setting("weatherbench", choices=SOURCES)   # or "synthetic": a labelled look-alike (NOT ERA5)
    train_years: list = setting(list(range(1979, 2016)))
    valid_years: list = setting([2016])
    test_years: list = setting([2017, 2018])
    variables: list = setting(["z500", "t850", "t2m"])
    input_variables: list = setting(list(wb2.RASP_INPUTS))
    offsets_h: list = setting([0, -6, -12])
    lead_h: int = setting(72)
    sample_every_h: int = setting(6)
    channels: int = setting(128)
    blocks: int = setting(19)
    dropout: float = setting(0.1)
    leaky_slope: float = setting(KERAS["leaky_slope"])
    bn_momentum: float = setting(KERAS["bn_momentum"])
    bn_eps: float = setting(KERAS["bn_eps"])
    l2: float = setting(1e-5)
    methods: list = setting(["Std", "RR"], run=False)
    seeds: list = setting([0, 1, 2], run=False)
    epochs: int = setting(100)
    batch_size: int = setting(32)
    lr: float = setting(5e-5)
    rr_lambda: float = setting(1e-3)
    rr_reduction: str = setting("mean")
    rr_bn_update: bool = setting(False)
    ort_weight: float = setting(1e-2)
    ort_form: str = setting("srip")
    patience: int = setting(5)
    min_delta: float = setting(1e-4)
    plateau_patience: int = setting(2)
    plateau_factor: float = setting(0.2)
    plateau_min_lr: float = setting(1e-5)
    example_time: str = setting(PAPER_EXAMPLE_TIME)
    synthetic_days: int | None = setting(None)
    amp: bool = setting(False)
    torch_compile: bool = setting(False)
    replicas: int = setting(1)
    sync_bn: bool = setting(True)


_PAPER = WeatherParams()
PROFILES: dict[str, WeatherParams] = {
    "paper": _PAPER,
    # CPU-sized: the three target fields as inputs (12 channels), 6 training years, a small network; three seeds,
    # the fewest a paired interval over seeds takes
    "quick": replace(_PAPER, input_variables=["z500", "t850", "t2m"], train_years=list(range(2010, 2016)),
                     sample_every_h=12, channels=32, blocks=3, epochs=10, seeds=[0, 1, 2], batch_size=32, lr=2e-4),
    "smoke": replace(_PAPER, source="synthetic", input_variables=["z500", "t850", "t2m"], train_years=[2015],
                     valid_years=[2016], test_years=[2017], synthetic_days=30, sample_every_h=24, channels=8,
                     blocks=1, epochs=2, seeds=[0], batch_size=8, lr=1e-3, patience=2, progress=False),
}


def data_root(p: dict) -> Path:
    """The data root: the real data (``weatherbench.default_root``), or for ``source="synthetic"`` a copy of the
    synthetic WeatherBench 2 store (NOT ERA5), made on first use by the same download code as the real one."""
    years = sorted(set(p["train_years"] + p["valid_years"] + p["test_years"]))
    channels = list(dict.fromkeys(p["input_variables"] + p["variables"]))
    if p["source"] == "weatherbench":
        return default_root(channels, years)
    key = f"{years[0]}-{years[-1]}_{len(years)}y_{p['synthetic_days'] or 'all'}d_v{wb2.SYNTHETIC_VERSION}"
    base = paths.data_dir() / "weatherbench2-synthetic"
    key += f"_{hashlib.sha256(' '.join(channels).encode()).hexdigest()[:8]}"  # one store and copy per channel set
    store = wb2.write_synthetic_store(base / f"source_{key}.zarr", years, days_per_year=p["synthetic_days"],
                                      channels=channels)
    root = base / key
    if not wb2.has_store(root):
        wb2.download(store, root, channels, years, progress=False, log=lambda line: None)
    clim = base / f"climatology_{key}.zarr"  # its climatology, in the format of WeatherBench 2's
    if not (clim / ".zmetadata").is_file():
        wb2.write_synthetic_climatology(clim, store, p["variables"])
    wb2.download_climatology(clim, root, p["variables"], log=lambda line: None)
    return root


@dataclass
class WeatherData:
    """The three splits (``data["train"]`` works too) and the training targets' day-of-year/hour climatology."""

    train: WeatherDataset
    valid: WeatherDataset
    test: WeatherDataset
    climatology: xr.Dataset  # physical units; WeatherBench 2's ACC measures anomalies against it
    climatology_source: str  # which: WeatherBench 2's copied 1990-2019 ERA5 climatology, or the training years'

    def __getitem__(self, split: str) -> WeatherDataset:
        return {"train": self.train, "valid": self.valid, "test": self.test}[split]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def load(p: dict) -> WeatherData:
    """Train, validation and test sets, all normalised with the training years' statistics, and the climatology
    for WeatherBench 2's ACC: WeatherBench 2's own (1990-2019 ERA5) when ``make data-weather`` copied it beside the
    data, else the day-of-year/hour climatology of the training targets (said in ``climatology_source``)."""
    root = data_root(p)
    kw = dict(train_years=p["train_years"], input_vars=p["input_variables"], target_vars=p["variables"],
              input_offsets_h=p["offsets_h"], lead_h=p["lead_h"], sample_every_h=p["sample_every_h"])
    sets = {split: WeatherDataset.from_root(root, p[f"{split}_years"], **kw) for split in ("train", "valid", "test")}
    clim = wb2.open_climatology(root, p["variables"])
    if clim is not None:
        return WeatherData(**sets, climatology=clim, climatology_source=f"WeatherBench 2 climatology copied to {root}")
    return WeatherData(**sets, climatology=score.doy_hour_climatology(sets["train"].truth()),
                       climatology_source=f"the training years' ({p['train_years'][0]}-{p['train_years'][-1]}) "
                                          "day-of-year/hour climatology, WeatherBench 2's triangular 61-day window")


def lat_weights_tensor(ds: WeatherDataset) -> torch.Tensor:
    """``cos(lat) / mean(cos(lat))`` as a [1, 1, lat, 1] tensor."""
    return torch.tensor(score.lat_weights(ds.lat).values, dtype=torch.float32).view(1, 1, -1, 1)


def weighted_mse_loss(weights: torch.Tensor):
    """The latitude-weighted MSE in normalised units (the training loss and the paper's error measure)."""
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((out - y) ** 2 * weights.to(out.device)).mean()
    return loss


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, device: str, batch: int = 64) -> torch.Tensor:
    """Forecasts in normalised units, in batches, eval mode."""
    model.eval()
    return torch.cat([model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


SCORES = {"rmse_wb1": "RMSE, WeatherBench 1 (sqrt of the weighted squared error averaged over time and space)",
          "mae": "MAE, latitude-weighted",
          "acc_wb1": "ACC, WeatherBench 1 (centred; anomalies against the test period's own mean)",
          "rmse_wb2": "RMSE, WeatherBench 2 (sqrt of the time mean of each step's area-weighted MSE; on this grid the "
                      "same number as rmse_wb1, see RMSE_NOTE)",
          "acc_wb2": "ACC, WeatherBench 2 (per valid time against a day-of-year/hour climatology, then averaged; "
                     "which climatology: results.json's climatology)",
          "mse_norm": "latitude-weighted MSE of the normalised fields (the paper's error; per channel, "
                      "(x - mean) / std with the training years' mean and std over time, latitude and longitude)"}


def scores(pred: torch.Tensor, data: WeatherData, weights: torch.Tensor) -> dict:
    """Per variable, in both WeatherBench conventions (``SCORES``): RMSE, MAE and ACC in physical units, and the
    normalised latitude-weighted MSE; ``all``: the normalised MSE over every variable."""
    test = data.test
    _, y = test.tensors()
    fc, truth = to_xarray(pred, test), test.truth()
    mse = weighted_mse_loss(weights)
    out = {}
    for k, var in enumerate(test.target_vars):
        out[var] = {"rmse_wb1": float(score.compute_weighted_rmse(fc[var], truth[var])),
                    "mae": float(score.compute_weighted_mae(fc[var], truth[var])),
                    "acc_wb1": float(score.compute_weighted_acc(fc[var], truth[var])),
                    "rmse_wb2": float(score.wb2_rmse(fc[var], truth[var])),
                    "acc_wb2": float(score.wb2_acc(fc[var], truth[var], data.climatology[var])),
                    "mse_norm": float(mse(pred[:, k:k + 1], y[:, k:k + 1]))}
    out["all"] = {"mse_norm": float(mse(pred, y))}
    return out


def baselines(sets: WeatherData, weights: torch.Tensor) -> dict:
    """Persistence (the input at t) and climatology (the training period's mean per grid point), same metrics."""
    test, train = sets["test"], sets["train"]
    x, y = test.tensors()
    zero = [test.input_channels.index(f"{v}@+0h") for v in test.target_vars]
    clim = train.tensors()[1].mean(0, keepdim=True).expand_as(y)
    return {"persistence": scores(x[:, zero], sets, weights), "climatology": scores(clim.clone(), sets, weights)}


def _train(spec: RunSpec, sets: WeatherData) -> tuple[dict, Callable[[Path], dict]]:
    """One (method, seed) run: train with early stopping, then score the test years."""
    p, seed = spec.params, spec.seed
    w = lat_weights_tensor(sets["train"])
    task = weighted_mse_loss(w)
    xtr, ytr = sets["train"].tensors()
    xva, yva = sets["valid"].tensors()
    spe = max(1, len(xtr) // p["batch_size"])
    method = build_method(spec.method, p, task, steps_per_epoch=spe)
    cfg = TrainConfig(steps=p["epochs"] * spe, lr=p["lr"], batch_size=p["batch_size"], eval_every=spe,
                      checkpoint_every=spe, seed=seed, device=p["device"], amp=p["amp"], compile=p["torch_compile"],
                      weight_decay=2 * p["l2"], decay_kernels_only=True,  # Keras's l2(c): c * sum(w^2) in the loss
                      progress=p["progress"], early_stop="valid_mse", patience=p["patience"], min_delta=p["min_delta"],
                      plateau_patience=p["plateau_patience"], plateau_factor=p["plateau_factor"],
                      plateau_min_lr=p["plateau_min_lr"], replicas=p["replicas"], sync_bn=p["sync_bn"])
    synthetic = is_synthetic(sets["train"])
    config = run_config(p, method, cfg, synthetic=synthetic)

    def evaluate(model: torch.nn.Module, step: int) -> dict:
        return {"valid_mse": float(task(predict(model, xva, p["device"]), yva))}

    def train(run_dir: Path) -> dict:
        torch.manual_seed(seed)
        model = weather_resnet(xtr.shape[1], ytr.shape[1], p["channels"], p["blocks"], p["dropout"],
                               leaky_slope=p["leaky_slope"], bn_momentum=p["bn_momentum"], bn_eps=p["bn_eps"])
        hist = fit(model, method, TensorBatches(xtr, ytr, p["batch_size"], seed), cfg, run_dir, evaluate,
                   log_every=max(1, spe // 10))
        pred = predict(model, sets["test"].tensors()[0], p["device"])
        return {"config": config, "evals": hist["evals"], "log": hist["log"], "wall_time": hist["wall_time"],
                "metrics": {"scores": scores(pred, sets, w), "best_step": hist["best_step"],
                            "stopped_early": hist["stopped_early"]},
                "arrays": {"example": example_fields(pred, sets["test"], p["example_time"])}}

    return config, train


def example_index(test: WeatherDataset, wanted: str) -> int:
    """The test sample whose valid time is the wanted one, or the nearest to it."""
    times = np.asarray(test.valid_times, dtype="datetime64[ns]")
    return int(np.argmin(np.abs(times - np.datetime64(wanted, "ns"))))


def example_fields(pred: torch.Tensor, test: WeatherDataset, wanted: str) -> dict:
    """Z500 (first target) at the example valid time: forecast and truth, normalised units."""
    i = example_index(test, wanted)
    t = np.asarray(test.valid_times, dtype="datetime64[ns]")[i]
    return {"time": str(t)[:16], "forecast": pred[i, 0].clone(), "truth": test.tensors()[1][i, 0].clone()}


def _load(p: dict) -> LoadedData:
    sets = load(p)
    if is_synthetic(sets["train"]):
        return LoadedData(sets, "SYNTHETIC look-alike of WeatherBench 2 (racecar_repro.data.weatherbench2), NOT ERA5",
                          "SYNTHETIC DATA (not ERA5): a pipeline check")
    return LoadedData(sets, f"ERA5 at 5.625 deg, {sets['train'].attrs.get('source', '?')}")


EXPERIMENT = Experiment(name="weather", profiles=PROFILES, load=_load, train=_train,
                        folder=lambda p: f"weather_{p['source']}",
                        extras=lambda p, sets: {"baselines": baselines(sets, lat_weights_tensor(sets["train"]))},
                        resources={"paper": {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64,
                                             "timeout_min": 24 * 60},
                                   "quick": {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 120},
                                   "smoke": {"cpus_per_task": 1, "mem_gb": 4, "timeout_min": 15}})
run = EXPERIMENT.run                        # run(profile, report=print, **overrides) -> ExperimentResult
resolve_params = EXPERIMENT.resolve_params  # resolve_params(profile, **overrides) -> dict


def synthetic(result: ExperimentResult) -> bool:
    """Whether the result was trained on the synthetic look-alike archive."""
    return is_synthetic(result.data["train"])


def sizes(result: ExperimentResult) -> dict[str, int]:
    """Samples per split."""
    return result.data.sizes()


def summary(result: ExperimentResult) -> dict:
    """Per method (mean and sample standard deviation over seeds, 0 with one seed, as in the other experiments) and
    baseline: every score of every variable."""
    res: dict[str, dict] = {}
    for m in result.methods:
        by_seed = [r.metrics["scores"] for r in result.select(m)]
        res[m] = {var: {k: dict(zip(("mean", "std"), mean_sd([s[var][k] for s in by_seed]))) for k in by_seed[0][var]}
                  for var in by_seed[0]}
    for name, sc in result.extras["baselines"].items():
        res[name] = {var: {k: {"mean": v, "std": 0.0} for k, v in d.items()} for var, d in sc.items()}
    return res


def to_frame(summary_: dict) -> pd.DataFrame:
    """The summary as a table: rows (method, variable), columns the shown scores (means; ``SHOWN``: one RMSE, the
    two conventions' being the same number here, ``RMSE_NOTE``)."""
    rows = [{"method": m, "variable": var, **{SHOWN[k]: d["mean"] for k, d in sc.items() if k in SHOWN}}
            for m, per in summary_.items() for var, sc in per.items()]
    return pd.DataFrame(rows).set_index(["method", "variable"])


# What the notebook and the report show. WeatherBench 1's and WeatherBench 2's RMSE are the same number on this grid
# (see ``RMSE_NOTE``), so one column "rmse" shows both; both ACCs are shown (they differ). ``scores`` keeps computing
# both RMSEs and ``results.json`` keeps both per run, so that their agreement stays checked (``rmse_agreement``).
SHOWN = {"rmse_wb1": "rmse", "mae": "mae", "acc_wb1": "acc_wb1", "acc_wb2": "acc_wb2", "mse_norm": "mse_norm"}
RMSE_NOTE = ("RMSE: WeatherBench 1 and WeatherBench 2 give the same number on this grid. WeatherBench 2 weights each "
             "latitude by its band's area, sin(upper bound) - sin(lower bound) = 2 sin(d/2) cos(lat), which is "
             "proportional to cos(lat) on an equiangular grid whose outermost rows lie half a spacing from the poles "
             "(5.625 deg: +-87.1875), so both weights are cos(lat) over its mean; and since every time step has the "
             "same grid, the time mean of the spatial means (WeatherBench 2) is the mean over all dimensions at once "
             "(WeatherBench 1), with the square root taken after both. Only the ACCs differ (centred against the "
             "test period's mean vs uncentred against a day-of-year/hour climatology).")
ERROR_SCORES = ("rmse", "mae", "mse_norm")   # the shown error scores RR's gain is given for
STATEMENT = ("RR's 72 h forecasts of Z500, T850 and T2M have a lower latitude-weighted MSE (normalised units, the "
             "three variables together) on the test years than Std's (Fig. 1d: RR 0.0106 vs Std 0.0123, 13.7 % lower)")


def rmse_agreement(result: ExperimentResult) -> float:
    """The largest relative difference between WeatherBench 1's and WeatherBench 2's RMSE over every run and variable
    (float rounding only on this grid, ``RMSE_NOTE``)."""
    diffs = [abs(s["rmse_wb2"] - s["rmse_wb1"]) / max(abs(s["rmse_wb1"]), 1e-300)
             for r in result.runs for var, s in r.metrics["scores"].items() if "rmse_wb1" in s and "rmse_wb2" in s]
    return float(max(diffs)) if diffs else float("nan")


def _per_seed_mse(result: ExperimentResult, method: str) -> dict[int, float]:
    if method not in result.methods:
        return {}
    return {r.spec.seed: float(r.metrics["scores"]["all"]["mse_norm"]) for r in result.select(method)}


def claim(result: ExperimentResult) -> dict:
    """``{"rr_vs_std": record}``: RR's ``mse_norm`` over all variables below Std's, paired over seeds; beside it the
    means, RR's gain in percent (positive: RR's error is lower), the paper's, and RR's gain on every shown error
    score of every variable (means over seeds; None unless both ran)."""
    table = summary(result)
    rr, std = _per_seed_mse(result, "RR"), _per_seed_mse(result, "Std")
    verdict = verdicts.paired(rr, std, "mse_norm", "lower", method="RR", baseline="Std")
    extra: dict[str, Any] = {"rr_mse": None, "std_mse": None, "rr_gain_percent": None,
                             "paper_gain_percent": PAPER_GAIN_PERCENT, "paper": dict(PAPER),
                             "rr_gain_percent_by_score": None}
    if rr and std:
        s, r = table["Std"], table["RR"]
        mse = {m: table[m]["all"]["mse_norm"]["mean"] for m in ("RR", "Std")}
        extra.update(rr_mse=mse["RR"], std_mse=mse["Std"],
                     rr_gain_percent=100 * (mse["Std"] - mse["RR"]) / mse["Std"],
                     rr_gain_percent_by_score={
                         var: {SHOWN[k]: 100 * (s[var][k]["mean"] - r[var][k]["mean"]) / s[var][k]["mean"]
                               for k in SHOWN if SHOWN[k] in ERROR_SCORES and k in s[var]}
                         for var in s if var != "all"})
    return {"rr_vs_std": verdicts.record(STATEMENT, verdict, **extra)}


def results(result: ExperimentResult) -> dict:
    """What the notebook writes to ``results.json``: the summary, sizes, whether synthetic, the paper's values, the
    RMSE note and agreement, every run's scores and example error, and the claim."""
    return {"summary": summary(result), "scores": SCORES, "climatology": result.data.climatology_source,
            "sizes": sizes(result), "synthetic": synthetic(result),
            "paper": PAPER, "rmse_note": RMSE_NOTE, "rmse_wb1_wb2_max_rel_diff": rmse_agreement(result),
            "per_run": per_run(result, lambda r: {"example_time": r.arrays["example"]["time"],
                                                 "example_mae": float((r.arrays["example"]["forecast"]
                                                                       - r.arrays["example"]["truth"]).abs().mean())}),
            "claim": claim(result)}
