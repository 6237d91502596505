"""Figures of the CIFAR notebook: accuracy bars with error bars (paper values beside), accuracy curves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..plotting import METHOD_COLORS


def accuracy_bars(out: dict, table) -> Figure:
    """Final test accuracy per method, mean +- std over seeds, with the paper's Fig. 1c values marked."""
    p = out["params"]
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
    ax.legend(loc="best")
    return fig


def accuracy_curves(out: dict) -> Figure:
    """Test accuracy per epoch, mean +- std over seeds, per method."""
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    for m in out["params"]["methods"]:
        evs = [r["evals"] for (mm, _), r in out["runs"].items() if mm == m]
        steps = np.array([e["epoch"] for e in evs[0]])
        acc = np.array([[e["test_acc"] for e in ev] for ev in evs])
        ax.plot(steps, acc.mean(0), color=METHOD_COLORS[m], label=m)
        ax.fill_between(steps, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0), color=METHOD_COLORS[m],
                        alpha=0.2, lw=0)
    ax.set_xlabel("epoch (Pre: including its pretraining epochs)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    return fig
