"""The SVD tests of the paper (Fig. 3): MNIST (784 -> 10 linear) and peak (784 -> 128 -> 2, BN + ReLU).

``run(dataset, profile, **overrides)`` trains Std / Ort / RR / Pre over several seeds in two variants:

- *official*: what the official TensorFlow scripts do: raw pixels 0..255, the double-softmax cross-entropy, the
  published lambdas, a reverse pass that also updates the batch norms' moving averages, and evaluation with every
  batch norm in training mode (``is_training = 1``: the evaluated batch's own statistics; the moving averages never
  reach an output). Evaluation here leaves the moving averages alone.
- *corrected*: inputs scaled to [0, 1], cross-entropy on logits, moving averages left to the forward pass and used
  in eval mode; RR's input-reconstruction term weighted by 255^2 so that it keeps the size it has on raw pixels,
  while the batch-normalised hidden layers' terms (which do not depend on the input scale) keep the published lambda.

Every method is analysed after the same number of *task* steps (Pre: after its pretraining). The data are the
official PNGs when present (``make data-peak-official`` / ``make data-mnist-official``) or else racecar_core's
replica (the generated peak set; a 0 and a 1 from MNIST): ``data="auto" | "official" | "replica"``. Each
(variant, method, seed) is one cached run; the result carries the training curves, the reverse-pass reconstructions
of one test image per class over training, and the SVD analysis of the first layer.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import reverse, runs, svd
from ..data import ImageSet, make_peak, mnist_imageset, select_per_class
from ..methods import make_method
from ..models import mnist_linear, peak_mlp
from ..train import TensorBatches, TrainConfig, fit, pretraining_steps
from .common import apply_profile

_COMMON = dict(variants=["official", "corrected"], methods=["Std", "Ort", "RR", "Pre"], lr=1e-4, ort=0.1,
               batch_size=None, data="auto", data_seed=0, device="cpu", progress=False)
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # The official settings run in seconds to minutes on a CPU, so `quick` uses them (with 5 seeds). The analysed
    # step is the official one: kernel_SVD.py reads model_0009 (MNIST) / model_0049 (peak), saved at step 900 / 4900.
    "mnist": {
        "paper": dict(_COMMON, seeds=[0, 1, 2, 3, 4], steps=1000, analysis_step=900, rr=1e-5, pre_steps=500,
                      eval_every=50, k=2),
        "smoke": dict(_COMMON, seeds=[0], steps=40, analysis_step=40, rr=1e-5, pre_steps=20, eval_every=10, k=2),
    },
    "peak": {
        "paper": dict(_COMMON, seeds=[0, 1, 2, 3, 4], steps=5000, analysis_step=4900, rr=1e-6, pre_steps=1000,
                      eval_every=100, k=10, n_train_per_class=50, n_test_per_class=5),
        "smoke": dict(_COMMON, seeds=[0], steps=40, analysis_step=40, rr=1e-6, pre_steps=20, eval_every=10, k=10,
                      n_train_per_class=10, n_test_per_class=5, variants=["official"]),
    },
}
for _d in PROFILES.values():
    _d["quick"] = copy.deepcopy(_d["paper"])
PIXEL_SCALE = 255.0
DATA_CHOICES = ("auto", "official", "replica")


def resolve_params(dataset: str, profile: str = "quick", **overrides: Any) -> dict[str, Any]:
    """The profile's parameters with ``overrides`` applied; unknown names are an error."""
    if dataset not in PROFILES:
        raise ValueError(f"racecar: unknown SVD-test data set {dataset!r}; choose one of {list(PROFILES)}")
    params = apply_profile(PROFILES[dataset], profile, overrides, f"the {dataset} SVD test")
    if params["analysis_step"] % params["eval_every"] or params["analysis_step"] > params["steps"]:
        raise ValueError(f"racecar: analysis_step ({params['analysis_step']}) must be a multiple of eval_every "
                         f"({params['eval_every']}) and at most steps ({params['steps']})")
    if params["data"] not in DATA_CHOICES:
        raise ValueError(f"racecar: unknown data {params['data']!r} for the SVD test; use one of {DATA_CHOICES}")
    return {"dataset": dataset, "profile": profile, **params}


def _official(dataset: str) -> ImageSet:
    from ..data import official
    return official.load_official_mnist() if dataset == "mnist" else official.load_official_peak()


def _replica(params: dict) -> ImageSet:
    if params["dataset"] == "mnist":
        full = mnist_imageset()
        xtr, ytr = select_per_class(full.x_train, full.y_train, (0, 1), 1, params["data_seed"])
        xte, yte = select_per_class(full.x_test, full.y_test, (0, 1), 1, params["data_seed"])
        return ImageSet(xtr, ytr, xte, yte, full.source + "; one 0 and one 1 for training, one of each for test",
                        full.synthetic)
    return make_peak(params["n_train_per_class"], params["n_test_per_class"], params["data_seed"])


