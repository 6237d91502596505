"""The reverse pass of RR ("racecar") training and its loss.

A network is read as a flat list of layers (nested ``nn.Sequential`` are unrolled). Each layer has one of three
*roles* in the reverse pass:

- ``weight``: a linear map with bias (Linear, Conv2d). The reverse applies the transpose after subtracting the bias,
  ``W^T (y' - b)``; the reconstruction of the layer's input ``d_m`` is compared with ``d_m``.
- ``pointwise``: normalisation and activation (BatchNorm, ReLU, LeakyReLU, ELU, Identity, ...). On the way down
  they are *re-applied forwards* as in the official code: ``d'_m = f_{m-1}(N_{m-1}(W_m^T (d'_{m+1} - b_m)))``.
- ``shape``: layers that only move numbers (Flatten, pooling, padding). The reverse applies their adjoint.

Where shape layers sit between two weight layers (conv -> BN -> ReLU -> Flatten -> Linear), the reconstruction is
compared with the forward tensor at the place the walk reaches: there, the ReLU output before the Flatten.

Two modes: ``full`` (the paper: one pass from the output down to the input, reconstructing every weight layer's input)
and ``local`` (each weight layer reconstructs its own input from its own output, ``W^T W d``).

A *block* (a residual block, say) is a module with ``racecar_forward(x) -> (y, saved)`` and
``racecar_reverse(y, saved, mode) -> (x', pairs)``: the walk treats it like a weight layer whose transpose it computes
itself, and it adds the reconstruction pairs of the layers inside it (see ``racecar_core.layers.Residual``).

Adding a layer type is one call: ``register_affine`` (an affine layer: its transpose is the exact generic
vector-Jacobian product), ``register_weight`` (with a hand-written transpose), ``register_pointwise`` or
``register_shape`` (with its adjoint). Conv1d/3d and the transposed convolutions use the generic transpose. A module
may instead define a method
``racecar_transpose(y, input_shape)`` (weight role; takes the bias-free output) or
``racecar_adjoint(y, input_shape)`` (shape role).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Mode = Literal["full", "local", "local_padded"]
MODES = ("full", "local", "local_padded")
Reduction = Literal["sum", "mean"]
Adjoint = Callable[[nn.Module, Tensor, torch.Size], Tensor]

_WEIGHT: dict[type, Adjoint] = {}
_SHAPE: dict[type, Adjoint] = {}
_POINTWISE: set[type] = set()


def register_weight(cls: type, transpose: Adjoint) -> None:
    """Declare ``cls`` a weight layer whose bias-free transpose is ``transpose(module, y, input_shape)``."""
    _WEIGHT[cls] = transpose


def register_shape(cls: type, adjoint: Adjoint) -> None:
    """Declare ``cls`` a shape layer whose adjoint is ``adjoint(module, y, input_shape)``."""
    _SHAPE[cls] = adjoint


def register_pointwise(cls: type) -> None:
    """Declare ``cls`` a norm/activation layer that the reverse pass re-applies forwards."""
    _POINTWISE.add(cls)


def vjp_transpose(m: nn.Module, y: Tensor, shape: torch.Size) -> Tensor:
    """``A^T y`` of an affine module ``m(x) = A x + b``, exact and generic: the vector-Jacobian product of ``m`` at
    ``x = 0`` (an affine map's Jacobian is ``A`` everywhere). Differentiable in the weights when grad mode is on.
    Hand-written transposes stay where they are faster or compile without graph breaks (Linear, zero-padded Conv2d)."""
    differentiable = torch.is_grad_enabled()
    x = torch.zeros(shape, dtype=y.dtype, device=y.device, requires_grad=True)
    with torch.enable_grad():
        out = m(x)
        if out.shape != y.shape:
            raise ValueError(f"racecar: {type(m).__name__} maps an input of shape {tuple(shape)} to "
                             f"{tuple(out.shape)}, but the reverse signal has shape {tuple(y.shape)}")
        (g,) = torch.autograd.grad(out, x, y, create_graph=differentiable)
    return g


def register_affine(cls: type) -> None:
    """Declare ``cls`` an affine weight layer (``m(x) = A x + b``): its transpose is the generic ``vjp_transpose``."""
    register_weight(cls, vjp_transpose)


def _linear_t(m: nn.Linear, y: Tensor, shape: torch.Size) -> Tensor:
    return y @ m.weight


def _conv_output_padding(m: nn.Conv2d, y: Tensor, shape: torch.Size) -> tuple[int, int]:
    pads = []
    for i in range(2):
        size = (y.shape[-2 + i] - 1) * m.stride[i] - 2 * m.padding[i] + m.dilation[i] * (m.kernel_size[i] - 1) + 1
        pads.append(shape[-2 + i] - size)
    return pads[0], pads[1]


def conv2d_transpose(m: nn.Conv2d, y: Tensor, shape: torch.Size) -> Tensor:
    """``W^T y`` of a convolution: the transposed convolution back to an input of ``shape`` (integer zero padding),
    else the generic ``vjp_transpose`` (circular, reflect or replicate padding, ``padding="same"``)."""
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return vjp_transpose(m, y, shape)
    return F.conv_transpose2d(y, m.weight, None, m.stride, m.padding, _conv_output_padding(m, y, shape),
                              m.groups, m.dilation)


MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def _maxpool_forward(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Max pooling and the positions it picked (flat per channel), which its adjoint needs."""
    pool = (F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d if isinstance(m, nn.MaxPool2d)
            else F.max_pool3d)
    return pool(x, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode, return_indices=True)


def maxpool_adjoint(y: Tensor, indices: Tensor, shape: torch.Size) -> Tensor:
    """The adjoint of max pooling at the forward pass's picks: each value goes back to the input position it came
    from (summed where overlapping windows picked the same one), zeros elsewhere."""
    x = y.new_zeros(tuple(shape[:2]) + (math.prod(shape[2:]),))
    x.scatter_add_(2, indices.flatten(2), y.flatten(2))
    return x.reshape(shape)


def _maxpool_without_indices(m: nn.Module, y: Tensor, shape: torch.Size) -> Tensor:
    raise ValueError(f"racecar: the adjoint of {type(m).__name__} needs the positions the forward pass picked; walk "
                     "the model with reverse.forward_trace / reverse_pass, which record them")


def _flatten_adj(m: nn.Flatten, y: Tensor, shape: torch.Size) -> Tensor:
    return y.reshape(shape)


def _pool_windows(m: nn.Module, shape: torch.Size) -> tuple[int, int] | None:
    """The window ``(kh, kw)`` when the average pool tiles its input in disjoint windows, else None."""
    h, w = shape[-2], shape[-1]
    if isinstance(m, nn.AdaptiveAvgPool2d):
        oh, ow = (m.output_size, m.output_size) if isinstance(m.output_size, int) else m.output_size
        oh, ow = oh or h, ow or w
        return (h // oh, w // ow) if h % oh == 0 and w % ow == 0 else None
    k = (m.kernel_size, m.kernel_size) if isinstance(m.kernel_size, int) else tuple(m.kernel_size)
    st = k if m.stride is None else (m.stride, m.stride) if isinstance(m.stride, int) else tuple(m.stride)
    plain = m.padding in (0, (0, 0)) and not m.ceil_mode and m.divisor_override is None
    return k if plain and st == k else None


def _avgpool_adj(m: nn.Module, y: Tensor, shape: torch.Size) -> Tensor:
    # Disjoint windows (global pooling, AvgPool2d(k)): spread each output evenly over its window, zeros for the
    # rows/columns the pool drops. Other pools: the vector-Jacobian product (exact, but a graph break under compile).
    win = _pool_windows(m, shape)
    if win is not None:
        kh, kw = win
        x = (y / (kh * kw)).repeat_interleave(kh, -2).repeat_interleave(kw, -1)
        return F.pad(x, (0, shape[-1] - x.shape[-1], 0, shape[-2] - x.shape[-2]))
    x = torch.zeros(shape, dtype=y.dtype, device=y.device, requires_grad=True)
    with torch.enable_grad():
        out = m(x)
        (g,) = torch.autograd.grad(out, x, y, create_graph=True)
    return g


register_weight(nn.Linear, _linear_t)
register_weight(nn.Conv2d, conv2d_transpose)
for _cls in (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_affine(_cls)  # grouped, strided, dilated, any padding: the generic transpose is exact
register_shape(nn.Flatten, _flatten_adj)
register_shape(nn.Unflatten, lambda m, y, s: y.reshape(s))
register_shape(nn.AvgPool2d, _avgpool_adj)
register_shape(nn.AdaptiveAvgPool2d, _avgpool_adj)
for _cls in MAXPOOL:  # the adjoint at the forward pass's picks (forward_trace records them)
    register_shape(_cls, _maxpool_without_indices)
# Dropout counts as pointwise: the reverse pass re-applies it with the forward pass's own mask (recorded by
# forward_trace; identity in eval), as it re-applies the lower layer's norm and activation.
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Tanh, nn.Sigmoid,
             nn.GELU, nn.SiLU, nn.Softplus, nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.Dropout2d):
    register_pointwise(_cls)


def is_block(m: nn.Module) -> bool:
    """Whether ``m`` reverses itself (``racecar_forward`` / ``racecar_reverse``), like a residual block."""
    return hasattr(m, "racecar_reverse") and hasattr(m, "racecar_forward")


def is_weight_leaf(m: nn.Module) -> bool:
    """Whether ``m`` is a plain weight layer (Linear, Conv2d, a registered or ``racecar_transpose`` layer)."""
    return hasattr(m, "racecar_transpose") or any(cls in _WEIGHT for cls in type(m).__mro__)


def weight_modules(model: nn.Module) -> list[nn.Module]:
    """Every weight layer of ``model``, blocks' insides included, in module order (for Ort and the SVD)."""
    return [m for m in model.modules() if is_weight_leaf(m)]


def role(m: nn.Module) -> str:
    """The role of a layer in the reverse pass: 'weight' (blocks too), 'pointwise' or 'shape'."""
    if hasattr(m, "racecar_transpose") or is_block(m):
        return "weight"
    if hasattr(m, "racecar_adjoint"):
        return "shape"
    for cls in type(m).__mro__:
        if cls in _WEIGHT:
            return "weight"
        if cls in _SHAPE:
            return "shape"
        if cls in _POINTWISE:
            return "pointwise"
    name = type(m).__name__
    raise TypeError(
        f"racecar: no reverse rule for layer {name}. If it is affine (a linear map plus a bias), one call registers "
        f"it: racecar_core.reverse.register_affine({name}); a norm or activation: register_pointwise({name}); a layer "
        f"that only moves numbers: register_shape({name}, adjoint). Or give the module a racecar_transpose(y, "
        "input_shape) or racecar_adjoint(y, input_shape) method.")


def transpose(m: nn.Module, y: Tensor, input_shape: torch.Size, saved: Any = None) -> Tensor:
    """``M^T y`` for a weight layer (bias not included) or the adjoint of a shape layer (``saved``: what the forward
    trace recorded for it, e.g. max pooling's picks)."""
    if isinstance(m, MAXPOOL) and saved is not None:
        return maxpool_adjoint(y, saved, input_shape)
    if hasattr(m, "racecar_transpose"):
        return m.racecar_transpose(y, input_shape)
    if hasattr(m, "racecar_adjoint"):
        return m.racecar_adjoint(y, input_shape)
    for cls in type(m).__mro__:
        if cls in _WEIGHT:
            return _WEIGHT[cls](m, y, input_shape)
        if cls in _SHAPE:
            return _SHAPE[cls](m, y, input_shape)
    raise TypeError(f"{type(m).__name__} is not a weight or shape layer (role {role(m)!r})")


def subtract_bias(m: nn.Module, y: Tensor) -> Tensor:
    """``y - b``: a Linear's bias runs along the last dimension (``[B, F]`` or ``[B, T, F]``), a convolution's (any
    other layer's) along the channel dimension 1."""
    b = getattr(m, "bias", None)
    if b is None:
        return y
    if y.dim() > 2 and not isinstance(m, nn.Linear):
        return y - b.view(1, -1, *([1] * (y.dim() - 2)))
    return y - b


def layers_of(model: nn.Module | list[nn.Module]) -> list[nn.Module]:
    """The flat list of layers of a (possibly nested) ``nn.Sequential``, or of ``model.racecar_layers()``."""
    if isinstance(model, list):
        return model
    if hasattr(model, "racecar_layers"):
        return list(model.racecar_layers())
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"racecar: the reverse pass walks an nn.Sequential (nested ones are fine); got {type(model).__name__}. "
            "Wrap your layers in nn.Sequential or give your model a racecar_layers() method returning them in order.")
    out: list[nn.Module] = []
    for m in model:
        out.extend(layers_of(m) if isinstance(m, nn.Sequential) else [m])
    return out


@dataclass
class Trace:
    """What the forward pass recorded: each layer's input, the network output, and what blocks saved."""
    layers: list[nn.Module]
    inputs: list[Tensor]
    output: Tensor
    saved: dict[int, Any] = field(default_factory=dict)


DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _dropout_mask(m: nn.Module, x: Tensor) -> Tensor:
    """A keep-mask for ``x`` as dropout layer ``m`` draws it: per element, or per channel for Dropout1d/2d/3d."""
    shape = x.shape if type(m) is nn.Dropout else x.shape[:2] + (1,) * (x.dim() - 2)
    return torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - m.p)


