"""The SVD-test experiment: parameters, errors, and a tiny end-to-end run on real (offline) MNIST digits."""
import pytest

from racecar_repro.experiments import svd
from racecar_repro.experiments.grid import RunSpec
from racecar_core.files import load_checked


def test_profiles_resolve_and_quick_is_the_official_setting():
    p = svd.resolve_params("peak", "quick")
    assert (p["steps"], p["rr_lambda"], p["ort_weight"], p["lr"], p["batch_size"]) == (5000, 1e-6, 0.1, 1e-4, None)
    m = svd.resolve_params("mnist", "paper")
    assert (m["steps"], m["analysis_step"], m["rr_lambda"]) == (1000, 900, 1e-5)
    assert len(svd.resolve_params("mnist", "quick")["seeds"]) == 5


def test_unknown_parameter_profile_and_dataset_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['stepz'\].*known"):
        svd.resolve_params("mnist", "smoke", stepz=3)
    with pytest.raises(ValueError, match="unknown profile"):
        svd.resolve_params("mnist", "huge")
    with pytest.raises(ValueError, match="unknown SVD-test data set"):
        svd.resolve_params("cifar", "smoke")
    with pytest.raises(ValueError, match="analysis_step"):
        svd.resolve_params("mnist", "smoke", analysis_step=15)
    with pytest.raises(ValueError, match="unknown variant"):
        svd.resolve_params("mnist", "smoke", variants="oficial")


def test_tiny_run_end_to_end_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    kw = dict(steps=20, analysis_step=20, eval_every=10, pre_steps=5, methods=["Std", "RR", "Pre"],
              variants=["corrected"])
    result = svd.run("mnist", "smoke", **kw)
    assert [r.spec.key for r in result.runs] == ["corrected/Std/seed0", "corrected/RR/seed0", "corrected/Pre/seed0"]
    assert result.trained_now == 3
    r = result.one("RR", 0, "corrected")
    assert r.arrays["Vh"].shape == (10, 784) and r.arrays["reconstructions"].shape == (3, 2, 1, 28, 28)
    assert 0 <= r.metrics["lead_span_energy"] <= 1
    table = svd.summary_table(result)
    assert ("corrected", "RR") in table.index
    again = svd.run("mnist", "smoke", **kw)
    assert again.trained_now == 0 and all(r.cached for r in again.runs)
    assert [r.metrics for r in again.runs] == [r.metrics for r in result.runs]


def test_pre_is_analysed_after_the_same_task_steps_as_the_others(tmp_path, monkeypatch):
    import torch
    from racecar_core import svd as svd_analysis
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    result = svd.run("mnist", "smoke", steps=20, analysis_step=20, eval_every=10, pre_steps=15,
                     methods=["Std", "Pre"], variants=["official"], data="replica")
    pre = result.one("Pre", 0, "official")
    steps = pre.arrays["recon_steps"]
    assert pre.metrics["task_step"] == 20 and steps[0] == -15 and steps[-1] == 20
    # the analysed weights are the fine-tuned ones: those of the final checkpoint (15 pretraining + 20 task steps)
    ckpt = next(p for p in tmp_path.glob("svd_mnist/*/checkpoint.pt")
                if load_checked(p)["state"]["step"] == 35)
    final = load_checked(ckpt)["model"]["1.weight"]
    _, s, _ = svd_analysis.svd(final, "cpu")
    assert torch.allclose(s, pre.arrays["S"])
    at = next(e for e in pre.evals if e["task_step"] == 20)
    assert at["step"] == 35 and pre.metrics["test_acc"] == at["test_acc"]


def test_pre_whose_pretraining_is_no_multiple_of_eval_every_is_evaluated_on_the_others_task_steps(tmp_path,
                                                                                                  monkeypatch):
    """Evaluations fall on task steps 0, eval_every, ... whatever the pretraining's length (15 steps here, evaluation
    every 10): the analysis step inside the run (task step 10 of 20) is one of them."""
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    result = svd.run("mnist", "smoke", steps=20, analysis_step=10, eval_every=10, pre_steps=15, methods=["Std", "Pre"],
                     variants=["official"], data="replica")
    std, pre = result.one("Std", 0, "official"), result.one("Pre", 0, "official")
    assert [e["task_step"] for e in std.evals] == [0, 10, 20]
    assert [e["task_step"] for e in pre.evals] == [-15, -10, 0, 10, 20]
    assert pre.metrics["task_step"] == std.metrics["task_step"] == 10


