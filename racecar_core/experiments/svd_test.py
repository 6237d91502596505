"""The SVD tests of the paper (Fig. 3): MNIST (784 -> 10 linear) and peak (784 -> 128 -> 2, BN + ReLU).

``run(dataset, profile, **overrides)`` trains Std / Ort / RR / Pre over several seeds, in the *official* variant
(raw pixels 0..255, the official double-softmax cross-entropy, lambdas as published, the reverse pass updating the
batch norms' moving averages as TF did) and a *corrected* one (inputs scaled to [0, 1], cross-entropy on logits, RR
lambda multiplied by 255^2 so the input-reconstruction term keeps its size, moving averages left to the forward pass). Each (variant, method, seed) is one cached run; the result carries the training curves, the
reverse-pass reconstructions of two test images over training, and the SVD analysis of the first layer.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import reverse, runs, svd
from ..data import ImageSet, make_peak, mnist_imageset, select_per_class
from ..methods import make_method
from ..models import mnist_linear, peak_mlp
from ..train import TensorBatches, TrainConfig, fit
from .common import apply_profile

_COMMON = dict(variants=["official", "corrected"], methods=["Std", "Ort", "RR", "Pre"], lr=1e-4, ort=0.1,
               batch_size=None, data_seed=0, device="cpu", progress=False)
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # The official settings run in seconds to minutes on a CPU, so `quick` uses them (with 5 seeds).
    "mnist": {
        "paper": dict(_COMMON, seeds=[0, 1, 2, 3, 4], steps=1000, analysis_step=900, rr=1e-5, pre_steps=500,
                      eval_every=50, k=2),
        "smoke": dict(_COMMON, seeds=[0], steps=40, analysis_step=40, rr=1e-5, pre_steps=20, eval_every=10, k=2),
    },
    "peak": {
        "paper": dict(_COMMON, seeds=[0, 1, 2, 3, 4], steps=5000, analysis_step=5000, rr=1e-6, pre_steps=1000,
                      eval_every=100, k=10, n_train_per_class=50, n_test_per_class=5),
        "smoke": dict(_COMMON, seeds=[0], steps=40, analysis_step=40, rr=1e-6, pre_steps=20, eval_every=10, k=10,
                      n_train_per_class=10, n_test_per_class=5, variants=["official"]),
    },
}
for _d in PROFILES.values():
    _d["quick"] = copy.deepcopy(_d["paper"])
PIXEL_SCALE = 255.0


def resolve_params(dataset: str, profile: str = "quick", **overrides: Any) -> dict[str, Any]:
    """The profile's parameters with ``overrides`` applied; unknown names are an error."""
    if dataset not in PROFILES:
        raise ValueError(f"racecar: unknown SVD-test data set {dataset!r}; choose one of {list(PROFILES)}")
    params = apply_profile(PROFILES[dataset], profile, overrides, f"the {dataset} SVD test")
    if params["analysis_step"] % params["eval_every"] or params["analysis_step"] > params["steps"]:
        raise ValueError(f"racecar: analysis_step ({params['analysis_step']}) must be a multiple of eval_every "
                         f"({params['eval_every']}) and at most steps ({params['steps']})")
    return {"dataset": dataset, "profile": profile, **params}


def load_data(params: dict) -> ImageSet:
    """The training and test images of the test: one 0 and one 1 (MNIST), or the generated peak set."""
    if params["dataset"] == "mnist":
        full = mnist_imageset()
        xtr, ytr = select_per_class(full.x_train, full.y_train, (0, 1), 1, params["data_seed"])
        xte, yte = select_per_class(full.x_test, full.y_test, (0, 1), 1, params["data_seed"])
        return ImageSet(xtr, ytr, xte, yte, full.source + "; one 0 and one 1 for training, one of each for test",
                        full.synthetic)
    return make_peak(params["n_train_per_class"], params["n_test_per_class"], params["data_seed"])


def _variant(params: dict, variant: str) -> tuple[float, str, float, bool]:
    """Input scale, task loss, RR lambda, and whether the reverse pass updates the BN moving averages."""
    if variant == "official":
        return 1.0, "ce_official", params["rr"], True
    if variant == "corrected":
        return 1.0 / PIXEL_SCALE, "ce", params["rr"] * PIXEL_SCALE ** 2, False
    raise ValueError(f"racecar: unknown variant {variant!r}; use 'official' or 'corrected'")


def _method(name: str, params: dict, task: str, rr: float, bn_update: bool):
    kwargs = {"RR": dict(lam=rr, mode="full", reduction="sum", reverse_bn_update=bn_update), "Ort": dict(weight=params["ort"], form="official"),
              "Pre": dict(pre_steps=params["pre_steps"]), "Std": {}}
    if name not in kwargs:
        raise ValueError(f"racecar: unknown method {name!r}; choose from {list(kwargs)}")
    return make_method(name, task=task, **kwargs[name])


def _relative_error(model: torch.nn.Module, x: torch.Tensor) -> float:
    rec = reverse.reconstruct_input(model, x)
    return float((rec - x).norm() / x.norm())


