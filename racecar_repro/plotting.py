"""House style for the paper figures: method colours, saving with embedded provenance, image tiles, GIFs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from racecar_core import __version__
from racecar_core.files import _jsonable, atomic_write, write_json
from racecar_repro.provenance import portable

# orange, blue, green, grey
METHOD_COLORS: dict[str, str] = {"Std": "#ED7D31", "Ort": "#4472C4", "RR": "#70AD47", "Pre": "#A5A5A5"}
METHOD_ORDER: list[str] = ["Std", "Ort", "Pre", "RR"]

PROVENANCE_KEY = "racecar-provenance"
LABEL_GID = "racecar-label"
_SOFTWARE = f"racecar_core {__version__} (matplotlib {matplotlib.__version__})"

_STYLE: dict[str, Any] = {
    "figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
    "figure.autolayout": True,
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6, "lines.linewidth": 1.2,
    "axes.prop_cycle": matplotlib.cycler(color=[METHOD_COLORS[m] for m in METHOD_ORDER]),
    "pdf.fonttype": 42,     # TrueType fonts in PDFs (editable text)
}


def use_style() -> None:
    """Apply the house style: seaborn's "ticks" theme in the paper context under the house rcParams (small fonts,
    no top/right spines, tight layout, 150 dpi PNG, the method colours); seaborn applies ``rc`` last."""
    import seaborn as sns
    sns.set_theme(context="paper", style="ticks", rc=_STYLE)


# Across seeds: 95 % bootstrap confidence intervals of the mean, bootstrap seeded (the same figure every time).
ERRORBAR: tuple[str, int] = ("ci", 95)
BOOT_SEED = 0


def _palette(methods: Sequence[str]) -> dict[str, str]:
    return {m: METHOD_COLORS.get(m, "#7F7F7F") for m in methods}


def seed_bars(ax: Axes, data: Any, y: str = "value", x: str = "method", order: Sequence[str] | None = None,
              annotate: bool = True, fmt: str = "{:.3f}") -> Axes:
    """Bars of the mean of ``y`` per ``x`` (method) over seeds with their 95 % confidence interval, and every seed
    as a black point; ``data``: a tidy frame (one row per run). With one seed there is no interval."""
    import seaborn as sns
    order = list(order) if order is not None else list(dict.fromkeys(data[x]))
    several = data.groupby(x)[y].count().max() > 1
    sns.barplot(data=data, x=x, y=y, hue=x, order=order, hue_order=order, palette=_palette(order), ax=ax,
                errorbar=ERRORBAR if several else None, seed=BOOT_SEED, capsize=0.25, err_kws={"linewidth": 1},
                width=0.6, saturation=1.0, legend=False)
    sns.stripplot(data=data, x=x, y=y, order=order, color="k", size=2.5, jitter=0.12, ax=ax, legend=False, zorder=3)
    if annotate:
        means = data.groupby(x)[y].mean()
        for i, m in enumerate(order):
            if m in means and np.isfinite(means[m]):
                ax.annotate(fmt.format(means[m]), (i, means[m]), xytext=(8, 2), textcoords="offset points",
                            fontsize=6, ha="left")
    ax.set_xlabel("")
    return ax


def measure_bars(result: Any, keys: Sequence[str], labels: dict[str, str]) -> Figure:
    """One panel per measure in ``keys`` (y label ``labels[key]``): ``seed_bars`` of each method's final values."""
    frame = result.frame()
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.6))
    for ax, key in zip(np.atleast_1d(axes), keys):
        seed_bars(ax, frame[frame["metric"] == key], order=result.methods)
        ax.set_ylabel(labels[key])
    return fig


def seed_lines(ax: Axes, data: Any, x: str, y: str = "value", hue: str = "method", style: str | None = None,
               order: Sequence[str] | None = None, **kw: Any) -> Axes:
    """Mean of ``y`` over seeds against ``x``, one line per ``hue`` (method), with its 95 % confidence band;
    ``data``: a tidy frame (one row per run and ``x``)."""
    import seaborn as sns
    order = list(order) if order is not None else list(dict.fromkeys(data[hue]))
    several = data.groupby([hue, x])[y].count().max() > 1
    sns.lineplot(data=data, x=x, y=y, hue=hue, hue_order=order, style=style, palette=_palette(order), ax=ax,
                 errorbar=ERRORBAR if several else None, seed=BOOT_SEED, **kw)
    if ax.get_legend() is not None:
        ax.get_legend().set_title(None)
    return ax


