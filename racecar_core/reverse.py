"""The reverse pass of RR ("racecar") training, on any traceable PyTorch network, and its loss.

**Plan.** A model is traced once with ``torch.fx`` (``plan_of``; re-planned when its modules change) into a graph
of steps. Every module with a reverse rule (``racecar_core.rules``: Linear, Conv, BatchNorm, ReLU, pooling, ...)
stays one step; other modules (a torchvision ``BasicBlock``, a U-Net stage) are traced through, and one that fx
cannot trace (data-dependent control flow) becomes one step, which then needs a rule. Each step has a role:
``weight`` (an affine map; the reverse applies its transpose to the signal minus the bias), ``pointwise`` (a norm or
activation: re-applied forwards), ``shape`` (a linear data move: flatten, view, permute, pooling, padding,
interpolation, cat, slicing; the reverse applies its adjoint), ``join`` (a sum of tensors, a residual connection),
``scale`` (a product with a number), ``product`` (a product of two signals, below).

**Walk (full mode, the paper).** The signal starts at the network output and runs down the graph in reverse
topological order; a value used by several steps (a fan-out) receives the sum of what comes back from each. The
rule of the official MLP code, ``d'_m = f_{m-1}(N_{m-1}(W_m^T (d'_{m+1} - b_m)))``, generalises as follows:

1. A weight step sends ``W^T (y - b)`` to its input; the signal is now *armed*: it reconstructs something.
2. A shape step sends its adjoint to its input(s) (a cat splits the signal); a scale step scales it.
3. A chain of pointwise steps (norms and activations applied one after another, each value used once) is *the lower
   layer's norm and activation* of whatever reads the chain's output. An armed signal that reaches the chain's
   output is passed through the whole chain forwards, in forward order; it now reconstructs the chain's output.
   Pointwise steps with no weight step below them (on the raw input) belong to no layer: the walk ends there.
   An unarmed signal passes pointwise steps unchanged (above the top weight layer the official walk starts from
   the output and does not undo the last norm or activation).
4. The walk ends a segment at the output of a weight step, of a join, at the network input and where pointwise
   steps belong to no layer: an armed signal arriving there gives one *pair* ``(d, d')``, with ``d`` the forward
   value at the place the signal reconstructs: the output of the lowest pointwise chain it passed, else the input
   of the lowest shape step, else the value itself. An armed signal that passed a chain and meets a shape, scale or
   product step (``relu(max_pool(conv(x)))``) takes its pair there, at the chain's output (one space), and walks on
   without one until it passes another chain.
5. A join (``a + b``) sends its (unarmed) signal unchanged to every summand, reduced to each summand's shape. Its
   own pair is taken at its output: each summand receives the signal of the *sum*, not a reconstruction of itself.
6. Where signals meet at a fan-out, an armed signal that already passed a chain above the meeting point takes its
   pair first; the rest are summed and walk on together. So a ResNet block input ``x = relu(s)``, read by the block's
   first convolution and by its shortcut, is reconstructed as ``relu(conv1^T(...) + shortcut^T(y))``, exactly the
   nested-Sequential rule of the earlier code.

7. A product of two signals is linear in one factor when the other is *held* at its forward value, as the walk
   already holds the forward pass's batch statistics and dropout masks. The walk holds a *gate* (the output of a
   sigmoid, hard sigmoid or softmax, possibly reshaped or passed through dropout: squeeze-and-excitation,
   GLU-like gates, attention weights) and sends the signal into the other factor, times the gate (a matmul: its
   exact adjoint with the gate fixed). ``scaled_dot_product_attention`` and ``nn.MultiheadAttention`` (one weight
   step, its per-head weights recorded by the forward trace) hold their attention weights and carry the values:
   ``x' = W_v^T (A^T (W_o^T y))``; the query and key projections receive no signal and take no pair. Swin's
   window attention (one opaque call) is one weight step that holds every softmax output of its call.
   A product with no gate or two (``a * b`` of two layers' outputs, ``x * x``) is an error if the walk reaches it.

One pair per segment: an MLP gets one per layer, a CIFAR ResNet one per block input, one per block-internal
convolution and one at the network input; a U-Net's cat sends the pieces of an armed signal to both the skip and
the upsampled path, each taking its own pair. ``local``: each weight step reconstructs its own input from its own
output, ``W^T W d``; ``local_padded``: as local, but a layer that pads its input itself (``racecar_padded_pair``, the
periodic convolution) reconstructs the padded input (the authors' WeatherBench draft).

Adding an operation is one call (``register_affine``, ``register_weight``, ``register_pointwise``,
``register_shape``, ``register_function``); an operation without a rule is an error that names it and that call.
"""
from __future__ import annotations

