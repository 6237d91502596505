"""Figures of the SVD-test notebooks (MNIST and peak): singular vectors, reverse-pass reconstructions, curves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from racecar_repro.plotting import METHOD_COLORS, METHOD_ORDER, image_grid, seed_lines, to_uint8
from racecar_repro.experiments.grid import ExperimentResult, RunResult

VARIANT_TITLES = {"official": "official run (raw pixels, double softmax)",
                  "corrected": "corrected (inputs in [0,1], CE on logits)"}


def data_strip(result: ExperimentResult, n_train: int = 20, n_test: int = 10) -> Figure:
    """The first training images and the test images the runs used, in one row."""
    data = result.data
    imgs = list(data.x_train[:n_train, 0]) + list(data.x_test[:n_test, 0])
    fig, ax = plt.subplots(figsize=(7, 1.2))
    image_grid(ax, imgs, ncols=len(imgs))
    ax.set_title(f"training images (first {min(n_train, len(data.x_train))}) | test images "
                 f"({min(n_test, len(data.x_test))})", fontsize=7)
    return fig


def _methods(result: ExperimentResult) -> list[str]:
    return [m for m in METHOD_ORDER if m in result.methods]


def singular_vectors(result: ExperimentResult, variant: str, seed: int, n: int = 10) -> Figure:
    """Leading right singular vectors of the first layer, one row per method, the training images on the left."""
    methods = _methods(result)
    data = result.data
    n_show = min(n, result.one(methods[0], seed, variant).arrays["Vh"].shape[0])
    train_show = [data.x_train[data.y_train == c][0, 0] for c in (0, 1)]
    fig, axes = plt.subplots(len(methods), 2, figsize=(1.0 + 0.62 * n_show, 0.75 * len(methods) + 0.4),
                             gridspec_kw={"width_ratios": [2, n_show]}, squeeze=False)
    for row, m in enumerate(methods):
        r = result.one(m, seed, variant)
        image_grid(axes[row, 0], train_show, ncols=2)
        image_grid(axes[row, 1], [v.reshape(28, 28) for v in r.arrays["Vh"][:n_show]], ncols=n_show)
        a = r.metrics
        axes[row, 0].set_ylabel(m, color=METHOD_COLORS[m], fontsize=9, fontweight="bold")
        axes[row, 1].set_title(f"{m}: leading max|cos| to a training image {a['lead_max_cos']:.2f}, "
                               f"energy in data span {a['lead_span_energy']:.2f} "
                               f"(chance {a['span_energy_chance']:.2f})", fontsize=7, loc="left")
    axes[0, 0].set_title("training images", fontsize=7)
    fig.suptitle(f"Right singular vectors of layer 1, {VARIANT_TITLES[variant]}, seed {seed}", fontsize=8)
    return fig


def best_singular_vectors(result: ExperimentResult, variant: str, seed: int) -> Figure:
    """Per method, the k singular vectors (of all) most similar to a training image, labelled with their rank."""
    methods = _methods(result)
    k = result.one(methods[0], seed, variant).metrics["k"]
    fig, axes = plt.subplots(len(methods), 1, figsize=(0.62 * k + 0.6, 0.8 * len(methods) + 0.4), squeeze=False)
    for row, m in enumerate(methods):
        r = result.one(m, seed, variant)
        ranks = r.metrics["best_k_ranks"]
        image_grid(axes[row, 0], [r.arrays["Vh"][i - 1].reshape(28, 28) for i in ranks], ncols=k)
        axes[row, 0].set_ylabel(m, color=METHOD_COLORS[m], fontsize=9, fontweight="bold")
        s = r.arrays["S"]
        axes[row, 0].set_title(f"{m}: best {k} by max|cos| ({r.metrics['best_k_max_cos']:.2f}); rank (s/s_max): "
                               + ", ".join(f"{i} ({float(s[i - 1] / s[0]):.2f})" for i in ranks),
                               fontsize=6.5, loc="left")
    fig.suptitle(f"The singular vectors most like the training data, {VARIANT_TITLES[variant]}, seed {seed}",
                 fontsize=8)
    return fig


def _task_frames(runs: list[RunResult]) -> list[int]:
    """The task steps at which every run has a reconstruction (Pre's pretraining snapshots are left out)."""
    common = set.intersection(*(set(r.arrays["recon_steps"]) for r in runs))
    return sorted(s for s in common if s >= 0)


def _at(r: RunResult, step: int):
    """The reconstructions of run ``r`` at task step ``step``: [images, 1, 28, 28]."""
    return r.arrays["reconstructions"][r.arrays["recon_steps"].index(step)]


def reconstruction_strip(result: ExperimentResult, variant: str, seed: int, n_frames: int = 8) -> Figure:
    """Reverse-pass reconstructions d1' of two test images over training: rows method x image, columns task steps
    (the same for every method; Pre's pretraining is not shown)."""
    methods = _methods(result)
    runs = [result.one(m, seed, variant) for m in methods]
    frames = _task_frames(runs)
    steps = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, n_frames).round().astype(int))]
    fig, axes = plt.subplots(len(methods), 1, figsize=(0.62 * (len(steps) + 1) + 0.6, 1.25 * len(methods) + 0.3),
                             squeeze=False)
    for row, (m, r) in enumerate(zip(methods, runs)):
        tiles = []
        for img in range(r.arrays["shown_images"].shape[0]):
            tiles.append(r.arrays["shown_images"][img, 0])
            tiles.extend(_at(r, s)[img, 0] for s in steps)
        image_grid(axes[row, 0], tiles, ncols=len(steps) + 1)
        axes[row, 0].set_ylabel(m, color=METHOD_COLORS[m], fontsize=9, fontweight="bold")
    axes[0, 0].set_title("test image | reverse pass d1' at task steps " + ", ".join(str(s) for s in steps),
                         fontsize=7, loc="left")
    fig.suptitle(f"Reverse-pass reconstructions over training, {VARIANT_TITLES[variant]}, seed {seed}", fontsize=8)
    return fig


