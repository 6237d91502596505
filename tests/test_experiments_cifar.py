"""The CIFAR experiment end to end on tiny real-format Fashion-MNIST files: runs, summary, RR's lambda sweep."""
import math

import numpy as np
import pytest
import torch

from racecar_repro.experiments import cifar
from test_data_cifar import _write_idx_gz

TINY = dict(dataset="fashion_mnist", depth=8, epochs=1, batch_size=20, seeds=[0], device="cpu", progress=False,
            amp=False, channels_last=False, n_train=60, n_test=20)


@pytest.fixture
def tiny_fashion(data_dir, no_network, tmp_path, monkeypatch):
    """80 training and 20 test images in Debian's gzipped IDX layout, and a private run cache."""
    src = tmp_path / "fmnist"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 80), ("t10k", 20)):
        _write_idx_gz(src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
        _write_idx_gz(src / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setenv("RACECAR_FASHION_MNIST_DIR", str(src))
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))


@pytest.mark.integration
def test_sweep_chooses_on_the_validation_split_and_survives_divergence(tiny_fashion):
    out = cifar.sweep("smoke", lambdas=(1e-3, 1e30), modes=("full",), validation=20, **TINY)
    table = out.table
    assert list(table["method"]) == ["RR", "RR", "Std"] and out.validation == 20 and out.scored == 20
    ok, diverged = table.iloc[0], table.iloc[1]
    assert 0 <= ok["val_mean"] <= 1 and ok["seeds"] == 1 and ok["note"] == ""
    assert math.isnan(diverged["val_mean"]) and "RR loss is" in diverged["note"] and "at step" in diverged["note"]
    assert out.best == {"rr_mode": "full", "rr_lambda": 1e-3}
    # the sweep's runs were scored on 20 held-out training images, never on the test set
    again = cifar.run("smoke", **TINY, methods=["RR"], rr_lambda=1e-3, rr_mode="full", validation=20)
    (run,) = again.runs
    assert run.cached and len(again.data["data"].x_test) == 20 and "held out of train" in again.source
    assert len(again.data["data"].x_train) == 60 and run.config["validation"] == 20
    with pytest.raises(FloatingPointError, match="every RR setting"):
        cifar.sweep("smoke", lambdas=(1e30,), modes=("full",), validation=20, **TINY)


def test_sweep_figure_marks_the_diverged_setting(tiny_fashion):
    import matplotlib
    matplotlib.use("Agg")
    from racecar_repro.experiments import cifar_figures
    small = dict(TINY, n_train=40)            # 30 held out, of which n_test=20 score each setting
    out = cifar.sweep("smoke", lambdas=(1e-3, 1e30), modes=("full",), validation=30, **small)
    assert (out.validation, out.scored) == (30, 20)
    fig = cifar_figures.sweep_plot(out, cifar.resolve_params("smoke", **small))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["RR, full", "RR, full: diverged", "Std"] and ax.get_xscale() == "log"
    assert "chosen: full, lambda 0.001" in ax.get_title() and "20 of 30 held-out" in ax.get_title()


def test_cifar_experiment_parameters_are_checked():
    p = cifar.resolve_params("paper", device="cpu")
    assert (p["depth"], p["epochs"], p["batch_size"], p["lr"], p["milestones"]) == (110, 164, 128, 0.1, [82, 123])
    assert p["warmup_steps"] == 400 and len(p["seeds"]) == 5
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar.resolve_params("quick", depth=30)
    with pytest.raises(ValueError, match="unknown dataset"):
        cifar.resolve_params("quick", dataset="imagenet")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['lamda'\]"):
        cifar.resolve_params("quick", lamda=1.0)
    with pytest.raises(ValueError, match="unknown device"):
        cifar.resolve_params("quick", device="gpu")
    if not torch.cuda.is_available():
        assert cifar.resolve_params("quick")["device"] == "cpu"   # "auto"
        with pytest.raises(ValueError, match="no CUDA GPU"):
            cifar.resolve_params("quick", device="cuda")


def test_claim_is_three_paired_accuracy_comparisons():
    """Constructed final accuracies: RR above Std on every seed (shown), Ort tied with Std (not shown), RR - Ort
    reversed (contradicted)."""
    from types import SimpleNamespace
    accs = {"Std": (0.90, 0.92, 0.91, 0.93), "Ort": (0.91, 0.91, 0.92, 0.92), "RR": (0.85, 0.87, 0.86, 0.88)}
    accs["RR"] = tuple(a + 0.01 for a in accs["Std"])
    accs["Ort"] = (0.95, 0.96, 0.95, 0.97)
    runs = [SimpleNamespace(spec=SimpleNamespace(method=m, seed=s), metrics={"final_acc": a})
            for m, values in accs.items() for s, a in enumerate(values)]
    result = SimpleNamespace(methods=list(accs), select=lambda m: [r for r in runs if r.spec.method == m])
    claims = cifar.claim(result)
    assert set(claims) == {"rr_vs_std", "ort_vs_std", "rr_vs_ort"}
    assert claims["rr_vs_std"]["verdict"] == "shown" and claims["rr_vs_std"]["n"] == 4
    assert claims["ort_vs_std"]["verdict"] == "shown"
    assert claims["rr_vs_ort"]["verdict"] == "contradicted"
    assert all({"verdict", "diff", "ci", "n", "measure", "direction"} <= set(c) for c in claims.values())
    accs_tie = SimpleNamespace(methods=["Std", "RR"], select=lambda m: [r for r in runs if r.spec.method == "Std"])
    assert cifar.claim(accs_tie)["rr_vs_std"]["verdict"] == "not shown"   # the same numbers: a tie