import copy
import operator
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import batch_moments, values_per_channel
from .rules import (DROPOUT, FMAXPOOL, GATE_FUNCTIONS, GATE_MODULES, MAXPOOL, STOCHASTIC_DEPTH,  # noqa: F401
                    FunctionRule, apply_dropout, attention_adjoint, attention_forward, conv_transpose, dropout_mask,
                    function_name, function_rule, held_softmax_forward, holds_softmax, is_weight_leaf, known_role,
                    linear_vjp, maxpool_adjoint, maxpool_forward, register_affine, register_function,
                    register_pointwise, register_shape, register_weight, role, stochastic_depth_mask, subtract_bias,
                    transpose, vjp_transpose, weight_modules)

Mode = Literal["full", "local", "local_padded"]
MODES = ("full", "local", "local_padded")
Norms = Literal["batch", "forward"]
NORMS = ("batch", "forward")
Reduction = Literal["sum", "mean"]
_NON_TENSOR_METHODS = {"size", "dim", "numel", "stride", "is_contiguous", "element_size", "nelement"}


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Ref:
    """A reference to the value of step ``index`` inside a step's arguments."""
    index: int


@dataclass
class Step:
    """One node of the traced graph, resolved for the walk."""
    index: int
    name: str
    op: str                 # input, output, weight, pointwise, shape, join, scale, product; const (parameters,
                            # buffers and what is computed from them alone), value (a non-tensor): no reverse signal
    call: str               # module, function, method, attr, input, output
    target: Any             # the module, the function, the method's name, or (owner module, attribute)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: list[int] = field(default_factory=list)   # the steps whose reverse signal this step carries, in order
    users: int = 0          # how many signal-carrying steps read this step's value
    weight_below: bool = False
    chain: tuple[int, ...] = ()   # pointwise: the chain this step tops, bottom step first
    base: int = -1                # pointwise: the input of the chain's bottom step
    plain: Any = None             # pointwise module: a copy that does not work in place (for the reverse pass)
    held: tuple[int, ...] | None = None   # product: the factors held at their forward values (None: unresolved)
    records: str = ""             # a function whose forward draw or picks the reverse pass re-uses: "maxpool", "depth"


@dataclass
class Plan:
    """A model's steps in topological order, resolved once (``plan_of``)."""
    steps: list[Step]
    output: int
    signature: tuple

    @property
    def weights(self) -> list[Step]:
        """The weight steps, in forward order."""
        return [s for s in self.steps if s.op == "weight"]

    def step_of(self, m: nn.Module) -> Step:
        """The (first) step that calls module ``m``."""
        for s in self.steps:
            if s.call == "module" and s.target is m:
                return s
        raise KeyError(f"racecar: the plan has no step calling {type(m).__name__}")

    def describe(self) -> str:
        """One line per step: index, role, what it calls, the steps it reads (for reading a plan)."""
        def what(s: Step) -> str:
            return type(s.target).__name__ if s.call == "module" else (
                function_name(s.target) if s.call in ("function", "method") else s.call)
        return "\n".join(f"{s.index:4d} {s.op:9s} {what(s):28s} <- {s.inputs}" for s in self.steps)


class _Tracer(fx.Tracer):
    """Keeps every module with a reverse rule as one step, traces into the others, and makes a module that fx cannot
    trace into one step (a leaf) instead of failing."""

    def __init__(self):
        super().__init__()
        self.untraceable: dict[str, str] = {}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if known_role(m) is not None or qualname in self.untraceable:
            return True
        return super().is_leaf_module(m, qualname) and not isinstance(m, nn.ModuleList | nn.ModuleDict)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        qualname = self.path_of_module(m)
        if self.is_leaf_module(m, qualname):
            return self.create_proxy("call_module", qualname, args, kwargs)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as e:  # noqa: BLE001  data-dependent control flow, an unsupported python construct
            self.untraceable[qualname] = f"{type(e).__name__}: {e}"
            return self.create_proxy("call_module", qualname, args, kwargs)


def _signature(model: nn.Module) -> tuple:
    """The modules and their modes: fx bakes ``self.training`` into functional calls (``F.dropout(...,
    training=self.training)``) and Python branches, so a plan holds for the modes it was traced in."""
    return tuple((name, id(m), m.training) for name, m in model.named_modules())


