"""The SVD-test experiment: parameters, errors, and a tiny end-to-end run on real (offline) MNIST digits."""
import pytest

from racecar_core.experiments import svd_test


def test_profiles_resolve_and_quick_is_the_official_setting():
    p = svd_test.resolve_params("peak", "quick")
    assert (p["steps"], p["rr"], p["ort"], p["lr"], p["batch_size"]) == (5000, 1e-6, 0.1, 1e-4, None)
    m = svd_test.resolve_params("mnist", "paper")
    assert (m["steps"], m["analysis_step"], m["rr"]) == (1000, 900, 1e-5)
    assert len(svd_test.resolve_params("mnist", "quick")["seeds"]) == 5


def test_unknown_parameter_profile_and_dataset_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['stepz'\].*known"):
        svd_test.resolve_params("mnist", "smoke", stepz=3)
    with pytest.raises(ValueError, match="unknown profile"):
        svd_test.resolve_params("mnist", "huge")
    with pytest.raises(ValueError, match="unknown SVD-test data set"):
        svd_test.resolve_params("cifar", "smoke")
    with pytest.raises(ValueError, match="analysis_step"):
        svd_test.resolve_params("mnist", "smoke", analysis_step=15)


def test_tiny_run_end_to_end_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    kw = dict(steps=20, analysis_step=20, eval_every=10, pre_steps=5, methods=["Std", "RR", "Pre"],
              variants=["corrected"])
    out = svd_test.run("mnist", "smoke", **kw)
    assert len(out["runs"]) == 3 and not any(r["cached"] for r in out["runs"].values())
    r = out["runs"][("corrected", "RR", 0)]
    assert r["Vh"].shape == (10, 784) and r["reconstructions"].shape == (3, 2, 1, 28, 28)
    assert 0 <= r["analysis"]["lead_span_energy"] <= 1
    table = svd_test.summary_table(out)
    assert ("corrected", "RR") in table.index
    again = svd_test.run("mnist", "smoke", **kw)
    assert all(r["cached"] for r in again["runs"].values())