def _apply_dropout(m: nn.Module, y: Tensor, mask: Tensor) -> Tensor:
    return y * mask / (1.0 - m.p)


def forward_trace(model: nn.Module | list[nn.Module], x: Tensor) -> Trace:
    """Run ``model`` layer by layer on ``x``, keeping every layer's input for the reverse pass (and the mask of every
    active dropout layer, which the reverse pass re-applies)."""
    layers = layers_of(model)
    inputs, saved = [], {}
    for i, m in enumerate(layers):
        inputs.append(x)
        if is_block(m):
            x, saved[i] = m.racecar_forward(x)
        elif isinstance(m, DROPOUT) and m.training and m.p > 0:
            saved[i] = _dropout_mask(m, x)
            x = _apply_dropout(m, x, saved[i])
        elif isinstance(m, MAXPOOL):
            x, saved[i] = _maxpool_forward(m, x)
        else:
            x = m(x)
    return Trace(layers, inputs, x, saved)


def _weight_indices(layers: list[nn.Module]) -> list[int]:
    idx = [i for i, m in enumerate(layers) if role(m) == "weight"]
    if not idx:
        raise ValueError("racecar: the model has no weight layer (Linear/Conv2d) to reverse")
    return idx


def _walk_between(layers: list[nn.Module], lo: int, hi: int, y: Tensor, inputs: list[Tensor],
                  saved: dict[int, Any] | None = None) -> tuple[Tensor, int]:
    """Carry ``y`` from the input of layer ``hi`` down through the layers between ``lo`` and ``hi``.

    Shape layers are undone by their adjoints (top to bottom); each run of consecutive pointwise layers is
    re-applied forwards, in its forward order (the official ``f(N(.))``), dropout with the forward pass's mask from
    ``saved``. Returns ``y`` and the index ``p`` such
    that ``y`` reconstructs ``inputs[p]``: the output of the lowest pointwise run (or the input of the lowest
    shape layer) reached.
    """
    i, pos = hi - 1, hi
    while i > lo:
        if role(layers[i]) == "shape":
            y = transpose(layers[i], y, inputs[i].shape, (saved or {}).get(i))
            pos = i
            i -= 1
            continue
        j = i
        while j - 1 > lo and role(layers[j - 1]) == "pointwise":
            j -= 1
        for k in range(j, i + 1):
            mask = (saved or {}).get(k) if isinstance(layers[k], DROPOUT) else None
            y = _apply_dropout(layers[k], y, mask) if mask is not None else layers[k](y)
        pos = i + 1
        i = j - 1
    return y, pos


