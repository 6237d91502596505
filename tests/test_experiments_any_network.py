"""RR on your own network end to end: torchvision's ResNet-18 on tiny real-format Fashion-MNIST files."""
import pytest
import torch

from racecar_repro.experiments import any_network, any_network_figures
from test_experiments_cifar import tiny_fashion  # noqa: F401  (the fixture)

TINY = dict(steps=4, batch_size=20, eval_every=2, n_train=60, n_test=20, n_rec=8, shown=4, device="cpu",
            progress=False)


@pytest.mark.integration
def test_runs_summary_claim_results_and_figures(tiny_fashion):  # noqa: F811
    result = any_network.run("smoke", report=None, **TINY)
    assert [r.spec.key for r in result.runs] == ["Std/seed0", "RR/seed0"]
    for r in result.runs:
        assert [e["step"] for e in r.evals] == [0, 2, 4]
        assert r.arrays["inputs"].shape == r.arrays["reconstruction"].shape == (4, 1, 32, 32)
        assert 0 <= r.metrics["final_acc"] <= 1 and r.metrics["rec_error"] > 0 and -1 <= r.metrics["rec_cosine"] <= 1
    first = {r.spec.method: r.evals[0]["rec_error"] for r in result.runs}
    assert first["Std"] == pytest.approx(first["RR"])  # the same initial network: the same reconstruction
    table = any_network.summary(result)
    assert list(table.index) == ["Std", "RR"] and set(table.columns) >= {"acc_mean", "rec_error_mean"}
    claims = any_network.claim(result)
    assert set(claims) == {"rec_error", "rec_cosine"}
    for c in claims.values():   # one seed: no interval
        assert c["verdict"] == "too few seeds" and c["n"] == 1 and c["ci"] is None
        assert {"statement", "diff", "measure", "direction", "task", "acc_floor"} <= set(c)
    out = any_network.results(result)
    assert out["claim"] == claims
    assert set(out["per_run"]) == {"Std/seed0", "RR/seed0"} and len(out["per_run"]["RR/seed0"]["curve"]) == 3
    for fig in (any_network_figures.reconstructions(result), any_network_figures.curves(result)):
        assert fig.axes
    again = any_network.run("smoke", report=None, **TINY)
    assert again.trained_now == 0   # the run cache


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="no network 'resnet9000'"):
        any_network.resolve_params("smoke", model="resnet9000")
    with pytest.raises(ValueError, match="Pre needs an nn.Sequential"):
        any_network.resolve_params("smoke", methods=["Pre"])
    with pytest.raises(ValueError, match="unknown parameter"):
        any_network.resolve_params("smoke", depth=20)


def test_reconstruction_scores_of_a_perfect_and_a_scaled_reverse_pass():
    lin = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4))          # identity: W^T W x = x
    x = torch.randn(8, 4)
    scores = any_network.reconstruction_scores(torch.nn.Sequential(lin), x)
    assert scores == pytest.approx({"rec_error": 0.0, "rec_cosine": 1.0}, abs=1e-6)
    with torch.no_grad():
        lin.weight.mul_(2.0)                    # W^T W x = 4 x: error 9, the same direction
    scores = any_network.reconstruction_scores(torch.nn.Sequential(lin), x)
    assert scores == pytest.approx({"rec_error": 9.0, "rec_cosine": 1.0}, rel=1e-5)


def test_a_run_that_gave_up_the_task_never_confirms_the_reconstruction_claim():
    """Constructed runs: RR reconstructs far better on every seed, but two of its three runs lost more than
    acc_tolerance of Std's accuracy: left out, too few pairs remain, the verdict is 'task failed'."""
    from types import SimpleNamespace
    runs = [SimpleNamespace(spec=SimpleNamespace(method=m, seed=s),
                            metrics={"final_acc": acc, "rec_error": err, "rec_cosine": 1 - err})
            for m, accs, err in (("Std", (0.90, 0.91, 0.89), 1.0), ("RR", (0.90, 0.60, 0.50), 0.1))
            for s, acc in enumerate(accs)]
    result = SimpleNamespace(methods=["Std", "RR"], params={"acc_tolerance": 0.05},
                             select=lambda m: [r for r in runs if r.spec.method == m])
    claims = any_network.claim(result)
    assert claims["rec_error"]["verdict"] == "task failed" and claims["rec_error"]["excluded"] == {"RR": [1, 2]}
    assert claims["rec_error"]["task"]["RR"]["failed_seeds"] == [1, 2]
    result.params["acc_tolerance"] = 0.5           # all three runs count: the effect is shown
    assert any_network.claim(result)["rec_error"]["verdict"] == "shown"
