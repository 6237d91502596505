"""Cost of one optimisation step of RR, Ort and Pre relative to Std (``make bench``).

For nine models, the peak MLP (784 -> 128 -> 2, BN + ReLU, batch 100: the official setting), a small CNN
(three 3x3 conv + BN + ReLU blocks and a linear head, 28x28 inputs, batch 64), the CIFAR ResNet-110 (batch 8 on the
CPU, 128 on CUDA), torchvision's ResNet-18, ResNet-50, EfficientNet-B0, ConvNeXt-Tiny and a small ViT (ViT-Tiny's
widths, 6 layers, 4x4 patches) as they come, on 32x32 inputs (no Pre: not Sequentials), and the weather ResNet
(reduced on the CPU, the paper's size on CUDA), one training step (forward, loss, backward, Adam step) is timed for

- ``Std``: the task loss alone (also Pre's fine-tuning step),
- ``RR``: full reverse pass, mean reduction, lambda 1e-3,
- ``Ort``: the official SRIP form, weight 0.1,
- ``Pre``: the first greedy pretraining phase (``phases[0]``).

The methods are timed interleaved (Std, RR, Ort, Pre, Std, RR, ...) after a warm-up, so that machine noise hits
them alike, and the median per method is reported. On the CPU the run is single-threaded by default
(``--threads``): with two threads on a shared machine, waits between OpenMP threads swamp the small MLP's step.
A time budget per model caps the rounds on a slow or busy machine; the footer gives the rounds actually run. Memory: on CUDA, the peak memory allocated during the step above
what was allocated just before it; on the CPU, the "saved-activation memory": the bytes of the distinct storages
autograd saves for backward during the step (parameters excluded).

For the convolutional models, ``torch.profiler`` splits RR/Std into the convolution kernels and the rest of the step.
Each method's step is also counted in floating-point operations (``flops.step_flops``: matrix products and
convolutions, on fake tensors), which gives RR/Std in work and the rate (TFLOP/s) each step reached on this device.
Freed memory stays in the process (``keep_freed_memory``; ``--system-malloc`` leaves glibc's default).

Usage: ``python benchmarks/bench_methods.py [--device cpu|cuda] [--sizes cpu|cuda] [--repeats N] [--threads N]
[--quick] [--models ...] [--save DIR]``; ``--sizes cuda`` on the CPU times the training batches (slow).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from racecar_core.methods import Method, Phase, StepInfo, make_method
from racecar_core.models import peak_mlp, resnet_cifar, weather_resnet
from racecar_core.train import TrainConfig, backward_step, compiled_loss, make_optimizer

import record
from flops import achieved_tflops, step_flops

METHODS = ("Std", "RR", "Ort", "Pre")
SETTINGS: dict[str, dict] = {
    "Std": {},
    "RR": dict(lam=1e-3, mode="full", reduction="mean"),
    "Ort": dict(weight=0.1, form="official"),
    "Pre": {},
}
DEFAULT_ROUNDS, QUICK_ROUNDS = 200, 20
DEFAULT_BUDGET_S, QUICK_BUDGET_S = 25.0, 3.0
DEFAULT_MODELS = ("peak MLP", "small CNN", "ResNet-110", "resnet18", "resnet50", "efficientnet_b0", "convnext_tiny",
                  "vit", "weather ResNet")


def _torchvision(name: str) -> nn.Module:
    import contextlib
    import unittest.mock

    import torchvision
    from torch._guards import detect_fake_mode
    # counting FLOPs on fake tensors: trunc_normal_ (ConvNeXt, ViT) looks at values, which the count does not need
    fake = detect_fake_mode() is not None
    with unittest.mock.patch("torch.nn.init.trunc_normal_", lambda t, *a, **k: t) if fake else contextlib.nullcontext():
        if name == "vit":   # a small ViT (ViT-Tiny's widths, 6 layers), 4x4 patches of 32x32 images
            return torchvision.models.VisionTransformer(32, 4, num_layers=6, num_heads=3, hidden_dim=192,
                                                        mlp_dim=768, num_classes=10)
        return getattr(torchvision.models, name)(num_classes=10)


def small_cnn() -> nn.Sequential:
    """Three 3x3 conv + BN + ReLU blocks (16, 32, 32 channels; 28 -> 28 -> 14 -> 7) and a linear head to 10."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


