"""Figures of the weather notebook: the paper's Fig. 1d panel (reference Z500, error maps, error bars)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..plotting import METHOD_COLORS
from .grid import ExperimentResult
from .weather import PAPER


def paper_panel(result: ExperimentResult, summary: dict, seed: int | None = None) -> Figure:
    """Z500 reference field at the example time, |error| maps of each method with their MAE, and bars of the
    normalised latitude-weighted MSE (mean +- std over seeds; persistence and climatology in grey, the paper's
    values as dashes)."""
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
        ax.set_xlabel("lon")
        ax.set_ylabel("lat")
    ax = fig.add_subplot(grid[:, 1])
    names = methods + [b for b in ("persistence", "climatology") if b in summary]
    vals = [summary[n]["all"]["mse_norm"]["mean"] for n in names]
    errs_ = [summary[n]["all"]["mse_norm"]["std"] for n in names]
    colors = [METHOD_COLORS.get(n, "#D9D9D9") for n in names]
    ax.bar(range(len(names)), vals, yerr=errs_, color=colors, capsize=3)
    for i, n in enumerate(names):
        ax.text(i, vals[i], f"{vals[i]:.4f}", ha="center", va="bottom", fontsize=6)
        if n in PAPER:
            ax.plot([i - 0.4, i + 0.4], [PAPER[n]] * 2, "k--", lw=1, label="paper" if n == methods[0] else None)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("latitude-weighted MSE (normalised)")
    ax.legend()
    fig.suptitle(f"{result.params['lead_h']} h forecasts, {result.source}", fontsize=8)
    return fig


def validation_curves(result: ExperimentResult) -> Figure:
    """Validation loss per epoch of every run (early stopping picks the minimum)."""
    fig, ax = plt.subplots(figsize=(4.0, 2.6))
    for r in result.runs:
        ax.plot([e["valid_mse"] for e in r.evals], color=METHOD_COLORS[r.spec.method],
                label=f"{r.spec.method} seed {r.spec.seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation latitude-weighted MSE")
    ax.set_yscale("log")
    ax.legend()
    return fig
