"""The floating-point work of one training step, counted, and the least time a GPU's datasheet peak allows for it.

``step_flops`` builds a step (model, batch, method: whatever ``make`` returns, a ``bench_methods.Stepper``) inside
torch's ``FakeTensorMode``, where tensors carry shapes and no data, and runs one step (forward, loss, backward, Adam)
under ``torch.utils.flop_counter.FlopCounterMode``. The counter sees the matrix products and convolutions (forward,
transposed and backward) that the real step runs, and counts them as it would on real tensors (tested on a small
network), so even the weather paper network's step is counted in about a second on the CPU. Element-wise work
(batch norms, activations, the reconstruction sums, Adam) is not counted: it is small in operations, though not in
time, since it is limited by memory bandwidth.

A GPU cannot run the counted work faster than its datasheet peak, so ``flops / peak`` is a *lower bound* on a step's
time, never an estimate of it: real training reaches a fraction of the peak, which only a measurement on the GPU
(``make bench-weather``, ``make bench`` there) gives; those scripts print the rate they reached
(``achieved_tflops``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense (no 2:4 sparsity) tensor-core peaks in TFLOP/s, NVIDIA H100 SXM5 datasheet (the sparse figures halved).
# PyTorch runs float32 convolutions on TF32 tensor cores by default (torch.backends.cudnn.allow_tf32), so a run
# without mixed precision is bounded by the TF32 peak and one with bf16 autocast by the BF16 peak.
H100_PEAK_TFLOPS = {"tf32": 494.7, "bf16": 989.4}


def step_flops(make: Callable[[], object]) -> int:
    """Floating-point operations of one step of the stepper that ``make()`` builds (built and run on fake tensors:
    ``make`` must create its model and batch itself, not copy real tensors in)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        stepper = make()
        with FlopCounterMode(display=False) as counter:
            stepper.step()
    return int(counter.get_total_flops())


def achieved_tflops(flops: float, ms: float) -> float:
    """The rate (TFLOP/s) at which a step of ``flops`` counted operations that took ``ms`` milliseconds ran."""
    return flops / (ms * 1e-3) / 1e12


def peak_seconds(flops: float, precision: str) -> float:
    """The least time (s) an H100 SXM needs for ``flops`` operations at its dense ``precision`` peak."""
    if precision not in H100_PEAK_TFLOPS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(H100_PEAK_TFLOPS)}")
    return flops / (H100_PEAK_TFLOPS[precision] * 1e12)
