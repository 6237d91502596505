"""The four training methods: Std, RR, Ort and Pre, as what each adds to the loss or to the schedule.

A method turns a model into a list of *phases*; each phase has a number of steps, the parameters its optimiser
trains, the modules that stay frozen (eval mode), and a loss function. Std, RR and Ort have one phase; Pre has one
per weight layer (greedy tied-weight autoencoder pretraining) and then the fine-tuning phase.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reverse

TaskLoss = Callable[[Tensor, Tensor], Tensor]
LossFn = Callable[[nn.Module, Tensor, Tensor, "StepInfo"], tuple[Tensor, Tensor, dict]]


def ce_official(out: Tensor, y: Tensor) -> Tensor:
    """The official scripts' loss: cross-entropy applied to softmax outputs (a double softmax)."""
    return F.cross_entropy(F.softmax(out, dim=1), y)


TASK_LOSSES: dict[str, TaskLoss] = {"ce": F.cross_entropy, "ce_official": ce_official, "mse": F.mse_loss}


def task_loss(name: str) -> TaskLoss:
    """Look up a task loss by name ('ce', 'ce_official', 'mse')."""
    if name not in TASK_LOSSES:
        raise ValueError(f"racecar: unknown task loss {name!r}; choose one of {sorted(TASK_LOSSES)}")
    return TASK_LOSSES[name]


@dataclass
class StepInfo:
    """Where the loop is: global step, step inside the phase, epoch, a generator for the step's randomness, and the
    number of replicas sharing the batch (``racecar_core.distributed``: a loss term *summed* over the batch is
    multiplied by it, ``batch_sum``, so that the replicas' average is the global batch's loss)."""
    step: int
    phase_step: int
    epoch: int
    generator: torch.Generator | None = None
    replicas: int = 1

    def batch_sum(self, term: Tensor) -> Tensor:
        """A loss term summed over this process's batch, scaled to the global batch's sum (see above)."""
        return term if self.replicas == 1 else term * self.replicas


@dataclass
class Phase:
    """One stretch of training: its steps, trainable parameters, frozen modules and loss."""
    name: str
    steps: int
    params: list[nn.Parameter]
    loss: LossFn
    frozen: list[nn.Module] = field(default_factory=list)
    lr_scale: float = 1.0


# ---------------------------------------------------------------- Ort (SRIP)
class PowerStepPenalty(torch.autograd.Function):
    """``sigma_max(A)^2`` by one power-iteration step from ``u``, ``A = V V^T - I`` with ``V`` the weight as [out, rest]
    (``V^T V - I`` when that is smaller): ``|A^2 u|^2 / |A u|^2`` for a unit ``u``, what autograd through
    ``v = Au/|Au|, sigma = |Av|`` gives (equal to 1e-15 in float64). Matrix-free, with the gradient written out:
    7 products with V or V^T and one rank-4 product, where autograd wrote and added 4 full-size rank-1 products (5x
    faster on ResNet-18's weights)."""

    @staticmethod
    def forward(ctx, weight: Tensor, u: Tensor, eps: float = 1e-12) -> Tensor:
        v = weight.reshape(weight.shape[0], -1)
        ctx.wide, ctx.eps, ctx.shape = v.shape[0] <= v.shape[1], eps, weight.shape
        m = v if ctx.wide else v.T
        u = (u / u.norm().clamp_min(eps)).to(m)
        mu = m.T @ u
        a = m @ mu - u
        ma = m.T @ a
        b = m @ ma - a
        na2, nb2 = a @ a, b @ b
        ctx.save_for_backward(m, u, a, b, mu, ma, na2, nb2)
        return nb2 / na2.clamp_min(eps * eps)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        # P = |b|^2/|a|^2, a = Au, b = Aa: dP = alpha b^T dA a + e^T dA u with c = Ab, e = alpha c - beta a, and
        # x^T dA y = <dM, x (M^T y)^T + y (M^T x)^T> for A = M M^T - I
        m, u, a, b, mu, ma, na2, nb2 = ctx.saved_tensors
        d = na2.clamp_min(ctx.eps ** 2)
        mb = m.T @ b
        alpha, beta = 2 / d, torch.where(na2 > ctx.eps ** 2, 2 * nb2 / d ** 2, 0.0)
        e = alpha * (m @ mb - b) - beta * a
        p = torch.stack([b, a, e, u], 1)
        q = torch.stack([alpha * ma, alpha * mb, mu, m.T @ e], 1) * grad
        g = torch.empty(ctx.shape, dtype=m.dtype, device=m.device)    # not a view: autograd sums into it in place
        torch.mm(*((p, q.T) if ctx.wide else (q, p.T)), out=g.view(ctx.shape[0], -1))
        return g, None, None


