"""Figures of the GAN notebook: samples of every method at the same latent vectors, the scores with their
intervals over seeds, and the scores over training."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from racecar_repro.experiments.grid import ExperimentResult
from racecar_repro.plotting import measure_bars, seed_lines

LABELS = {"fd": "Frechet distance (classifier features)", "precision": "precision", "recall": "recall",
          "label_entropy": "label entropy per sample (nats)", "class_entropy": "class entropy (nats)"}


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
    """``[N, 1, H, W]`` images in [-1, 1] as one grey mosaic in [0, 1], ``columns`` wide, one pixel apart."""
    n, _, h, w = images.shape
    rows = -(-n // columns)
    out = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1))
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = (im[0] + 1) / 2
    return out


def samples(result: ExperimentResult, n: int = 36, seed: int | None = None) -> Figure:
    """Real test images, then each method's generator (run ``seed``, default the first) at the same ``n`` latent
    vectors: the same position in every panel is the same latent."""
    seed = result.seeds[0] if seed is None else seed
    columns = int(np.ceil(np.sqrt(n)))
    panels = [("real test images", result.data["real"][:n].numpy())]
    panels += [(f"{m} (seed {seed})", result.one(m, seed).arrays["samples"][:n].numpy()) for m in result.methods]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.5))
    for ax, (title, images) in zip(np.atleast_1d(axes), panels):
        ax.imshow(_tile(np.clip(images, -1, 1), columns), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return fig


def measures(result: ExperimentResult) -> Figure:
    """Per method at the end of training: the Frechet distance, precision, recall and label entropy; bars are means
    over seeds with 95 % intervals, dots the seeds."""
    return measure_bars(result, ("fd", "precision", "recall", "class_entropy"), LABELS)


def curves(result: ExperimentResult) -> Figure:
    """The Frechet distance, precision and recall every ``eval_every`` steps (mean over seeds, 95 % band)."""
    keys = ("fd", "precision", "recall")
    frame = result.eval_frame(list(keys))
    fig, axes = plt.subplots(1, len(keys), figsize=(9.5, 2.6))
    for ax, key in zip(axes, keys):
        seed_lines(ax, frame[frame["metric"] == key], x="step", order=result.methods, legend=ax is axes[0])
        ax.set(xlabel="step", ylabel=LABELS[key])
    axes[0].set_yscale("log")
    return fig
