"""The reverse pass as a graph walk: the official MLP formulas, the numbers of the earlier nested-Sequential walk on
the project's models, where pairs sit at joins, fan-outs and cats, and RR on the networks researchers use."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from racecar_core import reverse, rules
from racecar_core.methods import StepInfo, make_method
from racecar_core.layers import OptionAShortcut, PeriodicConv2d, Residual
from racecar_core.models import mnist_linear, peak_mlp, resnet_cifar, weather_resnet
from racecar_core.models.weather_resnet import KERAS


pytestmark = pytest.mark.usefixtures("float64")   # exact checks in double precision (tests/conftest.py)


# ----------------------------------------------------------------- the official formulas
def test_mnist_reverse_matches_official():
    torch.manual_seed(0)
    net = mnist_linear()
    x = torch.rand(2, 1, 28, 28) * 255
    W, b = net[1].weight.T, net[1].bias          # official row convention: W is [in, out]
    d1 = x.reshape(2, -1)
    back = (d1 @ W + b - b) @ W.T
    pairs = reverse.reverse_pass(reverse.forward_trace(net, x))
    assert len(pairs) == 1                       # compared at the network input, in the input's shape
    torch.testing.assert_close(pairs[0][0], x)
    torch.testing.assert_close(pairs[0][1], back.reshape(x.shape))
    loss = reverse.reconstruction_loss(pairs, "sum")
    torch.testing.assert_close(loss, 0.5 * ((back - d1) ** 2).sum())


def test_peak_reverse_matches_official_formulas():
    torch.manual_seed(1)
    net = peak_mlp().train()
    ref = peak_mlp().train()
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
    net = peak_mlp()
    _, rec = reverse.rr_loss(net, torch.rand(8, 1, 28, 28))
    rec.backward()
    for p in net.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_local_mode_is_wtw():
    torch.manual_seed(3)
    net = peak_mlp()
    x = torch.rand(4, 1, 28, 28)
    pairs = reverse.reverse_pass(reverse.forward_trace(net, x), "local")
    W1 = net[1].weight
    torch.testing.assert_close(pairs[0][1], x.reshape(4, -1) @ W1.T @ W1)
    assert len(pairs) == 2


def test_conv_net_full_pass_shapes_and_flatten():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    x = torch.randn(2, 1, 9, 9)
    trace = reverse.forward_trace(net, x)
    pairs = reverse.reverse_pass(trace)
    assert [p[0].shape for p in pairs] == [p[1].shape for p in pairs] == [x.shape, (2, 4, 5, 5)]
    # by hand: linear transpose, unflatten, BN+ReLU re-applied, conv transpose
    y = (trace.output - net[4].bias) @ net[4].weight
    d2 = torch.relu(net[1](y.reshape(2, 4, 5, 5)))
    torch.testing.assert_close(pairs[1][0], trace.output_of(net[2]))  # compared at the ReLU output (pre-flatten)
    torch.testing.assert_close(pairs[1][1], d2)
    assert reverse.reconstruct_input(net, x).shape == x.shape


def test_custom_layer_with_one_method():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([2.0, 3.0]))

        def forward(self, x):
            return x * self.weight

        def racecar_transpose(self, y, input_shape):
            return y * self.weight

    net = nn.Sequential(Scale())
    x = torch.ones(1, 2)
    pairs = reverse.reverse_pass(reverse.forward_trace(net, x))
    torch.testing.assert_close(pairs[0][1], torch.tensor([[4.0, 9.0]]))


def test_bad_mode_and_reduction():
    net = mnist_linear()
    trace = reverse.forward_trace(net, torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="mode"):
        reverse.reverse_pass(trace, "sideways")
    with pytest.raises(ValueError, match="reduction"):
        reverse.reconstruction_loss(reverse.reverse_pass(trace), "max")


def test_reconstruction_loss_is_float32_under_bf16():
    d, r = torch.randn(4, 8, dtype=torch.float32), torch.randn(4, 8, dtype=torch.float32)
    pairs = [(d.bfloat16(), r.bfloat16())]
    for reduction in ("sum", "mean"):
        loss = reverse.reconstruction_loss(pairs, reduction)
        expect = reverse.reconstruction_loss([(d.bfloat16().float(), r.bfloat16().float())], reduction)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, expect)
    assert reverse.reconstruction_loss([(d.double(), r.double())]).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert reverse.reconstruction_loss(pairs, "mean").dtype == torch.float32


def test_reconstruction_terms_and_their_gradients_are_the_squared_distance():
    d, r = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    for reduction, expect in (("sum", lambda: 0.5 * (d - r).pow(2).sum()), ("mean", lambda: (d - r).pow(2).mean())):
        (term,) = reverse.reconstruction_terms([(d, r)], reduction)
        want = expect()
        torch.testing.assert_close(term, want)
        got, ref = torch.autograd.grad(term, (d, r)), torch.autograd.grad(want, (d, r))
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b)
    (only_r,) = reverse.reconstruction_terms([(d.detach(), r)])  # the input side needs no gradient
    (g,) = torch.autograd.grad(only_r, r)
    torch.testing.assert_close(g, r - d.detach())


def test_the_bias_is_taken_off_as_the_sum_with_its_negation_the_same_numbers_as_the_difference():
    """``y + (-b)`` is ``y - b`` bit for bit, value and both gradients, in float32 (the form saves a full-size
    negation of the signal's gradient in backward)."""
    torch.manual_seed(0)
    for m, y in ((nn.Linear(5, 7).float(), torch.randn(3, 4, 7, dtype=torch.float32)),
                 (nn.Conv2d(2, 6, 3).float(), torch.randn(3, 6, 4, 4, dtype=torch.float32))):
        y.requires_grad_(True)
        g = torch.randn_like(y)
        b = m.bias if isinstance(m, nn.Linear) else m.bias.view(1, -1, 1, 1)
        got, want = rules.subtract_bias(m, y), y - b
        assert torch.equal(got, want)
        for a, c in zip(torch.autograd.grad(got, (y, m.bias), g), torch.autograd.grad(want, (y, m.bias), g)):
            assert torch.equal(a, c)


def test_a_join_keeps_the_strides_of_the_models_in_place_sum():
    """fx traces ``y += x`` as ``y + x``; where the two layouts are the same memory (a (N, C, 1, 1) map), the trace
    keeps ``y``'s channels-last strides as the model's in-place sum does, and so its convolutions take the kernels of
    the model's own forward pass (oneDNN picks them by strides)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 3, padding=1, groups=8)

        def forward(self, x):
            y = self.conv(x)
            y += x
            return self.head(y)

    net = Block().float()
    x = torch.randn(2, 1, 1, 8, dtype=torch.float32).permute(0, 3, 1, 2)     # channels-last (N, C, 1, 1)
    y = net.conv(x)
    eager = y + x
    assert y.stride() == (8, 1, 8, 8) and eager.stride() == (8, 1, 1, 1)   # what the out-of-place sum gives
    trace = reverse.forward_trace(net, x)
    (join,) = [s for s in trace.plan.steps if s.op == "join"]
    assert trace.values[join.index].stride() == y.stride()
    assert torch.equal(trace.values[join.index], eager) and torch.equal(trace.output, net(x))
    loss = reverse.reconstruction_loss(reverse.reverse_pass(trace))
    assert all(p.grad is None for p in net.parameters())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_pre_needs_a_sequential():
    with pytest.raises(TypeError, match="nn.Sequential"):
        reverse.layers_of(nn.Linear(3, 3))


# ----------------------------------------------------------------- the project's models give the earlier numbers
# Computed by the nested-Sequential walk this graph walk replaced (racecar_core at commit 48e4474, float64, the
# models and inputs of `_earlier_cases`): (pairs, sum of the "sum" terms, sum of the "mean" terms) per mode, and the
# squared norm of the input reconstruction.
EARLIER = {
    "peak_mlp/full": (2, 2807.7232637712013, 1.607203233034445),
    "peak_mlp/local": (2, 2613.8067149450326, 1.5280230540284527),
    "peak_mlp/local_padded": (2, 2613.8067149450326, 1.5280230540284527),
    "peak_mlp/reconstruct_input": 45.615055098968895,
    "mnist_linear/full": (1, 2315.145057202125, 0.9843303814634885),
    "mnist_linear/local": (1, 2315.145057202125, 0.9843303814634885),
    "mnist_linear/local_padded": (1, 2315.145057202125, 0.9843303814634885),
    "mnist_linear/reconstruct_input": 233.29805398990845,
    "mlp_tanh/full": (3, 37.82440245182707, 1.1844477576162167),
    "mlp_tanh/local": (3, 29.131751293123394, 1.0306797424410268),
    "mlp_tanh/local_padded": (3, 29.131751293123394, 1.0306797424410268),
    "mlp_tanh/reconstruct_input": 0.5276663161347406,
    "resnet8/full": (8, 186852.15121146318, 15.474544410526594),
    "resnet8/local": (8, 914922.3635290464, 108.410264544534),
    "resnet8/local_padded": (8, 914922.3635290464, 108.410264544534),
    "resnet8/reconstruct_input": 704.5402245125267,
    "resnet14_w4/full": (14, 16070.637952016916, 17.43125059667104),
    "resnet14_w4/local": (14, 43337.39673141196, 44.71671704862727),
    "resnet14_w4/local_padded": (14, 43337.39673141196, 44.71671704862727),
    "resnet14_w4/reconstruct_input": 77.2655899773753,
    "weather/full": (6, 15982.632843813384, 10.819927229778473),
    "weather/local": (6, 9629.756134132733, 6.440988147287046),
    "weather/local_padded": (6, 11674.115940036498, 5.381037535854008),
    "weather/reconstruct_input": 2.634520472160464,
}


def _earlier_cases():
    """The models and inputs of ``EARLIER`` (float32 initialisation, then float64, as they were made)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(0)
        yield "peak_mlp", peak_mlp(), torch.randn(6, 1, 28, 28)
        torch.manual_seed(1)
        yield "mnist_linear", mnist_linear(), torch.randn(6, 1, 28, 28)
        torch.manual_seed(2)
        yield "mlp_tanh", nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5), nn.BatchNorm1d(5),
                                        nn.ReLU(), nn.Linear(5, 3)), torch.randn(6, 3, 4)
        torch.manual_seed(3)
        yield "resnet8", resnet_cifar(8, 10), torch.randn(4, 3, 32, 32)      # option-A shortcuts
        torch.manual_seed(4)
        yield "resnet14_w4", resnet_cifar(14, 10, width=4), torch.randn(3, 3, 16, 16)
        torch.manual_seed(5)
        yield "weather", weather_resnet(5, 2, 8, 2, **KERAS), torch.randn(3, 5, 8, 16)   # periodic convs, dropout
    finally:
        torch.set_default_dtype(old)


