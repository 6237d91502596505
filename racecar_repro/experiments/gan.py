"""RR in a GAN (the paper's abstract: gains "from fully connected networks over ResNets to GANs"; its GAN experiment is
not public): a DCGAN-style GAN on real Fashion-MNIST, the regulariser (Std: none, RR, Ort) on the discriminator, or on
the generator (``on="G"``: its reverse pass maps an image back to the latent). Scored offline in the feature space of
a classifier this experiment trains on the same data (a Frechet distance of its features, not Inception's FID),
precision and recall of the generated distribution, and the classifier's label entropy. Every (method, seed) is one
cached run of ``racecar_core.train.fit``. The protocol: notebooks/08_gan.ipynb.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from racecar_core import reverse
from racecar_core.methods import RR, Method, Phase, StepInfo, Std
from racecar_core.models import small_cnn
from racecar_core.train import TensorBatches, TrainConfig, fit
from racecar_repro import runs, verdicts
from racecar_repro.experiments.grid import (Experiment, ExperimentResult, LoadedData, RunSpec, measures_table, per_run,
                                           per_seed)
from racecar_repro.experiments.params import MethodParams, build_method, run_config, setting

DATASETS = ("fashion_mnist", "mnist")
METHODS = ("Std", "Ort", "RR")
EVAL_SEED = 20201231        # the fixed latent vectors every method and seed is scored and shown at


@dataclass
class GanParams(MethodParams):
    """The GAN experiment; the defaults are the paper profile (ours: the paper's GAN and data are not public)."""

    dataset: str = setting("fashion_mnist", choices=DATASETS)
    methods: list = setting(list(METHODS), run=False, choices=METHODS)
    seeds: list = setting([0, 1, 2, 3, 4], run=False)
    on: str = setting("D", choices=("D", "G"))   # the network the regulariser acts on
    n_train: int | None = setting(None)          # class-balanced subset of the training images (None: all)
    latent: int = setting(64)
    width: int = setting(64)                     # channels of the first convolution of D (of the last of G)
    steps: int = setting(10000)
    batch_size: int = setting(64)
    lr: float = setting(2e-4)
    beta1: float = setting(0.5)
    eval_every: int = setting(1000)
    n_eval: int = setting(5000)                  # real test images and generated samples per score
    k_nn: int = setting(3)                       # neighbours of the precision/recall radii
    rr_lambda: float = setting(1e-1)
    rr_reduction: str = setting("mean")
    ort_weight: float = setting(1e-2)
    ort_form: str = setting("srip")
    clf_steps: int = setting(3000)               # the scoring classifier's training steps
    min_class_entropy: float = setting(1.5, run=False)   # nats; a run below it collapsed and counts for no claim


_PAPER = GanParams()
PROFILES: dict[str, GanParams] = {
    "paper": _PAPER,
    # 20,000 training images, 1,500 steps, three seeds, width 16: minutes on 2 CPU cores
    "quick": replace(_PAPER, seeds=[0, 1, 2], n_train=20000, width=16, steps=1500, eval_every=300, n_eval=2000,
                     clf_steps=1000),
    # a pipeline check (seconds); its numbers mean nothing, so every run counts (min_class_entropy 0)
    "smoke": replace(_PAPER, seeds=[0], n_train=256, width=8, latent=16, steps=6, eval_every=3, n_eval=64,
                     batch_size=32, clf_steps=6, min_class_entropy=0.0, progress=False),
}


def _images(p: dict):
    """The data as an ``ImageSet`` of 32x32 images in [-1, 1] (Fashion-MNIST comes padded to 32x32; MNIST is padded
    here)."""
    from racecar_repro.data import ImageSet
    from racecar_repro.data.cifar import load_classification, subset
    from racecar_repro.data.mnist import mnist_imageset

    data = mnist_imageset() if p["dataset"] == "mnist" else load_classification(p["dataset"])
    if p["n_train"]:
        data = subset(data, min(p["n_train"], len(data.y_train)), min(p["n_eval"], len(data.y_test)))
    pad = (lambda x: F.pad(x.float(), (2, 2, 2, 2))) if data.x_train.shape[-1] == 28 else (lambda x: x.float())
    x = [pad(t) / 127.5 - 1.0 for t in (data.x_train, data.x_test)]
    return ImageSet(x[0], data.y_train, x[1], data.y_test, source=data.source, synthetic=data.synthetic)


def discriminator(width: int) -> nn.Sequential:
    """DCGAN's discriminator for 32x32 images: three 4x4 stride-2 convolutions (width, 2 width, 4 width channels;
    batch norm after the second and third), LeakyReLU 0.2, one linear output (a logit)."""
    w = width
    return nn.Sequential(nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
                         nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
                         nn.Flatten(), nn.Linear(4 * w * 16, 1))


def generator(latent: int, width: int) -> nn.Sequential:
    """DCGAN's generator: a linear map to 4 width x 4 x 4, then three 4x4 stride-2 transposed convolutions to 32x32
    (batch norm and ReLU after each but the last, tanh at the end)."""
    w = width
    return nn.Sequential(nn.Linear(latent, 4 * w * 16), nn.BatchNorm1d(4 * w * 16), nn.ReLU(),
                         nn.Unflatten(1, (4 * w, 4, 4)),
                         nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                         nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
                         nn.ConvTranspose2d(w, 1, 4, 2, 1), nn.Tanh())


class GAN(nn.Module):
    """A generator ``G`` and a discriminator ``D`` trained as one model by ``fit``; ``forward`` is ``D``."""

    def __init__(self, latent: int, width: int):
        super().__init__()
        self.latent, self.G, self.D = latent, generator(latent, width), discriminator(width)

    def forward(self, x: Tensor) -> Tensor:
        return self.D(x)


@dataclass
class GanMethod(Method):
    """The non-saturating GAN loss with simultaneous updates (one Adam step for both networks: the discriminator's
    loss reaches only D, the generator's only G, through a D whose weights are detached), plus ``inner``'s
    regulariser on the network ``on``: RR's reconstruction of D's reverse pass on the real batch (``on="D"``) or of
    G's on its latent vectors (``"G"``); Ort's penalty on that network's weights; Std none."""
    inner: Method = field(default_factory=Std)
    on: str = "D"
    name: ClassVar[str] = "GAN"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = self.inner.name       # the progress bars and logs say RR, Ort or Std

    def describe(self) -> dict:
        return {**self.inner.describe(), "loss": "non-saturating GAN, simultaneous updates", "on": self.on}

    def phases(self, model: GAN, steps: int) -> list[Phase]:
        target = model.D if self.on == "D" else model.G
        plan = reverse.training_plan(target) if isinstance(self.inner, RR) else None

        def regularised(net: nn.Module, inp: Tensor, info: StepInfo) -> tuple[Tensor, Tensor | None, dict]:
            if net is not target:
                return net(inp), None, {}
            if plan is not None:
                out, rec = self.inner.reconstruction(net, inp, plan)
                rec = info.batch_sum(rec) if self.inner.reduction == "sum" else rec
                return out, self.inner.lam * rec, {"rr": rec.detach()}
            return self.inner.regulariser(net, inp, info)

        def loss(model: GAN, x: Tensor, y: Tensor, info: StepInfo) -> tuple[Tensor, Tensor, dict]:
            z = torch.randn(len(x), model.latent, generator=info.generator).to(x.device)
            fake, reg_g, logs_g = regularised(model.G, z, info)
            real, reg_d, logs_d = regularised(model.D, x, info)
            d_loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
                F.binary_cross_entropy_with_logits(model.D(fake.detach()), torch.zeros_like(real))
            frozen = {n: p.detach() for n, p in model.D.named_parameters()}
            judged = torch.func.functional_call(model.D, frozen, (fake,))
            g_loss = F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
            total = d_loss + g_loss + sum(r for r in (reg_g, reg_d) if r is not None)
            return total, real, {"task": (d_loss + g_loss).detach(), "d": d_loss.detach(), "g": g_loss.detach(),
                                 **logs_g, **logs_d}
        return [Phase("train", steps, list(model.parameters()), loss)]


# ---------------------------------------------------------------- scores in a classifier's feature space
def classifier(width: int = 32) -> nn.Sequential:
    """The scoring classifier: two 5x5 stride-2 convolutions (width, 2 width), 128 hidden units (its features),
    ReLU, 10 outputs."""
    return small_cnn([width, 2 * width], [128], 10, nn.ReLU, in_shape=(1, 32, 32))


@torch.no_grad()
def features(clf: nn.Sequential, x: Tensor, batch: int = 500) -> tuple[Tensor, Tensor]:
    """The classifier's 128 hidden features (after ReLU) and its class probabilities, in batches."""
    feats, probs = [], []
    for i in range(0, len(x), batch):
        h = clf[:-1](x[i:i + batch])
        feats.append(h)
        probs.append(torch.softmax(clf[-1](h), 1))
    return torch.cat(feats).double(), torch.cat(probs).double()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two sets of feature rows (float64). The trace of the
    root is that of ``(S_a^(1/2) S_b S_a^(1/2))^(1/2)``, a symmetric matrix: from two symmetric eigendecompositions,
    exact also where a covariance is singular (fewer samples than features)."""
    def cov(x: Tensor) -> Tensor:
        c = x - x.mean(0)
        return c.T @ c / (len(x) - 1)
    s_a, s_b = cov(a), cov(b)
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + s_a.trace() + s_b.trace() - 2 * cross)


def knn_radii(x: Tensor, k: int) -> Tensor:
    """Each row's distance to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values       # the 0 to itself is the first


def precision_recall(real: Tensor, fake: Tensor, k: int) -> tuple[float, float]:
    """Kynkaanniemi et al. (2019): precision, the share of generated samples inside the k-NN ball of some real one;
    recall, the share of real samples inside the k-NN ball of some generated one (features, Euclidean)."""
    d = torch.cdist(fake, real)
    precision = (d <= knn_radii(real, k)[None, :]).any(1).double().mean()
    recall = (d.T <= knn_radii(fake, k)[None, :]).any(1).double().mean()
    return float(precision), float(recall)


def entropy(p: Tensor) -> Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def gan_scores(model: GAN, data: dict, p: dict) -> dict[str, float]:
    """The generator's samples at the fixed latent vectors against the real test images, in the classifier's
    features: ``fd`` (Frechet distance), ``precision``, ``recall``, ``label_entropy`` (the mean entropy of the
    classifier's prediction per sample, nats: low when samples look like one class) and ``class_entropy`` (the
    entropy of the mean prediction: ln 10 = 2.30 when every class is generated equally often, low on collapse)."""
    clf, real = data["classifier"], data["real_features"]
    fake = model.G(data["latents"].to(next(model.parameters()).device)).cpu().float()
    if not torch.isfinite(fake).all():
        return {k: math.nan for k in ("fd", "precision", "recall", "label_entropy", "class_entropy")}
    f, probs = features(clf, fake)
    precision, recall = precision_recall(real, f, p["k_nn"])
    return {"fd": frechet_distance(real, f), "precision": precision, "recall": recall,
            "label_entropy": float(entropy(probs).mean()), "class_entropy": float(entropy(probs.mean(0)))}


def _train_classifier(p: dict, images) -> nn.Sequential:
    """The scoring classifier, trained once per data setting (a cached run of its own) with Adam on the training
    images; its test accuracy is part of the run's result."""
    cfg = TrainConfig(steps=p["clf_steps"], lr=1e-3, batch_size=128, eval_every=p["clf_steps"],
                      checkpoint_every=p["clf_steps"], seed=0, device="cpu", progress=p["progress"])
    method = build_method("Std", {}, "ce")
    config = {"classifier": "small_cnn [32, 64] [128] relu", "data": images.fingerprint(),
              "method": method.describe(), "train": cfg.describe()}

    def train(run_dir: Path) -> dict:
        torch.manual_seed(0)
        clf = classifier()

        def accuracy(m: nn.Module, step: int) -> dict:
            return {"test_acc": float((features(m, images.x_test)[1].argmax(1) == images.y_test).double().mean())}
        hist = fit(clf, method, TensorBatches(images.x_train, images.y_train, 128, 0), cfg, run_dir, accuracy)
        return {"config": config, "evals": hist["evals"], "log": hist["log"], "wall_time": hist["wall_time"],
                "metrics": hist["evals"][-1], "arrays": {k: v.detach().clone() for k, v in clf.state_dict().items()}}

    stored = runs.cached_run(f"gan_classifier_{p['dataset']}", config, train, __name__)
    clf = classifier()
    clf.load_state_dict(stored["arrays"])
    clf.eval()
    clf.test_acc = float(stored["metrics"]["test_acc"])
    return clf


def _load(p: dict) -> LoadedData:
    """The images in [-1, 1], the scoring classifier, the real test images' features and the fixed latents."""
    images = _images(p)
    clf = _train_classifier(p, images)
    real = images.x_test[:p["n_eval"]]
    latents = torch.randn(p["n_eval"], p["latent"], generator=torch.Generator().manual_seed(EVAL_SEED))
    digest = hashlib.sha256(images.fingerprint().encode())
    for t in clf.state_dict().values():
        digest.update(t.contiguous().numpy().tobytes())
    value = {"x": images.x_train, "y": images.y_train, "real": real, "classifier": clf,
             "real_features": features(clf, real)[0], "latents": latents, "fingerprint": digest.hexdigest()[:16],
             "classifier_acc": clf.test_acc}
    return LoadedData(value, f"{images.source}; {len(images.y_train):,} training images, {len(real):,} real test "
                             f"images scored; scoring classifier trained here (test accuracy {clf.test_acc:.3f})")


def _train(spec: RunSpec, data: dict) -> tuple[dict, Callable[[Path], dict]]:
    """One (method, seed) run: the scores over training, and the first 64 samples at the fixed latents."""
    p, seed = spec.params, spec.seed
    x, y = data["x"].to(p["device"]), data["y"].to(p["device"])
    method = GanMethod(inner=build_method(spec.method, p, "ce"), on=p["on"])
    cfg = TrainConfig(steps=p["steps"], lr=p["lr"], beta1=p["beta1"], optimizer="adam", batch_size=p["batch_size"],
                      eval_every=p["eval_every"], checkpoint_every=p["eval_every"], seed=seed, device=p["device"],
                      progress=p["progress"])
    config = run_config(p, method, cfg, data=data["fingerprint"])

    def train_run(run_dir: Path) -> dict:
        torch.manual_seed(seed)
        model = GAN(p["latent"], p["width"])
        hist = fit(model, method, TensorBatches(x, y, p["batch_size"], seed), cfg, run_dir,
                   lambda m, step: gan_scores(m, data, p), log_every=max(1, p["eval_every"] // 10))
        last = {k: v for k, v in hist["evals"][-1].items() if k not in ("step", "task_step", "epoch", "task")}
        model.eval()
        with torch.no_grad():
            samples = model.G(data["latents"][:64].to(p["device"])).cpu()
        return {"config": config, "evals": hist["evals"], "log": hist["log"], "wall_time": hist["wall_time"],
                "metrics": {**last, "steps": p["steps"]}, "arrays": {"samples": samples}}

    return config, train_run


EXPERIMENT = Experiment(name="gan", profiles=PROFILES, load=_load, train=_train,
                        folder=lambda p: f"gan_{p['dataset']}_{p['on']}")
run = EXPERIMENT.run                        # run(profile, report=print, **overrides) -> ExperimentResult
resolve_params = EXPERIMENT.resolve_params  # resolve_params(profile, **overrides) -> dict

MEASURES = ("fd", "precision", "recall", "label_entropy", "class_entropy")


def summary(result: ExperimentResult) -> pd.DataFrame:
    """Per method: every measure's mean and standard deviation over seeds, the seeds, the wall time."""
    return measures_table(result, MEASURES)


def claim(result: ExperimentResult) -> dict[str, dict]:
    """"RR's samples are closer to the data than Std's": RR's Frechet distance in the classifier's features against
    Std's, paired over seeds (``verdicts.paired``, lower is the paper's direction), and the same against Ort. Only runs
    that learnt the task count: a run whose class entropy (how evenly its samples cover the ten classes) is under
    ``min_class_entropy`` collapsed and is left out."""
    if "RR" not in result.methods or "Std" not in result.methods:
        return {}
    floor = result.params["min_class_entropy"]
    ent = {m: per_seed(result, m, "class_entropy") for m in result.methods}
    failed = {m: verdicts.failed_seeds(e, floor) for m, e in ent.items()}
    task = {m: {"class_entropy_mean": float(np.mean(list(e.values()))), "failed_seeds": failed[m]}
            for m, e in ent.items()}
    rr = per_seed(result, "RR", "fd")
    out = {}
    for b in [m for m in ("Std", "Ort") if m in result.methods]:
        v = verdicts.paired(rr, per_seed(result, b, "fd"), "fd", "lower", baseline=b,
                            failed_runs={"RR": failed["RR"], b: failed[b]})
        out[f"fd_vs_{b}"] = verdicts.record(f"RR's samples are closer to the data than {b}'s (a lower Frechet "
                                            "distance in the scoring classifier's features)", v, task=task,
                                            class_entropy_floor=floor)
    return out


def results(result: ExperimentResult) -> dict:
    """What the notebook writes to ``results.json``: the summary, every run's curves and numbers, the claims."""
    curve = ("step", *MEASURES)
    return {"table": summary(result).reset_index().to_dict(orient="records"),
            "classifier_acc": result.data["classifier_acc"],
            "per_run": per_run(result, lambda r: {"curve": [{k: e[k] for k in curve} for e in r.evals]}),
            "claim": claim(result)}