def test_corrected_rr_keeps_every_term_at_its_official_size():
    """The corrected variant's inputs are 255 times smaller: its input term is weighted by 255^2 (raw pixel units),
    while the batch-normalised hidden term does not depend on the input scale and keeps the published lambda."""
    import torch
    from racecar_core import reverse
    from racecar_repro.data.peak import make_peak
    from racecar_core.models import peak_mlp
    data, params = make_peak(10, 1, 0, cache=False), svd.resolve_params("peak", "quick")
    weighted = {}
    for v in ("official", "corrected"):
        scale = svd.variant_settings(v)["scale"]
        rr = svd.method_for(RunSpec("svd_peak", "RR", 0, v, params))
        torch.manual_seed(0)
        with torch.no_grad():
            trace = reverse.forward_trace(peak_mlp(), data.x_train * scale)
            terms = reverse.reconstruction_terms(reverse.reverse_pass(trace, "full"), "sum")
        w = rr.pair_weights or []
        weighted[v] = [float(rr.lam * t * (w[i] if i < len(w) else 1.0)) for i, t in enumerate(terms)]
    (off_in, off_hid), (cor_in, cor_hid) = weighted["official"], weighted["corrected"]
    assert abs(cor_hid / off_hid - 1) < 0.05  # was 65,025 times heavier with lambda x 255^2 on every term
    assert 0.25 < cor_in / off_in < 4  # the input term compares the same images in the same (raw) units


def test_official_variant_evaluates_with_batch_statistics():
    import torch
    from racecar_core import reverse
    from racecar_core.models import peak_mlp
    torch.manual_seed(0)
    net = peak_mlp()
    x = torch.rand(12, 1, 28, 28) * 255
    net.train()
    net(torch.rand(50, 1, 28, 28) * 10)  # moving averages far from x's statistics
    net.eval()
    running = [b.running_mean.clone() for b in net if isinstance(b, torch.nn.BatchNorm1d)]
    with reverse.batch_statistics(net):
        inside = net(x)
        reverse.reconstruct_input(net, x)
    net.train()
    with reverse.frozen_norm_statistics(net):
        train_mode = net(x)
    net.eval()
    assert torch.allclose(inside, train_mode)  # the evaluated batch's own statistics, as TF's is_training=1
    assert not torch.allclose(inside, net(x))  # not the moving averages of eval mode
    after = [b.running_mean for b in net if isinstance(b, torch.nn.BatchNorm1d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after))  # evaluation leaves them alone
    assert not any(m.training for m in net)  # and the modes are restored


def test_data_choice_is_checked_and_auto_falls_back_to_the_replica(data_dir):
    with pytest.raises(ValueError, match="unknown data"):
        svd.resolve_params("peak", "smoke", data="offical")
    assert svd.resolve_data("peak", "auto") == "replica"  # an empty data folder: no official images
    assert svd.resolve_params("peak", "smoke")["data"] == "replica"  # resolved: the results say which images
    from racecar_repro.data import MissingDataError
    with pytest.raises(MissingDataError, match="make data-peak-official"):
        svd.load_data(svd.resolve_params("peak", "smoke", data="official", n_train_per_class=50))
    assert "replica" in svd.data_label({"data": "replica", "dataset": "peak"})