def reverse_pass(trace: Trace, mode: Mode = "full", levels: int | None = None,
                 start: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
    """Pairs ``(d_m, d'_m)`` for every weight layer, bottom layer first.

    ``full``: from the network output down through every weight layer (the paper). The norm/activation above the
    top weight layer is not undone (the walk starts from the output, as the official code does); shape layers
    there (pooling, flatten) are undone by their adjoints.
    ``local``: ``d'_m = W_m^T (W_m d_m)`` for each weight layer on its own.
    ``local_padded``: as ``local``, but a layer that pads its input itself (``racecar_padded_pair``, e.g. the periodic
    convolution) reconstructs the *padded* input with the transposed unpadded convolution: the form of the authors'
    WeatherBench draft (per-convolution, padded input, no norm or activation in between).
    ``levels``: in full mode, stop after this many weight layers from the top (Pre uses 1).
    ``start``: in full mode, walk down from this tensor instead of the trace's output (blocks use it).
    Blocks add the pairs of the layers inside them after their own.
    """
    layers, inputs = trace.layers, trace.inputs
    widx = _weight_indices(layers)
    pairs: list[tuple[Tensor, Tensor]] = []
    if mode in ("local", "local_padded"):
        for i in widx:
            if is_block(layers[i]):
                pairs.extend(layers[i].racecar_reverse(None, trace.saved[i], mode)[1])
                continue
            out = inputs[i + 1] if i + 1 < len(inputs) else trace.output  # the forward output of layer i
            out_nobias = subtract_bias(layers[i], out)
            if mode == "local_padded" and hasattr(layers[i], "racecar_padded_pair"):
                pairs.append(layers[i].racecar_padded_pair(inputs[i], out_nobias))
            else:
                pairs.append((inputs[i], transpose(layers[i], out_nobias, inputs[i].shape)))
        return pairs
    if mode != "full":
        raise ValueError(f"racecar: unknown reverse-pass mode {mode!r}; use one of {MODES}")
    y = trace.output if start is None else start
    for i in range(len(layers) - 1, widx[-1], -1):  # above the top weight layer: undo shapes, skip norm/activation
        if role(layers[i]) == "shape":
            y = transpose(layers[i], y, inputs[i].shape, trace.saved.get(i))
    lowest = 0 if levels is None else max(0, len(widx) - levels)
    inner: list[tuple[Tensor, Tensor]] = []
    for n in range(len(widx) - 1, lowest - 1, -1):
        i = widx[n]
        if is_block(layers[i]):
            y, block_pairs = layers[i].racecar_reverse(y, trace.saved[i], "full")
            inner.extend(block_pairs)
        else:
            y = transpose(layers[i], subtract_bias(layers[i], y), inputs[i].shape)
        pos = i
        if n > 0:
            y, pos = _walk_between(layers, widx[n - 1], i, y, inputs, trace.saved)
        pairs.append((inputs[pos], y))
    return pairs[::-1] + inner


def reconstruction_terms(pairs: list[tuple[Tensor, Tensor]], reduction: Reduction = "sum") -> list[Tensor]:
    """One term per pair: ``0.5 * sum (d_m - d'_m)^2`` (``sum``, the official form) or ``mean (d_m - d'_m)^2``.

    Computed in float32 at least: under bf16 autocast, ``d - d'`` of a good reconstruction is below bf16's precision.
    """
    def diff(d: Tensor, r: Tensor) -> Tensor:
        dtype = torch.promote_types(torch.promote_types(d.dtype, r.dtype), torch.float32)
        return d.to(dtype) - r.to(dtype)

    if reduction == "sum":
        return [0.5 * diff(d, r).pow(2).sum() for d, r in pairs]
    if reduction == "mean":
        return [diff(d, r).pow(2).mean() for d, r in pairs]
    raise ValueError(f"racecar: unknown reduction {reduction!r}; use 'sum' or 'mean'")


def reconstruction_loss(pairs: list[tuple[Tensor, Tensor]], reduction: Reduction = "sum",
                        weights: Sequence[float] | None = None) -> Tensor:
    """``sum_m w_m * term_m`` over the pairs (see ``reconstruction_terms``); ``weights`` are per pair, bottom layer
    first, and pairs beyond their length get weight 1 (``None``: all 1, the paper's single lambda)."""
    terms = reconstruction_terms(pairs, reduction)
    if weights:
        terms = [t * (weights[i] if i < len(weights) else 1.0) for i, t in enumerate(terms)]
    return sum(terms)


def rr_loss(model: nn.Module, x: Tensor, mode: Mode = "full", reduction: Reduction = "sum") -> tuple[Tensor, Tensor]:
    """Forward ``model`` on ``x`` and return ``(output, reconstruction loss)``: RR for any supported Sequential."""
    trace = forward_trace(model, x)
    return trace.output, reconstruction_loss(reverse_pass(trace, mode), reduction)


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
    try:
        yield
    finally:
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


def undo_prefix(trace: Trace, y: Tensor) -> Tensor:
    """Carry a reconstruction of the lowest weight layer's input down to the trace's input: shape layers below it
    are undone by their adjoints, pointwise ones are skipped (the input layer has no norm or activation)."""
    first = _weight_indices(trace.layers)[0]
    for i in range(first - 1, -1, -1):
        if role(trace.layers[i]) == "shape":
            y = transpose(trace.layers[i], y, trace.inputs[i].shape, trace.saved.get(i))
    return y


def reconstruct_input(model: nn.Module, x: Tensor) -> Tensor:
    """The full reverse pass's reconstruction of the network input, in the input's shape (for display)."""
    trace = forward_trace(model, x)
    return undo_prefix(trace, reverse_pass(trace, "full")[0][1]).reshape(x.shape)
