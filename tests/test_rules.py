"""Every reverse rule passes the adjoint test <A x, y> = <x, A^T y> in float64: modules one by one, functions and
tensor methods inside traced networks."""
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from racecar_core import reverse, rules
from racecar_core.layers import OptionAShortcut, PeriodicConv2d


pytestmark = pytest.mark.usefixtures("float64")   # exact checks in double precision (tests/conftest.py)


def relative_gap(lhs: torch.Tensor, rhs: torch.Tensor) -> float:
    return float(((lhs - rhs).abs() / (lhs.abs() + rhs.abs() + 1e-12)).detach())


def adjoint_gap(m: nn.Module, x_shape: tuple) -> float:
    """|<M x, y> - <x, M^T y>| / scale for the linear part of a weight or shape layer."""
    x = torch.randn(x_shape)
    mx = rules.subtract_bias(m, m(x)) if rules.role(m) == "weight" else m(x)
    y = torch.randn(mx.shape)
    mty = rules.transpose(m, y, x.shape)
    assert mty.shape == x.shape
    return relative_gap((mx * y).sum(), (x * mty).sum())


MODULE_CASES = [
    (nn.Linear(7, 5), (3, 7)),
    (nn.Linear(4, 6), (2, 3, 4)),                 # on the last axis of a 3-D input
    (nn.Linear(5, 9, bias=False), (4, 5)),
    (nn.Conv2d(3, 4, 3, padding=1), (2, 3, 8, 8)),
    (nn.Conv2d(3, 6, 3, stride=2, padding=1), (2, 3, 9, 9)),   # odd size: needs output_padding
    (nn.Conv2d(3, 6, 3, stride=2, padding=1), (2, 3, 8, 8)),
    (nn.Conv2d(4, 4, 5, padding=4, dilation=2, groups=2), (1, 4, 7, 6)),
    (nn.Conv2d(2, 3, 1, stride=2), (2, 2, 5, 5)),
    (nn.Conv2d(4, 4, 7, padding=3, groups=4), (2, 4, 6, 5)),            # depthwise, stride 1: a flipped conv
    (nn.Conv1d(3, 3, 3, padding=1, dilation=2, groups=3), (2, 3, 9)),   # depthwise, dilated, narrower output
    (nn.Conv3d(2, 2, 3, padding=(0, 1, 2), groups=2), (1, 2, 4, 5, 5)),
    # kernel = stride, no padding (patchify stems, downsampling, patch embeddings): one matrix product
    (nn.Conv2d(3, 5, 4, stride=4), (2, 3, 8, 12)),
    (nn.Conv2d(3, 5, (2, 3), stride=(2, 3)), (2, 3, 9, 10)),          # remainders the stride leaves out
    (nn.Conv1d(3, 4, 4, stride=4), (2, 3, 13)),
    (nn.Conv3d(2, 3, 2, stride=2, bias=False), (1, 2, 4, 5, 6)),
    (nn.Conv2d(6, 4, 1), (2, 6, 2, 2)),                                 # 1x1 on a map of 4 positions
    (nn.Conv1d(6, 4, 1), (2, 6, 3)),
    # one position in and out: a product with the tap that sees it (any groups, dilation)
    (nn.Conv2d(6, 4, 3, padding=1), (2, 6, 1, 1)),
    (nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2), (2, 6, 1, 1)),
    (nn.Conv2d(6, 6, 5, padding=2, groups=6), (3, 6, 1, 1)),           # depthwise
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2), (2, 4, 1, 1)),
    (nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1)), (2, 2, 1, 1, 1)),
    (nn.Flatten(), (2, 3, 4, 4)),
    (nn.AvgPool2d(2), (2, 3, 6, 6)),
    (nn.AvgPool2d(2), (2, 3, 7, 5)),              # drops the last row and column
    (nn.AvgPool2d(3, stride=2, padding=1), (1, 2, 7, 7)),   # overlapping windows: the autograd fallback
    (nn.AvgPool2d((1, 2)), (1, 2, 3, 6)),
    (nn.AdaptiveAvgPool2d(1), (2, 3, 5, 5)),
    (nn.AdaptiveAvgPool2d((2, None)), (2, 3, 4, 5)),
    (nn.AdaptiveAvgPool2d(3), (1, 2, 5, 5)),       # uneven windows: the autograd fallback
    # the generic transpose (vector-Jacobian product of the affine map)
    (nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), (1, 2, 5, 5)),
    (nn.Conv2d(2, 4, 3, padding="same", padding_mode="reflect"), (1, 2, 6, 5)),
    (nn.Conv1d(3, 4, 5, stride=2, padding=2), (2, 3, 11)),
    (nn.Conv1d(4, 8, 3, dilation=2, groups=4, padding_mode="replicate", padding=2), (2, 4, 9)),  # depthwise
    (nn.Conv3d(2, 3, 3, stride=(1, 2, 2), padding=1), (1, 2, 4, 6, 5)),
    (nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1), (2, 3, 7)),
    (nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2), (1, 4, 5, 4)),
    (nn.ConvTranspose3d(2, 2, 2, stride=2), (1, 2, 3, 2, 3)),
    (nn.Unflatten(1, (2, 6)), (3, 12)),
    (nn.AvgPool1d(3, stride=2), (2, 3, 9)),
    (nn.AvgPool3d(2), (1, 2, 4, 4, 4)),
    (nn.AdaptiveAvgPool1d(3), (2, 2, 7)),
    (nn.ChannelShuffle(2), (2, 4, 3, 3)),          # ShuffleNet's
    (nn.AdaptiveAvgPool3d(1), (1, 2, 3, 4, 5)),
    (nn.Upsample(scale_factor=2), (1, 2, 3, 4)),
    (nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 3, 4)),
    (nn.ZeroPad2d((1, 2, 0, 1)), (1, 2, 3, 4)),
    (nn.ConstantPad1d(2, 0.0), (2, 3, 5)),
    (nn.ConstantPad2d(1, 0.0), (1, 2, 3, 3)),
    (nn.ConstantPad3d(1, 0.0), (1, 1, 2, 2, 2)),
    (nn.CircularPad1d(2), (2, 3, 5)),
    (nn.CircularPad2d(1), (1, 2, 4, 4)),
    (nn.ReflectionPad1d(2), (2, 3, 5)),
    (nn.ReflectionPad2d(1), (1, 2, 4, 4)),
    (nn.ReplicationPad1d(2), (2, 3, 5)),
    (nn.ReplicationPad2d(1), (1, 2, 4, 4)),
    (nn.PixelShuffle(2), (1, 8, 3, 3)),
    (nn.PixelUnshuffle(2), (1, 2, 4, 6)),
    (OptionAShortcut(4, 8, 2), (2, 4, 8, 8)),
    (OptionAShortcut(4, 8, 2), (2, 4, 7, 7)),
    (OptionAShortcut(3, 3, 1), (1, 3, 5, 5)),
    (PeriodicConv2d(3, 4, 3), (2, 3, 8, 16)),
    (PeriodicConv2d(2, 3, 7), (1, 2, 8, 16)),
    (PeriodicConv2d(2, 3, 3, stride=2), (1, 2, 9, 16)),
    (PeriodicConv2d(2, 2, 1), (1, 2, 4, 4)),
]


