"""racecar_repro.provenance.portable: results.json and the figures' metadata name paths relative to the repository."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from racecar_repro import paths, plotting  # noqa: E402
from racecar_core.files import read_json  # noqa: E402
from racecar_repro.provenance import portable  # noqa: E402

ROOT = str(paths.ROOT)


@pytest.fixture
def default_data_dir(monkeypatch):
    """The data dir at its default place, ``<repo>/data``."""
    monkeypatch.delenv("RACECAR_DATA_DIR", raising=False)


def test_paths_under_the_repository_become_relative_and_others_stay(default_data_dir):
    source = (f"torchvision FashionMNIST from {ROOT}/data/FashionMNIST/raw (decompressed from "
              "/usr/share/datasets/fashion-mnist/*.gz); class-balanced subset")
    assert portable(source) == ("torchvision FashionMNIST from data/FashionMNIST/raw (decompressed from "
                                "/usr/share/datasets/fashion-mnist/*.gz); class-balanced subset")
    assert portable(f"runs in {ROOT}/runs, code in {ROOT}.") == "runs in runs, code in .."
    assert portable(Path(ROOT) / "data" / "peak") == "data/peak"
    for elsewhere in (f"{ROOT}2/data/x", f"/elsewhere{ROOT}/data/x", f"{ROOT}.old/x", "/usr/share/datasets/mnist",
                      "no path at all", "data/already/relative"):
        assert portable(elsewhere) == elsewhere
    nested = {"a": [f"{ROOT}/data/x", (1, f"{ROOT}/figures/y")], f"{ROOT}/k": 2.0, "n": None, "b": True}
    assert portable(nested) == {"a": ["data/x", (1, "figures/y")], "k": 2.0, "n": None, "b": True}


def test_a_data_dir_outside_the_repository_is_named_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_DATA_DIR", str(tmp_path / "scratch" / "racecar-data"))
    assert portable(f"from {tmp_path}/scratch/racecar-data/MNIST/raw") == "from data/MNIST/raw"
    assert portable(f"from {tmp_path}/scratch/other") == f"from {tmp_path}/scratch/other"  # not the data dir
    assert portable(f"from {ROOT}/data/MNIST") == "from data/MNIST"                       # still under the root


def test_results_json_and_figure_metadata_hold_only_relative_paths(tmp_path, monkeypatch, default_data_dir):
    monkeypatch.setenv("RACECAR_FIGURES_DIR", str(tmp_path / "figures"))
    source = f"torchvision FashionMNIST from {ROOT}/data/FashionMNIST/raw; class-balanced subset 5000 train"
    result = SimpleNamespace(profile="quick", params={"root": Path(ROOT) / "data" / "FashionMNIST", "seeds": [0]},
                             source=source, label=None)
    figures = plotting.FigureFolder("99_portable", result)
    written = figures.write_results({"climatology": f"WeatherBench 2 climatology copied to {ROOT}/data/wb2",
                                     "per_run": {"RR/seed0": {"dir": Path(ROOT) / "runs" / "abc"}}})
    text = written.read_text()
    assert ROOT not in text
    res = read_json(written)
    assert res["provenance"]["data_source"] == ("torchvision FashionMNIST from data/FashionMNIST/raw; "
                                                "class-balanced subset 5000 train")
    assert res["provenance"]["params"]["root"] == "data/FashionMNIST"
    assert res["climatology"] == "WeatherBench 2 climatology copied to data/wb2"
    assert res["per_run"]["RR/seed0"]["dir"] == "runs/abc"
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png, pdf = figures.save(fig, "panel", show=False)
    prov = plotting.read_png_provenance(png)
    assert prov["data_source"].startswith("torchvision FashionMNIST from data/FashionMNIST/raw;")
    assert prov["params"]["root"] == "data/FashionMNIST"
    assert ROOT.encode() not in png.read_bytes()
    raw = pdf.read_bytes()
    assert b"from data/FashionMNIST/raw" in raw and ROOT.encode() not in raw