@torch._disable_dynamo   # torch.compiler.disable, made on the first call: importing torch._dynamo costs 2 s
def start_vectors(sizes: list[int], start: str = "randn", generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Random power-iteration start vectors, drawn in order on the CPU (outside any compiled graph)."""
    draw = torch.randn if start == "randn" else torch.rand
    return [draw(n, generator=generator, dtype=dtype) for n in sizes]


def srip_penalty(model: nn.Module, form: str = "official", generator: torch.Generator | None = None) -> Tensor:
    """Sum over weight layers of ``sigma_max(W^T W - I)^2`` by one power-iteration step; ``official``: the RR authors'
    TF code (randn start vector), ``srip``: the SRIP authors' (rand). The start vectors are drawn first, in layer
    order, so a compiled step has a single graph break."""
    if form not in ("official", "srip"):
        raise ValueError(f"racecar: unknown Ort form {form!r}; use 'official' or 'srip'")
    weights = [m.weight for m in reverse.weight_modules(model)]
    with torch.autocast(weights[0].device.type, enabled=False):  # under bf16 autocast, W W^T - I is rounding noise
        ws = [w.to(torch.promote_types(w.dtype, torch.float32)) for w in weights]
        starts = start_vectors([min(w.shape[0], w[0].numel()) for w in ws], "randn" if form == "official" else "rand",
                               generator, ws[0].dtype)
        return sum(PowerStepPenalty.apply(w, u) for w, u in zip(ws, starts))


def srip_schedule(epoch: int, base: float = 1e-2) -> float:
    """The SRIP authors' CIFAR weight for 0-based ``epoch``: ``base``, then ``base`` x 1e-3 after epoch 20, x 1e-4
    after 50, x 1e-6 after 70, 0 after 120 (their code counts epochs from 1: it is called with ``epoch + 1``)."""
    e = epoch + 1
    if e > 120:
        return 0.0
    for limit, factor in ((70, 1e-6), (50, 1e-4), (20, 1e-3)):
        if e > limit:
            return base * factor
    return base


# ---------------------------------------------------------------- methods
# Each method is a dataclass: its fields are its settings and their defaults the only defaults (the paper's equation
# and the official code: RR's reconstruction summed over the batch with lambda 1e-5, batch norms updated by the
# reverse pass too; Ort the official SRIP form with weight 0.1). A harness states every value it changes.
@dataclass
class Method:
    """Base class: one phase training every parameter on the task loss plus ``regulariser``. ``task``: a loss name
    ('ce', 'ce_official', 'mse') or a function ``(out, y) -> loss``."""
    task: str | TaskLoss = "ce"
    name: ClassVar[str] = "Std"

    def __post_init__(self) -> None:
        self.task_loss = task_loss(self.task) if isinstance(self.task, str) else self.task

    def regulariser(self, model: nn.Module, x: Tensor, info: StepInfo) -> tuple[Tensor, Tensor | None, dict]:
        """The network output, the weighted regulariser (None: none this step) and values to log."""
        return model(x), None, {}

    def _loss(self, model: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> tuple[Tensor, Tensor, dict]:
        out, extra, logs = self.regulariser(model, x, info)
        task = self.task_loss(out, y)
        # no "task + 0" when there is no regulariser: under torch.compile (inductor, torch 2.14) a loss that
        # aliases the task loss, returned beside task.detach(), comes back without a grad_fn
        return task if extra is None else task + extra, out, {"task": task.detach(), **logs}

    def phases(self, model: nn.Module, steps: int) -> list[Phase]:
        """The training schedule for ``model``: a list of phases; the last one trains the task."""
        return [Phase("train", steps, list(model.parameters()), self._loss)]

    def describe(self) -> dict:
        """The method's name and settings (its fields; a task given as a function is left out), for run keys and
        provenance."""
        return {"method": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                        if f.name != "task" or isinstance(self.task, str)}}


@dataclass
class Std(Method):
    """Task loss only."""
    name: ClassVar[str] = "Std"


@dataclass
class RR(Method):
    """Task loss plus ``lam * sum_m ||d_m - d'_m||^2`` of the reverse pass, trained jointly from step 0.

    ``reduction``: the squared errors summed over the batch (the paper's equation and official code) or averaged.
    ``reverse_bn_update=True`` reproduces the official code, whose reverse pass also updates the batch norms'
    moving averages; ``False`` keeps them for the forward pass alone (what deep networks need in eval mode).
    ``pair_weights`` multiply the terms of the reconstruction pairs, bottom layer first (missing ones are 1): e.g.
    ``[255**2]`` keeps the input term of a network fed pixels in [0, 1] at the size it has on raw 0..255 pixels,
    while the terms of batch-normalised hidden layers, which do not depend on the input scale, keep weight 1.
    ``norms="forward"`` re-applies training-mode batch norms with the forward pass's statistics instead of the
    reverse signal's own (see ``reverse.reverse_pass``): for deep bottleneck networks such as ResNet-50.
    """
    lam: float = 1e-5
    mode: reverse.Mode = "full"
    reduction: reverse.Reduction = "sum"
    reverse_bn_update: bool = True
    pair_weights: list[float] | None = None
    norms: reverse.Norms = "batch"
    name: ClassVar[str] = "RR"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norms not in reverse.NORMS:
            raise ValueError(f"racecar: RR's norms must be one of {reverse.NORMS}, got {self.norms!r}")
        if self.mode not in reverse.MODES or self.reduction not in ("sum", "mean"):
            raise ValueError(f"racecar: RR needs a mode of {reverse.MODES} and reduction 'sum' or 'mean', got "
                             f"{self.mode!r}, {self.reduction!r}")
        self.pair_weights = list(self.pair_weights) if self.pair_weights else None

    def phases(self, model: nn.Module, steps: int) -> list[Phase]:
        plan = reverse.training_plan(model)  # traced once per training run (in training mode), not per step

        def loss(model: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> tuple[Tensor, Tensor, dict]:
            out, rec = self.reconstruction(model, x, plan)
            if self.reduction == "sum":
                rec = info.batch_sum(rec)
            task = self.task_loss(out, y)
            return task + self.lam * rec, out, {"task": task.detach(), "rr": rec.detach()}
        return [Phase("train", steps, list(model.parameters()), loss)]

    def reconstruction(self, model: nn.Module, x: Tensor, plan: reverse.Plan | None = None) -> tuple[Tensor, Tensor]:
        """The network output and the (unweighted) reconstruction loss of the reverse pass."""
        trace = reverse.forward_trace(model, x, plan)
        with contextlib.nullcontext() if self.reverse_bn_update else reverse.frozen_norm_statistics(model):
            rec = reverse.reconstruction_loss(reverse.reverse_pass(trace, self.mode, norms=self.norms),
                                              self.reduction, self.pair_weights)
        return trace.output, rec


@dataclass
class Ort(Method):
    """Task loss plus an SRIP orthogonality penalty; constant ``weight`` or the SRIP authors' epoch schedule;
    ``form``: 'official' (the RR authors' code) or 'srip' (the SRIP authors' code; ``srip_penalty``)."""
    weight: float = 0.1
    form: str = "official"
    schedule: bool = False
    name: ClassVar[str] = "Ort"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.form not in ("official", "srip"):
            raise ValueError(f"racecar: unknown Ort form {self.form!r}; use 'official' or 'srip'")

    def regulariser(self, model: nn.Module, x: Tensor, info: StepInfo) -> tuple[Tensor, Tensor | None, dict]:
        out = model(x)
        w = srip_schedule(info.epoch, self.weight) if self.schedule else self.weight
        if w == 0:
            return out, None, {"ort": 0.0}
        pen = srip_penalty(model, self.form, info.generator)
        return out, w * pen, {"ort": pen.detach()}


@dataclass
class Pre(Method):
    """Greedy layer-wise tied-weight autoencoder pretraining (``pre_steps`` per layer), then task fine-tuning.

    While layer m trains, the layers below it are frozen (no optimiser, eval mode, run without gradients); its
    decoder is ``W_m^T`` followed by the lower layer's norm and activation, the map the RR reverse pass uses.
    """
    pre_steps: int = 100
    reduction: reverse.Reduction = "sum"
    pre_lr_scale: float = 1.0
    name: ClassVar[str] = "Pre"

    def phases(self, model: nn.Module, steps: int) -> list[Phase]:
        layers = reverse.layers_of(model)
        widx = [i for i, m in enumerate(layers) if reverse.weight_modules(m)]  # weight layers and blocks
        phases = []
        for k, start in enumerate(widx):
            end = widx[k + 1] if k + 1 < len(widx) else len(layers)
            params = [p for m in layers[start:end] for p in m.parameters()]
            phases.append(Phase(f"pretrain-{k + 1}", self.pre_steps, params,
                                self._ae_loss(nn.Sequential(*layers[:end]), layers[:start], layers[start]),
                                frozen=layers[:start], lr_scale=self.pre_lr_scale))
        phases.append(Phase("finetune", steps, list(model.parameters()), self._loss))
        return phases

    def _ae_loss(self, upto: nn.Sequential, frozen: list[nn.Module], unit: nn.Module) -> LossFn:
        """Unit k's autoencoder: the network up to the next weight layer or block (the layers below frozen, run
        without gradients), reversed through unit k down to its input."""
        plan = reverse.training_plan(upto, frozen)
        inside = {id(m) for m in unit.modules()}
        floor = min(s.index for s in plan.steps if s.call == "module" and id(s.target) in inside)

        def loss(model: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> tuple[Tensor, Tensor, dict]:
            trace = reverse.forward_trace(upto, x, plan, frozen=frozen)
            rec = reverse.reconstruction_loss(reverse.reverse_pass(trace, "full", floor=floor), self.reduction)
            if self.reduction == "sum":
                rec = info.batch_sum(rec)
            return rec, trace.output, {"ae": rec.detach()}
        return loss


METHODS: dict[str, type[Method]] = {"Std": Std, "RR": RR, "Ort": Ort, "Pre": Pre}


def make_method(name: str, **settings) -> Method:
    """Build a method by name ('Std', 'RR', 'Ort', 'Pre') with its keyword settings (the fields of its class)."""
    if name not in METHODS:
        raise ValueError(f"racecar: unknown method {name!r}; choose one of {list(METHODS)}")
    known = {f.name for f in dataclasses.fields(METHODS[name])}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"racecar: {name} has no setting(s) {unknown}; its settings: {sorted(known)}")
    return METHODS[name](**settings)