@pytest.mark.parametrize("layer, shape", MODULE_CASES,
                         ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_module_adjoint(layer, shape):
    assert adjoint_gap(layer.double(), shape) < 1e-12


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_a_patch_convolutions_transpose_is_its_vector_jacobian_product_in_the_signals_layout(memory_format):
    """Kernel = stride: the transpose (one matrix product) equals autograd's input gradient of the convolution,
    and keeps the signal's memory layout (a channels-last ConvNeXt signal stays channels-last for the depthwise
    convolutions below, whose oneDNN kernels are slow on NCHW maps of 2x2)."""
    conv = nn.Conv2d(4, 6, 2, stride=2).double()
    x = torch.randn(2, 4, 7, 6).contiguous(memory_format=memory_format).requires_grad_(True)
    y = torch.randn(2, 6, 3, 3).contiguous(memory_format=memory_format)
    got = rules.transpose(conv, y, x.shape)
    (want,) = torch.autograd.grad(conv(x), x, y)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    assert got.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("pool, shape", [(nn.MaxPool2d(2), (2, 3, 6, 7)),
                                         (nn.MaxPool2d(3, stride=1, padding=1), (1, 2, 5, 5)),
                                         (nn.MaxPool1d(3, stride=2), (2, 2, 9)), (nn.MaxPool3d(2), (1, 2, 4, 4, 4))],
                         ids=["2x2", "overlapping", "1d", "3d"])
def test_max_pooling_adjoint_at_the_forward_picks(pool, shape):
    x = torch.randn(shape)
    out, idx = rules.maxpool_forward(pool, x)
    assert torch.equal(out, pool(x))

    def pick(v):  # the linear map max pooling is at these picks
        return v.flatten(2).gather(2, idx.flatten(2)).reshape(out.shape)
    v, y = torch.randn(shape), torch.randn(out.shape)
    back = rules.transpose(pool, y, torch.Size(shape), idx)
    assert relative_gap((pick(v) * y).sum(), (v * back).sum()) < 1e-12
    with pytest.raises(ValueError, match="needs the positions"):
        rules.transpose(pool, y, torch.Size(shape))


class Probe(nn.Module):
    """A bias-free Linear on the last axis (the weight layer a plan needs), then the function under test."""

    def __init__(self, fn, n: int):
        super().__init__()
        self.lin, self.fn = nn.Linear(n, n, bias=False), fn

    def forward(self, x):
        return self.fn(self.lin(x))


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("s", torch.arange(1.0, 7.0))

    def forward(self, x):
        return x * self.s


def _swap(pieces, dim):
    """The two pieces of a chunk or split joined in the other order (a linear map that uses both)."""
    return torch.cat([pieces[1], pieces[0]], dim)


# (rule key, the traced function, input shape)
FUNCTION_CASES = [
    (operator.getitem, lambda x: x[:, [0, 0, 2]], (2, 3, 4)),        # repeated indices: their terms add up
    (operator.getitem, lambda x: x[torch.tensor([1, 1, 0])] * 1, (2, 3, 4)),
    (torch.chunk, lambda x: _swap(torch.chunk(x, 2, 1), 1), (2, 4, 3)),
    (torch.chunk, lambda x: torch.cat(torch.chunk(x, 2, 1), 1), (2, 4, 3)),     # the tuple itself into cat
    ("chunk", lambda x: (lambda p: torch.cat([p[1], p[0] + p[1]], -1))(x.chunk(2, -1)), (2, 3, 4)),  # fan-out
    (torch.split, lambda x: _swap(torch.split(x, [1, 3], 1), 1), (2, 4, 3)),
    ("split", lambda x: _swap(x.split(2, dim=-1), -1), (2, 3, 4)),
    (torch.tensor_split, lambda x: _swap(torch.tensor_split(x, [1], 1), 1), (2, 3, 4)),
    ("tensor_split", lambda x: _swap(x.tensor_split(2, -1), -1), (2, 3, 4)),
    (torch.unbind, lambda x: (lambda p: torch.stack([p[1], p[0], p[2]], 1))(torch.unbind(x, 1)), (2, 3, 4)),
    ("unbind", lambda x: torch.stack(x.unbind(-1), 1), (2, 3, 3)),               # the tuple itself into stack
    (torch.stack, lambda x: torch.stack([x, 2 * x], -1), (2, 3)),
    (operator.matmul, lambda x: x @ torch.ones(4, 2), (2, 3, 4)),                # products with a constant
    (torch.matmul, lambda x: torch.matmul(torch.ones(3, 3), x), (2, 3, 4)),
    ("matmul", lambda x: x.matmul(torch.ones(4, 4)), (2, 4)),
    (torch.bmm, lambda x: torch.bmm(x, torch.ones(2, 4, 3)), (2, 3, 4)),
    ("bmm", lambda x: x.bmm(torch.ones(2, 4, 1)), (2, 3, 4)),
    (torch.einsum, lambda x: torch.einsum("bij,jk->bik", x, torch.ones(4, 2)), (2, 3, 4)),
    (F.scaled_dot_product_attention, lambda x: F.scaled_dot_product_attention(torch.ones(2, 5, 4) / 3,
                                                                               torch.arange(12.0).reshape(2, 3, 2)
                                                                               .repeat(1, 1, 2) / 10, x), (2, 3, 4)),
    (F.max_pool1d, lambda x: F.max_pool1d(x, 2), (2, 3, 4)),                     # at the forward pass's picks
    (F.max_pool2d, lambda x: F.max_pool2d(x, 2), (1, 2, 4, 4)),
    (F.max_pool3d, lambda x: F.max_pool3d(x, 2, stride=1), (1, 1, 2, 3, 4)),
    (torch.flatten, lambda x: torch.flatten(x, 1), (2, 3, 4)),
    ("flatten", lambda x: x.flatten(1), (2, 3, 4)),
    ("view", lambda x: x.view(x.shape[0], -1), (2, 3, 4)),
    ("reshape", lambda x: x.reshape(2, 4, 3), (2, 3, 4)),
    (torch.reshape, lambda x: torch.reshape(x, (6, 4)), (2, 3, 4)),
    ("squeeze", lambda x: x.squeeze(1), (2, 1, 4)),
    (torch.squeeze, lambda x: torch.squeeze(x, 1), (2, 1, 4)),
    ("unsqueeze", lambda x: x.unsqueeze(1), (2, 4)),
    (torch.unsqueeze, lambda x: torch.unsqueeze(x, 0), (2, 4)),
    ("unflatten", lambda x: x.unflatten(-1, (2, 3)), (2, 6)),
    (torch.unflatten, lambda x: torch.unflatten(x, -1, (3, 2)), (2, 6)),
    ("view_as", lambda x: x[:, :2].view_as(x[:, 2:]), (2, 4, 3)),
    ("reshape_as", lambda x: x.reshape_as(x), (2, 3)),
    ("contiguous", lambda x: x.transpose(1, 2).contiguous(), (2, 3, 4)),
    ("clone", lambda x: x.clone(), (2, 3)),
    (torch.clone, lambda x: torch.clone(x), (2, 3)),
    ("float", lambda x: x.float(), (2, 3)),                          # float32: compared to 1e-5
    ("double", lambda x: x.double(), (2, 3)),
    ("half", lambda x: x.half().double() * 0 + x, (2, 3)),
    ("bfloat16", lambda x: x.bfloat16().double() * 0 + x, (2, 3)),
    ("to", lambda x: x.to(torch.float64), (2, 3)),
    ("type_as", lambda x: x.type_as(x), (2, 3)),
    (torch.permute, lambda x: torch.permute(x, (0, 2, 1)), (2, 3, 4)),
    ("permute", lambda x: x.permute(2, 0, 1), (2, 3, 4)),
    (torch.transpose, lambda x: torch.transpose(x, 0, 2), (2, 3, 4)),
    ("transpose", lambda x: x.transpose(1, 2), (2, 3, 4)),
    (torch.swapaxes, lambda x: torch.swapaxes(x, 0, 2), (2, 3, 4)),
    ("swapaxes", lambda x: x.swapaxes(1, 2), (2, 3, 4)),
    (torch.swapdims, lambda x: torch.swapdims(x, 0, 1), (2, 3, 4)),
    ("swapdims", lambda x: x.swapdims(-1, 0), (2, 3, 4)),
    (torch.movedim, lambda x: torch.movedim(x, 0, -1), (2, 3, 4)),
    ("movedim", lambda x: x.movedim((0, 1), (2, 0)), (2, 3, 4)),
    (torch.moveaxis, lambda x: torch.moveaxis(x, -1, 0), (2, 3, 4)),
    ("moveaxis", lambda x: x.moveaxis(1, 0), (2, 3, 4)),
    (torch.cat, lambda x: torch.cat([x, x[:, :1]], 1), (2, 3, 4)),
    (torch.concat, lambda x: torch.concat([x[:, 1:], x], dim=1), (2, 3, 4)),
    (torch.mean, lambda x: torch.mean(x, 1), (2, 3, 4)),
    ("mean", lambda x: x.mean((1, 2), keepdim=True), (2, 3, 4)),
    ("mean", lambda x: x.mean() * torch.ones(2), (2, 3)),
    (F.pad, lambda x: F.pad(x, (1, 2)), (2, 3, 4)),
    (F.pad, lambda x: F.pad(x, (1, 1), mode="circular"), (2, 3, 4)),   # the generic adjoint
    (operator.getitem, lambda x: x[:, 1:], (2, 3, 4)),
    (operator.getitem, lambda x: x[..., ::2], (2, 3, 4)),
    (F.interpolate, lambda x: F.interpolate(x, scale_factor=2), (1, 2, 3, 4)),
    (F.avg_pool1d, lambda x: F.avg_pool1d(x, 2), (2, 3, 4)),
    (F.avg_pool2d, lambda x: F.avg_pool2d(x, 2), (1, 2, 4, 4)),
    (F.avg_pool3d, lambda x: F.avg_pool3d(x, 2), (1, 1, 2, 2, 4)),
    (F.adaptive_avg_pool1d, lambda x: F.adaptive_avg_pool1d(x, 1), (2, 3, 4)),
    (F.adaptive_avg_pool2d, lambda x: F.adaptive_avg_pool2d(x, 1), (1, 2, 3, 4)),
    (F.adaptive_avg_pool3d, lambda x: F.adaptive_avg_pool3d(x, 1), (1, 1, 2, 3, 4)),
    (F.pixel_shuffle, lambda x: F.pixel_shuffle(x, 2), (1, 4, 2, 4)),
    (F.pixel_unshuffle, lambda x: F.pixel_unshuffle(x, 2), (1, 1, 2, 4)),
    (torch.roll, lambda x: torch.roll(x, 1, -1), (2, 3, 4)),
    ("roll", lambda x: x.roll(2, 1), (2, 3, 4)),
    (torch.sum, lambda x: torch.sum(x, 1), (2, 3, 4)),
    ("sum", lambda x: x.sum(-1), (2, 3, 4)),
    (operator.add, lambda x: x + x[:, :1], (2, 3, 4)),            # a join, broadcast
    (operator.iadd, None, (2, 3)),
    (torch.add, lambda x: torch.add(x, x * 2), (2, 3)),
    ("add", lambda x: x.add(x[:1]), (2, 3)),
    ("add_", lambda x: (x * 1).add_(x), (2, 3)),
    (operator.sub, lambda x: x - x[:, :1] * 0.5, (2, 4)),
    (operator.isub, None, (2, 3)),
    (torch.sub, lambda x: torch.sub(x[:1], x), (2, 3)),
    ("sub", lambda x: x.sub(x * 0.5), (2, 3)),
    (operator.mul, lambda x: 3.0 * x, (2, 3)),
    (operator.imul, None, (2, 3)),
    (torch.mul, lambda x: torch.mul(x, 0.5), (2, 3)),
    ("mul", lambda x: x.mul(-2), (2, 3)),
    (operator.truediv, lambda x: x / 4, (2, 3)),
    (torch.div, lambda x: torch.div(x, 2.0), (2, 3)),
    ("div", lambda x: x.div(3), (2, 3)),
    (operator.neg, lambda x: -x, (2, 3)),
    (torch.neg, lambda x: torch.neg(x), (2, 3)),
    ("neg", lambda x: x.neg(), (2, 3)),
]


class InPlace(nn.Module):
    """``+=``, ``-=``, ``*=`` in a forward."""

    def __init__(self, op):
        super().__init__()
        self.lin, self.op = nn.Linear(3, 3, bias=False), op

    def forward(self, x):
        y = self.lin(x)
        z = y * 1
        if self.op == "iadd":
            z += y
        elif self.op == "isub":
            z -= y * 0.5
        else:
            z *= 2.0
        return z


def network_adjoint_gap(net: nn.Module, shape: tuple) -> float:
    """|<A x, y> - <x, A^T y>| / scale, ``A^T y`` by the full reverse walk of a linear network, in units of the
    precision the output's dtype allows (1e-12 in float64): below 1 passes."""
    x = torch.randn(shape)
    trace = reverse.forward_trace(net, x)
    torch.testing.assert_close(trace.output, net(x))
    y = torch.randn(trace.output.shape)
    back = reverse.transpose_network(trace, y)
    assert back.shape == x.shape
    gap = relative_gap((trace.output * y).sum(), (x * back).sum())
    return gap / (1e-12 if trace.output.dtype == torch.float64 else 1e-5)   # a float32 output: to 1e-5


@pytest.mark.parametrize("key, fn, shape", FUNCTION_CASES, ids=[rules.function_name(k) for k, _, _ in FUNCTION_CASES])
def test_function_adjoint(key, fn, shape):
    if fn is None:
        net = InPlace(rules.function_name(key).split(".")[-1])
    else:
        net = Probe(fn, shape[-1])
    assert network_adjoint_gap(net, shape) < 1


def test_a_parameter_or_buffer_times_the_signal_is_a_scale():
    assert network_adjoint_gap(nn.Sequential(nn.Linear(6, 6, bias=False), Scale()), (3, 6)) < 1


def test_every_registered_rule_has_an_adjoint_test():
    tested = {type(layer) for layer, _ in MODULE_CASES} | {nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                                                           nn.MultiheadAttention}   # test_reverse.py
    modules = set(rules._WEIGHT) | set(rules._SHAPE)
    assert modules <= tested, f"rules without an adjoint test: {sorted(c.__name__ for c in modules - tested)}"
    linear = {k for k, r in rules._FUNCTIONS.items() if r.role != "pointwise"}
    missing = linear - {k for k, _, _ in FUNCTION_CASES}
    assert not missing, f"functions without an adjoint test: {sorted(map(rules.function_name, missing))}"


def test_disjoint_pools_use_the_closed_form():
    assert rules._pool_windows(nn.AdaptiveAvgPool2d(1), torch.Size((1, 3, 8, 8))) == (8, 8)
    assert rules._pool_windows(nn.AvgPool2d(2), torch.Size((1, 3, 7, 7))) == (2, 2)
    assert rules._pool_windows(nn.AvgPool2d(3, stride=2), torch.Size((1, 3, 7, 7))) is None
    assert rules._pool_windows(nn.AdaptiveAvgPool2d(3), torch.Size((1, 3, 5, 5))) is None


def test_unsupported_layer_says_the_one_call_that_registers_it():
    class Affine(nn.Module):  # affine, but unknown to the reverse pass
        def __init__(self):
            super().__init__()
            self.w, self.bias = nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(3))

        def forward(self, x):
            return x * self.w + self.bias

    with pytest.raises(TypeError, match=r"register_affine\(LSTM\)"):
        reverse.role(nn.LSTM(3, 3))
    with pytest.raises(TypeError, match=r"racecar_core.reverse.register_affine\(Affine\)"):
        reverse.role(Affine())
    try:
        reverse.register_affine(Affine)
        m = Affine()
        assert reverse.role(m) == "weight" and adjoint_gap(m, (4, 3)) < 1e-12
    finally:
        rules._WEIGHT.pop(Affine)