@dataclass(frozen=True)
class Workload:
    """A model builder, its batch size (CPU, CUDA), number of classes (0: regression), task loss, input shape."""
    build: Callable[[bool], nn.Module]
    batch: tuple[int, int]
    classes: int
    task: str
    shape: tuple[int, ...] = (1, 28, 28)
    methods: tuple[str, ...] = METHODS    # Pre needs an nn.Sequential (greedy layer-wise)
    convolutional: bool = True            # report the profiled convolution time of RR against Std


MODELS: dict[str, Workload] = {
    "peak MLP": Workload(lambda cuda: peak_mlp(), (100, 100), 2, "ce_official", convolutional=False),
    "small CNN": Workload(lambda cuda: small_cnn(), (64, 64), 10, "ce"),
    "ResNet-20": Workload(lambda cuda: resnet_cifar(20), (32, 128), 10, "ce", (3, 32, 32)),
    # ResNet-110 on CIFAR-sized inputs: a small batch on the CPU, the paper's 128 on CUDA
    "ResNet-110": Workload(lambda cuda: resnet_cifar(110), (8, 128), 10, "ce", (3, 32, 32)),
    # the weather ResNet: a reduced one on the CPU (32 channels, 3 blocks), the paper's size on CUDA
    # torchvision's ResNet-18 as it comes (not a Sequential: traced by the graph walk), on CIFAR-sized inputs
    "resnet18": Workload(lambda cuda: _torchvision("resnet18"), (8, 128), 10, "ce", (3, 32, 32), ("Std", "RR", "Ort")),
    # the families people use most today (issue 24), as torchvision builds them, on CIFAR-sized inputs
    **{name: Workload(lambda cuda, name=name: _torchvision(name), (8, 128), 10, "ce", (3, 32, 32), ("Std", "RR", "Ort"),
                      convolutional=name != "vit")
       for name in ("resnet50", "efficientnet_b0", "convnext_tiny", "vit")},
    "weather ResNet": Workload(lambda cuda: weather_resnet(117, 3, 128, 19) if cuda else weather_resnet(11, 3, 32, 3),
                               (4, 32), 0, "mse", (11, 32, 64)),
}


class Stepper:
    """One method's training step on its own copy of the model, as ``racecar_core.train.fit`` does it."""

    def __init__(self, name: str, model: nn.Module, task: str, x: Tensor, y: Tensor, lr: float = 1e-4,
                 compile: bool | str = False, method: Method | None = None):
        self.name, self.model, self.x, self.y = name, model, x, y
        method = method or make_method(name, task=task, **SETTINGS[name])  # default: the benchmark's settings
        self.phase: Phase = method.phases(model, 1)[0]
        self.loss = compiled_loss(self.phase, compile)   # what TrainConfig(compile=...) runs
        self.opt = make_optimizer(TrainConfig(steps=1, lr=lr), self.phase.params)  # the loop's own Adam
        self.count = 0

    def info(self) -> StepInfo:
        return StepInfo(self.count, self.count, 0, torch.Generator().manual_seed(self.count))

    def step(self) -> None:
        """One training step as the loop takes it: ``train.backward_step`` (forward, loss, backward) and Adam."""
        backward_step(self.model, self.phase, self.loss, self.x, self.y, self.info())
        self.opt.step()
        self.count += 1


def stepper(name: str, model_name: str, sizes: str = "cpu") -> Stepper:
    """A fresh stepper of method ``name`` on the workload ``model_name`` at the device's sizes (``sizes``), on the CPU
    (or on fake tensors, when built inside ``FakeTensorMode``)."""
    model, x, y, task = workload(model_name, torch.device("cpu"), sizes)
    return Stepper(name, model, task, x, y)


