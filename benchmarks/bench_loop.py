"""Cost per step of a whole SVD-test run, the training loop's own work included (``make bench``).

One peak run of the paper (784 -> 128 -> 2 MLP, BN + ReLU, full batch of 100 official-variant images, evaluation and
a reverse-pass snapshot every 100 steps, checkpoints) is trained through ``racecar_repro.experiments.svd``
for Std and RR, interleaved (Std, RR, Std, RR, ...), each in a fresh run folder. Reported per method, median over
the rounds:

- ``loop``: the training loop's wall time per step (``fit``'s clock: steps, evaluations, snapshots, checkpoints),
- ``run``: the whole run per step (data, model, the loop, the SVD analysis, writing the cached result),
- ``bare``: one training step alone (forward, loss, backward, Adam), timed interleaved on the same machine,

and the ratios loop/bare (what the loop adds) and RR/Std. For orientation the official TensorFlow scripts' training
loops were measured at about 1.4 ms (Std) and 2.4 ms (RR) per step on a 2-core machine (issue 8; not measured by
this script).

Usage: ``python benchmarks/bench_loop.py [--steps N] [--rounds N] [--threads N]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from racecar_repro.data.peak import make_peak
from racecar_repro.experiments import svd
from racecar_repro.experiments.grid import RunSpec
from racecar_core.models import peak_mlp

from bench_methods import Stepper, interleaved_times

METHODS = ("Std", "RR")
OFFICIAL_TF_MS = {"Std": 1.4, "RR": 2.4}


def run_once(method: str, steps: int, seed: int) -> tuple[float, float]:
    """(loop seconds per step, whole-run seconds per step) of one fresh peak run of ``method``."""
    saved = os.environ.get("RACECAR_RUNS_DIR")
    with tempfile.TemporaryDirectory() as d:
        os.environ["RACECAR_RUNS_DIR"] = d
        try:
            t0 = time.perf_counter()
            result = svd.run("peak", "quick", report=None, steps=steps, analysis_step=steps, methods=[method],
                             variants=["official"], seeds=[seed], data="replica")
            total = time.perf_counter() - t0
        finally:
            os.environ.pop("RACECAR_RUNS_DIR") if saved is None else os.environ.__setitem__("RACECAR_RUNS_DIR", saved)
    return result.one(method, seed, "official").wall_time / steps, total / steps


def bare_steps(rounds: int) -> dict[str, float]:
    """Median seconds of one bare training step of each method on the peak MLP (official variant, RR lambda 1e-6)."""
    data = make_peak(50, 5, 0)
    torch.manual_seed(0)
    params = svd.resolve_params("peak")
    steppers = {m: Stepper(m, peak_mlp(), "ce_official", data.x_train, data.y_train,
                           method=svd.method_for(RunSpec("svd_peak", m, 0, "official", params))) for m in METHODS}
    times = interleaved_times(steppers, torch.device("cpu"), rounds, warmup=10)
    return {k: statistics.median(v) for k, v in times.items()}


def benchmark(steps: int = 1000, rounds: int = 3) -> dict:
    """Loop, run and bare times per step (ms) of Std and RR and their ratios; see the module docstring."""
    per: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    for r in range(rounds):
        for m in METHODS:
            per[m].append(run_once(m, steps, seed=r))
    bare = bare_steps(max(50, steps // 2))
    res: dict = {"steps": steps, "rounds": rounds, "threads": torch.get_num_threads(), "ms": {}}
    for m in METHODS:
        res["ms"][m] = {"loop": 1e3 * statistics.median(t[0] for t in per[m]),
                        "run": 1e3 * statistics.median(t[1] for t in per[m]), "bare": 1e3 * bare[m]}
    res["loop_over_bare"] = {m: res["ms"][m]["loop"] / res["ms"][m]["bare"] for m in METHODS}
    res["rr_over_std_loop"] = res["ms"]["RR"]["loop"] / res["ms"]["Std"]["loop"]
    return res


def report(r: dict) -> str:
    """One line per ratio, then the absolute numbers and the official scripts' reference."""
    lines = [f"peak run: {m} loop/bare step time {v:.2f}" for m, v in r["loop_over_bare"].items()]
    lines.append(f"peak run: RR/Std loop step time {r['rr_over_std_loop']:.2f}")
    lines.append("")
    lines.append(f"{r['rounds']} interleaved rounds of {r['steps']}-step runs (median), torch "
                 f"{torch.__version__}, {r['threads']} threads")
    for m, ms in r["ms"].items():
        lines.append(f"peak run {m}: loop {ms['loop']:.2f} ms/step, whole run {ms['run']:.2f} ms/step, bare step "
                     f"{ms['bare']:.2f} ms (official TF script, measured elsewhere: about {OFFICIAL_TF_MS[m]} ms)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per run (multiple of 100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (runs per method)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, as the "
                        "notebooks run)")
    args = parser.parse_args(argv)
    if args.steps % 100 or args.steps <= 0:
        parser.error("--steps must be a positive multiple of 100 (the evaluation interval)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(report(benchmark(args.steps, args.rounds)))


if __name__ == "__main__":
    main()