def test_the_generic_transpose_is_differentiable_in_the_weights():
    conv = nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular")
    y = torch.randn(4, 3, 8)
    rec = rules.transpose(conv, y, torch.Size((4, 2, 8)))
    (g,) = torch.autograd.grad(rec.pow(2).sum(), conv.weight)
    assert g.abs().sum() > 0
    with torch.no_grad():
        assert not rules.transpose(conv, y, torch.Size((4, 2, 8))).requires_grad


def test_bias_runs_along_the_features_of_a_linear_and_the_channels_of_a_conv():
    lin, conv = nn.Linear(3, 4), nn.Conv2d(2, 4, 1)
    y = torch.randn(2, 4, 4)  # [B, T, F] with T == F: only the module type can tell the axes apart
    torch.testing.assert_close(rules.subtract_bias(lin, y), y - lin.bias)
    y4 = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(rules.subtract_bias(conv, y4), y4 - conv.bias.view(1, 4, 1, 1))
    torch.testing.assert_close(rules.transpose(lin, y, torch.Size((2, 4, 3))), y @ lin.weight)


def test_periodic_conv_wraps_in_longitude_only():
    conv = PeriodicConv2d(1, 1, 3, bias=False).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 0] = 1.0          # picks the western neighbour
    x = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)
    torch.testing.assert_close(conv(x)[0, 0, :, 0], x[0, 0, :, 3])   # wraps around
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 1] = 1.0          # picks the northern neighbour
    assert conv(x)[0, 0, 0].abs().sum() == 0   # zero padding in latitude


def test_constant_pieces_of_a_cat_and_constants_computed_from_parameters_carry_no_signal():
    class Token(nn.Module):          # a learned token concatenated in front, as in a vision transformer
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3, bias=False)
            self.token = nn.Parameter(torch.randn(1, 1, 3))

        def forward(self, x):
            y = self.lin(x)
            return torch.cat([self.token.expand(y.shape[0], -1, -1), y], dim=1) * 2.0

    net = Token()
    plan = reverse.plan_of(net)
    assert [s.op for s in plan.steps if s.call == "method" and s.target == "expand"] == ["const"]
    x = torch.randn(2, 4, 3)
    trace = reverse.forward_trace(net, x)
    y = torch.randn(trace.output.shape)
    back = reverse.transpose_network(trace, y)
    torch.testing.assert_close(back, (2.0 * y[:, 1:]) @ net.lin.weight)   # the token's row sends nothing back