def train_one(params: dict, data: ImageSet, variant: str, method_name: str, seed: int) -> dict:
    """One cached run: train, then analyse the first layer at ``analysis_step``."""
    scale, task, rr, bn_update = _variant(params, variant)
    method = _method(method_name, params, task, rr, bn_update)
    cfg = TrainConfig(steps=params["steps"], lr=params["lr"], batch_size=params["batch_size"],
                      eval_every=params["eval_every"], checkpoint_every=max(params["eval_every"], 500), seed=seed,
                      device=params["device"], progress=params["progress"])
    config = {"dataset": params["dataset"], "variant": variant, "scale": scale, "task": task, **method.describe(),
              "train": cfg.describe(), "data": data.fingerprint(),
              "data_seed": params["data_seed"], "n_train": len(data.x_train), "analysis_step": params["analysis_step"],
              "n_test_per_class": params.get("n_test_per_class")}
    xtr, xte = data.x_train * scale, data.x_test * scale
    show = torch.cat([xte[data.y_test == c][:1] for c in (0, 1)])
    analysis = params["analysis_step"]

    def evaluate(model: torch.nn.Module, step: int) -> dict:
        out = model(xte)
        return {"test_acc": (out.argmax(1) == data.y_test).double().mean(),
                "test_task_loss": method.task(out, data.y_test),
                "train_acc": (model(xtr).argmax(1) == data.y_train).double().mean(),
                "rel_err_train": _relative_error(model, xtr), "rel_err_test": _relative_error(model, xte)}

    def snapshot(model: torch.nn.Module, step: int) -> dict:
        snap = {"reconstruction": reverse.reconstruct_input(model, show) / scale}
        if step == analysis:
            snap["weight"] = model[1].weight.detach().clone()
        return snap

    def train(run_dir) -> dict:
        torch.manual_seed(seed)
        model = (mnist_linear() if params["dataset"] == "mnist" else peak_mlp())
        hist = fit(model, method, TensorBatches(xtr, data.y_train, params["batch_size"], seed), cfg, run_dir,
                   evaluate, snapshot)
        w = next(s["weight"] for s in hist["snapshots"] if "weight" in s)
        _, s_vals, vh = svd.svd(w, "cpu")
        at = next(e for e in hist["evals"] if e["step"] == analysis + (hist["steps"] - params["steps"]))
        report = svd.similarity_report(vh, s_vals, data.x_train, params["k"])
        return {"config": config, "source": data.source, "log": hist["log"], "evals": hist["evals"],
                "wall_time": hist["wall_time"], "recon_steps": [s["step"] for s in hist["snapshots"]],
                "reconstructions": torch.stack([s["reconstruction"] for s in hist["snapshots"]]),
                "shown_images": show / scale, "Vh": vh, "S": s_vals,
                "analysis": {**report, **{k: at[k] for k in ("test_acc", "train_acc", "rel_err_train",
                                                             "rel_err_test")}}}

    return runs.cached_run(f"svd_{params['dataset']}", config, train)


def run(dataset: str, profile: str = "quick", **overrides: Any) -> dict:
    """Train every (variant, method, seed) of the test (cached) and return params, data and all run results."""
    params = resolve_params(dataset, profile, **overrides)
    data = load_data(params)
    results = {(v, m, s): train_one(params, data, v, m, s)
               for v in params["variants"] for m in params["methods"] for s in params["seeds"]}
    return {"params": params, "data": data, "runs": results}


TABLE_COLUMNS = ["test_acc", "lead_max_cos", "best_k_max_cos", "lead_span_energy", "span_energy_chance", "lead_ssim",
                 "rel_err_train", "rel_err_test", "effective_rank", "top_k_energy", "condition_number"]


def summary_table(out: dict) -> pd.DataFrame:
    """Mean and std over seeds of the analysis metrics, one row per (variant, method)."""
    rows = []
    for (v, m, s), r in out["runs"].items():
        rows.append({"variant": v, "method": m, "seed": s, **{c: r["analysis"][c] for c in TABLE_COLUMNS}})
    df = pd.DataFrame(rows)
    agg = df.groupby(["variant", "method"], sort=False)[TABLE_COLUMNS].agg(["mean", "std"])
    return agg


def best_k_ranks(out: dict) -> dict:
    """For each (variant, method), the ranks of the best-k singular vectors per seed."""
    res: dict[str, dict[str, list]] = {}
    for (v, m, s), r in out["runs"].items():
        res.setdefault(v, {}).setdefault(m, []).append(r["analysis"]["best_k_ranks"])
    return res


def curves(out: dict, key: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Eval curve ``key`` per (variant, method): steps, mean over seeds, std over seeds."""
    acc: dict[tuple[str, str], list] = {}
    for (v, m, s), r in out["runs"].items():
        acc.setdefault((v, m), []).append(r["evals"])
    res = {}
    for vm, evs in acc.items():
        steps = np.array([e["step"] for e in evs[0]])
        vals = np.array([[e[key] for e in ev] for ev in evs])
        res[vm] = (steps, vals.mean(0), vals.std(0))
    return res


CLAIM_COLUMNS = ("lead_max_cos", "lead_span_energy", "best_k_max_cos")


def claim(table: pd.DataFrame, params: dict) -> dict:
    """Per variant and similarity measure: the methods' means over seeds and whether RR's is above both Std's and
    Ort's (None when RR or both baselines were not run): the paper's claim, computed."""
    verdict: dict[str, dict] = {}
    for v in params["variants"]:
        verdict[v] = {}
        for column in CLAIM_COLUMNS:
            score = {m: float(table.loc[(v, m), (column, "mean")]) for m in params["methods"]}
            others = [m for m in ("Std", "Ort") if m in score]
            holds = bool(all(score["RR"] > score[m] for m in others)) if "RR" in score and others else None
            verdict[v][column] = {"means": score, "rr_above_std_and_ort": holds}
    return verdict


def results(out: dict, table: pd.DataFrame) -> dict:
    """The numbers a notebook writes to ``results.json``: the table (mean, std) and every run's analysis."""
    return {
        "table": {f"{v}/{m}": {c: {"mean": table.loc[(v, m), (c, "mean")], "std": table.loc[(v, m), (c, "std")]}
                               for c in TABLE_COLUMNS} for v, m in table.index},
        "per_run": {f"{v}/{m}/seed{s}": {**r["analysis"], "wall_time_s": r["wall_time"]}
                    for (v, m, s), r in out["runs"].items()},
    }
