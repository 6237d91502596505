"""The reverse pass: adjoint tests for every reversible layer and the official MLP formulas."""
import numpy as np
import pytest
import torch
from torch import nn

from racecar_core import reverse
from racecar_core.models import mnist_linear, peak_mlp



@pytest.fixture(autouse=True)
def float64():
    """Exact adjoint tests in double precision; the default dtype is restored for the other test modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def adjoint_gap(m: nn.Module, x_shape: tuple) -> float:
    """|<M x, y> - <x, M^T y>| / scale for the linear part of a weight or shape layer."""
    x = torch.randn(x_shape)
    mx = reverse.subtract_bias(m, m(x)) if reverse.role(m) == "weight" else m(x)
    y = torch.randn(mx.shape)
    mty = reverse.transpose(m, y, x.shape)
    assert mty.shape == x.shape
    lhs, rhs = (mx * y).sum(), (x * mty).sum()
    return float(((lhs - rhs).abs() / (lhs.abs() + rhs.abs() + 1e-12)).detach())


ADJOINT_CASES = [
    (nn.Linear(7, 5), (3, 7)),
    (nn.Linear(4, 6), (2, 3, 4)),                 # on the last axis of a 3-D input
    (nn.Linear(5, 9, bias=False), (4, 5)),
    (nn.Conv2d(3, 4, 3, padding=1), (2, 3, 8, 8)),
    (nn.Conv2d(3, 6, 3, stride=2, padding=1), (2, 3, 9, 9)),   # odd size: needs output_padding
    (nn.Conv2d(3, 6, 3, stride=2, padding=1), (2, 3, 8, 8)),
    (nn.Conv2d(4, 4, 5, padding=4, dilation=2, groups=2), (1, 4, 7, 6)),
    (nn.Conv2d(2, 3, 1, stride=2), (2, 2, 5, 5)),
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
]


@pytest.mark.parametrize("layer, shape", ADJOINT_CASES, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_adjoint(layer, shape):
    assert adjoint_gap(layer.double(), shape) < 1e-12


def test_every_registered_rule_has_an_adjoint_test():
    tested = {type(layer) for layer, _ in ADJOINT_CASES} | {PeriodicConv2d, OptionAShortcut,  # tested below
                                                            nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d}
    rules = set(reverse._WEIGHT) | set(reverse._SHAPE)
    assert rules <= tested, f"rules without an adjoint test: {sorted(c.__name__ for c in rules - tested)}"


def test_disjoint_pools_use_the_closed_form():
    assert reverse._pool_windows(nn.AdaptiveAvgPool2d(1), torch.Size((1, 3, 8, 8))) == (8, 8)
    assert reverse._pool_windows(nn.AvgPool2d(2), torch.Size((1, 3, 7, 7))) == (2, 2)
    assert reverse._pool_windows(nn.AvgPool2d(3, stride=2), torch.Size((1, 3, 7, 7))) is None
    assert reverse._pool_windows(nn.AdaptiveAvgPool2d(3), torch.Size((1, 3, 5, 5))) is None


def test_unsupported_layer_says_the_one_call_that_registers_it():
    class Scale(nn.Module):  # affine, but unknown to the reverse pass
        def __init__(self):
            super().__init__()
            self.w, self.bias = nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(3))

        def forward(self, x):
            return x * self.w + self.bias

    with pytest.raises(TypeError, match=r"register_affine\(LSTM\)"):
        reverse.role(nn.LSTM(3, 3))
    with pytest.raises(TypeError, match=r"racecar_core.reverse.register_affine\(Scale\)"):
        reverse.role(Scale())
    try:
        reverse.register_affine(Scale)
        m = Scale()
        assert reverse.role(m) == "weight" and adjoint_gap(m, (4, 3)) < 1e-12
    finally:
        reverse._WEIGHT.pop(Scale)


def test_the_generic_transpose_is_differentiable_in_the_weights():
    conv = nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular")
    y = torch.randn(4, 3, 8)
    rec = reverse.transpose(conv, y, torch.Size((4, 2, 8)))
    (g,) = torch.autograd.grad(rec.pow(2).sum(), conv.weight)
    assert g.abs().sum() > 0
    with torch.no_grad():
        assert not reverse.transpose(conv, y, torch.Size((4, 2, 8))).requires_grad


def assert_rr_trains(net: nn.Module, x: torch.Tensor, n_classes: int, steps: int = 30) -> None:
    """RR with Adam: the loss stays finite, every weight gets a gradient, the reverse pass returns the input's shape
    and the reconstruction error falls by at least 30 %."""
    y = torch.randint(0, n_classes, (len(x),))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    recs = []
    for _ in range(steps):
        out, rec = reverse.rr_loss(net, x, "full", "mean")
        loss = nn.functional.cross_entropy(out, y) + rec
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        opt.step()
        recs.append(float(rec.detach()))
    assert reverse.reverse_pass(reverse.forward_trace(net, x))[0][1].shape == x.shape and recs[-1] < 0.7 * recs[0]


def test_rr_trains_a_1d_convolutional_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 8, 3, stride=2,
                        padding=1, padding_mode="circular"), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 4))
    assert_rr_trains(net, torch.randn(16, 2, 32), 4)


def test_bias_runs_along_the_features_of_a_linear_and_the_channels_of_a_conv():
    lin, conv = nn.Linear(3, 4), nn.Conv2d(2, 4, 1)
    y = torch.randn(2, 4, 4)  # [B, T, F] with T == F: only the module type can tell the axes apart
    torch.testing.assert_close(reverse.subtract_bias(lin, y), y - lin.bias)
    y4 = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(reverse.subtract_bias(conv, y4), y4 - conv.bias.view(1, 4, 1, 1))
    torch.testing.assert_close(reverse.transpose(lin, y, torch.Size((2, 4, 3))), y @ lin.weight)


def test_reconstruction_loss_is_float32_under_bf16():
    d, r = torch.randn(4, 8), torch.randn(4, 8)
    pairs = [(d.bfloat16(), r.bfloat16())]
    for reduction in ("sum", "mean"):
        loss = reverse.reconstruction_loss(pairs, reduction)
        expect = reverse.reconstruction_loss([(d.bfloat16().float(), r.bfloat16().float())], reduction)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, expect)
    assert reverse.reconstruction_loss([(d.double(), r.double())]).dtype == torch.float64


def test_non_sequential_model_is_a_clear_error():
    with pytest.raises(TypeError, match="nn.Sequential"):
        reverse.layers_of(nn.Linear(3, 3))


def test_mnist_reverse_matches_official():
    torch.manual_seed(0)
    net = mnist_linear().double()
    x = torch.rand(2, 1, 28, 28) * 255
    W, b = net[1].weight.T, net[1].bias          # official row convention: W is [in, out]
    d1 = x.reshape(2, -1)
    back = (d1 @ W + b - b) @ W.T
    pairs = reverse.reverse_pass(reverse.forward_trace(net, x))
    assert len(pairs) == 1
    torch.testing.assert_close(pairs[0][0], d1)
    torch.testing.assert_close(pairs[0][1], back)
    loss = reverse.reconstruction_loss(pairs, "sum")
    torch.testing.assert_close(loss, 0.5 * ((back - d1) ** 2).sum())


def test_peak_reverse_matches_official_formulas():
    torch.manual_seed(1)
    net = peak_mlp().double().train()
    ref = peak_mlp().double().train()
    ref.load_state_dict(net.state_dict())
    x = torch.rand(16, 1, 28, 28) * 255
    out, rec = reverse.rr_loss(net, x, "full", "sum")
    # hand-written official formulas on the twin network
    _, l1, bn1, relu, l2, bn2, _ = ref
    W1, b1, W2, b2 = l1.weight.T, l1.bias, l2.weight.T, l2.bias
    d1 = x.reshape(16, -1)
    d2 = torch.relu(bn1(d1 @ W1 + b1))
    d3 = torch.relu(bn2(d2 @ W2 + b2))
    d2r = torch.relu(bn1((d3 - b2) @ W2.T))       # lower layer's BN and ReLU re-applied
    d1r = (d2r - b1) @ W1.T                        # input layer: no BN, no activation
    expect = 0.5 * ((d1r - d1) ** 2).sum() + 0.5 * ((d2r - d2) ** 2).sum()
    torch.testing.assert_close(out, d3)
    torch.testing.assert_close(rec, expect)
    # the reverse call updates BN1's moving averages as TF did: both nets saw the same two batches
    torch.testing.assert_close(net[2].running_mean, ref[2].running_mean)
    assert net[2].num_batches_tracked.item() == 2
    assert net[2].eps == 1e-3 and net[2].momentum == 0.1


def test_gradients_flow_through_both_sides():
    torch.manual_seed(2)
    net = peak_mlp().double()
    _, rec = reverse.rr_loss(net, torch.rand(8, 1, 28, 28))
    rec.backward()
    for p in net.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_local_mode_is_wtw():
    torch.manual_seed(3)
    net = peak_mlp().double()
    x = torch.rand(4, 1, 28, 28)
    pairs = reverse.reverse_pass(reverse.forward_trace(net, x), "local")
    W1 = net[1].weight
    torch.testing.assert_close(pairs[0][1], x.reshape(4, -1) @ W1.T @ W1)
    assert len(pairs) == 2


def test_conv_net_full_pass_shapes_and_flatten():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).double()
    x = torch.randn(2, 1, 9, 9)
    trace = reverse.forward_trace(net, x)
    pairs = reverse.reverse_pass(trace)
    assert [p[0].shape for p in pairs] == [p[1].shape for p in pairs] == [x.shape, (2, 4, 5, 5)]
    # by hand: linear transpose, unflatten, BN+ReLU re-applied, conv transpose
    y = (trace.output - net[4].bias) @ net[4].weight
    d2 = torch.relu(net[1](y.reshape(2, 4, 5, 5)))
    torch.testing.assert_close(pairs[1][0], trace.inputs[3])  # compared at the ReLU output (pre-flatten)
    torch.testing.assert_close(pairs[1][1], d2)
    assert reverse.reconstruct_input(net, x).shape == x.shape


def test_custom_layer_with_one_method():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([2.0, 3.0], dtype=torch.float64))

        def forward(self, x):
            return x * self.weight

        def racecar_transpose(self, y, input_shape):
            return y * self.weight

    net = nn.Sequential(Scale())
    x = torch.ones(1, 2, dtype=torch.float64)
    pairs = reverse.reverse_pass(reverse.forward_trace(net, x))
    torch.testing.assert_close(pairs[0][1], torch.tensor([[4.0, 9.0]], dtype=torch.float64))


def test_bad_mode_and_reduction():
    net = mnist_linear()
    trace = reverse.forward_trace(net, torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="mode"):
        reverse.reverse_pass(trace, "sideways")
    with pytest.raises(ValueError, match="reduction"):
        reverse.reconstruction_loss(reverse.reverse_pass(trace), "max")


# ----------------------------------------------------------------- blocks and layers of racecar_core.layers
from racecar_core.layers import OptionAShortcut, PeriodicConv2d, Residual  # noqa: E402


@pytest.mark.parametrize("layer, shape", [
    (OptionAShortcut(4, 8, 2), (2, 4, 8, 8)),
    (OptionAShortcut(4, 8, 2), (2, 4, 7, 7)),
    (OptionAShortcut(3, 3, 1), (1, 3, 5, 5)),
    (PeriodicConv2d(3, 4, 3), (2, 3, 8, 16)),
    (PeriodicConv2d(2, 3, 7), (1, 2, 8, 16)),
    (PeriodicConv2d(2, 3, 3, stride=2), (1, 2, 9, 16)),
    (PeriodicConv2d(2, 2, 1), (1, 2, 4, 4)),
])
def test_adjoint_custom_layers(layer, shape):
    assert adjoint_gap(layer.double(), shape) < 1e-12


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


def _linear_residual(shortcut, cin, cout, stride):
    branch = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                           nn.Conv2d(cout, cout, 3, padding=1, bias=False))
    return Residual(branch, shortcut).double()


@pytest.mark.parametrize("shortcut, cin, cout, stride", [(None, 3, 3, 1), (OptionAShortcut(2, 4, 2), 2, 4, 2)])
def test_residual_block_adjoint(shortcut, cin, cout, stride):
    """With a linear branch, the block's reverse is the exact adjoint S^T y + F^T y."""
    block = _linear_residual(shortcut, cin, cout, stride)
    x = torch.randn(2, cin, 8, 8, dtype=torch.float64)
    y_fwd, saved = block.racecar_forward(x)
    torch.testing.assert_close(y_fwd, block(x))
    y = torch.randn_like(y_fwd)
    xt, pairs = block.racecar_reverse(y, saved, "full")
    assert len(pairs) == 1 and pairs[0][0].shape == pairs[0][1].shape
    lhs, rhs = (block(x) * y).sum(), (x * xt).sum()
    assert float(((lhs - rhs) / lhs.abs()).abs().detach()) < 1e-12


