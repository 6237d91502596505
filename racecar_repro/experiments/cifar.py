"""CIFAR-10 with ResNet-110: Std vs Ort vs RR (the paper's Fig. 1c), and its smaller offline relatives: every
(method, seed) one cached run with the He et al. recipe; RR's lambda and mode chosen on held-out training images
(``sweep``). The protocol: notebooks/03_cifar_resnet110.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from racecar_repro import verdicts
from racecar_repro.data import ImageSet
from racecar_repro.data.augment import make_transform
from racecar_repro.data.cifar import NAMES, channel_stats, load_classification, split_validation, subset
from racecar_core.models import resnet_cifar
from racecar_core.models.resnet_cifar import check_depth
from racecar_core.train import TensorBatches, TrainConfig, fit
from racecar_repro.experiments.grid import (Experiment, ExperimentResult, LoadedData, RunSpec, mean_sd, per_run,
                                            per_seed)
from racecar_repro.experiments.params import MethodParams, build_method, run_config, setting

PAPER_ACCURACY = {"Std": 0.921, "Ort": 0.925, "RR": 0.928}   # Fig. 1c, CIFAR-10, ResNet-110


@dataclass
class CifarParams(MethodParams):
    """The parameters of the Fig. 1c experiment; the defaults are the paper's setting."""

    dataset: str = setting("cifar10", choices=NAMES)
    depth: int = setting(110)
    methods: list = setting(["Std", "Ort", "RR"], run=False)
    seeds: list = setting([0, 1, 2, 3, 4], run=False)
    epochs: int = setting(164)
    batch_size: int = setting(128)
    lr: float = setting(0.1)
    momentum: float = setting(0.9)
    weight_decay: float = setting(1e-4)
    milestones: list = setting([82, 123])
    warmup_steps: int = setting(400)
    warmup_lr: float = setting(0.01)
    augment: bool = setting(True)
    rr_lambda: float = setting(1e-2)
    rr_mode: str = setting("full")
    rr_reduction: str = setting("mean")
    rr_bn_update: bool = setting(False)
    ort_weight: float = setting(1e-2)
    ort_form: str = setting("srip")
    ort_schedule: bool = setting(True)
    pre_reduction: str = setting("mean")
    pre_lr_scale: float = setting(0.01)
    n_train: int | None = setting(None)
    n_test: int | None = setting(None)
    validation: int = setting(0)
    amp: bool = setting(True)
    channels_last: bool = setting(True)
    torch_compile: bool = setting(False)
    replicas: int = setting(1)
    sync_bn: bool = setting(True)


_PAPER = CifarParams()
PROFILES: dict[str, CifarParams] = {
    "paper": _PAPER,
    # a shallower net and fewer epochs: a laptop GPU (or a patient CPU) shows the trend
    "quick": replace(_PAPER, depth=20, epochs=30, milestones=[15, 23], warmup_steps=0, seeds=[0, 1, 2]),
    # a few steps on a small real subset (Fashion-MNIST works offline)
    "smoke": replace(_PAPER, dataset="fashion_mnist", depth=8, epochs=1, milestones=[], warmup_steps=0, seeds=[0],
                     batch_size=32, n_train=128, n_test=100, methods=["Std", "Ort", "RR", "Pre"], pre_epochs=1,
                     progress=False),
}


def _check(params: CifarParams) -> CifarParams:
    check_depth(params["depth"])
    return params


def load(p: dict):
    """Train and evaluation sets (a class-balanced subset when asked; the validation split when ``validation``)."""
    data = load_classification(p["dataset"])
    if p.get("validation"):  # the sweep's (any_network has none): evaluate on held-out training images, not test
        data = split_validation(data, p["validation"], seed=0)[1]
    if p["n_train"] or p["n_test"]:
        data = subset(data, p["n_train"] or len(data.x_train), p["n_test"] or len(data.x_test), seed=0)
    return data


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, transform, batch: int = 500) -> float:
    """Top-1 accuracy in eval mode, in batches."""
    correct = 0
    for i in range(0, len(x), batch):
        out = model(transform(x[i:i + batch], None))
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def on_device(data: ImageSet, device: str, augment: bool) -> dict:
    """What every run on ``data`` shares, done once: the data, their fingerprint, the tensors on the device and the
    transforms (normalisation with the training set's channel statistics; pad-4 crop + flip when ``augment``)."""
    mean, std = channel_stats(data.x_train)
    return {"data": data, "fingerprint": data.fingerprint(), "train_tf": make_transform(mean, std, augment, device),
            "test_tf": make_transform(mean, std, False, device), "xtr": data.x_train.to(device),
            "ytr": data.y_train.to(device), "xte": data.x_test.to(device), "yte": data.y_test.to(device)}


