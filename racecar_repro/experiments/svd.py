"""The SVD tests of the paper (Fig. 3): MNIST (784 -> 10 linear) and peak (784 -> 128 -> 2, BN + ReLU); Std, Ort,
RR and Pre over seeds in two variants, ``official`` and ``corrected`` (``variant_settings``), each (variant,
method, seed) one cached run. The protocol: notebooks/01_svd_mnist.ipynb and notebooks/02_svd_peak.ipynb.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from racecar_core import reverse

from racecar_repro import verdicts
from racecar_core import svd as svd_analysis
from racecar_repro.data import ImageSet
from racecar_repro.data.peak import make_peak
from racecar_repro.data.mnist import mnist_imageset, select_per_class
from racecar_core.models import mnist_linear, peak_mlp
from racecar_core.train import TensorBatches, TrainConfig, fit, pretraining_steps
from racecar_repro.experiments.grid import Experiment, ExperimentResult, LoadedData, RunResult, RunSpec, run_grid
from racecar_repro.experiments import params as parameters
from racecar_repro.experiments.params import MethodParams, build_method, run_config, setting

DATASETS = ("mnist", "peak")
DATA_CHOICES = ("auto", "official", "replica")
VARIANTS = ("official", "corrected")


@dataclass
class SVDParams(MethodParams):
    """The SVD test (Fig. 3): the settings both data sets share are the defaults; each data set's paper profile sets
    its own (``PROFILES``). The methods' other settings are the official code's (their defaults); what a variant
    fixes (RR's batch-norm update and pair weights) is not a parameter."""

    dataset: str = setting("peak")
    variants: list = setting(["official", "corrected"], run=False, choices=VARIANTS)
    methods: list = setting(["Std", "Ort", "RR", "Pre"], run=False)
    seeds: list = setting([0, 1, 2, 3, 4], run=False)
    steps: int = setting(5000)
    analysis_step: int = setting(4900)     # the task step whose first layer is analysed
    eval_every: int = setting(100)
    k: int = setting(10)                   # how many leading singular vectors the analysis compares
    lr: float = setting(1e-4)
    batch_size: int | None = setting(None)
    rr_lambda: float = setting(1e-6)
    ort_weight: float = setting(0.1)
    pre_steps: int = setting(1000)
    data: str = setting("auto", choices=DATA_CHOICES)   # "official" images, the "replica", or "auto" (official if any)
    data_seed: int = setting(0)
    n_train_per_class: int | None = setting(None)   # peak only
    n_test_per_class: int | None = setting(None)    # peak only
    device: str = setting("cpu")
    progress: bool = setting(False, run=False)
    min_test_acc: float = setting(0.95, run=False)  # runs under this test accuracy never confirm a claim


# The official settings run in seconds to minutes on a CPU, so `quick` is `paper` (5 seeds). The analysed step is the
# official one: kernel_SVD.py reads model_0009 (MNIST) / model_0049 (peak), saved at step 900 / 4900.
_MNIST = SVDParams(dataset="mnist", steps=1000, analysis_step=900, rr_lambda=1e-5, pre_steps=500, eval_every=50, k=2)
_PEAK = SVDParams(dataset="peak", n_train_per_class=50, n_test_per_class=5)
PROFILES: dict[str, dict[str, SVDParams]] = {
    "mnist": {"paper": _MNIST, "quick": _MNIST,
              "smoke": replace(_MNIST, seeds=[0], steps=40, analysis_step=40, pre_steps=20, eval_every=10)},
    "peak": {"paper": _PEAK, "quick": _PEAK,
             "smoke": replace(_PEAK, seeds=[0], steps=40, analysis_step=40, pre_steps=20, eval_every=10,
                              n_train_per_class=10, variants=["official"])},
}
PIXEL_SCALE = 255.0


def _check(params: SVDParams) -> SVDParams:
    if params["analysis_step"] % params["eval_every"] or params["analysis_step"] > params["steps"]:
        raise ValueError(f"racecar: analysis_step ({params['analysis_step']}) must be a multiple of eval_every "
                         f"({params['eval_every']}) and at most steps ({params['steps']})")
    fixed = [k for k in ("rr_bn_update", "rr_pair_weights") if params[k] is not None]
    if fixed:
        raise ValueError(f"racecar: {fixed} are fixed by the SVD test's variants ('official', 'corrected')")
    if params["dataset"] == "mnist" and (params["n_train_per_class"] or params["n_test_per_class"]):
        raise ValueError("racecar: n_train_per_class and n_test_per_class are the peak test's; the MNIST test uses "
                         "one image per class")
    return replace(params, data=resolve_data(params["dataset"], params["data"]))


def experiment(dataset: str) -> Experiment:
    """The SVD test on ``dataset`` ("mnist" or "peak") as an ``Experiment`` for the grid runner."""
    if dataset not in PROFILES:
        raise ValueError(f"racecar: unknown SVD-test data set {dataset!r}; choose one of {list(PROFILES)}")
    return Experiment(name=f"svd_{dataset}", profiles=PROFILES[dataset], load=_load, train=_train,
                      folder=lambda params: f"svd_{params['dataset']}", resolve=_check,
                      resources={p: {"cpus_per_task": 2, "mem_gb": 8, "timeout_min": 120} for p in PROFILES[dataset]})


def resolve_params(dataset: str, profile: str = "quick", **overrides: Any) -> SVDParams:
    """The profile's parameters with ``overrides`` applied; unknown names are an error."""
    return parameters.resolve_params(experiment(dataset), profile, overrides)


def run(dataset: str, profile: str = "quick", report: Callable[[str], None] | None = print,
        executor: str | None = None, workers: int | None = None, resubmit: bool | None = None,
        **overrides: Any) -> ExperimentResult:
    """Train (or load) every (variant, method, seed) of the test on ``dataset``, as ``Experiment.run`` does for the
    other experiments."""
    return run_grid(experiment(dataset), profile, overrides, report, executor, workers, resubmit)


def _official(dataset: str) -> ImageSet:
    from racecar_repro.data import official
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
    from racecar_repro.data import official
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


def _load(params: dict) -> LoadedData:
    data = load_data(params)
    return LoadedData(data, data.source, data_label(params))


def variant_settings(variant: str) -> dict[str, Any]:
    """What a variant fixes: input scale, task loss, batch norm as in the official code (the reverse pass updates
    the moving averages, evaluation uses batch statistics) or not, and RR's pair weights (corrected: the input term in
    raw pixel units, the batch-normalised hidden terms at weight 1)."""
    if variant == "official":
        return {"scale": 1.0, "task": "ce_official", "official_bn": True}
    scale = 1.0 / PIXEL_SCALE
    return {"scale": scale, "task": "ce", "official_bn": False, "rr_pair_weights": [1.0 / scale ** 2]}


def method_for(spec: RunSpec):
    """The run's method: the experiment's parameters with what its variant fixes."""
    v = variant_settings(spec.variant)
    return build_method(spec.method, spec.params, v["task"], rr_bn_update=v["official_bn"],
                        rr_pair_weights=v.get("rr_pair_weights"))


def _relative_error(model: torch.nn.Module, x: torch.Tensor) -> float:
    rec = reverse.reconstruct_input(model, x)
    return float((rec - x).norm() / x.norm())


def _train(spec: RunSpec, data: ImageSet) -> tuple[dict, Callable[[Path], dict]]:
    """One run: train, then analyse the first layer after ``analysis_step`` task steps."""
    params, seed = spec.params, spec.seed
    v = variant_settings(spec.variant)
    scale, official_bn = v["scale"], v["official_bn"]
    method = method_for(spec)
    cfg = TrainConfig(steps=params["steps"], lr=params["lr"], batch_size=params["batch_size"],
                      eval_every=params["eval_every"], checkpoint_every=max(params["eval_every"], 1000), seed=seed,
                      device=params["device"], progress=params["progress"])
    config = run_config(params, method, cfg, spec.variant, data=data.fingerprint(), scale=scale, task=v["task"])
    xtr, xte = data.x_train * scale, data.x_test * scale
    shown = torch.cat([torch.nonzero(data.y_test == c)[:1, 0] for c in (0, 1)])  # one test image per class
    # official: every batch norm in training mode also when evaluating (the whole evaluated batch's statistics)
    stats = reverse.batch_statistics if official_bn else (lambda model: contextlib.nullcontext())

    def evaluate(model: torch.nn.Module, step: int) -> dict:
        with stats(model):
            out = model(xte)
            return {"test_acc": (out.argmax(1) == data.y_test).double().mean(),
                    "test_task_loss": method.task_loss(out, data.y_test),
                    "train_acc": (model(xtr).argmax(1) == data.y_train).double().mean(),
                    "rel_err_train": _relative_error(model, xtr), "rel_err_test": _relative_error(model, xte)}

    def train(run_dir: Path) -> dict:
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
        _, s_vals, vh = svd_analysis.svd(w, "cpu")
        at = next(e for e in hist["evals"] if e["step"] == analysis)
        report = svd_analysis.similarity_report(vh, s_vals, data.x_train, params["k"])
        return {"config": config, "log": hist["log"], "evals": hist["evals"], "wall_time": hist["wall_time"],
                "metrics": {**report, "task_step": params["analysis_step"],
                            **{k: at[k] for k in ("test_acc", "train_acc", "rel_err_train", "rel_err_test")}},
                "arrays": {"Vh": vh, "S": s_vals, "shown_images": data.x_test[shown],
                           "recon_steps": [s["task_step"] for s in hist["snapshots"]],
                           "reconstructions": torch.stack([s["reconstruction"] for s in hist["snapshots"]])}}

    return config, train


COMPARE_COLUMNS = ["test_acc", "rel_err_test", "lead_span_energy", "lead_max_cos", "best_k_max_cos"]


def compare_data(dataset: str, profile: str = "quick", methods: tuple[str, ...] = ("Std", "RR"),
                 variant: str = "official", report: Callable[[str], None] | None = print, **overrides: Any) -> dict:
    """The same runs on the official images (when on disk) and on the replica: ``{"table": (data, method) x mean/std
    of COMPARE_COLUMNS, "images": image statistics (peak only), "missing": the fetch command or None}``."""
    from racecar_repro.data import official
    sources = ["official", "replica"] if official.has_official(dataset) else ["replica"]
    tables, images = {}, {}
    for source in sources:
        result = run(dataset, profile, report, methods=list(methods), variants=[variant], data=source, **overrides)
        tables[source] = summary_table(result).loc[variant][COMPARE_COLUMNS]
        if dataset == "peak":
            from racecar_repro.data.peak import image_statistics
            images[source] = image_statistics(result.data.x_train, result.data.y_train)
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


def summary_table(result: ExperimentResult) -> pd.DataFrame:
    """Mean and std over seeds of the analysis metrics, one row per (variant, method)."""
    rows = [{"variant": r.spec.variant, "method": r.spec.method, **{c: r.metrics[c] for c in TABLE_COLUMNS}}
            for r in result.runs]
    return pd.DataFrame(rows).groupby(["variant", "method"], sort=False)[TABLE_COLUMNS].agg(["mean", "std"])


def best_k_ranks(result: ExperimentResult) -> dict[str, dict[str, list]]:
    """For each variant and method, the ranks of the best-k singular vectors per seed."""
    return {v: {m: [r.metrics["best_k_ranks"] for r in result.select(m, v)] for m in result.methods}
            for v in result.variants}


CLAIM_COLUMNS = ("lead_max_cos", "lead_span_energy", "best_k_max_cos")
STATEMENT = ("RR's first-layer right singular vectors resemble the training images more than Std's and Ort's "
             "({measure}, higher)")


def task_status(runs: dict[str, list[RunResult]], min_test_acc: float) -> dict[str, dict]:
    """Per method: mean test accuracy at the analysed step, and the seeds whose run did not learn the task (test
    accuracy under ``min_test_acc``)."""
    return {m: {"test_acc_mean": float(np.mean([r.metrics["test_acc"] for r in rs])),
                "failed_seeds": verdicts.failed_seeds({r.spec.seed: r.metrics["test_acc"] for r in rs}, min_test_acc)}
            for m, rs in runs.items()}


def claims_of(runs: dict[str, list[RunResult]], min_test_acc: float, prefix: str) -> dict[str, dict]:
    """``{prefix/measure: record}``: per similarity measure, RR against Std and Ort (those that ran), paired over
    seeds, over the runs that learnt the task only (``verdicts.all_of``); ``{}`` without RR or a baseline."""
    baselines = [m for m in ("Std", "Ort") if runs.get(m)]
    if not runs.get("RR") or not baselines:
        return {}
    task = task_status(runs, min_test_acc)
    per_seed = {m: {r.spec.seed: r.metrics for r in rs} for m, rs in runs.items()}
    out = {}
    for column in CLAIM_COLUMNS:
        values = {m: {s: float(x[column]) for s, x in d.items()} for m, d in per_seed.items()}
        comparisons = [verdicts.paired(values["RR"], values[b], column, "higher", "RR", b,
                                       failed_runs={"RR": task["RR"]["failed_seeds"], b: task[b]["failed_seeds"]})
                       for b in baselines]
        out[f"{prefix}/{column}"] = verdicts.record(STATEMENT.format(measure=column), verdicts.all_of(comparisons),
                                                    task=task, min_test_acc=min_test_acc)
    return out


def claim(result: ExperimentResult) -> dict[str, dict]:
    """The paper's claim, per variant and similarity measure (``"official/lead_span_energy"``, ...): RR's measure
    above Std's and Ort's, paired over seeds with a 95 % t-interval, counting only runs whose test accuracy at the
    analysed step reached ``min_test_acc`` (a run that failed its task never confirms it)."""
    out: dict[str, dict] = {}
    for v in result.variants:
        out.update(claims_of({m: result.select(m, v) for m in result.methods}, result.params["min_test_acc"], v))
    return out


SWEEP_FACTORS = (1.0, 1e-1, 1e-2, 1e-3)   # RR's lambda in the sweep: the published one times these
LEARNT_FRACTION = 0.8                      # a lambda "learns the task" when this share of seeds does (4 of 5)


@dataclass
class LambdaSweep:
    """Corrected RR at several lambdas (``table``: one row per lambda), the lambda at which it learns its task
    (``chosen``: the largest with at least ``LEARNT_FRACTION`` of the seeds at ``min_test_acc``; None when none
    does), the claims there (``claims``, prefix ``"<variant>_lambda"``) and the RR runs at ``chosen``."""

    variant: str
    table: pd.DataFrame
    chosen: float | None
    claims: dict
    results: dict[float, ExperimentResult]   # the RR runs at each lambda

    @property
    def result(self) -> ExperimentResult | None:
        """The RR runs at the chosen lambda (None when no lambda learnt the task)."""
        return None if self.chosen is None else self.results[self.chosen]


def lambda_sweep(result: ExperimentResult, factors: tuple[float, ...] = SWEEP_FACTORS, variant: str = "corrected",
                 report: Callable[[str], None] | None = print) -> LambdaSweep:
    """RR of ``variant`` at the published lambda times each of ``factors`` (every run cached like any other), with
    ``result``'s other parameters and seeds: where does it learn the task, and does the paper's claim hold there
    (against ``result``'s Std and Ort runs of the same variant and seeds)?"""
    p = result.params
    keep = {k: v for k, v in p.items() if k not in ("profile", "dataset", "methods", "variants", "rr_lambda")}
    rows, results = [], {}
    for factor in factors:
        lam = float(p["rr_lambda"]) * factor
        res = run(p["dataset"], result.profile, report, **{**keep, "methods": ["RR"], "variants": [variant],
                                                          "rr_lambda": lam})
        results[lam] = res
        acc = [r.metrics["test_acc"] for r in res.runs]
        learnt = sum(a >= p["min_test_acc"] for a in acc)
        rows.append({"rr_lambda": lam, "published": factor == 1.0, "seeds": len(acc), "learnt": int(learnt),
                     "test_acc_mean": float(np.mean(acc)), "test_acc_min": float(np.min(acc)),
                     **{f"{c}_mean": float(np.mean([r.metrics[c] for r in res.runs])) for c in CLAIM_COLUMNS},
                     "rel_err_test_mean": float(np.mean([r.metrics["rel_err_test"] for r in res.runs]))})
    table = pd.DataFrame(rows)
    ok = table[table["learnt"] >= LEARNT_FRACTION * table["seeds"]]
    chosen = float(ok["rr_lambda"].max()) if len(ok) else None
    claims: dict = {}
    if chosen is not None:
        runs = {m: result.select(m, variant) for m in ("Std", "Ort") if m in result.methods}
        runs["RR"] = results[chosen].runs
        claims = {k: {**c, "rr_lambda": chosen}
                  for k, c in claims_of(runs, p["min_test_acc"], f"{variant}_lambda").items()}
    return LambdaSweep(variant, table, chosen, claims, results)


def sweep_results(sweep: LambdaSweep) -> dict:
    """The sweep as plain numbers for ``results.json``."""
    return {"variant": sweep.variant, "table": sweep.table.to_dict(orient="records"), "chosen_rr_lambda": sweep.chosen,
            "learnt_fraction": LEARNT_FRACTION,
            "per_run": {} if sweep.result is None else
            {r.spec.key: {c: r.metrics[c] for c in ("test_acc", *CLAIM_COLUMNS, "rel_err_test")}
             for r in sweep.result.runs}}


def results(result: ExperimentResult, comparison: dict | None = None, sweep: LambdaSweep | None = None) -> dict:
    """What the notebook writes to ``results.json``: the table, every run's analysis, best-k ranks, the claims, LPIPS's
    status, which images, and the lambda sweep and official-vs-replica comparison when they ran."""
    table = summary_table(result)
    out = {
        "table": {f"{v}/{m}": {c: {"mean": table.loc[(v, m), (c, "mean")], "std": table.loc[(v, m), (c, "std")]}
                               for c in TABLE_COLUMNS} for v, m in table.index},
        "per_run": {r.spec.key: {**r.metrics, "wall_time_s": r.wall_time, "trained_by": r.trained_by}
                    for r in result.runs},
        "best_k_ranks": best_k_ranks(result), "claim": {**claim(result), **(sweep.claims if sweep else {})},
        "lpips": lpips_status(), "data": result.params["data"],
        "min_test_acc": result.params["min_test_acc"],
    }
    if sweep is not None:
        out["lambda_sweep"] = sweep_results(sweep)
    if comparison is not None:
        out["official_vs_replica"] = comparison_results(comparison)
    return out


def lpips_status() -> str:
    """LPIPS needs the ``lpips`` package and pretrained AlexNet weights on disk; say whether they are here."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "skipped: LPIPS needs the 'lpips' package and pretrained AlexNet weights (not available offline)"
    hub = torch.hub.get_dir()
    if not list(Path(hub, "checkpoints").glob("alexnet-*.pth")):
        return f"skipped: AlexNet weights not found in {hub}/checkpoints (LPIPS would download them)"
    return "available"
