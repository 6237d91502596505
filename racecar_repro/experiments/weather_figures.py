"""Figures of the weather notebook: the paper's Fig. 1d panel (reference Z500, error maps, error bars)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from racecar_repro.plotting import METHOD_COLORS, heatmap, seed_bars, seed_lines
from racecar_repro.experiments.grid import ExperimentResult
from racecar_repro.experiments.weather import PAPER


def paper_panel(result: ExperimentResult, summary: dict, seed: int | None = None) -> Figure:
    """Z500 reference field at the example time, |error| maps of each method with their MAE, and bars of the
    normalised latitude-weighted MSE (mean over seeds, 95 % bootstrap CI; persistence and climatology in grey, the
    paper's values as dashes)."""
    seed = result.seeds[0] if seed is None else seed
    methods = result.methods
    lat, lon = result.data["test"].lat.values, result.data["test"].lon.values
    ext = [lon[0], lon[-1], lat[0], lat[-1]]
    fig = plt.figure(figsize=(8.0, 1.5 * (len(methods) + 1) + 0.4))
    grid = fig.add_gridspec(len(methods) + 1, 2, width_ratios=[2.2, 1])
    ex = {m: result.one(m, seed).arrays["example"] for m in methods}
    truth = ex[methods[0]]["truth"].numpy()
    ax = fig.add_subplot(grid[0, 0])
    im = ax.imshow(truth, origin="lower", extent=ext, aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax.set_title(f"Reference Z500 (normalised), valid {ex[methods[0]]['time']} UTC", fontsize=7, loc="left")
    errs = {m: np.abs(ex[m]["forecast"].numpy() - truth) for m in methods}
    vmax = max(float(e.max()) for e in errs.values())
    for row, m in enumerate(methods, start=1):
        ax = fig.add_subplot(grid[row, 0])
        im = ax.imshow(errs[m], origin="lower", extent=ext, aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        fig.colorbar(im, ax=ax, fraction=0.03)
        ax.set_title(f"|error| {m}: MAE {errs[m].mean():.4f}", fontsize=7, loc="left", color=METHOD_COLORS[m])
    for ax in fig.axes[:: 2]:
        ax.set(xlabel="lon", ylabel="lat")
    ax = fig.add_subplot(grid[:, 1])
    mse = result.frame().query("metric == 'scores.all.mse_norm'")[["method", "seed", "value"]]
    base = [{"method": n, "seed": 0, "value": summary[n]["all"]["mse_norm"]["mean"]}
            for n in ("persistence", "climatology") if n in summary]
    names = methods + [b["method"] for b in base]
    seed_bars(ax, pd.concat([mse, pd.DataFrame(base)], ignore_index=True), order=names, fmt="{:.4f}")
    for i, n in enumerate(names):
        if n in PAPER:
            ax.plot([i - 0.4, i + 0.4], [PAPER[n]] * 2, "k--", lw=1, label="paper" if n == methods[0] else None)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("latitude-weighted MSE (normalised)")
    ax.set_title("mean over seeds, 95 % CI, seeds as points", fontsize=6)
    ax.legend()
    fig.suptitle(f"{result.params['lead_h']} h forecasts, {result.source}", fontsize=8)
    return fig


def validation_curves(result: ExperimentResult) -> Figure:
    """Validation loss per epoch per method: mean over seeds with its 95 % confidence band (early stopping picks
    each run's minimum)."""
    fig, ax = plt.subplots(figsize=(4.0, 2.6))
    frame = result.eval_frame(["valid_mse"])
    if "epoch" not in frame:
        frame["epoch"] = frame.groupby(["method", "seed"]).cumcount()
    seed_lines(ax, frame, x="epoch", order=result.methods)
    ax.set(xlabel="epoch", ylabel="validation latitude-weighted MSE", yscale="log")
    ax.legend(title=None)
    return fig


def gain_heatmap(claim: dict) -> Figure:
    """RR's relative gain over Std in percent (positive: RR's error is lower) for every variable and shown error score
    (one RMSE: WeatherBench 1's and 2's are the same number on this grid, ``weather.RMSE_NOTE``) as a heatmap:
    ``claim(result)["rr_vs_std"]["rr_gain_percent_by_score"]`` (the claim dict or its ``rr_vs_std`` record)."""
    record = claim.get("rr_vs_std", claim)
    gains = record.get("rr_gain_percent_by_score")
    if gains is None:
        raise ValueError("racecar: gain_heatmap needs both Std and RR runs (rr_gain_percent_by_score is None)")
    table = pd.DataFrame(gains).T
    fig, ax = plt.subplots(figsize=(1.0 * table.shape[1] + 1.6, 0.45 * table.shape[0] + 1.0))
    lim = float(np.nanmax(np.abs(table.to_numpy()))) if table.size else 1.0
    heatmap(ax, table, fmt=".1f", center=0.0, cbar_label="RR gain over Std (%)")
    ax.collections[0].set_clim(-lim, lim)
    ax.set(xlabel="score", ylabel="variable")
    ax.set_title(f"RR vs Std: relative gain in %, means over seeds; verdict on mse_norm (all): {record['verdict']} "
                 f"(n = {record['n']})", fontsize=7)
    return fig