def resolve_data(dataset: str, choice: str) -> str:
    """``"official"`` or ``"replica"``: ``"auto"`` is the official images when they are on disk."""
    from ..data import official
    if choice == "auto":
        return "official" if official.has_official(dataset) else "replica"
    return choice


def load_data(params: dict) -> ImageSet:
    """The images of the test: the official PNGs (``data="official"``) or the replica (``"replica"``): a 0 and a 1
    from MNIST, or the generated peak set. The official MNIST test trains on its ``0.png`` and ``1.png`` and tests on
    ``0_test.png`` and ``1_test.png``; of the official peak set (50 + 5 per class) the first ``n_train_per_class``
    and ``n_test_per_class`` images of each class are used."""
    if resolve_data(params["dataset"], params["data"]) == "replica":
        return _replica(params)
    data = _official(params["dataset"])
    if params["dataset"] == "mnist":
        keep_tr, keep_te = data.y_train <= 1, data.y_test <= 1
        return ImageSet(data.x_train[keep_tr], data.y_train[keep_tr], data.x_test[keep_te], data.y_test[keep_te],
                        data.source + "; the 0 and the 1 (train: 0.png, 1.png; test: 0_test.png, 1_test.png)", False)
    n_tr, n_te = params["n_train_per_class"], params["n_test_per_class"]
    if n_tr > 50 or n_te > 5:
        raise ValueError(f"racecar: the official peak set has 50 training and 5 test images per class, not {n_tr} "
                         f"and {n_te}; lower n_train_per_class / n_test_per_class, or use data='replica'")
    if (n_tr, n_te) == (50, 5):
        return data

    def first(y: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([torch.nonzero(y == c)[:n, 0] for c in (0, 1)])

    tr, te = first(data.y_train, n_tr), first(data.y_test, n_te)
    return ImageSet(data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te],
                    data.source + f"; the first {n_tr} training and {n_te} test images per class", False)


def data_label(params: dict) -> str:
    """What every figure made with these parameters says about its images (``params["data"]`` resolved)."""
    if params["data"] == "official":
        return "official images (tum-pbs/racecar SVD-example)"
    if params["dataset"] == "peak":
        return "generated peak images (racecar_core replica, not the official set)"
    return "MNIST digits (not the official SVD-test images)"


def _variant(params: dict, variant: str) -> tuple[float, str, bool]:
    """Input scale, task loss, and whether the official behaviour of batch norm is reproduced (the reverse pass
    updates the moving averages; evaluation uses batch statistics)."""
    if variant == "official":
        return 1.0, "ce_official", True
    if variant == "corrected":
        return 1.0 / PIXEL_SCALE, "ce", False
    raise ValueError(f"racecar: unknown variant {variant!r}; use 'official' or 'corrected'")


def _method(name: str, params: dict, task: str, scale: float, official_bn: bool):
    # RR: the input term (pair 1) is weighted by 1/scale^2, i.e. measured in raw pixel units; the hidden terms of
    # the batch-normalised layers do not depend on the input scale and keep weight 1
    rr = dict(lam=params["rr"], mode="full", reduction="sum", reverse_bn_update=official_bn,
              pair_weights=None if scale == 1.0 else [1.0 / scale ** 2])
    kwargs = {"RR": rr, "Ort": dict(weight=params["ort"], form="official"),
              "Pre": dict(pre_steps=params["pre_steps"]), "Std": {}}
    if name not in kwargs:
        raise ValueError(f"racecar: unknown method {name!r}; choose from {list(kwargs)}")
    return make_method(name, task=task, **kwargs[name])


def _relative_error(model: torch.nn.Module, x: torch.Tensor) -> float:
    rec = reverse.reconstruct_input(model, x)
    return float((rec - x).norm() / x.norm())


