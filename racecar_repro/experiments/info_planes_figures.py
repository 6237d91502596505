"""Figures of the information-plane notebook: the planes per method, task and estimator (validation images, during
training), where RR differs from Std and Ort layer by layer (test images), the strips, and the lambda study."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from racecar_repro.plotting import METHOD_COLORS, image_grid
from racecar_repro.experiments.grid import ExperimentResult
from racecar_repro.experiments.info_planes import AXES, ESTIMATORS, layer_table, plane_of


def planes(result: ExperimentResult, task: str = "A", seed: int | None = None) -> Figure:
    """One information plane per estimator (rows) and method (columns) for task ``A`` or ``B``, on the validation
    images: every evaluation's layers joined in order (D_1 first, marked), coloured by training step; the last
    evaluation in black with the layer numbers."""
    seed = result.seeds[0] if seed is None else seed
    p = result.params
    h_x = float(np.log2(len(result.data["eval"].x)))
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
            ax.set(xlim=(-0.2, h_x + 0.2), ylim=(-0.1, h_y + 0.1))
            if row == 0:
                ax.set_title(m, fontsize=9)
            if row == len(ESTIMATORS) - 1:
                ax.set_xlabel("I(X; D_m) [bits]")
            if col == 0:
                ax.set_ylabel(f"{est}\nI(D_m; Y) [bits]")
    label = p["task_a"] if task == "A" else f"{p['task_b']} (fine-tuned from {p['task_a']})"
    fig.suptitle(f"task {task}: {label}; validation images; colour: training step (dark early, yellow late); "
                 f"black: the end, layers numbered", fontsize=8)
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


def layer_differences(result: ExperimentResult, task: str = "A", table=None) -> Figure:
    """Where RR differs: per estimator (rows) and axis (columns: I(X; D_m), I(D_m; Y)) the paired difference RR - Std
    and RR - Ort of every layer on the test images at the end of ``task``, among the runs at matched accuracy, with
    its 95 % t-interval over the paired seeds (``info_planes.layer_table``; pass ``table`` to reuse one)."""
    table = layer_table(result) if table is None else table
    table = table[table["task"] == task]
    fig, axes = plt.subplots(len(ESTIMATORS), len(AXES), figsize=(3.2 * len(AXES), 2.2 * len(ESTIMATORS)),
                             squeeze=False, sharex=True)
    baselines = list(dict.fromkeys(table["baseline"])) if len(table) else []
    n = int(table["n"].max()) if len(table) else 0
    for row, est in enumerate(ESTIMATORS):
        for col, (axis, label) in enumerate(AXES.items()):
            ax = axes[row, col]
            for k, b in enumerate(baselines):
                t = table[(table["estimator"] == est) & (table["axis"] == axis) & (table["baseline"] == b)]
                x = t["layer"].to_numpy(dtype=float) + (k - (len(baselines) - 1) / 2) * 0.15
                diff = t["diff"].to_numpy(dtype=float)
                lo = np.array([c[0] if c is not None else np.nan for c in t["ci"]], dtype=float)
                hi = np.array([c[1] if c is not None else np.nan for c in t["ci"]], dtype=float)
                err = np.vstack([diff - lo, hi - diff])
                ax.errorbar(x, diff, yerr=np.where(np.isfinite(err), err, 0.0), fmt="o", ms=3, capsize=2, lw=1,
                            color=METHOD_COLORS.get(b, "k"), label=f"RR - {b}")
            ax.axhline(0.0, color="k", lw=0.6)
            if len(table):
                ax.set_xticks(sorted(set(table["layer"])))
            if row == 0:
                ax.set_title(f"{label} [bits]", fontsize=9)
            if row == len(ESTIMATORS) - 1:
                ax.set_xlabel("layer m")
            if col == 0:
                ax.set_ylabel(f"{est}\nRR - baseline [bits]")
    if baselines:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"task {task}, test images, runs at matched accuracy: mean paired difference and its 95 % "
                 f"t-interval over n = {n} seeds", fontsize=8)
    return fig


def lambda_study_plot(study) -> Figure:
    """The lambda study on the validation images: RR - Std in task-A accuracy and in plane centrality (both
    estimators; below zero: RR more central) against lambda, the mean paired difference with its 95 % t-interval over
    n seeds and the seeds' differences as points; the accuracy tolerance as a line; the chosen lambda marked."""
    seeds = study.attrs.get("per_seed")
    tol, chosen = study.attrs.get("acc_tolerance"), study.attrs.get("chosen")
    rr = study[study["method"] == "RR"]
    keys = ["acc_a"] + [f"centrality_{e}" for e in ESTIMATORS]
    labels = ["task-A accuracy"] + [f"centrality ({e})" for e in ESTIMATORS]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.6))
    n = int(rr["n"].max()) if len(rr) else 0
    for ax, key, label in zip(axes, keys, labels):
        if seeds is not None and len(seeds):
            std = seeds[seeds["method"] == "Std"].set_index("seed")[key]
            pts = seeds[seeds["method"] == "RR"]
            d = pts[key].to_numpy() - std.reindex(pts["seed"]).to_numpy()
            ax.scatter(pts["lambda"], d, color="0.55", s=6, zorder=2, label="seeds")
        if f"{key}_diff" in rr:
            diff = rr[f"{key}_diff"].to_numpy(dtype=float)
            lo, hi = rr[f"{key}_lo"].to_numpy(dtype=float), rr[f"{key}_hi"].to_numpy(dtype=float)
            err = np.vstack([diff - lo, hi - diff])
            ax.errorbar(rr["lambda"], diff, yerr=np.where(np.isfinite(err), err, 0.0), fmt="o-", ms=4, capsize=3,
                        color=METHOD_COLORS["RR"], zorder=3, label=f"mean, 95 % t-interval over n = {n} seeds")
        ax.axhline(0.0, color="k", ls="--", lw=0.8)
        if key == "acc_a" and tol is not None and np.isfinite(tol) and tol < 1:
            ax.axhline(-tol, color="0.5", ls=":", lw=0.8, label=f"tolerance: {tol:g} below Std")
        if chosen is not None:
            ax.axvline(chosen, color=METHOD_COLORS["RR"], lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="RR's lambda", ylabel=f"RR - Std, {label}")
    axes[0].legend(fontsize=6)
    fig.suptitle("lambda study, validation images: RR - Std paired by seed" +
                 (f"; chosen lambda {chosen:g} (dotted)" if chosen is not None else "; no lambda within tolerance"),
                 fontsize=8)
    return fig
