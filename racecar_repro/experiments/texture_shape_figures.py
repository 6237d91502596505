"""Figures of the texture-shape notebook: Fig. 1a's panel (a cue-conflict image and each method's class
probabilities), the measures over the cue-conflict set with their intervals, and the curves over training."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from racecar_repro.data.cue_conflict import TEXTURES
from racecar_repro.experiments.grid import ExperimentResult
from racecar_repro.plotting import METHOD_COLORS, measure_bars, seed_lines

LABELS = {"test_acc": "test accuracy (texture agrees)", "shape_prob": "p(shape's class)",
          "texture_prob": "p(texture's class)", "shape_acc": "top class = shape's",
          "texture_rate": "top class = texture's",
          "shape_bias": "shape bias"}


def panel(result: ExperimentResult, image: int = 0) -> Figure:
    """Fig. 1a's panel for cue-conflict image ``image`` (of the first ``shown``): the image, and per method the
    probability of every class (mean over seeds), the shape's class and the texture's marked."""
    conf, names = result.data["conflict"], result.data["classes"]
    shape, tex = int(conf["y"][image]), int(conf["texture"][image])
    classes = np.arange(10)
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.1), gridspec_kw={"width_ratios": [1, 3.6]})
    axes[0].imshow(conf["x"][image, 0], cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"shape: {names[shape]}\ntexture: {names[tex]}'s ({TEXTURES[tex]})", fontsize=8)
    axes[0].axis("off")
    width = 0.8 / len(result.methods)
    for i, m in enumerate(result.methods):
        probs = np.stack([r.arrays["shown_probs"][image].numpy() for r in result.select(m)])
        axes[1].bar(classes + (i - (len(result.methods) - 1) / 2) * width, probs.mean(0), width,
                    color=METHOD_COLORS.get(m, "#7F7F7F"), label=f"{m}: p(shape) {probs[:, shape].mean():.3f}")
    for c, what in ((shape, "shape"), (tex, "texture")):
        axes[1].axvspan(c - 0.45, c + 0.45, color="0.85" if what == "shape" else "0.93", zorder=0)
        axes[1].annotate(what, (c, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7)
    axes[1].set(xticks=classes, ylabel=f"probability (mean of {len(result.seeds)} seeds)")
    axes[1].set_xticklabels(names, rotation=25, ha="right", fontsize=7)
    axes[1].legend(fontsize=7, frameon=False)
    return fig


def measures(result: ExperimentResult) -> Figure:
    """Per method, over the cue-conflict images: p(shape's class), p(texture's class), shape bias, and test accuracy
    on ordinary images; bars are means over seeds with 95 % intervals, dots the seeds."""
    return measure_bars(result, ("shape_prob", "texture_prob", "shape_bias", "test_acc"), LABELS)


def curves(result: ExperimentResult) -> Figure:
    """Test accuracy, p(shape's class) and the shape bias over training steps (mean over seeds, 95 % band); Pre's
    steps count its layer-wise pretraining first."""
    frame = result.eval_frame(["test_acc", "shape_prob", "shape_bias"])
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.6))
    for ax, key in zip(axes, ("test_acc", "shape_prob", "shape_bias")):
        seed_lines(ax, frame[frame["metric"] == key], x="step", order=result.methods, legend=ax is axes[0])
        ax.set(xlabel="step (Pre: its pretraining steps first)" if "Pre" in result.methods else "step",
               ylabel=LABELS[key])
    return fig