def saved_activation_bytes(stepper: Stepper) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward in one step (CPU memory measure)."""
    params = {p.untyped_storage().data_ptr() for p in stepper.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):   # packs run in the forward pass only
        stepper.step()
    return sum(seen.values())


def peak_step_bytes(stepper: Stepper, device: torch.device) -> int:
    """Peak CUDA memory allocated during one step, above what was allocated just before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    stepper.step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def workload(model_name: str, device: torch.device, sizes: str | None = None) -> tuple[nn.Module, Tensor, Tensor, str]:
    """The model (seeded), a batch of inputs and targets on ``device``, and the task loss of ``MODELS[model_name]``;
    ``sizes`` ("cpu" or "cuda", default: the device's) picks the batch and model sizes."""
    cuda = (sizes or device.type) == "cuda"
    torch.manual_seed(0)
    work = MODELS[model_name]
    base = work.build(cuda)
    if device.type != "cpu":   # built on the CPU; no .to() there (it also works on fake tensors, for step_flops)
        base = base.to(device)
    batch = work.batch[1] if cuda else work.batch[0]
    shape = (117, 32, 64) if cuda and model_name == "weather ResNet" else work.shape
    x = torch.randn(batch, *shape, device=device)
    if work.classes:
        y = torch.randint(0, work.classes, (batch,), device=device)
    else:
        with torch.no_grad():
            y = torch.randn_like(base.eval()(x[:1])).expand(batch, -1, -1, -1).contiguous()
    return base, x, y, work.task


def interleaved_times(steppers: dict, device: torch.device, rounds: int, warmup: int = 0,
                      budget_s: float | None = None) -> dict:
    """Seconds per step of each stepper, after ``warmup`` untimed rounds, timed round-robin so that machine noise
    hits them alike; with ``budget_s`` the rounds stop once they took that long (after at least 3)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for s in steppers.values():
            s.step()
    times: dict = {k: [] for k in steppers}
    start = time.perf_counter()
    for done in range(rounds):
        if budget_s is not None and done >= 3 and time.perf_counter() - start > budget_s:
            break
        for k, s in steppers.items():
            sync()
            t0 = time.perf_counter()
            s.step()
            sync()
            times[k].append(time.perf_counter() - t0)
    return times


CONV_OPS = ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution_backward", "aten::cudnn_convolution",
            "aten::cudnn_convolution_transpose", "aten::slow_conv_transpose2d", "aten::thnn_conv2d")


def convolution_ms(stepper: Stepper, steps: int = 2) -> float:
    """Milliseconds per step spent in convolution kernels (forward, transposed and backward; self time of the aten
    operators in ``CONV_OPS``), from ``torch.profiler`` over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if stepper.x.is_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            stepper.step()
        if stepper.x.is_cuda:
            torch.cuda.synchronize(stepper.x.device)
    total = 0.0
    for e in prof.key_averages():
        if e.key in CONV_OPS:
            total += e.self_device_time_total if stepper.x.is_cuda else e.self_cpu_time_total
    return total / 1e3 / steps


