"""Texture-shape transfer (the paper's Fig. 1a): when an image's shape and texture name different classes, how much
probability does a network trained with Std, Ort, Pre or RR give the shape's class? Silhouettes of real images
filled with class-typical textures (``racecar_repro.data.cue_conflict``), a small CNN, every (method, seed) one cached
run. The protocol: notebooks/07_texture_shape.ipynb.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from racecar_core.models import small_cnn
from racecar_core.train import TensorBatches, TrainConfig, fit
from racecar_repro import verdicts
from racecar_repro.data import cue_conflict
from racecar_repro.experiments.grid import (Experiment, ExperimentResult, LoadedData, RunSpec, measures_table, per_run,
                                           per_seed)
from racecar_repro.experiments.params import MethodParams, build_method, run_config, setting

DATASETS = ("fashion_mnist", "mnist", "cifar10")
METHODS = ("Std", "Ort", "Pre", "RR")


@dataclass
class TextureShapeParams(MethodParams):
    """The texture-shape test; the defaults are the paper profile (ours: the paper's data and network are unknown)."""

    dataset: str = setting("fashion_mnist", choices=DATASETS)
    methods: list = setting(list(METHODS), run=False, choices=METHODS)
    seeds: list = setting(list(range(10)), run=False)
    agree: float = setting(0.9)            # training images whose texture is their class's
    n_train: int | None = setting(None)    # class-balanced subset sizes (None: the whole set)
    n_test: int | None = setting(None)
    channels: list = setting([16, 32])
    hidden: list = setting([64])
    steps: int = setting(5000)
    batch_size: int = setting(64)
    lr: float = setting(1e-3)
    eval_every: int = setting(500)
    rr_lambda: float = setting(1e-1)
    rr_reduction: str = setting("mean")
    ort_weight: float = setting(1e-2)
    ort_form: str = setting("srip")
    pre_steps: int | None = setting(1000)
    pre_reduction: str = setting("mean")
    shown: int = setting(6, run=False)     # cue-conflict images whose probabilities the figure shows
    acc_tolerance: float = setting(0.05, run=False)   # runs within it of Std's test accuracy count for the claim


_PAPER = TextureShapeParams()
PROFILES: dict[str, TextureShapeParams] = {
    "paper": _PAPER,
    # 10,000 training images, 1,500 steps, five seeds: minutes on 2 CPU cores
    "quick": replace(_PAPER, seeds=[0, 1, 2, 3, 4], n_train=10000, n_test=2000, steps=1500, eval_every=300,
                     pre_steps=300),
    # a pipeline check (seconds); its numbers mean nothing, so every run counts (acc_tolerance 1)
    "smoke": replace(_PAPER, seeds=[0], n_train=200, n_test=100, steps=6, eval_every=3, pre_steps=2, batch_size=32,
                     channels=[4, 8], hidden=[16], acc_tolerance=1.0, progress=False),
}


def _source(p: dict):
    """The source images as an ``ImageSet`` (a class-balanced subset when asked)."""
    from racecar_repro.data.cifar import load_classification, subset
    from racecar_repro.data.mnist import mnist_imageset

    data = mnist_imageset() if p["dataset"] == "mnist" else load_classification(p["dataset"])
    if p["n_train"] or p["n_test"]:
        data = subset(data, min(p["n_train"] or len(data.y_train), len(data.y_train)),
                      min(p["n_test"] or len(data.y_test), len(data.y_test)))
    return data


def _load(p: dict) -> LoadedData:
    """The three splits of cue-conflict images, generated once per setting and read back from their PNG files."""
    data = _source(p)
    out = cue_conflict.folder(p["dataset"], data.fingerprint(), p["agree"])
    if not (out / "manifest.json").is_file():
        cue_conflict.generate(data.x_train, data.y_train, data.x_test, data.y_test, out, p["agree"], data.source)
    made = cue_conflict.manifest(out)
    splits = cue_conflict.load(out)
    digest = hashlib.sha256()
    for s in splits.values():
        for t in s.values():
            digest.update(t.contiguous().numpy().tobytes())
    n = {k: len(s["y"]) for k, s in splits.items()}
    return LoadedData({**splits, "folder": str(out), "fingerprint": digest.hexdigest()[:16],
                       "classes": data.classes or [str(c) for c in range(10)]},
                      f"{made['source']}; silhouettes filled with class textures (generator v"
                      f"{made['generator_version']}, {out}): {n['train']:,} training images (texture agrees in "
                      f"{made['splits']['train']['texture_agrees']:,}), {n['test']:,} test images (texture agrees), "
                      f"{n['conflict']:,} cue-conflict images (shape of one class, texture of another)")


def network(p: dict, shape: tuple[int, int, int]) -> nn.Sequential:
    """The small CNN: ``channels`` 5x5 stride-2 convolutions and ``hidden`` units, ReLU, 10 outputs."""
    return small_cnn(p["channels"], p["hidden"], 10, nn.ReLU, in_shape=shape)


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Softmax class probabilities, in batches, on the CPU (the small CNN has no batch norm or dropout: no mode)."""
    dev = next(model.parameters()).device
    return torch.cat([torch.softmax(model(x[i:i + batch].to(dev)), 1).cpu() for i in range(0, len(x), batch)])


def cue_scores(model: nn.Module, data: dict) -> dict[str, float]:
    """Test accuracy (texture agrees), and on the cue-conflict images: the mean probability of the shape's class
    (Fig. 1a's number) and of the texture's, how often the top class is the shape's (``shape_acc``) or the texture's
    (``texture_rate``), and the shape bias ``shape_acc / (shape_acc + texture_rate)`` (Geirhos et al.'s measure)."""
    test, conf = data["test"], data["conflict"]
    acc = float((probabilities(model, test["x"]).argmax(1) == test["y"]).float().mean())
    prob = probabilities(model, conf["x"])
    idx = torch.arange(len(prob))
    top = prob.argmax(1)
    shape_acc, texture_rate = float((top == conf["y"]).float().mean()), float((top == conf["texture"]).float().mean())
    return {"test_acc": acc, "shape_prob": float(prob[idx, conf["y"]].mean()),
            "texture_prob": float(prob[idx, conf["texture"]].mean()), "shape_acc": shape_acc,
            "texture_rate": texture_rate,
            "shape_bias": shape_acc / (shape_acc + texture_rate) if shape_acc + texture_rate > 0 else float("nan")}


def _train(spec: RunSpec, data: dict) -> tuple[dict, Callable[[Path], dict]]:
    """One (method, seed) run: the scores over training, and the class probabilities of the first ``shown``
    cue-conflict images."""
    p, seed = spec.params, spec.seed
    train = data["train"]
    x, y = train["x"].to(p["device"]), train["y"].to(p["device"])
    method = build_method(spec.method, p, "ce")
    cfg = TrainConfig(steps=p["steps"], lr=p["lr"], optimizer="adam", batch_size=p["batch_size"],
                      eval_every=p["eval_every"], checkpoint_every=p["eval_every"], seed=seed, device=p["device"],
                      progress=p["progress"])
    config = run_config(p, method, cfg, data=data["fingerprint"])

    def train_run(run_dir: Path) -> dict:
        torch.manual_seed(seed)
        model = network(p, tuple(x.shape[1:]))
        hist = fit(model, method, TensorBatches(x, y, p["batch_size"], seed), cfg, run_dir,
                   lambda m, step: cue_scores(m, data), log_every=max(1, p["eval_every"] // 10))
        last = {k: v for k, v in hist["evals"][-1].items() if k not in ("step", "task_step", "epoch", "task")}
        shown = probabilities(model, data["conflict"]["x"][:p["shown"]])
        return {"config": config, "evals": hist["evals"], "log": hist["log"], "wall_time": hist["wall_time"],
                "metrics": {**last, "steps": p["steps"]}, "arrays": {"shown_probs": shown}}

    return config, train_run


EXPERIMENT = Experiment(name="texture_shape", profiles=PROFILES, load=_load, train=_train,
                        folder=lambda p: f"texture_shape_{p['dataset']}")
run = EXPERIMENT.run                        # run(profile, report=print, **overrides) -> ExperimentResult
resolve_params = EXPERIMENT.resolve_params  # resolve_params(profile, **overrides) -> dict

MEASURES = ("test_acc", "shape_prob", "texture_prob", "shape_acc", "texture_rate", "shape_bias")


def summary(result: ExperimentResult) -> pd.DataFrame:
    """Per method: every measure's mean and standard deviation over seeds, the seeds, the wall time."""
    return measures_table(result, MEASURES)


def claim(result: ExperimentResult) -> dict[str, dict]:
    """Fig. 1a's claim, "RR gives the shape more probability than Std, Ort and Pre", paired over seeds against each
    baseline (``verdicts.all_of``), and the same for the shape bias. Only runs that learnt the task count: a run whose
    test accuracy (texture agreeing) is more than ``acc_tolerance`` below Std's mean is left out."""
    base = [m for m in ("Std", "Ort", "Pre") if m in result.methods]
    if "RR" not in result.methods or not base or "Std" not in result.methods:
        return {}
    acc = {m: per_seed(result, m, "test_acc") for m in result.methods}
    floor = float(np.mean(list(acc["Std"].values()))) - result.params["acc_tolerance"]
    failed = {m: verdicts.failed_seeds(a, floor) for m, a in acc.items()}
    task = {m: {"acc_mean": float(np.mean(list(a.values()))), "failed_seeds": failed[m]} for m, a in acc.items()}
    out = {}
    for key, what in (("shape_prob", "more probability to the shape's class"),
                      ("shape_bias", "a higher shape bias (top class the shape's rather than the texture's)")):
        rr = per_seed(result, "RR", key)
        comparisons = [verdicts.paired(rr, per_seed(result, b, key), key, "higher", baseline=b,
                                       failed_runs={"RR": failed["RR"], b: failed[b]}) for b in base]
        out[key] = verdicts.record(f"On cue-conflict images RR gives {what} than {', '.join(base)}",
                                   verdicts.all_of(comparisons), task=task, acc_floor=floor)
    return out


def results(result: ExperimentResult) -> dict:
    """What the notebook writes to ``results.json``: the summary, every run's curves and numbers, the claims."""
    curve = ("step", *MEASURES)
    return {"table": summary(result).reset_index().to_dict(orient="records"),
            "per_run": per_run(result, lambda r: {"curve": [{k: e[k] for k in curve} for e in r.evals]}),
            "claim": claim(result)}
