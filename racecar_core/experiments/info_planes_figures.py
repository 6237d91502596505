"""Figures of the information-plane notebook: the planes per method, task and estimator."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..plotting import METHOD_COLORS, image_grid, seed_lines
from .grid import ExperimentResult
from .info_planes import ESTIMATORS, plane_of


def planes(result: ExperimentResult, task: str = "A", seed: int | None = None) -> Figure:
    """One information plane per estimator (rows) and method (columns) for task ``A`` or ``B``: every evaluation's
    layers joined in order (D_1 first, marked), coloured by training step; the last evaluation in black with the
    layer numbers."""
    seed = result.seeds[0] if seed is None else seed
    p = result.params
    h_x = float(np.log2(p["n_eval"]))
    h_y = float(np.log2(result.data["eval"].classes(p["task_a" if task == "A" else "task_b"])))
    methods = result.methods
    fig, axes = plt.subplots(len(ESTIMATORS), len(methods), figsize=(2.3 * len(methods) + 0.6, 2.2 * len(ESTIMATORS)),
                             squeeze=False, sharex=True, sharey=True)
    cmap = plt.get_cmap("viridis")
    for row, est in enumerate(ESTIMATORS):
        for col, m in enumerate(methods):
            ax = axes[row, col]
            evals = [e for e in result.one(m, seed).evals if e["task"] == task]
            steps = np.array([e["step"] for e in evals], dtype=float)
            span = max(steps.max() - steps.min(), 1.0)
            for e, s in zip(evals, steps):
                pts = np.array(plane_of(e, est))
                ax.plot(pts[:, 0], pts[:, 1], "-", color=cmap((s - steps.min()) / span), lw=0.8, alpha=0.8)
                ax.plot(pts[0, 0], pts[0, 1], "o", color=cmap((s - steps.min()) / span), ms=2.5)
            last = np.array(plane_of(evals[-1], est))
            ax.plot(last[:, 0], last[:, 1], "k.-", lw=1.0, ms=4)
            for i, (x, y) in enumerate(last):
                ax.annotate(str(i + 1), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
            ax.set_xlim(-0.2, h_x + 0.2)
            ax.set_ylim(-0.1, h_y + 0.1)
            if row == 0:
                ax.set_title(m, fontsize=9)
            if row == len(ESTIMATORS) - 1:
                ax.set_xlabel("I(X; D_m) [bits]")
            if col == 0:
                ax.set_ylabel(f"{est}\nI(D_m; Y) [bits]")
    label = p["task_a"] if task == "A" else f"{p['task_b']} (fine-tuned from {p['task_a']})"
    fig.suptitle(f"task {task}: {label}; colour: training step (dark early, yellow late); black: the end, "
                 f"layers numbered", fontsize=8)
    return fig


def strips(result: ExperimentResult, seed: int | None = None) -> Figure:
    """Fig. 1b's strips after task A: for each factor (digit, rotation, thickness) the images varying it, then each
    method's full reverse pass of them from its own output (each image scaled to its own range)."""
    seed = result.seeds[0] if seed is None else seed
    runs = [result.one(m, seed) for m in result.methods]
    factors = ("digit", "rotation", "thickness")
    rows = [r for f in factors for r in [(f"{f}: input", runs[0].arrays[f"strip_{f}"])] +
            [(f"{f}: {run.spec.method}", run.arrays[f"strip_{f}_rec"]) for run in runs]]
    fig, axes = plt.subplots(len(rows), 1, figsize=(6.0, 0.62 * len(rows) + 0.4))
    for ax, (title, images) in zip(axes, rows):
        image_grid(ax, [im[0] for im in images], 10)
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"after task A ({result.params['task_a']}): inputs and reverse-pass reconstructions, seed {seed}",
                 fontsize=8)
    return fig


def lambda_study_plot(study) -> Figure:
    """RR's task-A accuracy and plane centrality (both estimators; lower is more central) against lambda: mean over
    seeds with its 95 % confidence band and the seeds as points; Std's mean as a dashed line."""
    seeds = study.attrs.get("per_seed")
    if seeds is None or not len(seeds):      # a study without per-seed values: its means
        seeds = study.assign(seed=0)
    rr, std = seeds[seeds["method"] == "RR"], seeds[seeds["method"] == "Std"]
    fig, axes = plt.subplots(1, 1 + len(ESTIMATORS), figsize=(3.0 * (1 + len(ESTIMATORS)), 2.5))
    for ax, key, label in zip(axes, ["acc_a"] + [f"centrality_{e}" for e in ESTIMATORS],
                              ["task-A accuracy"] + [f"centrality ({e})" for e in ESTIMATORS]):
        seed_lines(ax, rr, x="lambda", y=key, marker="o", legend=False)
        ax.scatter(rr["lambda"], rr[key], color="k", s=5, zorder=3)
        ax.axhline(std[key].mean(), color="k", ls="--", lw=1, label="Std")
        ax.set_xscale("log")
        ax.set_xlabel("RR's lambda")
        ax.set_ylabel(label)
    axes[0].plot([], [], color=METHOD_COLORS["RR"], marker="o", label="RR (95 % CI, seeds)")
    axes[0].legend(fontsize=7)
    return fig