def _load(p: dict) -> LoadedData:
    data = load(p)
    return LoadedData(on_device(data, p["device"], p["augment"]), data.source)


def _train(spec: RunSpec, prep: dict) -> tuple[dict, Callable[[Path], dict]]:
    """One (method, seed) run: per-epoch test accuracy and the final numbers."""
    p, seed, data = spec.params, spec.seed, prep["data"]
    dev = p["device"]
    n_classes = int(data.y_train.max()) + 1
    spe = len(data.x_train) // min(p["batch_size"], len(data.x_train))
    method = build_method(spec.method, p, "ce", steps_per_epoch=spe)
    cfg = TrainConfig(steps=p["epochs"] * spe, lr=p["lr"], optimizer="sgd", batch_size=p["batch_size"],
                      momentum=p["momentum"], weight_decay=p["weight_decay"],
                      milestones=[e * spe for e in p["milestones"]], warmup_steps=p["warmup_steps"],
                      warmup_lr=p["warmup_lr"], eval_every=spe, checkpoint_every=spe, seed=seed, device=dev,
                      amp=p["amp"], channels_last=p["channels_last"], compile=p["torch_compile"],
                      progress=p["progress"], replicas=p["replicas"], sync_bn=p["sync_bn"])
    config = run_config(p, method, cfg, data=prep["fingerprint"])
    xtr, ytr, xte, yte, train_tf, test_tf = (prep[k] for k in ("xtr", "ytr", "xte", "yte", "train_tf", "test_tf"))

    def evaluate(model: torch.nn.Module, step: int) -> dict:
        return {"test_acc": accuracy(model, xte, yte, test_tf), "epoch": step / spe}

    def train(run_dir: Path) -> dict:
        torch.manual_seed(seed)
        model = resnet_cifar(p["depth"], n_classes, in_channels=data.x_train.shape[1])
        hist = fit(model, method, TensorBatches(xtr, ytr, p["batch_size"], seed, train_tf), cfg, run_dir, evaluate,
                   log_every=max(1, spe // 10))
        accs = [e["test_acc"] for e in hist["evals"]]
        return {"config": config, "evals": hist["evals"], "log": hist["log"], "wall_time": hist["wall_time"],
                "metrics": {"final_acc": accs[-1], "best_acc": max(accs), "epochs": p["epochs"]}, "arrays": {}}

    return config, train


# one run's job on a cluster (the user's Slurm settings override): ResNet-110 for 164 epochs is a few GPU hours for
# Std and about twice that for RR; a job stopped at its time limit is requeued and resumes from its checkpoint
RESOURCES = {"paper": {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 12 * 60},
             "quick": {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 2 * 60},
             "smoke": {"cpus_per_task": 1, "mem_gb": 4, "timeout_min": 15}}
EXPERIMENT = Experiment(name="cifar", profiles=PROFILES, load=_load, train=_train,
                        folder=lambda p: f"cifar_{p['dataset']}", resolve=_check, resources=RESOURCES)
run = EXPERIMENT.run                        # run(profile, report=print, **overrides) -> ExperimentResult
resolve_params = EXPERIMENT.resolve_params  # resolve_params(profile, **overrides) -> dict


SWEEP_LAMBDAS = (1e-3, 1e-2, 1e-1)
SWEEP_MODES = ("full", "local")


@dataclass
class Sweep:
    """RR's lambda and mode, chosen on training images held out of training."""

    table: pd.DataFrame        # per setting: method, mode, lambda, val_mean, val_std, seeds, note (divergence)
    best: dict[str, Any]       # {"rr_mode", "rr_lambda"}: the best RR setting
    validation: int            # how many training images were held out
    per_seed: pd.DataFrame = field(default_factory=pd.DataFrame)  # method, mode, lambda, seed, val_acc (tidy)
    scored: int = 0            # how many of them each setting was scored on (fewer when n_test subsamples them)


def sweep(profile: str = "quick", lambdas=SWEEP_LAMBDAS, modes=SWEEP_MODES, validation: int = 5000,
          report: Callable[[str], None] | None = print, **overrides: Any) -> Sweep:
    """Choose RR's lambda and mode on ``validation`` training images held out (45k/5k on CIFAR; ``n_test`` subsamples
    them), never the test set: RR at every (mode, lambda) and Std, the profile's seeds, every run cached. The best RR
    setting has the highest mean (ties: the first, the smaller lambda and ``full``); a setting whose loss diverges
    counts as a result (NaN accuracy, the step in ``note``) and is not chosen."""
    base = {**overrides, "validation": validation}

    seeds: list[dict] = []
    scored: set[int] = set()

    def validate(**setting: Any) -> dict:
        method = setting["methods"][0]
        try:
            res = run(profile, report, **{**base, **setting})
        except FloatingPointError as e:  # a setting that diverges is a result of the sweep (not cached)
            return {"val_mean": float("nan"), "val_std": float("nan"), "seeds": 0, "note": str(e).split(";")[0]}
        row = summary(res).loc[method]
        scored.add(len(res.data["data"].x_test))
        lam = float(setting.get("rr_lambda", 0.0))
        seeds.extend({"method": method, "mode": setting.get("rr_mode", ""), "lambda": lam, "seed": r.spec.seed,
                      "val_acc": float(r.metrics["final_acc"])} for r in res.runs)
        return {"val_mean": float(row["mean"]), "val_std": float(row["std"]), "seeds": int(row["seeds"]), "note": ""}

    rows = [{"method": "RR", "mode": mode, "lambda": float(lam),
             **validate(methods=["RR"], rr_lambda=lam, rr_mode=mode)} for mode in modes for lam in lambdas]
    table = pd.DataFrame(rows)
    if table["val_mean"].isna().all():
        raise FloatingPointError("racecar: every RR setting of the sweep diverged; try smaller lambdas:\n"
                                 + table.to_string())
    best = table.loc[table["val_mean"].idxmax()]
    table = pd.concat([table, pd.DataFrame([{"method": "Std", "mode": "", "lambda": 0.0,
                                             **validate(methods=["Std"])}])], ignore_index=True)
    return Sweep(table, {"rr_mode": str(best["mode"]), "rr_lambda": float(best["lambda"])}, validation,
                 pd.DataFrame(seeds, columns=["method", "mode", "lambda", "seed", "val_acc"]), max(scored))


def summary(result: ExperimentResult) -> pd.DataFrame:
    """Per method: mean, std and best final test accuracy over seeds, seeds, epochs, mean wall time per run and per
    epoch (Pre's epochs include its pretraining), and the paper's value."""
    rows = []
    for m in result.methods:
        rs = result.select(m)
        acc = [r.metrics["final_acc"] for r in rs]
        mean, std = mean_sd(acc)
        rows.append({"method": m, "mean": mean, "std": std, "best": max(acc), "seeds": len(rs),
                     "epochs": rs[0].metrics["epochs"], "wall_time_s": float(np.mean([r.wall_time for r in rs])),
                     "epoch_time_s": float(np.mean([r.wall_time / r.evals[-1]["epoch"] for r in rs])),
                     "paper": PAPER_ACCURACY.get(m, float("nan"))})
    return pd.DataFrame(rows).set_index("method")


CLAIMS = (("rr_vs_std", "RR", "Std"), ("ort_vs_std", "Ort", "Std"), ("rr_vs_ort", "RR", "Ort"))


def claim(result: ExperimentResult) -> dict[str, dict]:
    """The paper's ordering Std < Ort < RR as three paired comparisons of final test accuracy over seeds
    (``racecar_repro.verdicts``: mean difference, 95 % t-interval, n, verdict), for the pairs whose methods ran. An
    accuracy claim counts every run: a run that learnt less is the result, not a failure to leave out."""
    out = {}
    for name, method, baseline in CLAIMS:
        if method in result.methods and baseline in result.methods:
            out[name] = verdicts.record(
                f"{method}'s test accuracy above {baseline}'s (paper: {PAPER_ACCURACY[method]:.3f} vs "
                f"{PAPER_ACCURACY[baseline]:.3f})",
                verdicts.paired(per_seed(result, method, "final_acc"), per_seed(result, baseline, "final_acc"),
                                "final_acc", "higher", method, baseline))
    return out


def results(result: ExperimentResult, sweep_out: Sweep | None = None) -> dict:
    """What the notebook writes to ``results.json``: the summary, every run's curve and numbers, the paper's values,
    the claim, and the sweep when it ran."""
    return {
        "table": summary(result).reset_index().to_dict(orient="records"),
        "per_run": per_run(result, lambda r: {"epoch_time_s": r.wall_time / r.evals[-1]["epoch"],
                                             "curve": [e["test_acc"] for e in r.evals]}),
        "paper": PAPER_ACCURACY,
        "claim": claim(result),
        "sweep": None if sweep_out is None else {"table": sweep_out.table.to_dict(orient="records"),
                                                 "per_seed": sweep_out.per_seed.to_dict(orient="records"),
                                                 "best": sweep_out.best, "validation": sweep_out.validation,
                                                 "scored_on": sweep_out.scored},
    }
