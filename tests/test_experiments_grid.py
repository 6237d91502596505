"""racecar_repro.experiments.grid: parameters, the grid, the cached runs, typed results, the one method factory."""
from dataclasses import dataclass

import pytest

from racecar_repro.experiments import cifar, params, svd, weather
from racecar_repro.experiments.grid import Experiment, LoadedData, RunSpec, run_grid
from racecar_core.methods import RR, Ort
from racecar_repro.experiments.params import build_method



@dataclass
class ToyParams(params.Params):
    methods: list = params.setting(["Std", "RR"], run=False)
    seeds: list = params.setting([0, 1], run=False)
    variants: list = params.setting(["a", "b"], run=False)
    k: float = params.setting(2.0)
    device: str = params.setting("cpu")


PROFILES = {"tiny": ToyParams(), "other": ToyParams(methods=["Std"], seeds=[0], variants=["a"], k=1.0)}


def _train(spec: RunSpec, data: float):
    config = {"method": spec.method, "seed": spec.seed, "variant": spec.variant, "k": spec.params["k"]}

    def fit(run_dir):
        value = data * spec.params["k"] + spec.seed + (spec.method == "RR")
        evals = [{"step": s, "task_step": s, "acc": value * s} for s in (0, 1, 2)]
        return {"config": config, "evals": evals, "log": [], "wall_time": 0.5, "metrics": {"value": value},
                "arrays": {}}
    return config, fit


TOY = Experiment(name="toy", profiles=PROFILES, load=lambda p: LoadedData(10.0, "ten", "TOY DATA"), train=_train,
                 folder=lambda p: "toy")


def test_parameters_are_resolved_and_checked():
    p = params.resolve_params(TOY, "tiny", {"seeds": 3, "methods": ("RR",), "k": None})
    assert p["seeds"] == [3] and p["methods"] == ["RR"] and p["k"] == 2.0 and p["profile"] == "tiny"
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['kk'\] for toy; known: .*'k'"):
        params.resolve_params(TOY, "tiny", {"kk": 1})
    with pytest.raises(ValueError, match="unknown profile 'huge' for toy; choose one of \\['tiny', 'other'\\]"):
        params.resolve_params(TOY, "huge", {})
    assert PROFILES["tiny"]["seeds"] == [0, 1]  # the profile itself is never changed


def test_values_take_the_form_of_the_profile_or_get_a_clear_error():
    p = params.resolve_params(TOY, "tiny", {"methods": "RR", "seeds": 2.0, "k": 3})
    assert p["methods"] == ["RR"] and p["seeds"] == [2] and isinstance(p["seeds"][0], int) and p["k"] == 3
    assert params.resolve_params(TOY, "tiny", {"seeds": (4, 5)})["seeds"] == [4, 5]
    with pytest.raises(TypeError, match=r"parameter 'seeds\[0\]' of toy expects a number .*-y 'seeds: \[0, 1\]'.*"
                                        r"got str '0,1'"):
        params.resolve_params(TOY, "tiny", {"seeds": "0,1"})
    with pytest.raises(TypeError, match=r"parameter 'k' of toy expects a number \(e.g. k=2.0\), got str 'big'"):
        params.resolve_params(TOY, "tiny", {"k": "big"})
    with pytest.raises(TypeError, match=r"'methods' of toy expects a list"):
        params.resolve_params(TOY, "tiny", {"methods": {"RR": 1}})
    with pytest.raises(TypeError, match=r"'device' of toy expects a string"):
        params.resolve_params(TOY, "tiny", {"device": 0})
    assert params.coerce_param("x", "flag", 1, False) is True
    with pytest.raises(TypeError, match="True or False"):
        params.coerce_param("x", "flag", "yes", False)
    assert params.coerce_param("x", "opt", "anything", None) == "anything"   # None defaults: the experiment checks


@pytest.mark.parametrize("exp", [cifar.EXPERIMENT, weather.EXPERIMENT, svd.experiment("peak")])
def test_a_scalar_where_a_list_belongs_is_a_one_element_list_in_every_experiment(exp):
    p = params.resolve_params(exp, "smoke", {"methods": "RR", "seeds": 7})
    assert p["methods"] == ["RR"] and p["seeds"] == [7]


