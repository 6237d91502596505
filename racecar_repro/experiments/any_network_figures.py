"""Figures of the "RR on your own network" notebook: input reconstructions Std vs RR, accuracy and error curves."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from racecar_repro.plotting import image_grid, seed_lines
from racecar_repro.experiments.grid import ExperimentResult


def reconstructions(result: ExperimentResult, seed: int | None = None) -> Figure:
    """Test images (top row) and what each method's full reverse pass makes of them from the network's output (one
    row per method, one seed; each image scaled to its own range)."""
    seed = result.seeds[0] if seed is None else seed
    runs = [result.one(m, seed) for m in result.methods]
    inputs = runs[0].arrays["inputs"]
    rows = [("test images", inputs)] + [(f"{r.spec.method}: reverse pass, error {r.metrics['rec_error']:.2f}, "
                                         f"cosine {r.metrics['rec_cosine']:.2f}", r.arrays["reconstruction"])
                                        for r in runs]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.55 * len(inputs) + 0.4, 0.75 * len(rows) + 0.5))
    for ax, (title, images) in zip(axes, rows):
        image_grid(ax, [im[0] for im in images], len(images))
        ax.set_title(title, fontsize=8, loc="left")
    p = result.params
    fig.suptitle(f"{p['model']} on {p['dataset']}, {p['steps']} steps, seed {seed}", fontsize=9)
    return fig


def curves(result: ExperimentResult) -> Figure:
    """Test accuracy, input reconstruction error and cosine over training steps per method: mean over seeds with
    its 95 % confidence band."""
    frame = result.eval_frame(["test_acc", "rec_error", "rec_cosine"])
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.6))
    labels = {"test_acc": "test accuracy", "rec_error": "||x' - x||^2 / ||x||^2", "rec_cosine": "cosine(x', x)"}
    for ax, (key, label) in zip(axes, labels.items()):
        seed_lines(ax, frame[frame["metric"] == key], x="step", order=result.methods, legend=ax is axes[0])
        ax.set(xlabel="step", ylabel=label)
    axes[1].set_yscale("log")
    return fig
