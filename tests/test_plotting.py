"""Tests for the figure house style, provenance records and result files (offline, fast)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from racecar_repro import plotting  # noqa: E402
from racecar_core.files import read_json  # noqa: E402
from racecar_repro.provenance import provenance  # noqa: E402

PROV_KEYS = {"git_commit", "git_dirty", "timestamp_utc", "racecar_core_version", "torch_version",
             "device", "python_version", "profile", "params", "data_source"}


@pytest.fixture
def prov():
    return provenance("smoke", {"lr": 1e-3, "seeds": np.arange(2)}, data_source="synthetic", note="x")


def test_provenance_records_the_true_state(prov):
    import datetime as dt
    import platform
    import subprocess
    assert PROV_KEYS <= set(prov)
    root = Path(plotting.__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    assert len(prov["git_commit"]) >= 7 and head.startswith(prov["git_commit"])
    assert prov["python_version"] == platform.python_version()
    stamp = dt.datetime.fromisoformat(prov["timestamp_utc"])
    assert abs((dt.datetime.now(dt.timezone.utc) - stamp).total_seconds()) < 120
    assert json.loads(json.dumps(prov, default=str))["params"]["lr"] == 1e-3
    assert (prov["profile"], prov["data_source"], prov["note"]) == ("smoke", "synthetic", "x")
    with pytest.raises(ValueError, match="clash"):
        provenance("smoke", {}, device="clash")


def _lab(color: str) -> np.ndarray:
    """CIE L*a*b* (D65) of a matplotlib colour."""
    from matplotlib.colors import to_rgb
    rgb = np.array(to_rgb(color))
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), (6 / 29) ** 3))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_every_method_has_a_distinct_colour_and_the_style_uses_them():
    from racecar_core.methods import METHODS
    assert set(plotting.METHOD_ORDER) == set(plotting.METHOD_COLORS) == set(METHODS)
    labs = [_lab(plotting.METHOD_COLORS[m]) for m in plotting.METHOD_ORDER]
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(labs) for b in labs[i + 1:])
    assert closest > 40  # CIE76 delta E: clearly different colours, not shades of one
    plotting.use_style()
    cycle = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]]
    assert [c.upper() for c in cycle] == [plotting.METHOD_COLORS[m].upper() for m in plotting.METHOD_ORDER]


@pytest.mark.integration
def test_save_figure_roundtrip_and_label(tmp_path, monkeypatch, prov):
    monkeypatch.setenv("RACECAR_FIGURES_DIR", str(tmp_path / "figs"))
    plotting.use_style()
    plotting.use_style()  # idempotent
    fig, ax = plt.subplots(figsize=(2, 1.5))
    for m in plotting.METHOD_ORDER:
        ax.plot([0, 1], [0, 1], color=plotting.METHOD_COLORS[m], label=m)
    outdir = tmp_path / "figs" / "01_demo"
    written = plotting.save_figure(fig, "fig1", outdir, prov, label="SYNTHETIC DATA")
    assert [p.name for p in written] == ["fig1.png", "fig1.pdf"]
    assert all(p.stat().st_size > 0 for p in written)
    assert sorted(p.name for p in outdir.iterdir()) == ["fig1.pdf", "fig1.png"]  # no temp files
    assert written[1].read_bytes().startswith(b"%PDF")
    assert plotting.read_png_provenance(written[0]) == json.loads(json.dumps(
        {**prov, "params": {"lr": 1e-3, "seeds": [0, 1]}}))
    labels = [t for t in fig.texts if t.get_text() == "SYNTHETIC DATA"]
    assert len(labels) == 1
    plotting.save_figure(fig, "fig1", outdir, prov, label="smoke profile: not a paper result")
    assert [t.get_text() for t in fig.texts] == ["smoke profile: not a paper result"]
    with pytest.raises(ValueError):
        plotting.save_figure(fig, "sub/fig", outdir, prov)
    plt.close(fig)


def test_write_results(tmp_path, prov):
    path = plotting.write_results(tmp_path / "out", {"acc": np.float32(0.5), "curve": [1, 2]}, prov)
    data = read_json(path)
    assert path.name == "results.json"
    assert data["acc"] == 0.5 and data["curve"] == [1, 2]
    assert data["provenance"]["profile"] == "smoke"
    with pytest.raises(ValueError):
        plotting.write_results(tmp_path, {"provenance": 1}, prov)


def test_save_gif_frame_count(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.random((8, 8)) for _ in range(3)] + [np.full((8, 8, 3), 200, dtype=np.uint8)]
    path = plotting.save_gif(frames, tmp_path / "anim.gif", duration_ms=50)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 4
    with pytest.raises(ValueError):
        plotting.save_gif([np.zeros((4, 4)), np.zeros((5, 5))], tmp_path / "bad.gif")


def test_to_uint8():
    a = plotting.to_uint8(np.array([[-2.0, 0.0, 1.0]]))
    assert a.dtype == np.uint8 and a.min() == 0 and a.max() == 255
    s = plotting.to_uint8(np.array([[-2.0, 0.0, 2.0]]), symmetric=True)
    assert list(s[0]) == [0, 128, 255]
    assert plotting.to_uint8(np.ones((2, 2))).max() == 0  # constant image: no division by zero


@pytest.mark.parametrize("symmetric", [False, True])
def test_image_grid(symmetric):
    imgs = np.random.default_rng(1).normal(size=(5, 6, 4))
    fig, ax = plt.subplots()
    art = plotting.image_grid(ax, imgs, ncols=3, titles=list("abcde"), symmetric=symmetric)
    arr = art.get_array()
    assert arr.shape == (2 * 6 + 1, 3 * 4 + 2)
    assert (arr.min() < 0) == symmetric
    assert [t.get_text() for t in ax.texts] == list("abcde")
    plotting.image_grid(ax, [np.zeros(16)], ncols=1)  # 1-D square vectors are reshaped
    with pytest.raises(ValueError):
        plotting.image_grid(ax, [np.zeros((2, 2)), np.zeros((3, 3))], ncols=2)
    plt.close(fig)


def test_git_dirty_flag_ignores_figure_outputs(tmp_path):
    import shutil
    import subprocess
    if shutil.which("git") is None:
        pytest.skip("no git")
    from racecar_repro.provenance import git_state

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_text("1")
    (tmp_path / "code.py").write_text("1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    assert git_state(tmp_path)[1] is False
    (tmp_path / "figures" / "a.png").write_text("2")   # a regenerated figure: the code is still the commit's
    assert git_state(tmp_path)[1] is False
    (tmp_path / "code.py").write_text("2")
    assert git_state(tmp_path)[1] is True


@pytest.mark.integration
def test_figure_folder_labels_every_figure_with_its_data_and_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_FIGURES_DIR", str(tmp_path))
    result = SimpleNamespace(profile="smoke", params={"seeds": [0]}, source="fake digits", label="NOT THE PAPER'S DATA")
    figures = plotting.FigureFolder("99_test", result)
    assert figures.label == f"NOT THE PAPER'S DATA; {plotting.SMOKE_LABEL}"
    fig, ax = plt.subplots()
    png, pdf = figures.save(fig, "panel", show=False)
    assert png == tmp_path / "99_test" / "panel.png" and pdf.exists()
    prov = plotting.read_png_provenance(png)
    assert (prov["profile"], prov["data_source"], prov["params"]) == ("smoke", "fake digits", {"seeds": [0]})
    assert figures.label in [t.get_text() for t in fig.texts]
    written = read_json(figures.write_results({"x": 1.0}))
    assert written["x"] == 1.0 and written["provenance"]["data_source"] == "fake digits"
    assert prov["label"] == figures.label                  # the label in the file too (the report reads it)
    quick = plotting.FigureFolder("99_test", SimpleNamespace(profile="quick", params={}, source="s", label=None))
    assert quick.label is None
    other = figures.of(SimpleNamespace(profile="quick", params={"rr_lambda": 1.0}, source="s", label=None))
    png, _ = other.save(plt.subplots()[0], "other_runs", show=False)
    assert png.parent == figures.path and plotting.read_png_provenance(png)["params"] == {"rr_lambda": 1.0}



def test_seed_statistics_are_drawn_with_seaborn_from_tidy_frames():
    import matplotlib.pyplot as plt
    import pandas as pd

    from racecar_repro.plotting import METHOD_COLORS, heatmap, seed_bars, seed_lines, use_style
    use_style()
    runs = pd.DataFrame({"method": ["Std"] * 3 + ["RR"] * 3, "seed": [0, 1, 2] * 2,
                         "value": [0.80, 0.82, 0.84, 0.85, 0.86, 0.90]})
    fig, ax = plt.subplots()
    seed_bars(ax, runs, order=["Std", "RR"])
    bars = ax.patches
    assert [round(b.get_height(), 4) for b in bars] == [0.82, 0.87]           # the means
    assert [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars] == [METHOD_COLORS["Std"].lower(),
                                                                          METHOD_COLORS["RR"].lower()]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 6             # every seed a point
    assert len(ax.lines) >= 2                                                 # confidence intervals
    one = runs.drop_duplicates("method")                                      # one seed: no interval
    fig, ax = plt.subplots()
    seed_bars(ax, one, annotate=False)
    assert len(ax.lines) == 0 and not ax.texts
    curves = pd.DataFrame({"method": ["RR"] * 6, "seed": [0, 0, 0, 1, 1, 1], "step": [0, 1, 2] * 2,
                           "value": [1.0, 2.0, 3.0, 3.0, 4.0, 5.0]})
    fig, ax = plt.subplots()
    seed_lines(ax, curves, x="step")
    assert list(ax.lines[0].get_ydata()) == [2.0, 3.0, 4.0] and len(ax.collections) == 1    # mean and its band
    fig, ax = plt.subplots()
    heatmap(ax, pd.DataFrame({"mae": [1.5, -2.0]}, index=["z500", "t850"]), cbar_label="gain %")
    assert sorted(t.get_text() for t in ax.texts) == ["-2.0", "1.5"]
    plt.close("all")