def test_the_project_models_give_the_earlier_walks_numbers():
    for name, model, x in _earlier_cases():
        model, x = model.double().train(), x.double()
        for mode in ("full", "local", "local_padded"):
            torch.manual_seed(10)                # the same dropout masks
            with torch.no_grad():
                pairs = reverse.reverse_pass(reverse.forward_trace(model, x), mode)
            n, total, mean = EARLIER[f"{name}/{mode}"]
            assert len(pairs) == n, (name, mode)
            assert float(sum(reverse.reconstruction_terms(pairs, "sum"))) == pytest.approx(total, rel=1e-9)
            assert float(sum(reverse.reconstruction_terms(pairs, "mean"))) == pytest.approx(mean, rel=1e-9)
        model.eval()
        rec = reverse.reconstruct_input(model, x)
        assert float(rec.detach().pow(2).sum()) == pytest.approx(EARLIER[f"{name}/reconstruct_input"], rel=1e-9), name


# ----------------------------------------------------------------- where the pairs sit in a graph
def test_a_resnet_block_input_is_reconstructed_after_the_sum_of_branch_and_shortcut():
    """``x = relu(s)`` feeds the block's conv1 and its shortcut: ``x' = relu(conv1^T(...) + S^T y)``, one pair."""
    torch.manual_seed(0)
    block = Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                   nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)))
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), block, nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(2, 1, 6, 6)
    trace = reverse.forward_trace(net, x)
    torch.testing.assert_close(trace.output, net(x))
    pairs = reverse.reverse_pass(trace)
    # stem conv input, block input, the inner conv's input, the linear input (at the pooled ReLU output)
    assert len(pairs) == 4 and all(d.shape == r.shape for d, r in pairs)
    c1, bn1, _, c2, _ = block.branch
    y = (trace.output - net[7].bias) @ net[7].weight                          # Linear^T
    r4 = torch.relu(y.reshape(2, 4, 1, 1).expand(2, 4, 6, 6) / 36)           # pool^T, the ReLU after the block
    r3 = torch.relu(bn1(F.conv_transpose2d(r4, c2.weight, padding=1)))      # conv2^T, BN1 and ReLU re-applied
    r2 = torch.relu(net[1](F.conv_transpose2d(r3, c1.weight, padding=1) + r4))  # branch + identity, stem BN, ReLU
    expect = {id(trace.output_of(net[4])): r4, id(trace.output_of(block.branch[2])): r3,
              id(trace.output_of(net[2])): r2}
    for d, r in pairs[1:]:
        torch.testing.assert_close(r, expect[id(d)])
    assert len(reverse.weight_modules(net)) == 4 and len(reverse.reverse_pass(trace, "local")) == 4