def reconstruction_frames(result: ExperimentResult, variant: str, seed: int) -> list[np.ndarray]:
    """GIF frames: per task step, the methods side by side (columns) for each test image (rows), upscaled 4x."""
    runs = [result.one(m, seed, variant) for m in _methods(result)]
    frames = []
    for step in _task_frames(runs):
        recs = [_at(r, step) for r in runs]
        rows = [np.concatenate([np.pad(to_uint8(rec[i, 0].numpy()), 1) for rec in recs], axis=1)
                for i in range(recs[0].shape[0])]
        frames.append(np.kron(np.concatenate(rows, axis=0), np.ones((4, 4), dtype=np.uint8)))
    return frames


def training_curves(result: ExperimentResult) -> Figure:
    """Test accuracy and test task loss over training, mean over seeds with its 95 % confidence band, one column
    per variant."""
    variants = result.variants
    curves = result.eval_frame(["test_acc", "test_task_loss"])
    fig, axes = plt.subplots(2, len(variants), figsize=(3.2 * len(variants), 4.0), squeeze=False)
    for key, row in (("test_acc", 0), ("test_task_loss", 1)):
        for col, v in enumerate(variants):
            ax = axes[row, col]
            data = curves[(curves["metric"] == key) & (curves["variant"] == v)]
            seed_lines(ax, data, x="task_step", order=_methods(result), legend=row == 0 and col == 0)
            ax.set(xlabel="task step (Pre's pretraining at negative steps)", ylabel=key.replace("_", " "),
                   title=VARIANT_TITLES[v])
    return fig


def spectrum_frame(result: ExperimentResult) -> pd.DataFrame:
    """Tidy singular values of layer 1, normalised by the largest: variant, method, seed, index (from 1), value."""
    rows = []
    for r in result.runs:
        s = r.arrays["S"].numpy()
        rows += [{"variant": r.spec.variant, "method": r.spec.method, "seed": r.spec.seed, "index": i + 1,
                  "value": float(x / s[0])} for i, x in enumerate(s)]
    return pd.DataFrame(rows)


def spectra(result: ExperimentResult) -> Figure:
    """Singular values of layer 1 normalised by the largest: mean over seeds with its 95 % confidence band, one
    panel per variant."""
    variants = result.variants
    frame = spectrum_frame(result)
    fig, axes = plt.subplots(1, len(variants), figsize=(3.2 * len(variants), 2.4), squeeze=False)
    for col, v in enumerate(variants):
        ax = axes[0, col]
        data = frame[frame["variant"] == v]
        seed_lines(ax, data, x="index", order=_methods(result), marker="o", markersize=2, markeredgewidth=0,
                   legend=col == 0)
        ax.set(yscale="log", xlabel="index", ylabel="singular value / largest", title=VARIANT_TITLES[v])
    return fig


def lambda_sweep_plot(sweep, result: ExperimentResult) -> Figure:
    """RR of the sweep's variant at each lambda (every seed a point): test accuracy at the analysed step with the
    task threshold, and the first layer's span energy with Std's and Ort's means of the same variant."""
    p = result.params
    rows = [{"rr_lambda": lam, "seed": r.spec.seed, "test_acc": r.metrics["test_acc"],
             "lead_span_energy": r.metrics["lead_span_energy"]} for lam, res in sweep.results.items() for r in res.runs]
    frame = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.4))
    for ax, key in zip(axes, ("test_acc", "lead_span_energy")):
        ax.scatter(frame["rr_lambda"], frame[key], s=10, color=METHOD_COLORS.get("RR", "k"), label="RR (one seed)",
                   zorder=3)
        mean = frame.groupby("rr_lambda")[key].mean()
        ax.plot(mean.index, mean.to_numpy(), color=METHOD_COLORS.get("RR", "k"), lw=1)
        ax.set(xscale="log", xlabel="RR lambda", ylabel=key.replace("_", " "))
    axes[0].axhline(p["min_test_acc"], color="k", ls=":", lw=1, label=f"task threshold {p['min_test_acc']}")
    for m in ("Std", "Ort"):
        runs = result.select(m, sweep.variant)
        if runs:
            axes[1].axhline(float(np.mean([r.metrics["lead_span_energy"] for r in runs])), ls="--", lw=1,
                            color=METHOD_COLORS.get(m, "#7F7F7F"), label=f"{m} (mean)")
    if sweep.chosen is not None:
        for ax in axes:
            ax.axvline(sweep.chosen, color="#999999", lw=0.8)
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    fig.suptitle(f"{VARIANT_TITLES[sweep.variant]}: RR's lambda; chosen "
                 + (f"{sweep.chosen:g} (the largest that learns the task)" if sweep.chosen is not None
                    else "none (no lambda learns the task)"), fontsize=8)
    return fig
