"""Figures of the CIFAR notebook: accuracy bars over seeds (paper values beside), accuracy curves, RR's sweep."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from racecar_repro.plotting import BOOT_SEED, ERRORBAR, METHOD_COLORS, seed_bars, seed_lines
from racecar_repro.experiments.cifar import Sweep
from racecar_repro.experiments.grid import ExperimentResult


def accuracy_bars(result: ExperimentResult, table) -> Figure:
    """Final test accuracy per method: mean over seeds with its 95 % confidence interval, every seed as a point,
    the paper's Fig. 1c values as dashes (seaborn, from ``result.frame()``)."""
    p = result.params
    methods = list(table.index)
    acc = result.frame().query("metric == 'final_acc'")
    fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 1.2, 2.8))
    seed_bars(ax, acc, order=methods)
    for i, m in enumerate(methods):
        if not np.isnan(table["paper"][m]):
            ax.plot([i - 0.3, i + 0.3], [table["paper"][m]] * 2, color="k", ls="--", lw=1,
                    label="paper (CIFAR-10, ResNet-110)" if i == 0 else None)
    lo = min(acc["value"].min(), np.nanmin(table["paper"].to_numpy(dtype=float)))
    hi = max(acc["value"].max(), np.nanmax(table["paper"].to_numpy(dtype=float)))
    pad = max(0.02, 0.15 * (hi - lo))
    ax.set(ylim=(max(0.0, lo - pad), min(1.0, hi + pad)), ylabel="test accuracy")
    ax.set_title(f"{p['dataset']}, ResNet-{p['depth']}, {p['epochs']} epochs, {len(p['seeds'])} seed(s); "
                 "95 % CI, seeds as points", fontsize=7)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return fig


def accuracy_curves(result: ExperimentResult) -> Figure:
    """Test accuracy per epoch per method: mean over seeds with its 95 % confidence band."""
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    seed_lines(ax, result.eval_frame(["test_acc"]), x="epoch", order=result.methods)
    ax.set(xlabel="epoch (Pre: including its pretraining epochs)", ylabel="test accuracy")
    ax.legend(title=None)
    return fig


def sweep_plot(sweep_out: Sweep, params: dict) -> Figure:
    """RR's validation accuracy against lambda per reverse-pass mode (mean over seeds with its 95 % confidence
    interval, seeds as points), Std's mean as a line; settings whose loss diverged are marked at the bottom."""
    table, seeds = sweep_out.table, sweep_out.per_seed
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    std = seeds[seeds["method"] == "Std"]
    if len(std):
        ax.axhline(std["val_acc"].mean(), color=METHOD_COLORS["Std"], lw=1, label="Std")
        ax.scatter([table["lambda"][table["lambda"] > 0].min()] * len(std), std["val_acc"], marker="_",
                   color=METHOD_COLORS["Std"], s=40)
    rr = seeds[seeds["method"] == "RR"]
    for mode, marker, dash in (("full", "o", "-"), ("local", "s", "--")):
        t = rr[rr["mode"] == mode]
        if t.empty:
            continue
        several = t.groupby("lambda")["val_acc"].count().max() > 1
        sns.lineplot(data=t, x="lambda", y="val_acc", color=METHOD_COLORS["RR"], marker=marker, linestyle=dash,
                     err_style="bars", errorbar=ERRORBAR if several else None, seed=BOOT_SEED,
                     err_kws={"capsize": 3}, label=f"RR, {mode}", ax=ax)
        ax.scatter(t["lambda"], t["val_acc"], color="k", s=6, zorder=3)
    bottom = np.nanmin(seeds["val_acc"]) - 0.05 if len(seeds) else 0.0
    for mode, marker in (("full", "x"), ("local", "+")):
        bad = table[(table["method"] == "RR") & (table["mode"] == mode) & table["val_mean"].isna()]
        if len(bad):
            ax.scatter(bad["lambda"], [bottom] * len(bad), marker=marker, color="k", zorder=3,
                       label=f"RR, {mode}: diverged")
    best = sweep_out.best
    ax.set(xscale="log", xlabel="lambda", ylabel="validation accuracy")
    held = (f"{sweep_out.validation}" if sweep_out.scored in (0, sweep_out.validation)
            else f"{sweep_out.scored} of {sweep_out.validation}")
    ax.set_title(f"RR sweep: {params['dataset']}, ResNet-{params['depth']}, {held} held-out "
                 f"training images;\nchosen: {best['rr_mode']}, lambda {best['rr_lambda']:g}; 95 % CI, seeds as "
                 "points", fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return fig