def test_the_grid_runs_every_run_once_and_reports_each(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    lines: list[str] = []
    result = run_grid(TOY, "tiny", {}, lines.append)
    assert [r.spec.key for r in result.runs] == [f"{v}/{m}/seed{s}" for v in "ab" for m in ("Std", "RR")
                                                 for s in (0, 1)]
    assert len(lines) == 8 and all("trained" in x for x in lines) and lines[0].startswith("[toy] run 1/8 a/Std/seed0")
    assert result.trained_now == 8 and result.source == "ten" and result.label == "TOY DATA" and result.data == 10.0
    assert result.one("RR", 1, "b").metrics["value"] == 22.0 and len(result.select(method="RR")) == 4
    x, mean, std = result.curve("acc", "RR", "a")
    assert list(x) == [0, 1, 2] and list(mean) == [0.0, 21.5, 43.0] and list(std) == [0.0, 0.5, 1.0]
    result.select("RR", "a")[0].evals.pop()                  # one seed stopped early: the last point has one seed
    x, mean, std = result.curve("acc", "RR", "a")
    assert list(x) == [0, 1, 2] and list(mean) == [0.0, 21.5, 44.0] and list(std) == [0.0, 0.5, 0.0]
    with pytest.raises(KeyError, match="toy has no run c/RR/seed0; runs: \\['a/Std/seed0'"):
        result.one("RR", 0, "c")
    lines.clear()
    again = run_grid(TOY, "tiny", {"k": 2.0}, lines.append)
    assert again.trained_now == 0 and all("loaded from the run cache" in x for x in lines)
    assert [r.metrics for r in again.runs] == [r.metrics for r in result.runs]
    assert run_grid(TOY, "tiny", {"k": 3.0}, None).trained_now == 8  # another parameter: other runs


def test_results_as_tidy_frames_one_row_per_run_and_number(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    result = run_grid(TOY, "tiny", {}, None)
    for r in result.runs:                     # nested metrics are flattened, booleans and text skipped
        r.metrics.update({"scores": {"all": {"mse": 2.0 * r.metrics["value"]}}, "ok": True, "name": "x"})
    frame = result.frame()
    assert list(frame.columns) == ["experiment", "variant", "method", "seed", "metric", "value"]
    assert len(frame) == 8 * 2 and set(frame["metric"]) == {"value", "scores.all.mse"}
    row = frame.query("variant == 'b' and method == 'RR' and seed == 1 and metric == 'value'")
    assert row["value"].item() == 22.0 and (frame["experiment"] == "toy").all()
    curves = result.eval_frame()
    assert len(curves) == 8 * 3 and set(curves.columns) == {"variant", "method", "seed", "step", "task_step",
                                                             "metric", "value"}
    mean = curves.query("variant == 'a' and method == 'RR'").groupby("step")["value"].mean()
    assert list(mean) == list(result.curve("acc", "RR", "a")[1])           # the same numbers as curve()
    assert result.eval_frame(["nothing"]).empty


def test_one_method_factory_for_every_experiment():
    p = {"rr_lambda": 0.5, "ort_weight": 0.25, "pre_steps": None, "pre_epochs": 2}
    rr = build_method("RR", p, "ce")      # what the parameters leave out keeps the method's own default
    assert rr == RR(task="ce", lam=0.5)
    assert (rr.lam, rr.mode, rr.reduction, rr.reverse_bn_update) == (0.5, "full", "sum", True)
    fixed = build_method("RR", p, "ce", rr_bn_update=False, rr_pair_weights=[4.0], rr_reduction="mean")
    assert not fixed.reverse_bn_update and fixed.pair_weights == [4.0] and fixed.reduction == "mean"
    ort = build_method("Ort", {**p, "ort_schedule": True, "ort_form": "srip"}, "ce")
    assert (ort.weight, ort.form, ort.schedule) == (0.25, "srip", True)
    assert build_method("Ort", {}, "ce") == Ort()
    assert build_method("Pre", p, "ce", steps_per_epoch=7).pre_steps == 14
    assert build_method("Pre", {**p, "pre_steps": 5}, "ce", steps_per_epoch=7).pre_steps == 5
    assert build_method("Std", p, "ce").describe()["method"] == "Std"
    with pytest.raises(ValueError, match="unknown method 'SVD'"):
        build_method("SVD", p, "ce")


@pytest.mark.parametrize("exp", [svd.experiment("mnist"), svd.experiment("peak"), cifar.EXPERIMENT,
                                 weather.EXPERIMENT], ids=lambda e: e.name)
def test_every_experiment_uses_the_same_names_for_the_same_settings(exp):
    names = params.METHOD_PARAM_NAMES | {"methods", "seeds", "variants", "device", "progress", "torch_compile"}
    for profile, values in exp.profiles.items():
        method_keys = {k for k in values if k.startswith(("rr", "ort", "pre_"))}
        assert method_keys <= names, (profile, method_keys - names)
        assert isinstance(values["methods"], list) and isinstance(values["seeds"], list)
        assert "compile" not in values and "rr" not in values and "ort" not in values


def test_every_experiment_runs_with_the_same_keywords():
    """``svd.run`` (with its data set first) takes what every ``Experiment.run`` takes, ``resubmit`` included."""
    import inspect

    from racecar_repro.experiments import any_network, info_planes
    want = {"profile", "report", "executor", "workers", "resubmit"}
    for run in (svd.run, cifar.run, weather.run, info_planes.run, any_network.run):
        assert want <= set(inspect.signature(run).parameters), run
    assert list(inspect.signature(svd.run).parameters)[:2] == ["dataset", "profile"]


def test_profiles_are_instances_and_the_run_key_is_derived_from_the_dataclasses():
    from dataclasses import replace

    from racecar_core.train import TrainConfig
    for exp in (cifar.EXPERIMENT, weather.EXPERIMENT, svd.experiment("peak")):
        assert all(isinstance(p, params.Params) and type(p) is type(exp.profiles["paper"])
                   for p in exp.profiles.values())
    assert cifar.PROFILES["quick"].depth == 20 and cifar.PROFILES["paper"] == cifar.CifarParams()
    p = cifar.resolve_params("smoke", device="cpu")
    std, cfg = build_method("Std", p, "ce"), TrainConfig(steps=1)
    key = params.run_config(p, std, cfg, data="x")
    assert not {"methods", "seeds", "progress", "profile", "rr_lambda", "ort_weight"} & set(key)
    assert key["method"] == {"method": "Std", "task": "ce"} and key["depth"] == 8 and key["data"] == "x"
    assert key["train"] == cfg.describe()
    # the grid, progress bars and the other methods' settings leave a run's key alone; what trains it does not
    assert params.run_config(replace(p, seeds=[5], rr_lambda=9.0, progress=True), std, cfg, data="x") == key
    assert params.run_config(replace(p, depth=14), std, cfg, data="x") != key
    rr = build_method("RR", replace(p, rr_lambda=9.0), "ce")
    assert params.run_config(p, rr, cfg)["method"]["lam"] == 9.0
    with pytest.raises(ValueError, match="peak test's"):
        svd.resolve_params("mnist", "smoke", n_train_per_class=3)