def linear_part(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every norm/activation an identity and every bias zero, in eval mode: a linear map."""
    net = copy.deepcopy(net).eval()
    for name, m in list(net.named_modules()):
        if name and rules.known_role(m) == "pointwise":
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
    for m in reverse.weight_modules(net):
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return net


def assert_linear_part_is_adjoint(net: nn.Module, x: torch.Tensor) -> None:
    """<A x, y> = <x, A^T y> for the linear part of ``net``, ``A^T y`` by the full reverse walk."""
    lin = linear_part(net)
    trace = reverse.forward_trace(lin, x)
    y = torch.randn(trace.output.shape)
    back = reverse.transpose_network(trace, y)
    lhs, rhs = (trace.output * y).sum(), (x * back).sum()
    tol = 1e-10 if x.dtype == torch.float64 else 1e-4
    assert back.shape == x.shape and float((abs(lhs - rhs) / (abs(lhs) + abs(rhs))).detach()) < tol


@pytest.mark.parametrize("shortcut, cin, cout, stride", [(None, 3, 3, 1), (OptionAShortcut(2, 4, 2), 2, 4, 2),
                                                          (nn.Sequential(nn.Conv2d(2, 4, 1, stride=2),
                                                                         nn.BatchNorm2d(4)), 2, 4, 2)])
def test_residual_block_reverse_is_the_adjoint_of_its_linear_part(shortcut, cin, cout, stride):
    branch = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                           nn.Conv2d(cout, cout, 3, padding=1))
    assert_linear_part_is_adjoint(Residual(branch, shortcut).double(), torch.randn(2, cin, 8, 8))


def test_a_cat_splits_the_signal_and_each_piece_takes_its_own_pair():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 4)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(torch.cat([torch.tanh(self.a(x)), torch.relu(self.b(x))], dim=1))

    torch.manual_seed(0)
    net = Two()
    x = torch.randn(5, 3)
    trace = reverse.forward_trace(net, x)
    pairs = reverse.reverse_pass(trace)
    y = (trace.output - net.head.bias) @ net.head.weight
    ya, yb = torch.tanh(y[:, :2]), torch.relu(y[:, 2:])       # each piece through its own activation
    assert len(pairs) == 3
    torch.testing.assert_close(pairs[1][1], ya)
    torch.testing.assert_close(pairs[2][1], yb)
    # both paths meet again at the input: their transposes are summed there
    torch.testing.assert_close(pairs[0][1], (ya - net.a.bias) @ net.a.weight + (yb - net.b.bias) @ net.b.weight)


def test_functional_activations_are_reapplied_like_modules():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.l2(F.relu(self.l1(x), inplace=True))

    torch.manual_seed(0)
    net = Functional()
    seq = nn.Sequential(net.l1, nn.ReLU(), net.l2)
    x = torch.randn(5, 4)
    pairs = [reverse.reverse_pass(reverse.forward_trace(m, x)) for m in (net, seq)]
    for a, b in zip(*pairs):
        torch.testing.assert_close(a[1], b[1])


@pytest.mark.parametrize("drop", [nn.Dropout(0.5), nn.Dropout2d(0.5)], ids=["Dropout", "Dropout2d"])
def test_dropout_reuses_the_forward_mask_in_the_reverse_pass(drop):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), drop, nn.Conv2d(8, 4, 3, padding=1)).train()
    x = torch.randn(4, 3, 6, 6)
    trace = reverse.forward_trace(net, x)
    mask = trace.saved[trace.plan.step_of(drop).index]
    assert mask.shape == ((4, 8, 6, 6) if type(drop) is nn.Dropout else (4, 8, 1, 1))
    assert torch.equal(trace.output_of(drop), trace.input_of(drop) * mask * 2)  # the forward pass used this mask
    (_, first), (d2, second) = reverse.reverse_pass(trace)
    dropped = (mask == 0).expand_as(second)
    assert dropped.any() and (second[dropped] == 0).all() and (second[~dropped] != 0).any()
    again = reverse.reverse_pass(trace)  # no fresh mask: the same trace gives the same reconstruction
    assert torch.equal(again[1][1], second) and torch.equal(again[0][1], first)
    net.eval()
    ev = reverse.forward_trace(net, x)
    assert not ev.saved and torch.equal(ev.output_of(drop), ev.input_of(drop))  # eval: dropout is the identity


def test_local_padded_reconstructs_each_periodic_convolutions_padded_input():
    """The authors' draft: every convolution reconstructs its padded input with the transposed unpadded convolution."""
    torch.manual_seed(0)
    conv = PeriodicConv2d(2, 3, 3)
    net = nn.Sequential(conv, nn.LeakyReLU(0.3), Residual(nn.Sequential(PeriodicConv2d(3, 3, 3), nn.ReLU())),
                        PeriodicConv2d(3, 1, 3))
    x = torch.randn(2, 2, 4, 8)
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


@pytest.mark.parametrize("pool_first", [True, False], ids=["conv-pool-relu", "conv-relu-pool"])
def test_a_pair_compares_the_activations_output_whether_the_pool_sits_before_or_after_it(pool_first):
    """``relu(pool(conv(x)))`` (PyTorch's MNIST example) and ``pool(relu(conv(x)))``: the Linear's signal is re-applied
    through the ReLU and compared with the ReLU's forward output, in the space where the ReLU ran; never a raw
    convolution output with a pooled-and-unpooled reconstruction."""
    torch.manual_seed(0)
    conv, lin = nn.Conv2d(1, 3, 3, padding=1), nn.Linear(3 * 2 * 2, 5)
    middle = [nn.MaxPool2d(2), nn.ReLU()] if pool_first else [nn.ReLU(), nn.MaxPool2d(2)]
    net = nn.Sequential(conv, *middle, nn.Flatten(), lin)
    x = torch.randn(4, 1, 4, 4)
    trace = reverse.forward_trace(net, x)
    pairs = reverse.reverse_pass(trace)
    assert len(pairs) == 2 and all(d.shape == r.shape for d, r in pairs)
    relu = net[2] if pool_first else net[1]
    y = ((trace.output - lin.bias) @ lin.weight).reshape(4, 3, 2, 2)        # Linear^T, Flatten^T
    if pool_first:                                                           # the pair at the pooled ReLU output
        expect = torch.relu(y)
    else:                                                                    # pool^T, then the ReLU re-applied
        _, picks = F.max_pool2d(trace.output_of(relu), 2, return_indices=True)
        expect = torch.relu(F.max_unpool2d(y, picks, 2, output_size=(4, 4)))
    (d_in, r_in), (d, r) = pairs
    assert d is trace.output_of(relu)                                        # the forward value the Linear's pair reads
    torch.testing.assert_close(r, expect)
    assert d_in is x and r_in.shape == x.shape                               # and the network input's pair below


def test_a_signal_passing_two_chains_across_a_pool_takes_a_pair_at_each():
    """``conv -> bn -> pool -> relu``: one pair at the ReLU's (pooled) output, one at the batch norm's (unpooled)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(12, 5))
    trace = reverse.forward_trace(net, torch.randn(4, 1, 4, 4))
    pairs = reverse.reverse_pass(trace)
    assert len(pairs) == 3 and [id(d) for d, _ in pairs[1:]] == [id(trace.output_of(net[i])) for i in (1, 3)]
    assert all(d.shape == r.shape for d, r in pairs)


def test_a_max_pool_below_the_first_weight_layer_is_undone_for_the_input_reconstruction():
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 4))
    x = torch.randn(3, 1, 8, 8)
    rec = reverse.reconstruct_input(net, x)
    assert rec.shape == x.shape and ((rec != 0).sum(dim=(2, 3)) <= 16).all()  # one pick per 2x2 window at most


def test_a_norm_on_the_raw_input_belongs_to_no_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3))
    x = torch.randn(8, 4)
    trace = reverse.forward_trace(net, x)
    (d, r), = reverse.reverse_pass(trace)
    torch.testing.assert_close(d, trace.output_of(net[0]))     # compared with what the Linear read, not re-normalised
    torch.testing.assert_close(r, (trace.output - net[1].bias) @ net[1].weight)


# ----------------------------------------------------------------- planned once, clear errors
def test_the_plan_is_made_once_and_again_when_the_model_changes():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    plan = reverse.plan_of(net)
    assert reverse.plan_of(net) is plan
    assert "weight" in plan.describe() and len(plan.weights) == 2
    net[1] = nn.Tanh()
    replanned = reverse.plan_of(net)
    assert replanned is not plan and replanned.step_of(net[1]).op == "pointwise"


def test_an_untraceable_module_becomes_one_step_and_needs_a_rule():
    class Branchy(nn.Module):            # data-dependent control flow: fx cannot trace into it
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) if x.sum() > 0 else -self.lin(x)

    net = nn.Sequential(nn.Linear(3, 3), Branchy(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"could not trace into it .*register_affine\(Branchy\)"):
        reverse.plan_of(net)

    class Mixed(nn.Module):
        def forward(self, x):
            return x * x                     # a product of two signals, neither a gate: not linear

    with pytest.raises(TypeError, match="two signals"):
        reverse.rr_loss(nn.Sequential(nn.Linear(3, 3), Mixed()), torch.randn(2, 3))

    class Sorts(nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=1).values

    with pytest.raises(TypeError, match=r"register_function\(torch.sort"):
        reverse.plan_of(nn.Sequential(nn.Linear(3, 3), Sorts()))
    with pytest.raises(ValueError, match="no weight layer"):
        reverse.plan_of(nn.Sequential(nn.ReLU()))


def test_one_output_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(TypeError, match="one output tensor"):
        reverse.plan_of(Pair())


# ----------------------------------------------------------------- RR on networks researchers use
def assert_rr_trains(net: nn.Module, x: torch.Tensor, steps: int = 30, lr: float = 1e-2, drop: float = 0.7,
                     norms: str = "batch", adjoint: bool = True) -> None:
    """RR with Adam on a fixed random regression target: the loss stays finite, every parameter gets a gradient,
    the reverse pass returns the input's shape, the linear part's reverse is its adjoint (``adjoint``: for a network
    whose activations are modules), and the reconstruction error falls to ``drop`` of its start or below."""
    if adjoint:
        assert_linear_part_is_adjoint(net, x)
    net.train()
    target = torch.randn(reverse.forward_trace(net, x).output.shape)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    recs = []
    for _ in range(steps):
        out, rec = reverse.rr_loss(net, x, "full", "mean", norms)
        loss = F.mse_loss(out, target) + rec
        opt.zero_grad()
        loss.backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert torch.isfinite(loss) and not missing, missing
        opt.step()
        recs.append(float(rec.detach()))
    assert reverse.reconstruct_input(net, x).shape == x.shape
    assert recs[-1] < drop * recs[0], recs


def test_rr_trains_a_1d_convolutional_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 8, 3, stride=2,
                        padding=1, padding_mode="circular"), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 4))
    assert_rr_trains(net, torch.randn(16, 2, 32))


def test_rr_trains_a_cnn_with_max_pooling():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 3))
    assert_rr_trains(net, torch.randn(12, 1, 16, 16))


class UNet(nn.Module):
    """A small U-Net: two levels, max pooling down, transposed convolution up, a concatenation skip."""

    def __init__(self, cin: int = 1, classes: int = 3, width: int = 8):
        super().__init__()
        def unit(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU())
        self.enc1, self.enc2 = unit(cin, width), unit(width, 2 * width)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = unit(2 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        return self.head(self.dec(torch.cat([self.up(e2), e1], dim=1)))


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tokens = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.channels = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):                                   # [B, T, C]
        x = x + self.tokens(self.norm1(x).permute(0, 2, 1)).permute(0, 2, 1)
        return x + self.channels(self.norm2(x))


class Mixer(nn.Module):
    """An MLP-Mixer (Tolstikhin et al. 2021) in miniature: patches, token and channel mixing with permutes."""

    def __init__(self, size: int = 16, patch: int = 4, dim: int = 16, depth: int = 2, classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock((size // patch) ** 2, dim) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).permute(0, 2, 1)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


def test_rr_trains_a_unet_with_concatenation_skips():
    torch.manual_seed(0)
    assert_rr_trains(UNet(), torch.randn(4, 1, 16, 16))


def test_rr_trains_an_mlp_mixer_with_permutes():
    torch.manual_seed(0)
    assert_rr_trains(Mixer(), torch.randn(8, 1, 16, 16))


@pytest.mark.parametrize("name, norms, lr", [("resnet18", "batch", 1e-3), ("resnet50", "forward", 1e-4),
                                             ("vgg11_bn", "batch", 1e-4)])
@pytest.mark.integration
def test_rr_trains_torchvision_networks(name, norms, lr):
    """The models as torchvision builds them, on 32x32 inputs, in float32. ResNet-50 re-applies its batch norms with
    the forward pass's statistics: with the reverse signal's own (the official rule) its reconstruction error did
    not fall at any Adam step size from 3e-5 to 1e-2 in our measurements (the gradient's squared norm is 6e9 at the
    start: a very steep loss); with the forward pass's it falls from 100 to 73 in ten steps at 1e-4."""
    import torchvision
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(num_classes=10)
    if name == "vgg11_bn":   # the classifier's widths 4096 -> 64 (its 120 M weights cost 90 % of the time, not the walk)
        net.classifier[0], net.classifier[3], net.classifier[6] = (torch.nn.Linear(512 * 7 * 7, 64),
                                                                   torch.nn.Linear(64, 64), torch.nn.Linear(64, 10))
    assert_rr_trains(net, torch.randn(8 if name == "resnet50" else 4, 3, 32, 32), steps=8, lr=lr, drop=0.9,
                     norms=norms)


class PyTorchMNISTExample(nn.Module):
    """The network of PyTorch's own MNIST example (examples/mnist), narrower: functional activations, functional max
    pooling, dropout modules and a log-softmax output."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, 1), nn.Conv2d(4, 8, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(8 * 5 * 5, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def test_rr_trains_pytorchs_mnist_example_network():
    torch.manual_seed(0)
    assert_rr_trains(PyTorchMNISTExample(), torch.randn(4, 1, 14, 14), drop=0.9, adjoint=False)


class Pieces(nn.Module):
    """chunk, split and unbind inside a network: a gate-free GLU-like split, pieces of a tensor used twice."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        u, v = self.a(x).chunk(2, dim=1)
        w = F.hardsigmoid(u) + v
        p, q, r = torch.unbind(self.b(w).view(-1, 3, 2), dim=1)
        return self.c(torch.cat(torch.split(torch.stack([p, q + r, r], 1).flatten(1), 3, 1), 1))


def test_rr_trains_through_chunk_split_unbind_and_stack():
    torch.manual_seed(0)
    assert_rr_trains(Pieces(), torch.randn(6, 8), adjoint=False)


NEW_POINTWISE = [lambda: nn.PReLU(), lambda: nn.RReLU(), lambda: nn.CELU(), lambda: nn.SELU(), lambda: nn.Hardsigmoid(),
                 lambda: nn.Hardtanh(), lambda: nn.Hardshrink(0.1), lambda: nn.Softshrink(0.1),
                 lambda: nn.Tanhshrink(), lambda: nn.Threshold(0.1, 0.0), lambda: nn.LogSigmoid(),
                 lambda: nn.Softsign(), lambda: nn.SyncBatchNorm(6), lambda: nn.InstanceNorm2d(6, affine=True),
                 lambda: nn.RMSNorm([6, 6]), lambda: nn.LocalResponseNorm(2), lambda: nn.Softmax(dim=1),
                 lambda: nn.LogSoftmax(dim=1)]


@pytest.mark.parametrize("make", NEW_POINTWISE, ids=lambda f: type(f()).__name__)
def test_every_activation_and_norm_of_torch_nn_is_re_applied(make):
    torch.manual_seed(0)
    act = make()
    net = nn.Sequential(nn.Conv2d(1, 6, 3), act, nn.Conv2d(6, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    assert reverse.role(act) == "pointwise"
    out, rec = reverse.rr_loss(net, torch.randn(4, 1, 8, 8), "full", "mean")
    rec.backward()
    assert torch.isfinite(rec) and net[0].weight.grad.abs().sum() > 0


class DropoutByMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.b(F.dropout(self.a(x), 0.5, training=self.training))


def _dropout_step(plan):
    (step,) = [s for s in plan.steps if s.target is F.dropout]
    return step.kwargs["training"]


def test_a_plan_holds_for_the_modes_it_was_traced_in():
    """fx bakes ``self.training`` into the call: a model traced in eval mode and then trained gets a new plan, and
    a method's training plan is the training mode's whatever mode the model is in."""
    net = DropoutByMode().eval()
    eval_plan = reverse.plan_of(net)
    assert _dropout_step(eval_plan) is False
    train_plan = reverse.training_plan(net)
    assert _dropout_step(train_plan) is True and not net.training      # the model's mode is left as it was
    net.train()
    assert reverse.plan_of(net) is train_plan
    net.eval()
    assert reverse.plan_of(net) is eval_plan                            # each mode's plan traced once
    phase = make_method("RR", lam=1.0).phases(net, 1)[0]
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    net.train()
    _, _, logs = phase.loss(net, x, torch.randn(64, 2), StepInfo(0, 0, 0))
    assert logs["rr"] > 0


class FunctionalNorm(nn.Module):
    """A batch norm written as a function call on buffers of the model's own."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)
        self.register_buffer("mean", torch.zeros(6))
        self.register_buffer("var", torch.ones(6))

    def forward(self, x):
        return self.b(F.relu(F.batch_norm(self.a(x), self.mean, self.var, training=self.training, momentum=0.1)))


def test_functional_batch_norm_follows_the_frozen_statistics_of_the_reverse_pass():
    torch.manual_seed(0)
    net = FunctionalNorm().train()
    trace = reverse.forward_trace(net, torch.randn(8, 4), reverse.training_plan(net))
    after_forward = net.mean.clone()
    with reverse.frozen_norm_statistics(net):
        reverse.reverse_pass(trace)
    assert torch.equal(net.mean, after_forward)
    reverse.reverse_pass(trace)                # not frozen: the reverse pass updates them (the official code)
    assert not torch.equal(net.mean, after_forward)


class Gated(nn.Module):
    """A GLU-like gate: ``L3(L1 x * sigmoid(L2 x))`` (bias-free: a linear map once the gate is held)."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = (nn.Linear(5, 6, bias=False), nn.Linear(5, 6, bias=False),
                                     nn.Linear(6, 4, bias=False))

    def forward(self, x):
        return self.l3(self.l1(x) * torch.sigmoid(self.l2(x)))


class Attention(nn.Module):
    """Single-head self-attention as it is hand-written, or through ``F.scaled_dot_product_attention``."""

    def __init__(self, sdpa: bool, d: int = 6):
        super().__init__()
        self.sdpa, self.d = sdpa, d
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.sdpa:
            return self.o(F.scaled_dot_product_attention(q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / self.d ** 0.5, dim=-1)
        return self.o(a @ v)


def _held_adjoint_gap(net, x, linear_map):
    """<A z, y> - <z, A^T y> for the map ``linear_map(z, trace)`` that the product is with its gate or attention
    weights held at the forward values of ``trace``, ``A^T y`` by the full reverse walk."""
    trace = reverse.forward_trace(net, x)
    y, z = torch.randn(trace.output.shape), torch.randn(x.shape)
    back = reverse.transpose_network(trace, y)
    return relative_gap_of((linear_map(z, trace) * y).sum(), (z * back).sum())


def relative_gap_of(a, b):
    return float(((a - b).abs() / (a.abs() + b.abs())).detach())


@pytest.mark.usefixtures("float64")
def test_a_gate_is_held_at_its_forward_value_and_the_other_factor_carries():
    torch.manual_seed(0)
    net = Gated()
    x = torch.randn(3, 5)
    gate = torch.sigmoid(net.l2(x))
    assert _held_adjoint_gap(net, x, lambda z, t: net.l3(net.l1(z) * gate)) < 1e-12
    assert [s.op for s in reverse.plan_of(net).steps].count("product") == 1


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("sdpa", [False, True], ids=["hand-written", "sdpa"])
def test_attention_holds_its_weights_and_the_value_path_carries(sdpa):
    """``x' = W_v^T (A^T (W_o^T y))``; the query and key projections take no pair."""
    torch.manual_seed(0)
    net = Attention(sdpa)
    x = torch.randn(2, 5, 6)
    q, k = net.q(x), net.k(x)
    a = torch.softmax(q @ k.transpose(-2, -1) / 6 ** 0.5, dim=-1)
    assert _held_adjoint_gap(net, x, lambda z, t: net.o(a @ net.v(z))) < 1e-10
    trace = reverse.forward_trace(net, x)
    inputs = {id(d) for d, _ in reverse.reverse_pass(trace)}
    assert id(trace.input_of(net.v)) in inputs and not {id(trace.output_of(net.q)), id(trace.output_of(net.k))} & inputs


def test_rr_trains_squeeze_and_excitation_and_attention():
    from torchvision.ops import SqueezeExcitation
    torch.manual_seed(0)
    se = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), SqueezeExcitation(8, 4, scale_activation=nn.Hardsigmoid),
                       nn.Conv2d(8, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3))
    assert_rr_trains(se, torch.randn(4, 1, 8, 8), drop=0.9, adjoint=False)
    assert_rr_trains(nn.Sequential(Attention(True), nn.Flatten(), nn.Linear(30, 3)), torch.randn(4, 5, 6), drop=0.9,
                     adjoint=False)


def test_a_product_of_two_signals_without_a_gate_is_a_clear_error_when_the_walk_reaches_it():
    class Square(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.c(self.a(x) * self.b(x))

    with pytest.raises(TypeError, match="neither factor here is one"):
        reverse.rr_loss(Square(), torch.randn(4, 3))


def test_stochastic_depth_reuses_its_mask_in_the_reverse_pass_and_draws_torchvisions_numbers():
    from torchvision.ops import StochasticDepth

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.drop = nn.Linear(4, 4), nn.Linear(4, 2), StochasticDepth(0.5, "row")

        def forward(self, x):
            return self.b(x + self.drop(F.relu(self.a(x))))

    torch.manual_seed(0)
    net = Block().train()
    x = torch.randn(16, 4)
    torch.manual_seed(1)
    expect = net(x)
    torch.manual_seed(1)
    trace = reverse.forward_trace(net, x)
    torch.testing.assert_close(trace.output, expect)                 # the same draws as torchvision's own
    (mask,) = trace.saved.values()
    assert mask.shape == (16, 1) and 0 < int((mask == 0).sum()) < 16
    assert_rr_trains(net, x, adjoint=False, drop=0.9)


class Encoder(nn.Module):
    """A pre-norm transformer encoder block as torchvision's ViT writes it (nn.MultiheadAttention, batch first)."""

    def __init__(self, d=8, heads=2, bias=True):
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(d), nn.MultiheadAttention(d, heads, bias=bias, batch_first=True)
        self.mlp, self.head = nn.Sequential(nn.Linear(d, 16), nn.GELU(), nn.Linear(16, d)), nn.Linear(d * 5, 3)

    def forward(self, x):
        y = self.norm(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        x = x + y
        return self.head(torch.flatten(x + self.mlp(x), 1))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("batch_first", [True, False])
def test_multi_head_attention_is_affine_in_its_values_with_the_weights_held(batch_first):
    torch.manual_seed(0)
    m = nn.MultiheadAttention(6, 2, bias=False, batch_first=batch_first)
    x = torch.randn(2, 5, 6) if batch_first else torch.randn(5, 2, 6)
    (out, _), weights = rules.attention_forward(m, (x, x, x), {"need_weights": False})
    torch.testing.assert_close(out, m(x, x, x, need_weights=False)[0])   # the caller's output, from the same weights
    y, z = torch.randn(out.shape), torch.randn(x.shape)
    w_v, w_o = m.in_proj_weight[12:], m.out_proj.weight
    zb = z if batch_first else z.transpose(0, 1)
    heads = (zb @ w_v.T).reshape(2, 5, 2, 3).transpose(1, 2)                 # [B, heads, S, E/heads]
    az = (weights @ heads).transpose(1, 2).reshape(2, 5, 6) @ w_o.T           # the map with the weights held
    az = az if batch_first else az.transpose(0, 1)
    back = rules.transpose(m, y, x.shape, weights)
    lhs, rhs = (az * y).sum(), (z * back).sum()
    assert float((abs(lhs - rhs) / (abs(lhs) + abs(rhs))).detach()) < 1e-12


def test_rr_trains_a_transformer_encoder_with_multi_head_attention():
    torch.manual_seed(0)
    net = Encoder()
    assert_rr_trains(net, torch.randn(4, 5, 8), adjoint=False, drop=0.9)
    trace = reverse.forward_trace(net, torch.randn(4, 5, 8))
    assert sum(d is trace.input_of(net.attn) for d, _ in reverse.reverse_pass(trace)) == 1   # one pair at its input
    assert net.attn not in reverse.weight_modules(net) and net.attn.out_proj in reverse.weight_modules(net)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("version", [1, 2])
def test_swin_window_attention_is_affine_in_its_values_with_the_weights_held(version):
    """torchvision's shifted-window attention (an fx leaf that computes its weights inside) with its softmax outputs
    held: the caller's output, a map that no longer reads the query and key, and its exact adjoint, on a 5x4 map that
    the 3x3 windows pad to 6x6 and shift by one."""
    from torchvision.models import swin_transformer as swin
    torch.manual_seed(0)
    m = (swin.ShiftedWindowAttention if version == 1 else swin.ShiftedWindowAttentionV2)(8, [3, 3], [1, 1], 2).double()
    x, c = torch.randn(2, 5, 4, 8), 8
    out, held = rules.held_softmax_forward(m, (x,), {})
    torch.testing.assert_close(out, m(x))
    assert len(held) == 1 and held[0].shape == (2 * 4, 2, 9, 9)              # [windows, heads, tokens, tokens]

    def held_map(z):
        with rules._HeldSoftmax(held):
            return m(z)
    torch.testing.assert_close(held_map(x), out)
    y, z = torch.randn(out.shape), torch.randn(x.shape)
    b_o, b_v, w_v = m.proj.bias.detach().clone(), m.qkv.bias[2 * c:].detach().clone(), m.qkv.weight[2 * c:].detach()
    with_bias = rules.transpose(m, y, x.shape, held)
    with torch.no_grad():
        m.proj.bias.zero_()
        m.qkv.bias[2 * c:].zero_()
        m.qkv.weight[:2 * c] += 1.0                                       # query and key: no longer read
    lhs, rhs = (held_map(z) * y).sum(), (z * rules.transpose(m, y, x.shape, held)).sum()
    assert float((abs(lhs - rhs) / (abs(lhs) + abs(rhs))).detach()) < 1e-12
    torch.testing.assert_close(with_bias, rules.transpose(m, y - b_o, x.shape, held) - b_v @ w_v)
    with pytest.raises(TypeError, match="dropout"):
        rules.held_softmax_forward(type(m)(8, [3, 3], [1, 1], 2, attention_dropout=0.1).train(), (x,), {})