def benchmark(model_name: str, device: str | torch.device = "cpu", rounds: int = DEFAULT_ROUNDS,
              warmup: int = 5, budget_s: float | None = None, sizes: str | None = None) -> dict:
    """Time and measure one step of each method on ``model_name`` ('peak MLP' or 'small CNN').

    ``rounds`` interleaved rounds follow ``warmup`` untimed ones; with ``budget_s``, timing stops once the timed
    rounds have taken that long (after at least 3 rounds), and ``"rounds"`` in the result is the number run.
    ``sizes`` ("cpu" or "cuda", default: the device's) picks the batch and model sizes (``workload``).
    Returns ``{"model", "device", "rounds", "memory_kind", "time_ms": {method: median ms},
    "memory_bytes": {method: bytes}, "time_ratio": {method: x/Std}, "memory_ratio": {method: x/Std}}``.
    """
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {list(MODELS)}")
    if rounds < 1:
        raise ValueError(f"rounds must be positive, got {rounds}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    sizes = sizes or device.type
    base, x, y, task = workload(model_name, device, sizes)
    methods = MODELS[model_name].methods
    steppers = {name: Stepper(name, copy.deepcopy(base), task, x, y) for name in methods}
    times = interleaved_times(steppers, device, rounds, warmup, budget_s)
    memory = {k: peak_step_bytes(s, device) if cuda else saved_activation_bytes(s) for k, s in steppers.items()}
    conv = {k: convolution_ms(steppers[k]) for k in ("Std", "RR")} if MODELS[model_name].convolutional else {}
    time_ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    flops = {k: step_flops(lambda k=k: stepper(k, model_name, sizes)) for k in methods}
    return {
        "model": model_name, "device": str(device), "rounds": len(times["Std"]), "batch": len(x),
        "memory_kind": "peak memory" if cuda else "saved-activation memory",
        "time_ms": time_ms, "memory_bytes": memory,
        "time_ratio": {k: time_ms[k] / time_ms["Std"] for k in methods[1:]},
        "memory_ratio": {k: memory[k] / memory["Std"] for k in methods[1:]},
        "conv_ms": conv, "conv_ratio": conv["RR"] / conv["Std"] if conv else None,
        "flops": flops, "flop_ratio": {k: flops[k] / flops["Std"] for k in methods[1:]},
        "tflops": {k: achieved_tflops(flops[k], time_ms[k]) for k in methods},
    }


def rest_ratio(r: dict) -> float:
    """RR/Std of the step time outside the convolutions (profiled convolution ms subtracted from the median step)."""
    rr, std = r["time_ms"]["RR"] - r["conv_ms"]["RR"], r["time_ms"]["Std"] - r["conv_ms"]["Std"]
    return rr / std


def report(results: list[dict]) -> str:
    """The ratio lines (one per model and ratio) and a footer with the setting and absolute numbers."""
    lines = []
    for r in results:
        lines += [f"{r['model']}: {k}/Std step time {v:.2f}" for k, v in r["time_ratio"].items()]
        lines += [f"{r['model']}: {k}/Std {r['memory_kind']} {v:.2f}" for k, v in r["memory_ratio"].items()]
        if r["conv_ratio"] is not None:
            lines.append(f"{r['model']}: RR/Std convolution time {r['conv_ratio']:.2f} (profiled), rest of the step "
                         f"{rest_ratio(r):.2f}")
        lines += [f"{r['model']}: {k}/Std counted FLOPs {v:.2f}" for k, v in r["flop_ratio"].items()]
    r0 = results[0]
    lines.append("")
    lines.append(f"device {r0['device']}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
                 f"{'/'.join(str(r['rounds']) for r in results)} interleaved rounds (median); Pre = its first pretraining phase "
                 f"(its fine-tuning step is Std)")
    for r in results:
        ms = ", ".join(f"{k} {v:.3f}" for k, v in r["time_ms"].items())
        kb = ", ".join(f"{k} {v / 1024:.0f}" for k, v in r["memory_bytes"].items())
        lines.append(f"{r['model']} (batch {r['batch']}): median step ms: {ms}; {r['memory_kind']} KiB: {kb}")
        gf = ", ".join(f"{k} {r['flops'][k] / 1e9:.3g} at {r['tflops'][k]:.3g} TFLOP/s" for k in r["flops"])
        lines.append(f"{r['model']}: counted GFLOP per step (matrix products and convolutions) and the rate "
                     f"reached: {gf}")
    return "\n".join(lines)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse instead of returning every large block to the system (its
    default for blocks over 128 KiB-32 MiB): each fresh block then costs page faults on first touch, which on the CPU
    made the many activation-sized temporaries of a ResNet-110 RR step 4 % dearer. The same as starting Python with
    ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647``. Returns False where there is no glibc."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 2**31 - 1)
                and mallopt(m_top_pad, 256 << 20))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved timing rounds (default {DEFAULT_ROUNDS}, {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, robust on shared machines; 0 keeps torch's default)")
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke test")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc as it is (default: keep freed memory for reuse, "
                             "see keep_freed_memory)")
    parser.add_argument("--models", nargs="*", choices=list(MODELS), help=f"which workloads (default: {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--sizes", choices=["cpu", "cuda"], default=None,
                        help="batch and model sizes: the CPU's (small batches) or CUDA's (the training batches, e.g. "
                             "128 for the torchvision models); default: the device's")
    parser.add_argument("--save", metavar="DIR", help="also keep the output in DIR (make bench: benchmarks/results)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kept = False if args.system_malloc else keep_freed_memory()
    rounds = args.repeats or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    warmup, budget = (3, QUICK_BUDGET_S) if args.quick else (5, DEFAULT_BUDGET_S)
    if args.repeats:
        budget = None  # an explicit round count is honoured
    names = args.models or list(DEFAULT_MODELS)
    text = report([benchmark(name, args.device, rounds, warmup, budget, args.sizes) for name in names]) + "\nmalloc: " + (
        "freed memory kept for reuse (--system-malloc to leave it as it is)" if kept else "as the system has it")
    print(text)
    if args.save:
        name = "bench-methods" if args.sizes in (None, args.device) else f"bench-methods-{args.sizes}-sizes"
        print("saved to", record.save(text, name, args.device, args.save))


if __name__ == "__main__":
    main()