def heatmap(ax: Axes, table: Any, fmt: str = ".1f", center: float | None = 0.0, cmap: str = "RdBu",
            cbar_label: str = "") -> Axes:
    """A table of numbers (rows x columns) as an annotated heatmap, diverging around ``center``."""
    import seaborn as sns
    sns.heatmap(table, annot=True, fmt=fmt, center=center, cmap=cmap, ax=ax, linewidths=0.5,
                cbar_kws={"label": cbar_label}, annot_kws={"fontsize": 6})
    return ax


def stamp_label(fig: Figure, label: str) -> None:
    """Put ``label`` small and grey in the bottom-right corner of ``fig`` (replacing an earlier one)."""
    for t in list(fig.texts):
        if t.get_gid() == LABEL_GID:
            t.remove()
    fig.text(0.995, 0.005, label, ha="right", va="bottom", fontsize=6, color="0.35", gid=LABEL_GID, zorder=10)


def save_figure(fig: Figure, name: str, outdir: str | Path, prov: dict, label: str | None = None) -> list[Path]:
    """Write ``<outdir>/<name>.png`` and ``.pdf`` atomically, with ``prov`` embedded as metadata (every path in it
    relative to the repository, ``provenance.portable``)."""
    if not name or Path(name).name != name or name.endswith((".png", ".pdf")):
        raise ValueError(f"save_figure(): name must be a bare file stem, got {name!r}")
    if not isinstance(prov, dict):
        raise TypeError("save_figure(): prov must be a dict (see racecar_repro.provenance)")
    if label:
        stamp_label(fig, label)
    text = json.dumps(portable(_jsonable(prov)), sort_keys=True, ensure_ascii=True)
    meta = {"png": {PROVENANCE_KEY: text, "Software": _SOFTWARE},
            "pdf": {"Subject": text, "Keywords": PROVENANCE_KEY, "Creator": _SOFTWARE}}
    return [atomic_write(Path(outdir) / f"{name}.{fmt}",
                         lambda tmp, fmt=fmt, md=md: fig.savefig(tmp, format=fmt, metadata=md))
            for fmt, md in meta.items()]


def read_png_provenance(path: str | Path) -> dict:
    """Return the provenance dict embedded in a PNG written by :func:`save_figure`."""
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        text = getattr(im, "text", {}).get(PROVENANCE_KEY)
    if text is None:
        raise KeyError(f"{path}: no {PROVENANCE_KEY!r} text chunk")
    return json.loads(text)


def write_results(outdir: str | Path, results: dict, prov: dict) -> Path:
    """Write ``<outdir>/results.json`` = {"provenance": prov, **results} atomically, every path in it relative to the
    repository (``provenance.portable``)."""
    if "provenance" in results:
        raise ValueError("write_results(): results must not contain a 'provenance' key")
    return write_json(Path(outdir) / "results.json", portable(_jsonable({"provenance": prov, **results})))


