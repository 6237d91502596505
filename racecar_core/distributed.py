"""One run on several processes (data parallelism), e.g. one per GPU, launched by ``torchrun``: what ``train.fit``
does inside a ``torch.distributed`` process group. Batches are split, gradients averaged by torch's
``DistributedDataParallel`` around the whole step's loss, batch norms synchronised by hand (RR re-applies them to the
reverse signal; ``nn.SyncBatchNorm`` refuses CPU tensors); each choice and why: docs/cluster.md, "Data parallelism".
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of replicas (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This replica's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env() -> str:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL with one GPU per process (``cuda:LOCAL_RANK``, made the
    current device, so that ``device="cuda"`` means it), gloo on a machine without GPUs. Returns the device."""
    if "WORLD_SIZE" not in os.environ:
        raise RuntimeError("racecar: no torchrun environment (WORLD_SIZE unset); launch with "
                           "torchrun --nproc-per-node N -m racecar_repro.executors ...")
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = "cpu"
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"racecar: local rank {local} but only {torch.cuda.device_count()} GPU(s); start at "
                               "most one process per GPU (--nproc-per-node)")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(x: Tensor, y: Tensor, replicas: int, index: int) -> tuple[Tensor, Tensor]:
    """Replica ``index``'s contiguous ``1/replicas`` of the global batch ``(x, y)``."""
    if len(x) % replicas:
        raise ValueError(f"racecar: a global batch of {len(x)} does not split into {replicas} equal shards; choose "
                         f"a batch size divisible by the number of processes ({replicas})")
    n = len(x) // replicas
    return x[index * n:(index + 1) * n], y[index * n:(index + 1) * n]


def data_parallel(step: nn.Module) -> nn.Module:
    """``step`` (a module whose forward computes a training step's loss) under ``DistributedDataParallel``: its
    backward pass averages the gradients over the replicas. The replicas' buffers are not broadcast (synchronised
    batch norms keep them equal; ``sync_bn=False`` hands rank 0's on after each step: ``broadcast_buffers``)."""
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(step, broadcast_buffers=False, find_unused_parameters=True)


def average(values: Sequence[Tensor | float]) -> list[float]:
    """The scalars ``values`` averaged over the replicas, in one ``all_reduce``."""
    t = torch.stack([torch.as_tensor(v).detach().float().cpu().reshape(()) for v in values])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every replica (pickled; for small things and the resume checkpoint)."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch norms' moving averages) on every replica."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
    for dtype in sorted({b.dtype for b in model.buffers()}, key=str):   # the same order in every process
        bufs = [b for b in model.buffers() if b.dtype == dtype]
        flat = _flatten_dense_tensors(bufs)
        dist.broadcast(flat, 0)
        for b, s in zip(bufs, _unflatten_dense_tensors(flat, bufs)):
            b.copy_(s)


# ------------------------------------------------------------------------------------ synchronised batch norm
_SYNC: dict[str, bool] = {"on": False}


def batch_moments(x: Tensor, shift: Tensor | None = None) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and (biased) variance of ``x`` (channels in dim 1) over the global batch, and the number of
    values per channel: one autograd-aware ``all_reduce`` of the shifted sums when synchronised batch norms are on
    (``synced_batch_norms``), this replica's own moments otherwise. ``shift`` (the moving mean, the same on every
    replica) keeps ``E[(x-c)^2] - E[x-c]^2`` away from cancellation."""
    dims = [0, *range(2, x.dim())]
    if not _SYNC["on"]:
        return x.mean(dims), x.var(dims, unbiased=False), x.numel() // x.shape[1]
    shape = (1, -1, *([1] * (x.dim() - 2)))
    c = (shift.detach() if shift is not None else x.new_zeros(x.shape[1])).to(x.dtype)
    z = x - c.view(shape)
    sums = _AllReduceSum.apply(torch.cat([z.sum(dims), (z * z).sum(dims)]))
    count = values_per_channel(x)
    mean_z = sums[:x.shape[1]] / count
    var = (sums[x.shape[1]:] / count - mean_z * mean_z).clamp_min(0.0)
    return mean_z + c, var, count


def values_per_channel(x: Tensor) -> int:
    """How many values of each channel of ``x`` (channels in dim 1) a batch norm normalises over: the global batch's
    under ``synced_batch_norms``."""
    if not _SYNC["on"]:
        return x.numel() // x.shape[1]
    return x.numel() // x.shape[1] * dist.get_world_size()


class _AllReduceSum(torch.autograd.Function):
    """The sum over the replicas, differentiable: the gradient of every replica's input is the sum of the
    replicas' output gradients."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _AllReduceSum.apply(grad)


class _Synced:
    """Mixed into a batch norm's class while ``synced_batch_norms`` is on: training-mode statistics of the global
    batch (``batch_moments``), the moving averages updated with them as ``nn.BatchNorm`` would."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not (self.training and _SYNC["on"]):
            return super().forward(x)  # type: ignore[misc]
        self._check_input_dim(x)
        mean, var, count = batch_moments(x, self.running_mean)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                factor = self.momentum
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                    if factor is None:
                        factor = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * count / max(count - 1, 1), alpha=factor)
        shape = (1, -1, *([1] * (x.dim() - 2)))
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


@functools.cache
def _synced_class(cls: type) -> type:
    return type(f"Synced{cls.__name__}", (_Synced, cls), {"__module__": __name__})


@contextlib.contextmanager
def synced_batch_norms(model: nn.Module, on: bool = True) -> Iterator[None]:
    """Inside, ``model``'s batch norms (the same objects: state dicts, reverse-pass rules and references to them are
    unchanged) normalise training batches with the global batch's statistics; outside, they are plain again."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if on else []
    classes = [type(m) for m in norms]
    for m, cls in zip(norms, classes):
        m.__class__ = _synced_class(cls)
    before, _SYNC["on"] = _SYNC["on"], bool(on) and active()
    try:
        yield
    finally:
        _SYNC["on"] = before
        for m, cls in zip(norms, classes):
            m.__class__ = cls


@contextlib.contextmanager
def local_statistics() -> Iterator[None]:
    """Inside, synchronised batch norms use this replica's statistics (rank 0's evaluation runs alone)."""
    before, _SYNC["on"] = _SYNC["on"], False
    try:
        yield
    finally:
        _SYNC["on"] = before