def test_resnet_style_full_pass_pairs_and_ort_sees_inner_convs():
    torch.manual_seed(0)
    block = Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                   nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)))
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), block, nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).double()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    trace = reverse.forward_trace(net, x)
    torch.testing.assert_close(trace.output, net(x))
    pairs = reverse.reverse_pass(trace)
    # stem conv input, block input, linear input (reached at the pooled ReLU output), and the inner conv's input
    assert len(pairs) == 4
    assert all(d.shape == r.shape for d, r in pairs)
    assert len(reverse.weight_modules(net)) == 4
    _, rec = reverse.rr_loss(net, x)
    rec.backward()
    assert all(p.grad is not None for p in net.parameters())
    assert len(reverse.reverse_pass(trace, "local")) == 4


@pytest.mark.parametrize("drop", [nn.Dropout(0.5), nn.Dropout2d(0.5)], ids=["Dropout", "Dropout2d"])
def test_dropout_reuses_the_forward_mask_in_the_reverse_pass(drop):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), drop, nn.Conv2d(8, 4, 3, padding=1)).train()
    x = torch.randn(4, 3, 6, 6)
    trace = reverse.forward_trace(net, x)
    mask = trace.saved[2]
    assert mask.shape == ((4, 8, 6, 6) if type(drop) is nn.Dropout else (4, 8, 1, 1))
    assert torch.equal(trace.inputs[3], trace.inputs[2] * mask * 2)  # the forward pass used the recorded mask
    (_, first), (d2, second) = reverse.reverse_pass(trace)
    dropped = (mask == 0).expand_as(second)
    assert dropped.any() and (second[dropped] == 0).all() and (second[~dropped] != 0).any()
    again = reverse.reverse_pass(trace)  # no fresh mask: the same trace gives the same reconstruction
    assert torch.equal(again[1][1], second) and torch.equal(again[0][1], first)
    net.eval()
    ev = reverse.forward_trace(net, x)
    assert 2 not in ev.saved and torch.equal(ev.inputs[3], ev.inputs[2])  # eval: dropout is the identity