def to_uint8(img: Any, symmetric: bool = False) -> np.ndarray:
    """Rescale an image to uint8 for display: min-max, or symmetric around 0 (0 -> 128)."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if symmetric:
        m = float(np.abs(a).max()) if a.size else 0.0
        scaled = 0.5 + 0.5 * (a / m) if m > 0 else np.full_like(a, 0.5)
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        scaled = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def _as_2d(img: Any, i: int) -> np.ndarray:
    if hasattr(img, "detach"):  # torch tensor
        img = img.detach().cpu().numpy()
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 1:
        side = int(round(np.sqrt(a.size)))
        if side * side != a.size:
            raise ValueError(f"image_grid(): image {i} is 1-D of length {a.size}, not a square")
        a = a.reshape(side, side)
    if a.ndim != 2:
        raise ValueError(f"image_grid(): image {i} has shape {a.shape}; expected HxW")
    return a


def image_grid(ax: Axes, images: Sequence[Any] | np.ndarray, ncols: int, titles: Sequence[str] | None = None,
               cmap: str = "gray", symmetric: bool = False) -> AxesImage:
    """Draw HxW images tiled into one image on ``ax``, each rescaled individually, thin separators."""
    tiles = [_as_2d(im, i) for i, im in enumerate(images)]
    if not tiles:
        raise ValueError("image_grid(): no images")
    if ncols < 1:
        raise ValueError(f"image_grid(): ncols must be >= 1, got {ncols}")
    shape = tiles[0].shape
    if any(t.shape != shape for t in tiles):
        raise ValueError(f"image_grid(): images differ in shape: {sorted({t.shape for t in tiles})}")
    if titles is not None and len(titles) != len(tiles):
        raise ValueError(f"image_grid(): {len(titles)} titles for {len(tiles)} images")
    h, w = shape
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    sep = 1
    canvas = np.full((nrows * (h + sep) - sep, ncols * (w + sep) - sep), np.nan)
    for k, t in enumerate(tiles):
        r, c = divmod(k, ncols)
        scaled = to_uint8(t, symmetric=symmetric).astype(np.float64) / 255.0
        if symmetric:
            scaled = 2.0 * scaled - 1.0
        canvas[r * (h + sep): r * (h + sep) + h, c * (w + sep): c * (w + sep) + w] = scaled
    if symmetric and cmap == "gray":
        cmap = "RdBu_r"
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    vmin, vmax = (-1.0, 1.0) if symmetric else (0.0, 1.0)
    art = ax.imshow(canvas, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    if titles is not None:
        for k, title in enumerate(titles):
            r, c = divmod(k, ncols)
            ax.text(c * (w + sep) + (w - 1) / 2, r * (h + sep) - 0.5, str(title), ha="center", va="bottom", fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return art


def _gif_frame(frame: Any, i: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"save_gif(): frame {i} has shape {a.shape}; expected HxW or HxWx3")
    if a.dtype != np.uint8:
        a = np.clip(np.round(np.nan_to_num(a.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    return a


def save_gif(frames: Sequence[Any], path: str | Path, duration_ms: int = 100) -> Path:
    """Write frames (HxW or HxWx3, uint8 or float in [0,1]) as a looping animated GIF, atomically (PIL merges
    consecutive identical frames, adding their durations)."""
    from PIL import Image
    arrays = [_gif_frame(f, i) for i, f in enumerate(frames)]
    if not arrays:
        raise ValueError("save_gif(): no frames")
    if len({a.shape[:2] for a in arrays}) > 1:
        raise ValueError(f"save_gif(): frames differ in size: {sorted({a.shape[:2] for a in arrays})}")
    if any(a.ndim == 3 for a in arrays):
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    images = [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]  # L or RGB
    return atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                         duration=int(duration_ms), loop=0))


SMOKE_LABEL = "smoke profile: a pipeline check, not a paper result"


class FigureFolder:
    """Where one notebook writes: ``figures/<name>/``, every file with the provenance of ``result`` and the label
    that says what its data are (``result.label``, plus a note in the smoke profile)."""

    def __init__(self, name: str, result: Any):
        from racecar_repro import paths
        from racecar_repro.provenance import provenance
        self.name = name
        self.path = paths.figures_dir() / name
        labels = [result.label, SMOKE_LABEL if result.profile == "smoke" else None]
        self.label = "; ".join(s for s in labels if s) or None
        self.prov = {**provenance(result.profile, result.params, result.source), "label": self.label}

    def of(self, result: Any) -> "FigureFolder":
        """The same folder with the provenance and label of another result: for a figure made from other runs
        (e.g. the same experiment at another lambda), so its file says which runs it shows."""
        return FigureFolder(self.name, result)

    def save(self, fig: Figure, name: str, show: bool = True) -> list[Path]:
        """Save ``fig`` as ``<name>.png`` and ``.pdf`` (labelled, with provenance); show it in the notebook."""
        written = save_figure(fig, name, self.path, self.prov, label=self.label)
        if show:
            plt.show()
        else:
            plt.close(fig)
        return written

    def gif(self, frames: Sequence[Any], name: str, duration_ms: int = 120) -> Path:
        """Save animation frames as ``<name>.gif``."""
        return save_gif(frames, self.path / f"{name}.gif", duration_ms=duration_ms)

    def write_results(self, results: dict) -> Path:
        """Write ``results.json`` with the provenance."""
        return write_results(self.path, results, self.prov)