def train_one(params: dict, data: ImageSet, variant: str, method_name: str, seed: int) -> dict:
    """One cached run: train, then analyse the first layer after ``analysis_step`` task steps."""
    scale, task, official_bn = _variant(params, variant)
    method = _method(method_name, params, task, scale, official_bn)
    cfg = TrainConfig(steps=params["steps"], lr=params["lr"], batch_size=params["batch_size"],
                      eval_every=params["eval_every"], checkpoint_every=max(params["eval_every"], 1000), seed=seed,
                      device=params["device"], progress=params["progress"])
    config = {"dataset": params["dataset"], "variant": variant, "scale": scale, "task": task, **method.describe(),
              "train": cfg.describe(), "data": data.fingerprint(),
              "data_seed": params["data_seed"], "n_train": len(data.x_train), "analysis_step": params["analysis_step"],
              "n_test_per_class": params.get("n_test_per_class")}
    xtr, xte = data.x_train * scale, data.x_test * scale
    shown = torch.cat([torch.nonzero(data.y_test == c)[:1, 0] for c in (0, 1)])  # one test image per class
    # official: every batch norm in training mode also when evaluating (the whole evaluated batch's statistics)
    stats = reverse.batch_statistics if official_bn else (lambda model: contextlib.nullcontext())

    def evaluate(model: torch.nn.Module, step: int) -> dict:
        with stats(model):
            out = model(xte)
            return {"test_acc": (out.argmax(1) == data.y_test).double().mean(),
                    "test_task_loss": method.task(out, data.y_test),
                    "train_acc": (model(xtr).argmax(1) == data.y_train).double().mean(),
                    "rel_err_train": _relative_error(model, xtr), "rel_err_test": _relative_error(model, xte)}

    def train(run_dir) -> dict:
        torch.manual_seed(seed)
        model = (mnist_linear() if params["dataset"] == "mnist" else peak_mlp())
        analysis = params["analysis_step"] + pretraining_steps(method.phases(model, params["steps"]))

        def snapshot(model: torch.nn.Module, step: int) -> dict:
            with stats(model):  # the reverse pass of the whole test batch, as the official script computes it
                snap = {"reconstruction": reverse.reconstruct_input(model, xte)[shown] / scale}
            if step == analysis:
                snap["weight"] = model[1].weight.detach().clone()
            return snap

        hist = fit(model, method, TensorBatches(xtr, data.y_train, params["batch_size"], seed), cfg, run_dir,
                   evaluate, snapshot)
        w = next(s["weight"] for s in hist["snapshots"] if "weight" in s)
        _, s_vals, vh = svd.svd(w, "cpu")
        at = next(e for e in hist["evals"] if e["step"] == analysis)
        report = svd.similarity_report(vh, s_vals, data.x_train, params["k"])
        return {"config": config, "source": data.source, "log": hist["log"], "evals": hist["evals"],
                "wall_time": hist["wall_time"], "recon_steps": [s["task_step"] for s in hist["snapshots"]],
                "reconstructions": torch.stack([s["reconstruction"] for s in hist["snapshots"]]),
                "shown_images": data.x_test[shown], "Vh": vh, "S": s_vals,
                "analysis": {**report, "task_step": params["analysis_step"],
                             **{k: at[k] for k in ("test_acc", "train_acc", "rel_err_train", "rel_err_test")}}}

    return runs.cached_run(f"svd_{params['dataset']}", config, train)


def run(dataset: str, profile: str = "quick", **overrides: Any) -> dict:
    """Train every (variant, method, seed) of the test (cached) and return params, data and all run results."""
    params = resolve_params(dataset, profile, **overrides)
    params["data"] = resolve_data(dataset, params["data"])
    data = load_data(params)
    results = {(v, m, s): train_one(params, data, v, m, s)
               for v in params["variants"] for m in params["methods"] for s in params["seeds"]}
    return {"params": params, "data": data, "runs": results}


COMPARE_COLUMNS = ["test_acc", "rel_err_test", "lead_span_energy", "lead_max_cos", "best_k_max_cos"]


def compare_data(dataset: str, profile: str = "quick", methods: tuple[str, ...] = ("Std", "RR"),
                 variant: str = "official", **overrides: Any) -> dict:
    """The same runs on the official images and on the replica, side by side (the official ones only when on disk).

    Returns ``{"table": DataFrame (data, method) x mean/std of COMPARE_COLUMNS, "images": DataFrame of image
    statistics (peak only), "missing": the fetch command when the official images are absent, else None}``.
    """
    from ..data import official
    sources = ["official", "replica"] if official.has_official(dataset) else ["replica"]
    tables, images = {}, {}
    for source in sources:
        out = run(dataset, profile, methods=list(methods), variants=[variant], data=source, **overrides)
        tables[source] = summary_table(out).loc[variant][COMPARE_COLUMNS]
        if dataset == "peak":
            from ..data.peak import image_statistics
            images[source] = image_statistics(out["data"].x_train, out["data"].y_train)
    return {"table": pd.concat(tables, names=["data"]), "images": pd.DataFrame(images) if images else None,
            "missing": None if "official" in sources else f"make data-{dataset}-official"}


def comparison_results(comparison: dict) -> dict:
    """``compare_data``'s tables as plain numbers for ``results.json``."""
    table, images = comparison["table"], comparison["images"]
    return {"runs": {f"{d}/{m}": {c: {"mean": float(table.loc[(d, m), (c, "mean")]),
                                      "std": float(table.loc[(d, m), (c, "std")])} for c in COMPARE_COLUMNS}
                     for d, m in table.index},
            "images": None if images is None else {c: images[c].astype(float).to_dict() for c in images.columns},
            "missing": comparison["missing"]}


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
    """Eval curve ``key`` per (variant, method): task steps (Pre's pretraining negative), mean and std over seeds."""
    acc: dict[tuple[str, str], list] = {}
    for (v, m, s), r in out["runs"].items():
        acc.setdefault((v, m), []).append(r["evals"])
    res = {}
    for vm, evs in acc.items():
        steps = np.array([e["task_step"] for e in evs[0]])
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
        "per_run": {f"{v}/{m}/seed{s}": {**r["analysis"], "wall_time_s": r["wall_time"],
                                         "trained_by": r.get("trained_by")}
                    for (v, m, s), r in out["runs"].items()},
    }