def test_reconstruction_figures_show_every_method_at_the_same_task_steps():
    import matplotlib.pyplot as plt
    import torch
    from racecar_repro.experiments import svd_figures

    from racecar_repro.experiments.grid import ExperimentResult, RunResult

    def fake(method, steps):  # each snapshot marks its task step by which pixel is lit (negative steps: row 20)
        recs = torch.zeros(len(steps), 2, 1, 28, 28)
        for k, s in enumerate(steps):
            recs[k, :, 0, 5 if s >= 0 else 20, abs(s) // 10 + 1] = 1.0
        return RunResult(RunSpec("svd_mnist", method, 0, "official"), {}, [], [], 0.0, {},
                         {"recon_steps": list(steps), "reconstructions": recs,
                          "shown_images": torch.zeros(2, 1, 28, 28)}, {}, False)

    result = ExperimentResult("svd_mnist", "smoke", {"methods": ["Std", "Pre"], "seeds": [0]}, "fake", None, None,
                              [fake("Std", [0, 10, 20]), fake("Pre", [-20, -10, 0, 10, 20])])
    frames = svd_figures.reconstruction_frames(result, "official", 0)
    assert len(frames) == 3  # task steps 0, 10, 20: Pre's pretraining snapshots are not frames
    for f in frames:
        std, pre = f[:4 * 30, :4 * 30], f[:4 * 30, 4 * 30:4 * 60]  # first test image, one tile per method
        assert (std == pre).all() and std.max() > 0
    assert len({f.tobytes() for f in frames}) == 3
    fig = svd_figures.reconstruction_strip(result, "official", 0, n_frames=3)
    assert "task steps 0, 10, 20" in fig.axes[0].get_title(loc="left")
    plt.close(fig)


def _fake_runs(variant, table):
    """Constructed runs: ``table[method] = [(test_acc, span energy), ...]`` per seed."""
    from types import SimpleNamespace
    return {m: [SimpleNamespace(spec=SimpleNamespace(method=m, seed=s, variant=variant),
                                metrics={"test_acc": acc, **{c: e for c in svd.CLAIM_COLUMNS}})
                for s, (acc, e) in enumerate(rows)] for m, rows in table.items()}


def test_claims_count_only_runs_that_learnt_the_task():
    ok = [(1.0, 0.1), (1.0, 0.12), (1.0, 0.11), (1.0, 0.13), (1.0, 0.1)]
    rr_fails = [(0.5, 0.7), (0.6, 0.6), (1.0, 0.65), (0.2, 0.7), (0.7, 0.66)]   # far more data-like, task failed
    claims = svd.claims_of(_fake_runs("corrected", {"Std": ok, "Ort": ok, "RR": rr_fails}), 0.95, "corrected")
    assert set(claims) == {f"corrected/{c}" for c in svd.CLAIM_COLUMNS}
    c = claims["corrected/lead_span_energy"]
    assert c["verdict"] == "task failed" and c["n"] == 1
    assert c["task"]["RR"]["failed_seeds"] == [0, 1, 3, 4] and c["task"]["RR"]["test_acc_mean"] == pytest.approx(0.6)
    rr_learns = [(1.0, e) for _, e in rr_fails]
    shown = svd.claims_of(_fake_runs("official", {"Std": ok, "Ort": ok, "RR": rr_learns}), 0.95, "official")
    assert shown["official/lead_span_energy"]["verdict"] == "shown"
    assert set(shown["official/lead_span_energy"]["against"]) == {"Std", "Ort"}
    assert svd.claims_of(_fake_runs("official", {"Std": ok}), 0.95, "official") == {}   # no RR: no claim


def test_lambda_sweep_and_results_carry_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    kw = dict(steps=20, analysis_step=20, eval_every=10, methods=["Std", "RR"], variants=["corrected"],
              min_test_acc=0.0)
    result = svd.run("mnist", "smoke", report=None, **kw)
    sweep = svd.lambda_sweep(result, factors=(1.0, 0.1), report=None)
    assert list(sweep.table["rr_lambda"]) == pytest.approx([1e-5, 1e-6]) and list(sweep.table["published"]) == [True,
                                                                                                             False]
    assert sweep.chosen == pytest.approx(1e-5)     # every run passes a threshold of 0: the largest lambda
    assert set(sweep.claims) == {f"corrected_lambda/{c}" for c in svd.CLAIM_COLUMNS}
    assert sweep.result.params["rr_lambda"] == pytest.approx(1e-5)
    out = svd.results(result, sweep=sweep)
    assert set(out["claim"]) == {f"{v}/{c}" for v in ("corrected", "corrected_lambda") for c in svd.CLAIM_COLUMNS}
    for c in out["claim"].values():      # one seed: no interval
        assert c["verdict"] == "too few seeds" and {"diff", "ci", "n", "measure", "direction"} <= set(c)
    assert out["lambda_sweep"]["chosen_rr_lambda"] == pytest.approx(1e-5)
    from racecar_repro.experiments import svd_figures
    assert svd_figures.lambda_sweep_plot(sweep, result).axes
    none = svd.lambda_sweep(svd.run("mnist", "smoke", report=None, **{**kw, "min_test_acc": 1.01}),
                            factors=(1.0,), report=None)
    assert none.chosen is None and none.claims == {} and none.result is None