def test_local_padded_reconstructs_each_periodic_convolutions_padded_input():
    """The authors' draft: every convolution reconstructs its padded input with the transposed unpadded convolution."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    conv = PeriodicConv2d(2, 3, 3)
    net = nn.Sequential(conv, nn.LeakyReLU(0.3), Residual(nn.Sequential(PeriodicConv2d(3, 3, 3), nn.ReLU())),
                        PeriodicConv2d(3, 1, 3))
    x = torch.randn(2, 2, 4, 8, dtype=torch.float64)
    net.double()
    with torch.no_grad():
        trace = reverse.forward_trace(net, x)
        pairs = reverse.reverse_pass(trace, "local_padded")
    assert len(pairs) == 3 and [p[0].shape[-2:] for p in pairs] == [(6, 10)] * 3  # padded: +1 row/column each side
    xp, rec = pairs[0]
    assert torch.equal(xp[..., 1:-1, 1:-1], x) and torch.equal(xp[..., 1:-1, 0], x[..., -1])  # wrap in longitude
    assert (xp[..., 0, :] == 0).all()  # zero rows in latitude
    w = conv.weight.detach()
    y = F.conv2d(xp, w)  # the forward pass without the bias
    np.testing.assert_allclose(rec.numpy(), F.conv_transpose2d(y, w).numpy(), rtol=1e-12)
    v = torch.randn_like(xp)  # <conv(v), y> = <v, conv^T y>: the reconstruction is the exact adjoint
    assert float((F.conv2d(v, w) * y).sum()) == pytest.approx(float((v * rec).sum()), rel=1e-10)
    with torch.no_grad():
        local = reverse.reverse_pass(trace, "local")
    assert [p[0].shape[-2:] for p in local] == [(4, 8)] * 3  # the plain local mode folds the padding back


@pytest.mark.parametrize("pool, shape", [(nn.MaxPool2d(2), (2, 3, 6, 7)), (nn.MaxPool2d(3, stride=1, padding=1), (1, 2, 5, 5)),
                                         (nn.MaxPool1d(3, stride=2), (2, 2, 9)), (nn.MaxPool3d(2), (1, 2, 4, 4, 4))],
                         ids=["2x2", "overlapping", "1d", "3d"])
def test_max_pooling_adjoint_at_the_forward_picks(pool, shape):
    x = torch.randn(shape)
    trace = reverse.forward_trace(nn.Sequential(pool), x)
    idx, out = trace.saved[0], trace.output
    assert torch.equal(out, pool(x))
    def pick(v):  # the linear map max pooling is at these picks
        return v.flatten(2).gather(2, idx.flatten(2)).reshape(out.shape)
    v, y = torch.randn(shape), torch.randn(out.shape)
    back = reverse.transpose(pool, y, torch.Size(shape), idx)
    assert float((pick(v) * y).sum()) == pytest.approx(float((v * back).sum()), rel=1e-12)
    with pytest.raises(ValueError, match="needs the positions"):
        reverse.transpose(pool, y, torch.Size(shape))


def test_rr_trains_a_cnn_with_max_pooling():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    assert_rr_trains(net, torch.randn(12, 1, 16, 16), 3)



def test_a_max_pool_below_the_first_weight_layer_is_undone_for_the_input_reconstruction():
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 4))
    x = torch.randn(3, 1, 8, 8)
    rec = reverse.reconstruct_input(net, x)
    assert rec.shape == x.shape and ((rec != 0).sum(dim=(2, 3)) <= 16).all()  # one pick per 2x2 window at most
