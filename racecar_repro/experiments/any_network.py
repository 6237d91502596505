"""RR on your own network (not a figure of the paper): a torchvision classifier as it comes (ResNet-18 by default),
Std vs RR on real images, every (method, seed) one cached run; besides test accuracy, how well the full reverse pass
reconstructs held-out test images (``reconstruction_scores``). The protocol: notebooks/06_rr_on_your_network.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from racecar_core import reverse

from racecar_repro import verdicts
from racecar_repro.data.cifar import NAMES
from racecar_repro.torchvision_nets import from_torchvision
from racecar_core.train import TensorBatches, TrainConfig, fit
from racecar_repro.experiments.cifar import accuracy, load, on_device
from racecar_repro.experiments.grid import (Experiment, ExperimentResult, LoadedData, RunSpec, mean_sd, per_run,
                                            per_seed)
from racecar_repro.experiments.params import MethodParams, build_method, run_config, setting


@dataclass
class AnyNetworkParams(MethodParams):
    """RR on a torchvision classifier (no paper figure: the defaults are the whole data set, longer, on a GPU)."""

    dataset: str = setting("fashion_mnist", choices=NAMES)
    model: str = setting("resnet18")
    methods: list = setting(["Std", "RR"], run=False)
    seeds: list = setting([0, 1, 2], run=False)
    steps: int = setting(3000)
    batch_size: int = setting(128)
    lr: float = setting(1e-3)
    rr_lambda: float = setting(1e-2)
    rr_reduction: str = setting("mean")
    rr_bn_update: bool = setting(False)
    rr_norms: str = setting("batch")
    n_train: int | None = setting(None)
    n_test: int | None = setting(None)
    n_rec: int = setting(256)            # test images every evaluation reconstructs
    shown: int = setting(8)              # of them, the ones a run keeps for the figure
    eval_every: int = setting(250)
    torch_compile: bool = setting(False)
    acc_tolerance: float = setting(0.05, run=False)   # runs within it of Std's accuracy count for the claim


_PAPER = AnyNetworkParams()
PROFILES: dict[str, AnyNetworkParams] = {
    "paper": _PAPER,
    # a few hundred steps on the CPU (minutes); three seeds, the fewest a paired interval takes
    "quick": replace(_PAPER, steps=300, batch_size=64, n_train=5000, n_test=1000, seeds=[0, 1, 2], eval_every=100),
    # a pipeline check (seconds)
    "smoke": replace(_PAPER, steps=6, batch_size=32, n_train=128, n_test=64, n_rec=32, seeds=[0], eval_every=3,
                     progress=False),
}


def _check(params: AnyNetworkParams) -> AnyNetworkParams:
    from_torchvision(params["model"])  # a clear error for a name torchvision does not have
    if not set(params["methods"]) <= {"Std", "RR", "Ort"}:
        raise ValueError(f"racecar: methods here are Std, RR and Ort (Pre needs an nn.Sequential), got "
                         f"{params['methods']}")
    return params


def _load(p: dict) -> LoadedData:
    """The images (a class-balanced subset when asked), normalisation, and the test images every run reconstructs."""
    data = load(p)
    prep = on_device(data, p["device"], augment=False)
    return LoadedData({**prep, "xrec": prep["test_tf"](data.x_test[:p["n_rec"]], None)}, data.source)


@torch.no_grad()
def reconstruct(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The full reverse pass's reconstruction of ``x`` as RR trains it: batch norms normalise with the batch's
    statistics (their moving averages left alone), dropout off."""
    with reverse.batch_statistics(model):
        return reverse.reconstruct_input(model, x)


def reconstruction_scores(model: torch.nn.Module, x: torch.Tensor, batch: int = 128) -> dict[str, float]:
    """How well ``reconstruct`` gets ``x`` back: ``rec_error = sum ||x' - x||^2 / sum ||x||^2`` (what RR's input
    term lowers) and ``rec_cosine``, the mean over images of the cosine between ``x'`` and ``x`` (does the
    reconstruction look like the image, whatever its scale)."""
    err = norm = cos = 0.0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        rb = reconstruct(model, xb)
        err += float((rb - xb).pow(2).sum())
        norm += float(xb.pow(2).sum())
        cos += float(torch.nn.functional.cosine_similarity(rb.flatten(1), xb.flatten(1), dim=1).sum())
    return {"rec_error": err / norm, "rec_cosine": cos / len(x)}


