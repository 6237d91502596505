"""The one training loop: seeded, logged, checkpointed, resumable, NaN-guarded.

Every source of randomness is a function of ``(seed, step)``: mini-batches come from a per-epoch permutation
seeded by ``(seed, epoch)`` and the step's own randomness (dropout, SRIP start vectors) from a generator seeded by
``(seed, step)``. A run resumed from a checkpoint therefore gives the same numbers on the CPU as one that never
stopped.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import distributed
from .files import DamagedFile, load_checked, save_checked, set_aside, write_json
from .methods import LossFn, Method, Phase, StepInfo


class DamagedCheckpointWarning(RuntimeWarning):
    """A run's checkpoint was damaged; the run starts again from step 0."""


_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("racecar_progress_label", default=None)


@contextlib.contextmanager
def progress_label(label: str):
    """Name the progress bars of the ``fit`` calls inside (the grid runner: ``"RR/seed0"``); without it a bar is
    named after its method. Display only: no run's cache key depends on it."""
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)


@dataclass
class TrainConfig:
    """Optimiser and loop settings (plain values, so a run's config hashes and prints)."""
    steps: int
    lr: float = 1e-4
    optimizer: str = "adam"
    batch_size: int | None = None          # None: full batch
    momentum: float = 0.9
    beta1: float = 0.9                     # Adam's first-moment decay (DCGAN: 0.5)
    weight_decay: float = 0.0
    decay_kernels_only: bool = False       # weight decay on weight matrices / kernels only, not biases or norms
    milestones: list[int] = field(default_factory=list)   # steps at which lr is multiplied by gamma
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    eval_every: int = 100
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"
    amp: bool = False                      # bf16 autocast (CUDA only; ignored on the CPU)
    channels_last: bool = False            # NHWC memory format for conv nets (CUDA)
    compile: bool | str = False            # torch.compile each phase's loss (forward, reverse pass, penalty);
                                           # a string names the backend ("inductor" is True's; "aot_eager" checks)
    progress: bool = True
    early_stop: str | None = None          # an evaluate() key, lower is better: stop when it stops improving
    patience: int = 5                      # evaluations without improvement before stopping (best weights kept)
    min_delta: float = 0.0                 # an improvement of the early_stop key must exceed this
    plateau_patience: int = 0              # > 0: multiply the lr by plateau_factor after this many evaluations
    plateau_factor: float = 0.2            #   without improvement of early_stop (Keras's ReduceLROnPlateau),
    plateau_min_lr: float = 0.0            #   never below plateau_min_lr
    replicas: int = 1                      # processes sharing each batch (torchrun; racecar_core.distributed)
    sync_bn: bool = True                   #   with replicas > 1: batch norms use the global batch's statistics

    def describe(self) -> dict[str, Any]:
        """The settings that identify a run (for run-cache keys): all but ``progress``, ``compile`` when off, the
        data-parallel settings when the run has one replica, and ``beta1`` at its default (the keys of older runs)."""
        return {k: v for k, v in asdict(self).items() if k != "progress" and not (k == "compile" and not v)
                and not (k in ("replicas", "sync_bn") and self.replicas == 1) and not (k == "beta1" and v == 0.9)}


def reduce_on_plateau(cfg: TrainConfig, state: dict[str, Any], value: float) -> None:
    """Keras's ReduceLROnPlateau on ``state["lr_scale"]``: after ``cfg.plateau_patience`` evaluations without an
    improvement of more than ``cfg.min_delta``, multiply the learning rate by ``cfg.plateau_factor`` (not below
    ``cfg.plateau_min_lr``) and start counting again."""
    p = state.get("plateau") or {"best": None, "wait": 0}
    if p["best"] is None or value < p["best"] - cfg.min_delta:
        p = {"best": value, "wait": 0}
    else:
        p["wait"] += 1
        if p["wait"] >= cfg.plateau_patience:
            floor = cfg.plateau_min_lr / cfg.lr if cfg.lr else 0.0
            state["lr_scale"] = max(state.get("lr_scale", 1.0) * cfg.plateau_factor, floor)
            p["wait"] = 0
    state["plateau"] = p


