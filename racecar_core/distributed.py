"""One run on several processes (data parallelism), e.g. one per GPU, launched by ``torchrun``.

What ``train.fit`` does when it runs inside a ``torch.distributed`` process group of ``R`` processes (replicas):

- **Batches.** Every replica draws the same global batch (the same seeded permutation and augmentation as one
  process) and keeps its own contiguous ``1/R`` of it; the global batch size must divide by ``R``.
- **Gradients** are averaged by torch's ``DistributedDataParallel`` (``data_parallel``): it wraps a module whose
  forward is the whole loss of a step (forward pass, RR's reverse pass through the same weights, penalties), so its
  hooks see every use of every weight, and the weights a phase leaves unused (Pre's frozen and upper layers) are
  found in the graph (``find_unused_parameters``). The step's loss and logged values are averaged in one more
  ``all_reduce`` (``average``), so every replica sees the global batch's loss and a NaN stops all of them together.
- **Loss terms summed over the batch** (RR's and Pre's reconstruction with ``reduction="sum"``, the official form)
  are multiplied by ``R`` on each replica (``StepInfo.replicas``), so that the average over replicas is the global
  batch's sum; terms averaged over the batch and weight penalties (Ort) need nothing.
- **Batch norm** (stated choice, ``TrainConfig.sync_bn``): synchronised by default: in training mode a batch norm
  normalises with the mean and variance of the global batch (one ``all_reduce`` of per-channel sums forwards, one
  backwards), in the forward pass and where RR's reverse pass re-applies it, and updates its moving averages with
  them. Training is then the same computation as one process with the same global batch (equal to float tolerance:
  tested on the CPU with gloo and 2 processes). This part is hand-written (``synced_batch_norms``), not torch's
  ``nn.SyncBatchNorm``, for two reasons: RR re-applies each batch norm to the *reverse* signal, whose statistics must
  be the global batch's too, through the same module objects that the reverse pass's plan refers to
  (``convert_sync_batchnorm`` makes new ones), and ``nn.SyncBatchNorm`` refuses CPU tensors, so a gloo group (the
  tests, a CPU cluster) could not use it (tests/test_distributed.py shows both). ``sync_bn=False`` normalises each
  replica's shard with its own statistics (cheaper, a different and noisier estimator) and hands rank 0's moving
  averages to all after every step, as DDP's ``broadcast_buffers`` does before each forward.
- **RR's reverse pass** runs per replica on its own shard (it is per sample apart from the batch norms above).
- **Dropout** masks are drawn per replica (rank 0 with one process's seeds, rank r with seeds of its own): with
  dropout, a run on several processes is a different random draw of the same training, not the same numbers.
- **Evaluation, snapshots and checkpoints** are rank 0's: it evaluates, hands the values every replica needs (early
  stopping, the plateau schedule) to the others, and is the only one that writes the run folder; on resume it reads
  the checkpoint and sends it to the others.

The number of replicas is part of a run's config (``TrainConfig.replicas``, in the run-cache key when above 1): a run
trained on 4 processes is not silently reused for a 1-process request, or the other way round.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of replicas (1 without a process group)."""
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This replica's rank (0 without a process group)."""
    import torch.distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env() -> str:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL with one GPU per process (``cuda:LOCAL_RANK``, made the
    current device, so that ``device="cuda"`` means it), gloo on a machine without GPUs. Returns the device."""
    import torch.distributed as dist
    if "WORLD_SIZE" not in os.environ:
        raise RuntimeError("racecar: no torchrun environment (WORLD_SIZE unset); launch with "
                           "torchrun --nproc-per-node N -m racecar_repro.executors ...")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"racecar: local rank {local} but only {torch.cuda.device_count()} GPU(s); start at "
                               "most one process per GPU (--nproc-per-node)")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (if any)."""
    import torch.distributed as dist
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
    import torch.distributed as dist
    t = torch.stack([torch.as_tensor(v).detach().float().cpu().reshape(()) for v in values])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every replica (pickled; for small things and the resume checkpoint)."""
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch norms' moving averages) on every replica."""
    import torch.distributed as dist
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
    import torch.distributed as dist
    return x.numel() // x.shape[1] * dist.get_world_size()


class _AllReduceSum(torch.autograd.Function):
    """The sum over the replicas, differentiable: the gradient of every replica's input is the sum of the
    replicas' output gradients."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        import torch.distributed as dist
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


_CLASSES: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Synced{cls.__name__}", (_Synced, cls), {"__module__": __name__})
    return _CLASSES[cls]


@contextlib.contextmanager
def synced_batch_norms(model: nn.Module, on: bool = True) -> Iterator[None]:
    """Inside, ``model``'s batch norms (the same objects: state dicts, reverse-pass rules and references to them are
    unchanged) normalise training batches with the global batch's statistics; outside, they are plain again."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if on else []
    classes = [type(m) for m in norms]
    for m, cls in zip(norms, classes):
        m.__class__ = _synced_class(cls)
    before = _SYNC["on"]
    _SYNC["on"] = bool(on) and active()
    try:
        yield
    finally:
        _SYNC["on"] = before
        for m, cls in zip(norms, classes):
            m.__class__ = cls


@contextlib.contextmanager
def local_statistics() -> Iterator[None]:
    """Inside, synchronised batch norms use this replica's statistics (rank 0's evaluation runs alone)."""
    before = _SYNC["on"]
    _SYNC["on"] = False
    try:
        yield
    finally:
        _SYNC["on"] = before