def _train(spec: RunSpec, prep: dict) -> tuple[dict, Callable[[Path], dict]]:
    """One (method, seed) run: test accuracy and reconstruction error over training, and the shown reconstructions."""
    p, seed, data = spec.params, spec.seed, prep["data"]
    n_classes = int(data.y_train.max()) + 1
    spe = max(1, len(data.x_train) // min(p["batch_size"], len(data.x_train)))
    method = build_method(spec.method, p, "ce", steps_per_epoch=spe)
    cfg = TrainConfig(steps=p["steps"], lr=p["lr"], optimizer="adam", batch_size=p["batch_size"],
                      eval_every=p["eval_every"], checkpoint_every=p["eval_every"], seed=seed, device=p["device"],
                      compile=p["torch_compile"], progress=p["progress"])
    config = run_config(p, method, cfg, data=prep["fingerprint"])
    xtr, ytr, xte, yte, xrec = (prep[k] for k in ("xtr", "ytr", "xte", "yte", "xrec"))

    def evaluate(model: torch.nn.Module, step: int) -> dict:
        return {"test_acc": accuracy(model, xte, yte, prep["test_tf"]), **reconstruction_scores(model, xrec)}

    def train(run_dir: Path) -> dict:
        torch.manual_seed(seed)
        model = from_torchvision(p["model"], n_classes, in_channels=data.x_train.shape[1])
        hist = fit(model, method, TensorBatches(xtr, ytr, p["batch_size"], seed, prep["train_tf"]), cfg, run_dir,
                   evaluate, log_every=max(1, p["eval_every"] // 10))
        model.eval()
        shown = reconstruct(model, xrec[:p["n_rec"]])[:p["shown"]].cpu()  # in the batch the error is measured on
        last = hist["evals"][-1]
        return {"config": config, "evals": hist["evals"], "log": hist["log"], "wall_time": hist["wall_time"],
                "metrics": {"final_acc": last["test_acc"], "rec_error": last["rec_error"],
                            "rec_cosine": last["rec_cosine"], "steps": p["steps"]},
                "arrays": {"inputs": xrec[:p["shown"]].cpu(), "reconstruction": shown}}

    return config, train


EXPERIMENT = Experiment(name="any_network", profiles=PROFILES, load=_load, train=_train,
                        folder=lambda p: f"any_network_{p['model']}_{p['dataset']}", resolve=_check)
run = EXPERIMENT.run                        # run(profile, report=print, **overrides) -> ExperimentResult
resolve_params = EXPERIMENT.resolve_params  # resolve_params(profile, **overrides) -> dict


def summary(result: ExperimentResult) -> pd.DataFrame:
    """Per method: final test accuracy, input reconstruction error and cosine (mean and std over seeds), seeds, wall
    time."""
    rows = []
    for m in result.methods:
        rs = result.select(m)
        row = {"method": m}
        for key, name in (("final_acc", "acc"), ("rec_error", "rec_error"), ("rec_cosine", "rec_cosine")):
            row[f"{name}_mean"], row[f"{name}_std"] = mean_sd([r.metrics[key] for r in rs])
        rows.append({**row, "seeds": len(rs), "wall_time_s": float(np.mean([r.wall_time for r in rs]))})
    return pd.DataFrame(rows).set_index("method")


def claim(result: ExperimentResult) -> dict[str, dict]:
    """Does RR's reverse pass reconstruct the test images better than Std's: lower ``rec_error`` and higher
    ``rec_cosine``, each paired over seeds (``racecar_repro.verdicts``)? Only runs that learnt the task count: a run
    whose final test accuracy is more than ``acc_tolerance`` below Std's mean is left out (a reconstruction won by
    giving up the task confirms nothing). Each record carries the methods' accuracies and the accuracy RR paid."""
    if not {"Std", "RR"} <= set(result.methods):
        return {}
    acc = {m: per_seed(result, m, "final_acc") for m in ("Std", "RR")}
    floor = float(np.mean(list(acc["Std"].values()))) - result.params["acc_tolerance"]
    failed = {m: verdicts.failed_seeds(a, floor) for m, a in acc.items()}
    task = {m: {"acc_mean": float(np.mean(list(a.values()))), "failed_seeds": failed[m]} for m, a in acc.items()}
    extra = {"task": task, "acc_floor": floor,
             "accuracy_rr_minus_std": verdicts.paired(acc["RR"], acc["Std"], "final_acc", "higher").as_dict()}
    out = {}
    for key, direction in (("rec_error", "lower"), ("rec_cosine", "higher")):
        out[key] = verdicts.record(
            f"RR's reverse pass reconstructs held-out test images better than Std's ({key}, {direction})",
            verdicts.paired(per_seed(result, "RR", key), per_seed(result, "Std", key), key, direction,
                            failed_runs=failed), **extra)
    return out


def results(result: ExperimentResult) -> dict:
    """What the notebook writes to ``results.json``: the summary, every run's curves and numbers, the claim."""
    curve = ("step", "test_acc", "rec_error", "rec_cosine")
    return {"table": summary(result).reset_index().to_dict(orient="records"),
            "per_run": per_run(result, lambda r: {"curve": [{k: e[k] for k in curve} for e in r.evals]}),
            "claim": claim(result)}
