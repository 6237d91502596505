"""Eager vs ``torch.compile``: one training step of Std and RR (``make bench-compile``).

``TrainConfig(compile=True)`` compiles each phase's loss, forward, reverse pass and penalty, into one graph (the
reverse pass traces without graph breaks; ``tests/test_train.py`` guards that). This script measures what that buys
for a workload of ``bench_methods.py``: the first compiled step (compilation included) and, after a warm-up, the
median step time of eager and compiled Std and RR, timed interleaved in one run. It prints compiled/eager per
method and RR/Std in each mode. The backend is ``inductor`` (what ``compile=True`` uses); ``--backend aot_eager``
checks the plumbing quickly without generating kernels.

Usage: ``python benchmarks/bench_compile.py [--device cpu|cuda] [--models ...] [--backend inductor] [--repeats N]``.
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch

from bench_methods import MODELS, Stepper, interleaved_times, workload

DEFAULT_MODELS = {"cpu": ("small CNN", "ResNet-20"), "cuda": ("ResNet-110",)}


def compare(model_name: str, device: str = "cpu", backend: str = "inductor", rounds: int = 30,
            warmup: int = 3) -> dict:
    """Step times of eager and compiled Std and RR on ``model_name``; see the module docstring."""
    device_ = torch.device(device)
    base, x, y, task = workload(model_name, device_)
    steppers = {(m, mode): Stepper(m, copy.deepcopy(base), task, x, y, compile=False if mode == "eager" else backend)
                for m in ("Std", "RR") for mode in ("eager", "compiled")}
    first_s = {key: interleaved_times({key: s}, device_, 1)[key][0] for key, s in steppers.items()}  # compiles
    times = interleaved_times(steppers, device_, rounds, warmup)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {"model": model_name, "device": device, "backend": backend, "rounds": rounds, "time_ms": ms,
            "first_step_s": first_s,
            "speedup": {m: ms[(m, "eager")] / ms[(m, "compiled")] for m in ("Std", "RR")},
            "rr_over_std": {mode: ms[("RR", mode)] / ms[("Std", mode)] for mode in ("eager", "compiled")}}


def report(results: list[dict]) -> str:
    """One line per ratio, then the absolute numbers."""
    lines = []
    for r in results:
        lines += [f"{r['model']}: {m} eager/compiled step time {v:.2f}" for m, v in r["speedup"].items()]
        lines += [f"{r['model']}: RR/Std step time, {mode} {v:.2f}" for mode, v in r["rr_over_std"].items()]
    lines.append("")
    r0 = results[0]
    lines.append(f"device {r0['device']}, backend {r0['backend']}, torch {torch.__version__}, threads "
                 f"{torch.get_num_threads()}, {r0['rounds']} interleaved rounds (median)")
    for r in results:
        ms = ", ".join(f"{m} {mode} {v:.2f}" for (m, mode), v in r["time_ms"].items())
        first = ", ".join(f"{m} {r['first_step_s'][(m, 'compiled')]:.1f}" for m in ("Std", "RR"))
        lines.append(f"{r['model']}: median step ms: {ms}; first compiled step (compilation) s: {first}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", choices=list(MODELS), help="default: small CNN, ResNet-20 on the "
                        "CPU; ResNet-110 on CUDA")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved timing rounds (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = args.models or DEFAULT_MODELS[args.device]
    print(report([compare(name, args.device, args.backend, args.repeats) for name in names]))


if __name__ == "__main__":
    main()
