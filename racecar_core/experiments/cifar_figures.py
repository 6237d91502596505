"""Figures of the CIFAR notebook: accuracy bars with error bars (paper values beside), accuracy curves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..plotting import METHOD_COLORS
from .cifar import Sweep
from .grid import ExperimentResult


def accuracy_bars(result: ExperimentResult, table) -> Figure:
    """Final test accuracy per method, mean +- std over seeds, with the paper's Fig. 1c values marked."""
    p = result.params
    methods = list(table.index)
    fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 1.2, 2.8))
    x = np.arange(len(methods))
    ax.bar(x, table["mean"], yerr=table["std"], capsize=4, color=[METHOD_COLORS[m] for m in methods], width=0.6)
    for i, m in enumerate(methods):
        ax.text(i, table["mean"][m] + table["std"][m], f"{table['mean'][m]:.3f}", ha="center", va="bottom",
                fontsize=7)
        if not np.isnan(table["paper"][m]):
            ax.plot([i - 0.3, i + 0.3], [table["paper"][m]] * 2, color="k", ls="--", lw=1,
                    label="paper (CIFAR-10, ResNet-110)" if i == 0 else None)
    lo = min(table["mean"].min() - 2 * table["std"].max(), np.nanmin(table["paper"].to_numpy(dtype=float)))
    ax.set_ylim(max(0.0, lo - 0.02), min(1.0, max(table["mean"].max() + 2 * table["std"].max(), 0.93) + 0.02))
    ax.set_xticks(x, methods)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{p['dataset']}, ResNet-{p['depth']}, {p['epochs']} epochs, {len(p['seeds'])} seed(s)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return fig


def accuracy_curves(result: ExperimentResult) -> Figure:
    """Test accuracy per epoch, mean +- std over seeds, per method."""
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    for m in result.methods:
        epochs, mean, std = result.curve("test_acc", m, x="epoch")
        ax.plot(epochs, mean, color=METHOD_COLORS[m], label=m)
        ax.fill_between(epochs, mean - std, mean + std, color=METHOD_COLORS[m], alpha=0.2, lw=0)
    ax.set_xlabel("epoch (Pre: including its pretraining epochs)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    return fig


def sweep_plot(sweep_out: Sweep, params: dict) -> Figure:
    """RR's validation accuracy against lambda per reverse-pass mode (mean +- std over seeds), Std as a band;
    settings whose loss diverged are marked at the bottom."""
    table = sweep_out.table
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    std = table[table["method"] == "Std"].iloc[0]
    ax.axhline(std["val_mean"], color=METHOD_COLORS["Std"], lw=1, label="Std")
    ax.axhspan(std["val_mean"] - std["val_std"], std["val_mean"] + std["val_std"], color=METHOD_COLORS["Std"],
               alpha=0.15, lw=0)
    rr = table[table["method"] == "RR"]
    bottom = np.nanmin(table["val_mean"] - table["val_std"].fillna(0)) - 0.05
    for mode, marker in (("full", "o"), ("local", "s")):
        t = rr[rr["mode"] == mode]
        if t.empty:
            continue
        ax.errorbar(t["lambda"], t["val_mean"], yerr=t["val_std"], marker=marker, capsize=3, label=f"RR, {mode}",
                    color=METHOD_COLORS["RR"], ls="-" if mode == "full" else "--")
        bad = t[t["val_mean"].isna()]
        if len(bad):
            ax.scatter(bad["lambda"], [bottom] * len(bad), marker="x" if mode == "full" else "+", color="k",
                       zorder=3, label=f"RR, {mode}: diverged")
    best = sweep_out.best
    ax.set_xscale("log")
    ax.set_xlabel("lambda")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"RR sweep: {params['dataset']}, ResNet-{params['depth']}, {sweep_out.validation} held-out "
                 f"training images;\nchosen: {best['rr_mode']}, lambda {best['rr_lambda']:g}", fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return fig