def _refs(obj: Any, index: dict[fx.Node, int]) -> Any:
    if isinstance(obj, fx.Node):
        return Ref(index[obj])
    if isinstance(obj, list):          # fx's immutable_list: a plain list, which torch.compile can trace
        return [_refs(o, index) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_refs(o, index) for o in obj)
    if isinstance(obj, dict):
        return {k: _refs(v, index) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(_refs(obj.start, index), _refs(obj.stop, index), _refs(obj.step, index))
    return obj


def _ref_list(obj: Any) -> list[int]:
    """The step indices referenced in ``obj``, in argument order, repeats kept."""
    if isinstance(obj, Ref):
        return [obj.index]
    if isinstance(obj, (list, tuple)):
        return [i for o in obj for i in _ref_list(o)]
    if isinstance(obj, dict):
        return [i for o in obj.values() for i in _ref_list(o)]
    return []


def _no_rule_error(what: str, where: str, hint: str) -> TypeError:
    return TypeError(f"racecar: no reverse rule for {what} (at {where!r} in the traced model). {hint}")


def _classify(model: nn.Module, node: fx.Node, tensor: dict[int, bool], const: set[int], index: dict[fx.Node, int],
              untraceable: dict[str, str]) -> Step:
    args, kwargs = _refs(node.args, index), _refs(node.kwargs, index)
    i = index[node]
    refs = [j for j in _ref_list(args) + _ref_list(kwargs) if tensor[j]]
    step = Step(i, node.name, "value", node.op, node.target, args, kwargs)
    if node.op == "placeholder":
        step.op, step.call = "input", "input"
    elif node.op == "output":
        step.op, step.inputs = "output", refs
    elif node.op == "get_attr":
        owner, _, attr = node.target.rpartition(".")
        step.op, step.call, step.target = "const", "attr", ((model.get_submodule(owner) if owner else model), attr)
    elif node.op == "call_module":
        m = model.get_submodule(node.target)
        step.target, step.call = m, "module"
        if refs and all(j in const for j in refs):          # a layer on parameters or buffers alone (Swin V2's
            const.add(i)                                     # bias MLP on its coordinate table): no signal
            step.op = "const"
            return step
        r = known_role(m)
        if r is None:
            name = type(m).__name__
            why = (f" torch.fx could not trace into it ({untraceable[node.target]})." if node.target in untraceable
                   else "")
            raise _no_rule_error(f"layer {name}", node.target,
                                 f"{why} If it is affine (a linear map plus a bias), one call registers it: "
                                 f"racecar_core.reverse.register_affine({name}); a norm or activation: "
                                 f"register_pointwise({name}); a layer that only moves numbers: register_shape({name}, "
                                 "adjoint). Or give the module a racecar_transpose(y, input_shape) or "
                                 "racecar_adjoint(y, input_shape) method.")
        step.op, step.inputs = r, refs[:1]
        if isinstance(m, nn.MultiheadAttention):             # the value input carries (the weights are held)
            value = args[2] if len(args) > 2 else kwargs.get("value")
            step.inputs = [value.index] if isinstance(value, Ref) else []
        if r == "pointwise" and getattr(m, "inplace", False):
            step.plain = copy.copy(m)
            step.plain.inplace = False
    else:  # call_function, call_method
        step.call = "function" if node.op == "call_function" else "method"
        if not any(tensor[j] for j in _ref_list(args) + _ref_list(kwargs)) or (
                node.op == "call_method" and node.target in _NON_TENSOR_METHODS) or node.target is getattr:
            return step                                      # a size, a shape, arithmetic on numbers: no signal
        if all(j in const for j in refs):                    # computed from parameters or buffers alone
            const.add(i)
            step.op = "const"
            return step
        rule = function_rule(node.target)
        if rule is None:
            fn = function_name(node.target)
            raise _no_rule_error(fn, node.name, f"Declare it with racecar_core.reverse.register_function("
                                 f"{fn if node.op == 'call_function' else repr(node.target)}, 'pointwise' or "
                                 "'shape', adjoint=None); 'shape' means linear in its tensor inputs (the exact generic "
                                 "adjoint is used unless you give one).")
        signal = [j for j in refs if j not in const]
        step.op = rule.role
        step.records = ("maxpool" if node.target in FMAXPOOL else
                        "depth" if function_name(node.target) == STOCHASTIC_DEPTH else "")
        if rule.role == "pointwise":
            step.inputs = refs[:1]
        elif rule.role in ("join", "scale") and len(signal) < 2:
            step.op, step.inputs = "scale", signal     # with a number, a parameter or a buffer: x + b, a * x, -x
        elif rule.role == "scale":
            step.op, step.inputs = "product", signal     # which factor is held: make_plan (_hold), from the graph
        else:
            step.inputs = refs if rule.role == "shape" else signal   # a cat's adjoint needs its constant pieces too
    return step


def make_plan(model: nn.Module) -> Plan:
    """Trace ``model`` with torch.fx and resolve every step's role, inputs, users and pointwise chain."""
    root = model if known_role(model) is None else nn.Sequential(model)
    tracer = _Tracer()
    graph = tracer.trace(root)
    nodes = list(graph.nodes)
    out_node = next(n for n in nodes if n.op == "output")
    needed, todo = set(), [out_node]
    while todo:                                  # drop what the output does not depend on (e.g. a failed trace)
        n = todo.pop()
        if n not in needed:
            needed.add(n)
            todo.extend(n.all_input_nodes)
    nodes = [n for n in nodes if n in needed or n.op == "placeholder"]
    if sum(n.op == "placeholder" for n in nodes) != 1:
        raise TypeError("racecar: the reverse pass needs a model with exactly one input tensor")
    index = {n: i for i, n in enumerate(nodes)}
    tensor: dict[int, bool] = {}
    const = {index[n] for n in nodes if n.op == "get_attr"}   # parameters and buffers: no reverse signal
    steps: list[Step] = []
    for n in nodes:
        step = _classify(root, n, tensor, const, index, tracer.untraceable)
        tensor[index[n]] = step.op != "value"
        steps.append(step)
    out = steps[-1]
    if len(out.inputs) != 1 or not isinstance(out.args[0], Ref):
        raise TypeError("racecar: the reverse pass starts from one output tensor; this model returns "
                        f"{type(out_node.args[0]).__name__}. Wrap it so that forward returns the tensor to reverse.")
    for s in steps:
        if s.op == "product":
            _hold(s, steps)
    for s in steps:
        for j in s.inputs:
            steps[j].users += 1
        s.weight_below = any(steps[j].op == "weight" or steps[j].weight_below for j in s.inputs)
    for s in steps:
        if s.op == "pointwise":
            chain, j = [s.index], s.inputs[0]
            while steps[j].op == "pointwise" and steps[j].users == 1:
                chain.insert(0, j)
                j = steps[j].inputs[0]
            s.chain, s.base = tuple(chain), j
    if not any(s.op == "weight" for s in steps):
        raise ValueError("racecar: the model has no weight layer (Linear, Conv, ...) to reverse")
    return Plan(steps, out.args[0].index, _signature(model))


def _is_gate(steps: list[Step], j: int) -> bool:
    """Whether step ``j``'s value is a gate: a sigmoid, hard sigmoid or softmax output, possibly reshaped, expanded,
    indexed or passed through dropout on the way (squeeze-and-excitation's scale, GLU's gate, attention weights)."""
    s = steps[j]
    while s.op == "shape" and len(s.inputs) == 1 or s.op == "pointwise" and (
            isinstance(s.target, DROPOUT) if s.call == "module" else s.target is F.dropout):
        s = steps[s.inputs[0]]
    return s.op == "pointwise" and (isinstance(s.target, GATE_MODULES) or
                                    (s.call != "module" and s.target in GATE_FUNCTIONS))


def _hold(s: Step, steps: list[Step]) -> None:
    """Which factor of a product the walk holds (rule 7 of the module docstring): attention's weights (it carries
    ``scaled_dot_product_attention``'s value input), else a gate. Otherwise the product stays unresolved, an error
    only if a reverse signal reaches it (the query-key product under a held softmax receives none)."""
    if s.target is F.scaled_dot_product_attention:
        value = s.args[2] if len(s.args) > 2 else s.kwargs.get("value")
        carry = [value.index] if isinstance(value, Ref) else []
    else:
        carry = [j for j in s.inputs if not _is_gate(steps, j)]
    if len(carry) == 1 and s.inputs.count(carry[0]) == 1 and len(s.inputs) > 1:   # not x * x, attention(x, x, x)
        s.held = tuple(j for j in s.inputs if j != carry[0])
        s.inputs = carry


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def plan_of(model: nn.Module) -> Plan:
    """The model's plan for its modules and their modes now: traced once per set of modes (train, eval, Pre's frozen
    layers), reused, and made again when the model's modules change."""
    plans = _PLANS.setdefault(model, {})
    sig = _signature(model)
    if sig not in plans:
        if len(plans) >= 8:          # modules replaced: the old plans are stale
            plans.clear()
        plans[sig] = make_plan(model)
    return plans[sig]


def training_plan(model: nn.Module, frozen: Sequence[nn.Module] = ()) -> Plan:
    """The plan of ``model`` in the modes a training step runs it in (training mode, the ``frozen`` modules in eval
    mode), whatever mode it is in now; its modes are left as they were."""
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    for m in frozen:
        m.eval()
    try:
        return plan_of(model)
    finally:
        for m, mode in modes:
            m.training = mode


# ---------------------------------------------------------------- the forward pass, recorded
def _fill(obj: Any, values: list) -> Any:
    if isinstance(obj, Ref):
        return values[obj.index]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fill(o, values) for o in obj)
    if isinstance(obj, dict):
        return {k: _fill(v, values) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(_fill(obj.start, values), _fill(obj.stop, values), _fill(obj.step, values))
    return obj


@dataclass
class Trace:
    """What the forward pass recorded: every step's value, the network output, and what the reverse pass needs
    (max pooling's picks, dropout's masks)."""
    plan: Plan
    values: list
    output: Tensor
    saved: dict[int, Any] = field(default_factory=dict)

    def input_of(self, m: nn.Module) -> Tensor:
        """The value module ``m`` read (its first call)."""
        return self.values[self.plan.step_of(m).inputs[0]]

    def output_of(self, m: nn.Module) -> Tensor:
        """The value module ``m`` returned (its first call)."""
        return self.values[self.plan.step_of(m).index]


def _run_step(s: Step, a: Any, kw: dict, saved: dict[int, Any]) -> Any:
    if s.call == "module":
        m = s.target
        if isinstance(m, DROPOUT) and m.training and m.p > 0:
            saved[s.index] = dropout_mask(m, a[0])
            return apply_dropout(m, a[0], saved[s.index])
        if isinstance(m, MAXPOOL):           # the picks, the attention weights: what the reverse pass holds
            out, saved[s.index] = maxpool_forward(m, a[0])
        elif isinstance(m, nn.MultiheadAttention):
            out, saved[s.index] = attention_forward(m, a, kw)
        elif holds_softmax(m):
            out, saved[s.index] = held_softmax_forward(m, a, kw)
        else:
            out = m(*a, **kw)
        return out
    if s.call == "function":
        if s.records == "maxpool" and not kw.get("return_indices", a[6] if len(a) > 6 else False):
            out, saved[s.index] = s.target(*a[:6], **{**kw, "return_indices": True})
            return out
        if s.records == "depth":
            p, mode = (kw.get(n, a[i] if len(a) > i else None) for i, n in ((1, "p"), (2, "mode")))
            if kw.get("training", a[3] if len(a) > 3 else True) and p > 0:
                saved[s.index] = stochastic_depth_mask(a[0], p, mode)
                return a[0] * saved[s.index]
        if s.target is F.dropout and kw.get("training", a[2] if len(a) > 2 else True):
            p = kw.get("p", a[1] if len(a) > 1 else 0.5)
            if p > 0:
                saved[s.index] = torch.empty_like(a[0]).bernoulli_(1.0 - p) / (1.0 - p)
                return a[0] * saved[s.index]
        out = s.target(*a, **kw)
        return _keep_layout(out, a[0]) if s.op == "join" else out
    return getattr(a[0], s.target)(*a[1:], **kw)


def _keep_layout(out: Any, like: Any) -> Any:
    """A join with its first summand's strides where they differ only at size-1 dimensions, as the model's in-place
    ``x += y`` (traced as ``x + y``) keeps them: oneDNN picks kernels by strides (44 ms against 0.07 ms for ConvNeXt's
    depthwise convolution on its (128, 768, 1, 1) maps)."""
    if (isinstance(out, Tensor) and isinstance(like, Tensor) and out.shape == like.shape and out.stride() !=
            like.stride() and all(a == b for n, a, b in zip(out.shape, out.stride(), like.stride()) if n > 1)):
        return out.as_strided(like.shape, like.stride())
    return out


def forward_trace(model: nn.Module, x: Tensor, plan: Plan | None = None,
                  frozen: Sequence[nn.Module] = ()) -> Trace:
    """Run ``model`` on ``x`` step by step, keeping every value the reverse pass needs. ``frozen``: modules run
    without gradients (Pre's lower layers), with everything inside them (a residual block's convolutions and norms;
    its additions then see no tensor that needs a gradient)."""
    plan = plan_of(model) if plan is None else plan
    values: list = [None] * len(plan.steps)
    saved: dict[int, Any] = {}
    frozen_ids = {id(sub) for m in frozen for sub in m.modules()}
    for s in plan.steps:
        if s.call == "input":
            values[s.index] = x
        elif s.call == "output":
            break
        elif s.call == "attr":
            values[s.index] = getattr(*s.target)
        elif s.call == "module" and id(s.target) in frozen_ids:
            with torch.no_grad():
                values[s.index] = _run_step(s, _fill(s.args, values), _fill(s.kwargs, values), saved)
        else:
            values[s.index] = _run_step(s, _fill(s.args, values), _fill(s.kwargs, values), saved)
    return Trace(plan, values, values[plan.output], saved)


# ---------------------------------------------------------------- the reverse pass
# Fewer values per channel than this, and the reverse pass re-applies a training-mode batch norm with its running
# statistics: the variance of 2 or 3 values is often near zero, and dividing by it blew RR's gradients on RegNet-X-400MF
# (batch 2, 32x32) up to 1e25, the classifier's task gradient rounded away (with the guard: 5e15 to 6e16, task kept).
MIN_NORM_VALUES = 4


def _reapply(s: Step, y: Tensor, trace: Trace, norms: Norms = "batch") -> Tensor:
    """Pointwise step ``s`` applied forwards to the reverse signal ``y``: dropout with the forward pass's mask, a
    training-mode batch norm as ``reverse_pass`` says for ``norms``."""
    mask = trace.saved.get(s.index)
    if s.call == "module":
        m = s.target
        if mask is not None:
            return apply_dropout(m, y, mask)
        bn = isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        if bn and m.running_var is not None and values_per_channel(y) < MIN_NORM_VALUES:
            return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        if norms == "forward" and bn:
            x = trace.values[s.inputs[0]]
            shape = (1, -1, *([1] * (x.dim() - 2)))
            mean, var, _ = batch_moments(x, m.running_mean)   # the global batch's under synchronised batch norms
            z = (y - mean.view(shape)) * torch.rsqrt(var.view(shape) + m.eps)
            return z if m.weight is None else z * m.weight.view(shape) + m.bias.view(shape)
        return (s.plain or m)(y)
    if mask is not None:                       # F.dropout: the mask already holds the 1 / (1 - p)
        return y * mask
    a, kw = _fill(s.args, trace.values), _fill(s.kwargs, trace.values)
    if "inplace" in kw:
        kw["inplace"] = False
    if s.target is F.batch_norm and _FROZEN_NORMS["on"]:       # as the modules inside frozen_norm_statistics
        kw["momentum"], a = 0.0, a[:6]
    a = (y, *a[1:])
    return s.target(*a, **kw) if s.call == "function" else getattr(y, s.target)(*a[1:], **kw)


def _shape_adjoint(s: Step, y: Tensor, trace: Trace) -> list[Tensor]:
    """Contributions of a shape, join or scale step's signal ``y`` to each of its signal inputs."""
    values = trace.values
    inputs = [values[j] for j in s.inputs]
    if s.call == "module":
        return [transpose(s.target, y, inputs[0].shape, trace.saved.get(s.index))]
    a, kw = _fill(s.args, values), _fill(s.kwargs, values)
    name = s.target if isinstance(s.target, str) else getattr(s.target, "__name__", "")
    if s.op == "join":           # a + b, a - b: the signal of the sum to every summand, in its shape
        cs = [-y if "sub" in name and k == 1 else y for k in range(len(inputs))]
        return [c.sum_to_size(x.shape) if c.shape != x.shape else c for c, x in zip(cs, inputs)]
    if s.op == "product":        # the held factors at their forward values: linear in the carried one
        if s.target is F.scaled_dot_product_attention:
            return [attention_adjoint(y, list(_fill(s.args, values)), _fill(s.kwargs, values))]
        if name in ("mul", "imul"):
            c = y * values[s.held[0]]
            return [c.sum_to_size(inputs[0].shape) if c.shape != inputs[0].shape else c]
        return _generic_adjoint(s, y, trace)
    if s.op == "scale":          # one signal and a number, a parameter or a buffer
        j = s.inputs[0]
        first = bool(s.args) and isinstance(s.args[0], Ref) and s.args[0].index == j
        other = [v for r, v in zip(s.args, a) if not (isinstance(r, Ref) and r.index == j)]
        if "neg" in name or ("sub" in name and not first):
            c = -y
        elif "add" in name or "sub" in name:
            c = y
        elif name in ("mul", "imul"):
            c = y * other[0]
        elif "div" in name and first:
            c = y / other[0]
        elif "div" in name:
            raise TypeError(f"racecar: no reverse rule for {function_name(s.target)} at {s.name!r}: not linear in "
                            "its signal")
        else:                    # x @ W with a parameter W, einsum, ...: the exact generic adjoint
            return _generic_adjoint(s, y, trace)
        return [c.sum_to_size(inputs[0].shape) if c.shape != inputs[0].shape else c]
    if s.records == "maxpool" and s.index in trace.saved:
        return [maxpool_adjoint(y, trace.saved[s.index], inputs[0].shape)]
    if s.target is operator.getitem and not isinstance(a[0], Tensor):
        if isinstance(a[0], (tuple, list)) and isinstance(a[1], int) and isinstance(a[0][a[1]], Tensor):
            k = a[1] % len(a[0])      # one piece of chunk/split/unbind: a tuple signal, zeros for the other pieces
            pieces = trace.plan.steps[s.inputs[0]].call != "module"      # not a module's (output, weights)
            return [tuple(y if i == k else torch.zeros_like(t) if pieces and isinstance(t, Tensor) else None
                          for i, t in enumerate(a[0]))]
        raise TypeError(f"racecar: no reverse rule for indexing a {type(a[0]).__name__} ({s.name})")
    rule: FunctionRule = function_rule(s.target)
    if rule.adjoint is not None:
        out = rule.adjoint(y, list(a), kw, inputs)
        if all(c is not None for c in out):
            return out
    return _generic_adjoint(s, y, trace)


def _generic_adjoint(s: Step, y: Tensor, trace: Trace) -> list[Tensor | None]:
    """The adjoint of a linear function step: its vector-Jacobian product (exact, one input at a time)."""
    out: list[Tensor | None] = []
    for j in s.inputs:
        if trace.plan.steps[j].op == "const":     # a parameter or buffer: no signal to send
            out.append(None)
            continue

        def fn(x: Tensor, j: int = j) -> Tensor:
            values = list(trace.values)
            values[j] = x
            a, kw = _fill(s.args, values), _fill(s.kwargs, values)
            return s.target(*a, **kw) if s.call == "function" else getattr(a[0], s.target)(*a[1:], **kw)
        out.append(linear_vjp(fn, y, trace.values[j].shape))
    return out


def reverse_pass(trace: Trace, mode: Mode = "full", floor: int | None = None,
                 norms: Norms = "batch") -> list[tuple[Tensor, Tensor]]:
    """Pairs ``(d_m, d'_m)``, bottom of the network first; the module docstring says where each ``mode`` takes them
    (``full``: the paper's walk; ``local``, ``local_padded``: each weight step on its own).
    ``floor``: in full mode, weight steps and joins below step ``floor`` end the walk (their pair is taken, nothing
    is transposed): Pre's autoencoder of one layer or block, which reconstructs that unit's input.
    ``norms``: how a batch norm in training mode is re-applied: ``batch`` normalises the reverse signal with its own
    batch statistics (the official code); ``forward`` with the statistics the forward pass used at that layer (an
    affine map of the signal; on torchvision's ResNet-50 the official rule made the loss so steep that Adam did not
    lower the reconstruction error, the forward statistics did); below ``MIN_NORM_VALUES`` values per channel, and
    in eval mode, the running statistics."""
    if norms not in NORMS:
        raise ValueError(f"racecar: unknown norms {norms!r}; use one of {NORMS}")
    return _walk(trace, mode, floor, norms=norms)[0]


def _walk(trace: Trace, mode: Mode, floor: int | None = None, start: Tensor | None = None,
          norms: Norms = "batch") -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
    plan, values = trace.plan, trace.values
    pairs: list[tuple[Tensor, Tensor]] = []
    if mode in ("local", "local_padded"):
        for s in plan.weights:
            m, x = s.target, values[s.inputs[0]]
            out = subtract_bias(m, _first(values[s.index]))
            if mode == "local_padded" and hasattr(m, "racecar_padded_pair"):
                pairs.append(m.racecar_padded_pair(x, out))
            else:
                pairs.append((x, transpose(m, out, x.shape, trace.saved.get(s.index))))
        return pairs, None
    if mode != "full":
        raise ValueError(f"racecar: unknown reverse-pass mode {mode!r}; use one of {MODES}")
    steps = plan.steps
    y0 = trace.output if start is None else start
    pending: dict[int, list[tuple[Tensor, bool, int | None]]] = {plan.output: [(y0, False, plan.output)]}
    at_input = None
    for s in reversed(steps[:plan.output + 1]):
        got = pending.pop(s.index, None)
        if not got:
            continue
        if len(got) == 1:
            y, armed, pos = got[0]
        else:
            ys, armed = [], False
            for c, a, p in got:
                if a and p is not None and p != s.index:   # reconstructs a chain above the meeting point: its
                    pairs.append((values[p], c))             # pair first
                else:
                    armed = armed or a
                ys.append(c)
            y, pos = _sum(ys), s.index

        def send(j: int, c: Tensor, a: bool, p: int) -> None:
            pending.setdefault(j, []).append((c, a, p))

        if isinstance(y, tuple) and s.call == "module":   # attention's (output, weights): the output carries
            if any(c is not None for c in y[1:]):
                raise TypeError(f"racecar: the attention weights of {s.name!r} are used as a signal downstream; the "
                                "reverse pass holds them and cannot send a signal into them")
            y = y[0]
        if s.op in ("input", "weight", "join"):
            if armed and pos is not None:
                pairs.append((_first(values[pos]), y))
            if s.op == "input":
                at_input = y
            elif floor is not None and s.index < floor:
                continue
            elif s.op == "weight":
                m, j = s.target, s.inputs[0]
                send(j, transpose(m, subtract_bias(m, y), values[j].shape, trace.saved.get(s.index)), True, j)
            else:
                for j, c in zip(s.inputs, _shape_adjoint(s, y, trace)):
                    send(j, c, False, j)
        elif s.op == "pointwise":
            if armed and s.weight_below:
                for k in s.chain:
                    y = _reapply(steps[k], y, trace, norms)
                send(s.base, y, True, s.index)
            else:
                if armed and pos is not None:    # on the raw input: belongs to no layer, the walk ends here
                    pairs.append((values[pos], y))
                send(s.inputs[0], y, False, s.inputs[0])
        elif s.op in ("shape", "scale", "product"):
            if s.op == "product" and s.held is None:
                raise _no_rule_error(f"{function_name(s.target)} of two signals", s.name,
                                     "A product of two signals is linear in one factor when the other is held at its "
                                     "forward value; the reverse pass holds a gate (sigmoid, hard sigmoid or softmax "
                                     "output) or attention weights, and neither factor here is one. Make the module "
                                     "that computes it one step with a rule (racecar_core.reverse.register_shape or "
                                     "register_affine) if its reverse is known.")
            if armed and pos is not None and pos != s.index:   # leaves the chain it reconstructs: its pair here,
                pairs.append((values[pos], y))                 # where both live in one space (rule 4)
                pos = None
            for j, c in zip(s.inputs, _shape_adjoint(s, y, trace)):
                if c is not None and steps[j].op != "const":
                    send(j, c, armed, None if pos is None else j)
    return pairs[::-1], at_input


def _sum(ys: list) -> Any:
    """The sum of the signals met at a fan-out; a tuple-valued step's (chunk, split, unbind) piece by piece."""
    if isinstance(ys[0], tuple):
        return tuple(_sum(list(parts)) for parts in zip(*ys))
    ys = [y for y in ys if y is not None]
    return sum(ys[1:], ys[0]) if ys else None


def _first(value: Any) -> Tensor:
    """A step's tensor value: multi-head attention's output of its (output, weights)."""
    return value[0] if isinstance(value, tuple) else value


class _SquaredDistance(torch.autograd.Function):
    """``scale * sum((d - r)^2)`` with one pass over the data forwards and one (two when both sides need gradients)
    backwards; the composed ``sub, pow, sum`` take about five of each, which on the CPU were 7 % of a ResNet-110 RR
    step."""

    @staticmethod
    def forward(ctx: Any, d: Tensor, r: Tensor, scale: float) -> Tensor:
        with torch.autocast(d.device.type, enabled=False):   # in the inputs' precision (float32 at least)
            diff = d - r
            ctx.save_for_backward(diff)
            ctx.scale = scale
            flat = diff.reshape(-1)
            return torch.dot(flat, flat) * scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        (diff,) = ctx.saved_tensors
        g = diff * (2.0 * ctx.scale * grad)
        return (g if ctx.needs_input_grad[0] else None), (-g if ctx.needs_input_grad[1] else None), None


def reconstruction_terms(pairs: list[tuple[Tensor, Tensor]], reduction: Reduction = "sum") -> list[Tensor]:
    """One term per pair: ``0.5 * sum (d_m - d'_m)^2`` (``sum``, the official form) or ``mean (d_m - d'_m)^2``.

    Computed in float32 at least: under bf16 autocast, ``d - d'`` of a good reconstruction is below bf16's precision.
    """
    def cast(d: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        dtype = torch.promote_types(torch.promote_types(d.dtype, r.dtype), torch.float32)
        return d.to(dtype), r.to(dtype)

    if reduction not in ("sum", "mean"):
        raise ValueError(f"racecar: unknown reduction {reduction!r}; use 'sum' or 'mean'")
    return [_SquaredDistance.apply(*cast(d, r), 0.5 if reduction == "sum" else 1.0 / d.numel()) for d, r in pairs]


def reconstruction_loss(pairs: list[tuple[Tensor, Tensor]], reduction: Reduction = "sum",
                        weights: Sequence[float] | None = None) -> Tensor:
    """``sum_m w_m * term_m`` over the pairs (see ``reconstruction_terms``); ``weights`` are per pair, bottom layer
    first, and pairs beyond their length get weight 1 (``None``: all 1, the paper's single lambda)."""
    terms = reconstruction_terms(pairs, reduction)
    if weights:
        terms = [t * (weights[i] if i < len(weights) else 1.0) for i, t in enumerate(terms)]
    return sum(terms)


def rr_loss(model: nn.Module, x: Tensor, mode: Mode = "full", reduction: Reduction = "sum",
            norms: Norms = "batch") -> tuple[Tensor, Tensor]:
    """Forward ``model`` on ``x`` and return ``(output, reconstruction loss)``: RR for any traceable network."""
    trace = forward_trace(model, x)
    return trace.output, reconstruction_loss(reverse_pass(trace, mode, norms=norms), reduction)


def reconstruct_input(model: nn.Module, x: Tensor) -> Tensor:
    """The full reverse pass's reconstruction of the network input, in the input's shape (for display): below the
    lowest weight layer shape steps are undone and norms/activations on the raw input are skipped."""
    return _walk(forward_trace(model, x), "full")[1]


def transpose_network(trace: Trace, y: Tensor) -> Tensor:
    """The full reverse pass of a signal ``y`` (shaped like the output) down to the network input. For a network
    whose norms and activations are identities and whose biases are zero, this is the exact adjoint ``A^T y`` of
    the linear map ``A`` the network computes (at the forward pass's max-pooling picks): the check of every rule."""
    return _walk(trace, "full", start=y)[1]


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The flat list of layers of a (possibly nested) ``nn.Sequential`` (Pre's greedy layer-wise schedule)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"racecar: Pre's greedy layer-wise pretraining needs an nn.Sequential (nested ones are fine); "
                        f"got {type(model).__name__}")
    out: list[nn.Module] = []
    for m in model:
        out.extend(layers_of(m) if isinstance(m, nn.Sequential) else [m])
    return out


_FROZEN_NORMS = {"on": False}   # a plain dict, not a ContextVar: torch.compile traces through it without a break


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Inside, batch norms still normalise with the batch's statistics but leave their moving averages alone.

    The official (TensorFlow) code lets the reverse pass update the shared moving averages; in deep networks that
    mixes reverse-pass statistics into what eval mode uses. RR's ``reverse_bn_update=False`` runs the reverse pass
    inside this context.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    for m in norms:
        m.momentum = 0.0
    before, _FROZEN_NORMS["on"] = _FROZEN_NORMS["on"], True   # and functional F.batch_norm calls (_reapply)
    try:
        yield
    finally:
        _FROZEN_NORMS["on"] = before
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside, batch norms normalise with the statistics of the batch they are given, as in training (TensorFlow's
    ``is_training=1``), and leave their moving averages alone: how the official peak script evaluates its test batch.
    The other layers keep their mode (call it on a model in eval mode: dropout stays off)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    for m in norms:
        m.train()
    try:
        with frozen_norm_statistics(model):
            yield
    finally:
        for m, mode in zip(norms, modes):
            m.train(mode)