def stream_seed(seed: int, index: int, stream: str) -> int:
    """The seed of draw ``index`` (a step or an epoch) of the random stream ``stream`` of run ``seed``: hashed, so
    that no two streams, indices or run seeds share a sequence (offsets like ``seed * K + step`` would)."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TensorBatches:
    """Mini-batches of in-memory tensors; the order of epoch ``e`` is a permutation seeded by ``(seed, e)``."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int | None, seed: int,
                 transform: Callable[[Tensor, torch.Generator], Tensor] | None = None):
        if len(x) != len(y):
            raise ValueError(f"racecar: {len(x)} inputs but {len(y)} targets")
        self.x, self.y, self.seed, self.transform = x, y, seed, transform
        self.batch_size = len(x) if batch_size is None else min(batch_size, len(x))
        self.steps_per_epoch = len(x) // self.batch_size
        self._order: tuple[int, Tensor] | None = None

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The batch of global step ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self.batch_size == len(self.x):  # full batch: the data themselves, in order (no copy)
            x, y = self.x, self.y
        else:
            if self._order is None or self._order[0] != epoch:
                g = torch.Generator().manual_seed(stream_seed(self.seed, epoch, "order"))
                self._order = (epoch, torch.randperm(len(self.x), generator=g))
            idx = self._order[1][i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.x[idx], self.y[idx]
        if self.transform is not None:
            x = self.transform(x, torch.Generator().manual_seed(stream_seed(self.seed, step, "augment")))
        return x, y


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` for ``params``: Adam (its fused kernel where the parameters allow) or SGD."""
    groups: Any = params
    if cfg.decay_kernels_only and cfg.weight_decay:  # e.g. Keras's kernel_regularizer: no decay on biases and norms
        groups = [{"params": [p for p in params if p.dim() > 1]},
                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adam":  # the fused kernel: one call per step instead of one per parameter
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, 0.999), weight_decay=cfg.weight_decay,
                                fused=all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"racecar: unknown optimizer {cfg.optimizer!r}; use 'adam' or 'sgd'")


def seed_step(seed: int, device: str) -> None:
    """Seed the global generators (dropout and other global draws) of one step: the CPU one, and the GPU's when the
    run is on one. ``torch.manual_seed`` would also queue a CUDA seeding call with a stack trace on a machine where
    CUDA was never initialised, which costs more than a small network's whole step."""
    torch.default_generator.manual_seed(seed)
    if device.startswith("cuda"):
        with torch.cuda.device(torch.device(device)):   # the run's GPU ("cuda:1"), not only the current one
            torch.cuda.manual_seed(seed)


def learning_rate(cfg: TrainConfig, phase_step: int) -> float:
    """Warm-up, then step decay by ``gamma`` at each milestone."""
    if phase_step < cfg.warmup_steps:
        return cfg.warmup_lr
    return cfg.lr * cfg.gamma ** sum(phase_step >= m for m in cfg.milestones)


def compiled_loss(phase: Phase, backend: bool | str):
    """``phase.loss`` itself (``backend`` False), or compiled with ``torch.compile`` (True: inductor)."""
    return torch.compile(phase.loss, backend="inductor" if backend is True else backend) if backend else phase.loss


def pretraining_steps(phases: list[Phase]) -> int:
    """The steps before the last (task) phase: Pre's pretraining, 0 for one-phase methods. A record at global step
    ``s`` lies ``s - pretraining_steps(phases)`` steps into the task."""
    return sum(p.steps for p in phases[:-1])


def _locate(phases: list[Phase], step: int) -> tuple[int, int]:
    for k, ph in enumerate(phases):
        if step < ph.steps:
            return k, step
        step -= ph.steps
    return len(phases) - 1, phases[-1].steps


class StepLoss(nn.Module):
    """``model`` with a training step's loss as its forward: what ``DistributedDataParallel`` wraps, so that its
    gradient hooks see the forward pass, RR's reverse pass and the penalties alike (``racecar_core.distributed``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, loss: LossFn, x: Tensor, y: Tensor, info: StepInfo) -> tuple[Tensor, Any, dict]:
        return loss(self.model, x, y, info)


def backward_step(model: nn.Module, phase: Phase, loss: LossFn, x: Tensor, y: Tensor, info: StepInfo,
                  amp: bool = False, ddp: nn.Module | None = None) -> tuple[Tensor, dict]:
    """The gradient half of one training step, as ``fit`` takes it: the model in training mode (the phase's frozen
    modules in eval mode), the phase's loss (``loss``: ``phase.loss`` or its compiled form, ``compiled_loss``; under
    bf16 autocast with ``amp``; through ``ddp``, the model's ``StepLoss`` under ``DistributedDataParallel``, when
    there are replicas), gradients cleared and computed. Returns the loss and the values to log; the caller steps its
    optimiser (``fit`` first checks the loss is finite; the benchmarks time this and the step)."""
    model.train()
    for m in phase.frozen:
        m.eval()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        value, _, logs = ddp(loss, x, y, info) if ddp is not None else loss(model, x, y, info)
    model.zero_grad(set_to_none=True)
    value.backward()
    return value, logs


def check_input_shape(model: nn.Module, x: Tensor) -> None:
    """Fail early, with the shapes named, when the model cannot take inputs like ``x``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as e:
        raise ValueError(f"racecar: the model cannot take inputs of shape {tuple(x.shape[1:])} (per sample): {e}. "
                         "Check the data set against the model's first layer.") from e
    finally:
        model.train(was_training)


def fit(model: nn.Module, method: Method, data: TensorBatches, cfg: TrainConfig, run_dir: str | Path | None = None,
        evaluate: Callable[[nn.Module, int], dict] | None = None,
        snapshot: Callable[[nn.Module, int], dict] | None = None, log_every: int = 1) -> dict[str, Any]:
    """Train ``model`` with ``method``; returns ``{"log", "evals", "snapshots", "steps", "task_offset", ...}``.

    ``evaluate(model, step)`` returns scalar metrics and ``snapshot(model, step)`` returns tensors to keep; both run
    at the start, every ``cfg.eval_every`` task steps (and at the end) with the model in eval mode, and their records
    carry the global ``step`` and the ``task_step`` (steps into the task phase: ``step - task_offset``, negative during
    Pre's pretraining). The task steps are counted from the end of pretraining, so every method is evaluated after
    the same numbers of task steps (Pre also at multiples of ``eval_every`` before them, and at task step 0). A
    non-finite early-stopping metric stops the run with ``FloatingPointError``, like a non-finite loss. With a
    ``run_dir`` the loop checkpoints every ``cfg.checkpoint_every`` steps (with ``progress.json``: steps done, steps
    in all, seconds, for a cluster's status table) and resumes from ``run_dir/checkpoint.pt`` if present.
    """
    replicas, rank = distributed.world_size(), distributed.rank()
    if cfg.replicas != replicas:
        raise ValueError(f"racecar: this run is set up for {cfg.replicas} replica(s) but runs in "
                         f"{replicas} process(es); launch it with torchrun --nproc-per-node {cfg.replicas} "
                         "(make figures EXECUTOR=torchrun WORKERS=N; racecar_core.distributed)")
    lead = rank == 0                       # evaluates, snapshots, writes the run folder and the progress bar
    model.to(cfg.device)
    fmt = torch.channels_last if cfg.channels_last and cfg.device.startswith("cuda") else torch.contiguous_format
    model.to(memory_format=fmt)
    use_amp = cfg.amp and cfg.device.startswith("cuda")
    phases = method.phases(model, cfg.steps)
    total = sum(p.steps for p in phases)
    task_offset = pretraining_steps(phases)
    run_dir = Path(run_dir) if run_dir is not None else None
    state: dict[str, Any] = {"step": 0, "log": [], "evals": [], "snapshots": [], "wall_time": 0.0,
                             "best": None, "stopped_early": False, "lr_scale": 1.0, "plateau": None}
    opt, opt_phase = None, -1
    losses = [compiled_loss(ph, cfg.compile) for ph in phases]
    ckpt = run_dir / "checkpoint.pt" if run_dir else None
    saved = None
    if lead and ckpt is not None and ckpt.exists():
        try:
            saved = load_checked(ckpt, map_location=cfg.device if replicas == 1 else "cpu")
        except DamagedFile as exc:
            moved = set_aside(ckpt)
            warnings.warn(f"racecar: {exc}; set aside as {moved.name}, training from the start",
                          DamagedCheckpointWarning, stacklevel=2)
    if replicas > 1 and ckpt is not None:  # rank 0's reading of the checkpoint, on every replica
        saved = distributed.broadcast_object(saved)
        if saved is not None:
            saved = _to_device(saved, cfg.device)
    if saved is not None:
        model.load_state_dict(saved["model"])
        state = saved["state"]
        if lead:   # said in the job's log: a requeued or restarted job goes on where it stopped
            print(f"racecar: resumed {run_dir} from its checkpoint at step {state['step']} of {total}",
                  file=sys.stderr, flush=True)
        if saved["optimizer"] is not None:  # the optimiser of the phase that was running when it was saved
            opt_phase = saved["opt_phase"]
            opt = make_optimizer(cfg, phases[opt_phase].params)
            opt.load_state_dict(saved["optimizer"])

    def checkpoint() -> None:
        if ckpt is None or not lead:
            return
        blob = {"model": model.state_dict(), "optimizer": opt.state_dict() if opt else None, "opt_phase": opt_phase,
                "state": state}
        save_checked(ckpt, blob)   # then metrics.json, the run's one log: the loss log and the evaluations so far
        write_json(run_dir / "metrics.json", {"steps": state["log"], "evals": state["evals"]})
        write_json(run_dir / "progress.json", {"step": state["step"], "steps": total, "wall_time": state["wall_time"],
                                               "time": time.time()})

    def observe(step: int) -> None:
        _observe(step)
        if state.get("failed"):        # on every replica at once (rank 0 found it and sent it)
            raise FloatingPointError(state["failed"])

    def _observe(step: int) -> None:
        if not lead:                   # rank 0 evaluates and sends what steers the loop
            state.update(distributed.broadcast_object(None))
            return
        model.eval()
        with torch.no_grad(), distributed.local_statistics():
            if evaluate is not None:
                state["evals"].append({"step": step, "task_step": step - task_offset,
                                       **{k: float(v) for k, v in evaluate(model, step).items()}})
                if cfg.early_stop is not None and _locate(phases, step)[0] == len(phases) - 1:  # not in pretraining
                    value = state["evals"][-1][cfg.early_stop]
                    if not math.isfinite(value):   # NaN never compares: it would stop the run on its first weights
                        state["failed"] = (
                            f"racecar: the early-stopping metric {cfg.early_stop!r} is {value} at step {step}; the "
                            "model's outputs are not finite: lower the learning rate or the regulariser weight. "
                            f"Last checkpoint: {ckpt if ckpt else 'none (no run_dir)'}")
                    elif state["best"] is None or value < state["best"]["value"] - cfg.min_delta:
                        state["best"] = {"value": value, "step": step,
                                         "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                    elif (step - state["best"]["step"]) >= cfg.patience * cfg.eval_every:
                        state["stopped_early"] = True
                    if cfg.plateau_patience > 0 and not state.get("failed"):
                        reduce_on_plateau(cfg, state, value)
            if snapshot is not None:
                snap = snapshot(model, step)
                state["snapshots"].append({"step": step, "task_step": step - task_offset,
                                           **{k: v.detach().cpu() for k, v in snap.items()}})
        if replicas > 1:
            distributed.broadcast_object({k: state.get(k) for k in ("stopped_early", "lr_scale", "plateau", "failed")})

    check_input_shape(model, data.batch(0)[0][:2].to(cfg.device))
    ddp = distributed.data_parallel(StepLoss(model)) if replicas > 1 else None
    with distributed.synced_batch_norms(model, replicas > 1 and cfg.sync_bn):
        if state["step"] == 0 and not state["evals"]:
            observe(0)
        bar = _progress_bar(total, state["step"], cfg.progress and lead, _LABEL.get() or method.name)
        t0 = time.perf_counter() - state["wall_time"]
        while state["step"] < total and not state["stopped_early"]:
            step = state["step"]
            k, pstep = _locate(phases, step)
            phase = phases[k]
            if k != opt_phase:
                opt, opt_phase = make_optimizer(cfg, phase.params), k
            for g in opt.param_groups:
                g["lr"] = learning_rate(cfg, pstep) * phase.lr_scale * state.get("lr_scale", 1.0)
            # dropout and other global draws (each replica its own: rank 0 draws what one process would)
            seed_step(stream_seed(cfg.seed, step, "step" if rank == 0 else f"step/replica{rank}"), cfg.device)
            gen = torch.Generator().manual_seed(stream_seed(cfg.seed, step, "method"))  # e.g. SRIP start vectors
            x, y = data.batch(pstep)
            if replicas > 1:                                              # this replica's share of the global batch
                x, y = distributed.shard(x, y, replicas, rank)
            x, y = x.to(cfg.device), y.to(cfg.device)
            if x.dim() == 4:
                x = x.contiguous(memory_format=fmt)
            info = StepInfo(step, pstep, pstep // data.steps_per_epoch, gen, replicas)
            loss, logs = backward_step(model, phase, losses[k], x, y, info, use_amp, ddp)
            if replicas > 1:   # gradients averaged by DDP; the loss and logged values over the replicas
                loss_value, *values = distributed.average([loss, *logs.values()])
                logs = dict(zip(logs, values))
            else:
                loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"racecar: {method.name} loss is {loss_value} at step {step} (phase {phase.name}); lower the "
                    "learning rate or the regulariser weight. Last checkpoint: "
                    f"{ckpt if ckpt else 'none (no run_dir)'}")
            opt.step()
            if replicas > 1 and not cfg.sync_bn:    # rank 0's moving averages everywhere (DDP's broadcast_buffers)
                distributed.broadcast_buffers(model)
            state["step"] = step + 1
            if step % log_every == 0 or state["step"] == total:
                state["log"].append({"step": step, "phase": phase.name, "lr": opt.param_groups[0]["lr"],
                                     "loss": loss_value, **{k2: float(v) for k2, v in logs.items()}})
            bar.update(1)
            state["wall_time"] = time.perf_counter() - t0
            if (state["step"] - task_offset) % cfg.eval_every == 0 or state["step"] == total:  # on task steps
                observe(state["step"])
            if ckpt is not None and (state["step"] % cfg.checkpoint_every == 0 or state["step"] == total):
                checkpoint()
        bar.close()
    if state["stopped_early"] and run_dir is not None:
        checkpoint()
    best = state["best"]["model"] if state["best"] is not None else None
    out = {"log": state["log"], "evals": state["evals"], "snapshots": state["snapshots"],
           "steps": state["step"], "task_offset": task_offset, "wall_time": state["wall_time"], "config": asdict(cfg),
           "best_step": state["best"]["step"] if state["best"] else None, "stopped_early": state["stopped_early"]}
    if replicas > 1:  # every replica hands back rank 0's records (and its best weights)
        out, best = distributed.broadcast_object((out, _to_device(best, "cpu")) if lead else None)
        best = _to_device(best, cfg.device) if best is not None else None
    if best is not None:  # early stopping: hand back the best weights seen
        model.load_state_dict(best)
    return out


def _progress_bar(total: int, initial: int, show: bool, label: str) -> Any:
    """A tqdm bar when ``show`` and tqdm is installed (it is optional: the core needs torch and numpy only)."""
    if show:
        try:
            from tqdm import tqdm
        except ImportError:
            show = False
    if not show:
        return SimpleNamespace(update=lambda n: None, close=lambda: None)
    return tqdm(total=total, initial=initial, desc=label, mininterval=1.0)


def _to_device(obj: Any, device: str) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj
