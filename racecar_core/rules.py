"""How each operation of a network is treated by the RR reverse pass: its *role* and, where it has one, its adjoint.

Three roles (``racecar_core.reverse`` explains how the walk uses them):

- ``weight``: an affine map ``A x + b`` with trainable ``A`` (Linear, Conv1d/2d/3d, ConvTranspose, or any module
  registered with ``register_affine``). The reverse pass applies ``A^T`` to the signal minus the bias.
- ``pointwise``: a norm or activation (BatchNorm, ReLU, GELU, LayerNorm, dropout, ...). The reverse pass re-applies
  it *forwards*, as the lower layer's norm and activation in the official code.
- ``shape``: a linear map that only moves, copies, averages or selects numbers (flatten, view, permute, pooling,
  padding, interpolation, cat, slicing). The reverse pass applies its adjoint.

Modules are looked up by class (``register_weight``, ``register_affine``, ``register_pointwise``, ``register_shape``,
or a module's own ``racecar_transpose`` / ``racecar_adjoint`` method); functions and tensor methods that a traced
``forward`` calls directly (``torch.flatten``, ``x.permute``, ``F.relu``, ``torch.cat``, ...) by the function or the
method's name (``register_function``). A linear function without a hand-written adjoint gets the exact generic one,
the vector-Jacobian product at zero input.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def linear_vjp(fn: Callable[[Tensor], Tensor], y: Tensor, shape: torch.Size) -> Tensor:
    """The adjoint of a linear (or affine) map ``fn`` applied to ``y``: its vector-Jacobian product at a zero input
    of ``shape`` (an affine map's Jacobian is the same everywhere). Exact, and differentiable in ``y`` and ``fn``'s
    weights when grad mode is on; a graph break under torch.compile, so common maps have closed forms."""
    differentiable = torch.is_grad_enabled()   # the caller's mode, before enable_grad below
    x = torch.zeros(shape, dtype=y.dtype, device=y.device, requires_grad=True)
    with torch.enable_grad():
        out = fn(x)
        if out.shape != y.shape:
            name = type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", "the map")
            raise ValueError(f"racecar: {name} maps an input of shape {tuple(shape)} to {tuple(out.shape)}, but the "
                             f"reverse signal has shape {tuple(y.shape)}")
        (g,) = torch.autograd.grad(out, x, y, create_graph=differentiable)
    return g


def vjp_transpose(m: nn.Module, y: Tensor, shape: torch.Size) -> Tensor:
    """``A^T y`` of an affine module ``m(x) = A x + b``, exact and generic (``linear_vjp``); Linear and zero-padded
    (transposed) convolutions keep hand-written ones, faster and free of graph breaks."""
    return linear_vjp(m, y, shape)


def register_affine(cls: type) -> None:
    """Declare ``cls`` an affine weight layer (``m(x) = A x + b``): its transpose is the generic ``vjp_transpose``."""
    register_weight(cls, vjp_transpose)


_CONV = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d), 3: (F.conv3d, F.conv_transpose3d)}


def conv_transpose(m: nn.Module, y: Tensor, shape: torch.Size) -> Tensor:
    """``W^T y`` of a convolution (1-D to 3-D) back to an input of ``shape``: with zero padding the transposed
    convolution, or an equal map that is cheaper (one position in and out: a product with the tap that sees it, 27 ms
    against 3 ms; kernel = stride: ``_patch_transpose``; depthwise, stride 1: the convolution with the flipped kernel);
    else the generic ``vjp_transpose`` (circular, reflect or replicate padding, ``padding="same"``)."""
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return vjp_transpose(m, y, shape)
    n, pad = y.dim() - 2, [d * (k - 1) - p for d, k, p in zip(m.dilation, m.kernel_size, m.padding)]
    taps = [p // d for p, d in zip(m.padding, m.dilation)]
    if (math.prod(y.shape[2:]) == 1 and math.prod(shape[2:]) == 1
            and all(p % d == 0 and t < k for p, d, t, k in zip(m.padding, m.dilation, taps, m.kernel_size))):
        w, g = m.weight[(slice(None), slice(None), *taps)], m.groups                       # [Co, Ci / groups]
        return torch.einsum("ngo,goc->ngc", y.reshape(y.shape[0], g, -1), w.reshape(g, -1, w.shape[1])).reshape(shape)
    if (tuple(m.stride) == tuple(m.kernel_size) and set(m.padding) == {0} and set(m.dilation) == {1}
            and m.groups == 1 and (max(m.kernel_size) > 1 or math.prod(y.shape[2:]) <= 4)):
        return _patch_transpose(m.weight, y, shape)
    if m.groups == m.in_channels == m.out_channels and set(m.stride) == {1} and min(pad) >= 0:
        return _CONV[n][0](y, m.weight.flip(list(range(2, n + 2))), None, 1, pad, m.dilation, m.groups)
    out_pad = [shape[-n + i] - ((y.shape[-n + i] - 1) * m.stride[i] - 2 * m.padding[i]
                                + m.dilation[i] * (m.kernel_size[i] - 1) + 1) for i in range(n)]
    return _CONV[n][1](y, m.weight, None, m.stride, m.padding, out_pad, m.groups, m.dilation)


def _patch_transpose(w: Tensor, y: Tensor, shape: torch.Size) -> Tensor:
    """``W^T y`` of a convolution whose kernel is its stride, unpadded (patchify stems, downsampling, patch embeddings;
    1x1 on maps of at most 4 positions): its patches are disjoint, so one matrix product and a reshape, in ``y``'s
    layout (oneDNN's kernel, forwards and backwards at batch 128: ConvNeXt-T's last downsampling 73 ms against 7 ms,
    ResNet-50's 1x1 convolutions on 1x1 maps 36 against 6 ms; on larger maps it is as fast or faster)."""
    n, (co, ci, *k), size = y.dim() - 2, w.shape, y.shape[2:]
    z = y.movedim(1, -1).reshape(-1, co) @ w.reshape(co, -1)                 # one row per patch: [Ci, k...]
    z = z.view(y.shape[0], *size, ci, *k)
    last = n == 2 and y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    order = [0] + [p for i in range(n) for p in (1 + i, 2 + n + i)] + [1 + n]    # [N, S1, k1, ..., Ci]
    x = z.permute(order if last else [0, 1 + n] + order[1:-1])
    x = x.reshape(y.shape[0], *(([s * kk for s, kk in zip(size, k)] + [ci]) if last else
                                ([ci] + [s * kk for s, kk in zip(size, k)])))
    x = x.movedim(-1, 1) if last else x
    rest = [v for i in reversed(range(n)) for v in (0, shape[2 + i] - size[i] * k[i])]
    return F.pad(x, rest) if any(rest) else x                                # the rows the stride left out


def transposed_conv_transpose(m: nn.Module, y: Tensor, shape: torch.Size) -> Tensor:
    """``W^T y`` of a transposed convolution: the convolution with the same weight (zero padding; else generic)."""
    if m.padding_mode != "zeros":
        return vjp_transpose(m, y, shape)
    return _CONV[y.dim() - 2][0](y, m.weight, None, m.stride, m.padding, m.dilation, m.groups)


MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
FMAXPOOL = (F.max_pool1d, F.max_pool2d, F.max_pool3d)   # functional: forward_trace records their picks too
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def maxpool_forward(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
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


def dropout_mask(m: nn.Module, x: Tensor) -> Tensor:
    """A keep-mask for ``x`` as dropout layer ``m`` draws it: per element, or per channel for Dropout1d/2d/3d."""
    shape = x.shape if type(m) is nn.Dropout else x.shape[:2] + (1,) * (x.dim() - 2)
    return torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - m.p)


def apply_dropout(m: nn.Module, y: Tensor, mask: Tensor) -> Tensor:
    """``y`` through dropout layer ``m`` with a given keep-mask (the forward pass's, in the reverse pass)."""
    return y * mask / (1.0 - m.p)


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
    return linear_vjp(m, y, shape)


register_weight(nn.Linear, lambda m, y, s: y @ m.weight)
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):   # grouped, strided, dilated; other paddings: the generic transpose
    register_weight(_cls, conv_transpose)
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_weight(_cls, transposed_conv_transpose)
register_shape(nn.Flatten, lambda m, y, s: y.reshape(s))
register_shape(nn.Unflatten, lambda m, y, s: y.reshape(s))
register_shape(nn.AvgPool2d, _avgpool_adj)
register_shape(nn.AdaptiveAvgPool2d, _avgpool_adj)
for _cls in (nn.AvgPool1d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool3d, nn.Upsample,
             nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.CircularPad1d, nn.CircularPad2d,
             nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d, nn.PixelShuffle,
             nn.PixelUnshuffle, nn.ChannelShuffle):
    register_shape(_cls, linear_vjp)
for _cls in MAXPOOL:  # the adjoint at the forward pass's picks (forward_trace records them)
    register_shape(_cls, _maxpool_without_indices)


def _fmaxpool_without_indices(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    raise ValueError("racecar: the adjoint of functional max pooling needs the positions the forward pass picked; "
                     "walk the model with reverse.forward_trace / reverse_pass, which record them (a call with "
                     "return_indices=True is not supported)")
# Dropout counts as pointwise: the reverse pass re-applies it with the forward pass's own mask (recorded by
# forward_trace; identity in eval), as it re-applies the lower layer's norm and activation.
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm,
             nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm, nn.Identity, nn.ReLU,
             nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
             nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.Threshold,
             nn.Tanh, nn.Sigmoid, nn.LogSigmoid, nn.Softplus, nn.Softsign, nn.Softmax, nn.LogSoftmax, *DROPOUT):
    register_pointwise(_cls)


def is_weight_leaf(m: nn.Module) -> bool:
    """Whether ``m`` is a weight layer (Linear, Conv, a registered or ``racecar_transpose`` layer) with one weight
    matrix: multi-head attention is a weight step of the walk, but Ort and the SVD see its output projection."""
    return (hasattr(m, "racecar_transpose") or any(cls in _WEIGHT for cls in type(m).__mro__)) and \
        not isinstance(m, nn.MultiheadAttention)


def attention_forward(m: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[tuple, Tensor]:
    """``m``'s output as the caller asked for it, and the per-head attention weights ``[B, heads, L, S]`` it used
    (after its dropout), which the reverse pass holds."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")
    kw = {**dict(zip(names, args)), **kwargs}
    if m.bias_k is not None or m.add_zero_attn or kw["query"].dim() != 3:
        raise TypeError("racecar: multi-head attention with bias_k/bias_v, add_zero_attn or unbatched inputs has no "
                        "reverse rule")
    need, average = kw.pop("need_weights", True), kw.pop("average_attn_weights", True)
    out, weights = m(**kw, need_weights=True, average_attn_weights=False)
    return (out, (weights.mean(1) if average else weights) if need else None), weights


def attention_transpose(m: nn.MultiheadAttention, y: Tensor, weights: Tensor) -> Tensor:
    """``W_v^T (A^T (W_o^T (y - b_o)) - b_v)`` per head: multi-head attention with its weights ``A`` held is affine
    in its value input; the query and key projections receive no signal."""
    if not m.batch_first:
        y = y.transpose(0, 1)
    e, h = m.embed_dim, m.num_heads
    z = subtract_bias(m.out_proj, y) @ m.out_proj.weight                    # [B, L, E]
    z = z.reshape(z.shape[0], z.shape[1], h, e // h).transpose(1, 2)         # [B, heads, L, E/heads]
    v = (weights.transpose(-2, -1) @ z).transpose(1, 2)                     # [B, S, heads, E/heads]
    v = v.reshape(v.shape[0], v.shape[1], e)
    if m.in_proj_bias is not None:
        v = v - m.in_proj_bias[2 * e:]
    x = v @ (m.in_proj_weight[2 * e:] if m._qkv_same_embed_dim else m.v_proj_weight)
    return x if m.batch_first else x.transpose(0, 1)


_WEIGHT[nn.MultiheadAttention] = attention_transpose   # a weight step; transpose() passes the recorded weights
# attention modules (module.qualname) that compute their weights inside one opaque call with a softmax, with ``qkv``
# and ``proj`` Linear layers: torchvision's Swin (its shifted_window_attention is an fx leaf)
HELD_SOFTMAX = {f"torchvision.models.swin_transformer.ShiftedWindowAttention{v}" for v in ("", "V2")}


def holds_softmax(m: nn.Module) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in HELD_SOFTMAX for c in type(m).__mro__)


class _HeldSoftmax(torch.overrides.TorchFunctionMode):
    """Records every softmax output inside (``held`` None), or returns the recorded ones in their order."""

    def __init__(self, held: list[Tensor] | None = None):
        super().__init__()
        self.held, self.record = held, []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func not in (F.softmax, torch.softmax, Tensor.softmax):
            return func(*args, **(kwargs or {}))
        self.record.append(func(*args, **(kwargs or {})) if self.held is None else self.held[len(self.record)])
        return self.record[-1]


def held_softmax_forward(m: nn.Module, args: tuple, kwargs: dict) -> tuple[Tensor, list[Tensor]]:
    """``m``'s output and the softmax outputs (its attention weights) it computed, which the reverse pass holds."""
    if m.training and (getattr(m, "attention_dropout", 0.0) or getattr(m, "dropout", 0.0)):
        raise TypeError(f"racecar: {type(m).__name__} with dropout in training has no reverse rule (its dropout "
                        "masks are drawn inside one call and not recorded); set attention_dropout=dropout=0")
    with _HeldSoftmax() as mode:
        out = m(*args, **kwargs)
    return out, mode.record


def held_softmax_transpose(m: nn.Module, y: Tensor, held: list[Tensor], shape: torch.Size) -> Tensor:
    """``W_v^T (A^T (W_o^T (y - b_o)) - b_v)`` per window and head, as multi-head attention's: the module with its
    attention weights ``A`` held is affine in its input through the values (its windows, shifts and padding are
    moves of numbers); the adjoint of that map is its exact vector-Jacobian product, run through ``m``'s own code."""
    def held_map(z: Tensor) -> Tensor:
        with _HeldSoftmax(held):
            return m(z)
    x = linear_vjp(held_map, subtract_bias(m.proj, y), shape)
    c = m.qkv.weight.shape[1]
    return x if m.qkv.bias is None else x - m.qkv.bias[2 * c:] @ m.qkv.weight[2 * c:]


def weight_modules(model: nn.Module) -> list[nn.Module]:
    """Every weight layer of ``model`` in module order (for Ort and the SVD)."""
    return [m for m in model.modules() if is_weight_leaf(m)]


def known_role(m: nn.Module) -> str | None:
    """The role of module ``m`` ('weight', 'pointwise', 'shape'), or None when it has no rule."""
    if hasattr(m, "racecar_transpose"):
        return "weight"
    if hasattr(m, "racecar_adjoint"):
        return "shape"
    if holds_softmax(m):
        return "weight"
    for cls in type(m).__mro__:
        if cls in _WEIGHT:
            return "weight"
        if cls in _SHAPE:
            return "shape"
        if cls in _POINTWISE:
            return "pointwise"
    return None


def role(m: nn.Module) -> str:
    """The role of a module in the reverse pass ('weight', 'pointwise', 'shape'); a clear error when it has none."""
    r = known_role(m)
    if r is None:
        name = type(m).__name__
        raise TypeError(
            f"racecar: no reverse rule for layer {name}. If it is affine (a linear map plus a bias), one call "
            f"registers it: racecar_core.reverse.register_affine({name}); a norm or activation: "
            f"register_pointwise({name}); a layer that only moves numbers: register_shape({name}, adjoint). Or give "
            "the module a racecar_transpose(y, input_shape) or racecar_adjoint(y, input_shape) method.")
    return r


def transpose(m: nn.Module, y: Tensor, input_shape: torch.Size, saved: Any = None) -> Tensor:
    """``M^T y`` for a weight layer (bias not included) or the adjoint of a shape layer (``saved``: what the forward
    trace recorded for it, e.g. max pooling's picks)."""
    if isinstance(m, MAXPOOL) and saved is not None:
        return maxpool_adjoint(y, saved, input_shape)
    if isinstance(m, nn.MultiheadAttention) or holds_softmax(m):
        if saved is None:
            raise ValueError(f"racecar: the transpose of {type(m).__name__} needs the attention weights of the "
                             "forward pass; walk the model with reverse.forward_trace / reverse_pass")
        if holds_softmax(m):
            return held_softmax_transpose(m, y, saved, input_shape)
        return attention_transpose(m, y, saved)
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
    """``y - b`` as ``y + (-b)``, the same numbers (backward negates the bias, not the signal's gradient): a Linear's
    bias runs along the last dimension (``[B, F]``, ``[B, T, F]``), any other layer's along the channel dimension 1."""
    b = getattr(m, "bias", None)
    if b is None or y.dim() <= 2 or isinstance(m, nn.Linear):
        return y if b is None else y + b.neg()
    return y + b.neg().view(1, -1, *([1] * (y.dim() - 2)))


# ---------------------------------------------------------------- functions and tensor methods in traced code
FunctionAdjoint = Callable[[Tensor, list, dict, list[Tensor]], list[Tensor | None]]


@dataclass(frozen=True)
class FunctionRule:
    """The reverse rule of a function or tensor method: its role and, for shape (linear) ones, the adjoint
    ``adjoint(y, args, kwargs, inputs) -> [contribution per tensor input]`` (None: the generic vector-Jacobian
    product). ``args``/``kwargs`` are the forward call's evaluated arguments, ``inputs`` its tensor inputs in order.
    Role ``join``: a sum of tensors (``a + b``, ``a - b``); ``scale``: a product or quotient with a number."""
    role: str
    adjoint: FunctionAdjoint | None = None


_FUNCTIONS: dict[Any, FunctionRule] = {}


def register_function(fn: Any, role: str, adjoint: FunctionAdjoint | None = None) -> None:
    """Declare how the reverse pass treats ``fn`` (a function such as ``torch.roll``, or a tensor method's name such
    as ``"roll"``) when a traced forward calls it: ``"pointwise"`` (re-applied forwards, like an activation) or
    ``"shape"`` (linear in its tensor inputs; ``adjoint`` as in ``FunctionRule``, default the exact generic one)."""
    if role not in ("pointwise", "shape", "join", "scale"):
        raise ValueError(f"racecar: a function's role is 'pointwise', 'shape', 'join' or 'scale', got {role!r}")
    _FUNCTIONS[fn] = FunctionRule(role, adjoint)


# functions of packages the core does not import (torchvision), by module and name: "module.name" -> rule
_BY_NAME: dict[str, FunctionRule] = {}


def function_rule(fn: Any) -> FunctionRule | None:
    """The rule of a traced function or method name, or None."""
    try:
        rule = _FUNCTIONS.get(fn)
    except TypeError:  # an unhashable target
        return None
    if rule is None and callable(fn):
        rule = _BY_NAME.get(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', '')}")
    return rule


STOCHASTIC_DEPTH = "torchvision.ops.stochastic_depth.stochastic_depth"


def stochastic_depth_mask(x: Tensor, p: float, mode: str) -> Tensor:
    """The keep-mask (over 1 - p) that torchvision's ``stochastic_depth`` draws for ``x``, drawn as it draws it (the
    same random numbers), so that the reverse pass can re-apply it as dropout's."""
    size = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(1.0 - p)
    return noise.div_(1.0 - p) if p < 1.0 else noise


def function_name(fn: Any) -> str:
    """A readable name for a traced function target (``torch.cat``, ``Tensor.permute``)."""
    if isinstance(fn, str):
        return f"Tensor.{fn}"
    mod = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    if mod.startswith("torch._C") or mod == "torch" or not mod or name.startswith("_VariableFunctionsClass."):
        mod, name = "torch", getattr(fn, "__name__", name)
    return f"{mod}.{name}" if mod not in ("_operator", "operator", "builtins") else f"operator.{name}"


def _reshape_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    return [y.reshape(inputs[0].shape)]


def _permute_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    dims = kwargs.get("dims", args[1:] if len(args) > 2 or isinstance(args[1], int) else args[1])
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d % len(dims)] = i
    return [y.permute(*inverse)]


def _transpose_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    return [y.transpose(args[1], args[2])]


def _movedim_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    source = kwargs.get("source", args[1])
    destination = kwargs.get("destination", args[2] if len(args) > 2 else None)
    return [torch.movedim(y, destination, source)]


def _cat_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if len(inputs) == 1 and isinstance(inputs[0], tuple):   # torch.cat(x.chunk(2)): a tuple signal back
        return [tuple(torch.split(y, [t.shape[dim] for t in inputs[0]], dim=dim))]
    return list(torch.split(y, [t.shape[dim] for t in inputs], dim=dim))


def _mean_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    x = inputs[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    if dim is None:
        return [y.expand(x.shape) / x.numel()]
    dims = [d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim)]
    count = 1
    for d in sorted(dims):
        count *= x.shape[d]
        if not keepdim:
            y = y.unsqueeze(d)
    return [y.expand(x.shape) / count]


def _pad_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
    pad = kwargs.get("pad", args[1])
    if mode != "constant":
        return [None]
    index = [slice(None)] * y.dim()
    for i in range(len(pad) // 2):
        d = y.dim() - 1 - i
        index[d] = slice(pad[2 * i], y.shape[d] - pad[2 * i + 1])
    return [y[tuple(index)]]


def _getitem_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor | None]:
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    if any(isinstance(i, (Tensor, list)) for i in index):
        return [None]   # advanced indexing may repeat positions, whose terms add up: the generic adjoint accumulates
    x = y.new_zeros(inputs[0].shape)
    x[args[1]] = y
    return [x]


def _pieces_back(y: tuple, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    """chunk, split, tensor_split: the pieces' signals (a tuple, zeros where a piece sends none) joined again."""
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
    return [torch.cat(list(y), dim)]


def _unbind_back(y: tuple, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    return [torch.stack(list(y), kwargs.get("dim", args[1] if len(args) > 1 else 0))]


def _stack_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if len(inputs) == 1 and isinstance(inputs[0], tuple):   # torch.stack(x.unbind(1)): a tuple signal back
        return [tuple(torch.unbind(y, dim))]
    return list(torch.unbind(y, dim))


def _cast_back(y: Tensor, args: list, kwargs: dict, inputs: list[Tensor]) -> list[Tensor]:
    return [y.to(inputs[0].dtype)]


for _adjoint, _fns in (
        (_reshape_back, (torch.flatten, "flatten", "view", "reshape", torch.reshape, "squeeze", torch.squeeze,
                         "unsqueeze", torch.unsqueeze, "unflatten", torch.unflatten, "view_as", "reshape_as")),
        (_cast_back, ("contiguous", "clone", torch.clone, "float", "double", "half", "bfloat16", "to", "type_as")),
        (_permute_back, (torch.permute, "permute")),
        (_transpose_back, (torch.transpose, "transpose", torch.swapaxes, "swapaxes", torch.swapdims, "swapdims")),
        (_movedim_back, (torch.movedim, "movedim", torch.moveaxis, "moveaxis")),
        (_cat_back, (torch.cat, torch.concat)),
        (_pieces_back, (torch.chunk, "chunk", torch.split, torch.functional.split, "split", torch.tensor_split,
                        "tensor_split")),
        (_unbind_back, (torch.unbind, "unbind")),
        (_stack_back, (torch.stack,)),
        (_fmaxpool_without_indices, FMAXPOOL),
        (_mean_back, (torch.mean, "mean")),
        (_pad_back, (F.pad,)),
        (_getitem_back, (operator.getitem,)),
        (None, (F.interpolate, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                F.adaptive_avg_pool3d, F.pixel_shuffle, F.pixel_unshuffle, torch.roll, "roll", torch.sum, "sum"))):
    for _fn in _fns:   # None: the exact generic adjoint
        register_function(_fn, "shape", _adjoint)
for _fn in (operator.add, operator.iadd, torch.add, "add", "add_", operator.sub, operator.isub, torch.sub, "sub"):
    register_function(_fn, "join")
for _fn in (operator.mul, operator.imul, torch.mul, "mul", operator.truediv, torch.div, "div", operator.neg,
            torch.neg, "neg", operator.matmul, torch.matmul, "matmul", torch.bmm, "bmm", torch.einsum,
            F.scaled_dot_product_attention):   # with two signals: a product, one factor held (reverse._hold)
    register_function(_fn, "scale")


def attention_adjoint(y: Tensor, args: list, kwargs: dict) -> Tensor:
    """``A^T y`` for ``scaled_dot_product_attention(q, k, v, ...) = A v`` with the attention weights ``A`` held at
    their forward values (recomputed from the forward pass's query and key, mask, causality and scale)."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    o = {n: args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names)}
    if o["dropout_p"] or o["enable_gqa"]:
        raise TypeError("racecar: scaled_dot_product_attention with dropout_p > 0 or enable_gqa has no reverse rule "
                        "(its dropout mask is not recorded); use dropout_p=0 or an attention module with a rule")
    q, k = o["query"], o["key"]
    s = q @ k.transpose(-2, -1) * (o["scale"] if o["scale"] is not None else q.shape[-1] ** -0.5)
    if o["is_causal"]:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril(), float("-inf"))
    mask = o["attn_mask"]
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    return torch.softmax(s, -1).transpose(-2, -1) @ y


# what holds a product's other factor at its forward value: gates and attention weights
GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softmax)
GATE_FUNCTIONS = (torch.sigmoid, "sigmoid", F.sigmoid, F.hardsigmoid, F.softmax, torch.softmax, "softmax")
for _fn in (F.relu, torch.relu, "relu", "relu_", F.relu6, F.leaky_relu, F.prelu, F.rrelu, F.elu, F.celu, F.selu,
            F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.hardshrink, F.softshrink, F.tanhshrink,
            F.threshold, F.softplus, F.softsign, F.logsigmoid, torch.tanh, "tanh", torch.sigmoid, "sigmoid",
            torch.clamp, "clamp", "clamp_min", "clamp_max", F.softmax, F.log_softmax, torch.softmax, "softmax",
            "log_softmax", F.layer_norm, F.group_norm, F.rms_norm, F.instance_norm,
            F.local_response_norm, F.batch_norm, F.dropout, F.normalize):
    register_function(_fn, "pointwise")
# torchvision's stochastic depth (a leaf for fx): dropout of whole residual branches, its mask recorded by
# forward_trace and re-applied in the reverse pass as dropout's; torchvision's Swin pads with a leaf function
_BY_NAME[STOCHASTIC_DEPTH] = FunctionRule("pointwise")
_BY_NAME["torchvision.models.swin_transformer._patch_merging_pad"] = FunctionRule("shape")
