"""Std / RR / Ort / Pre: what each adds to the loss or the schedule."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from racecar_core import methods
from racecar_core.methods import StepInfo, make_method
from racecar_core.models import peak_mlp, resnet_cifar, weather_resnet


def _explicit_gram(w: torch.Tensor) -> torch.Tensor:
    """``V V^T - I`` (or ``V^T V - I``, the smaller) as a matrix: the form Ort computed before it went matrix-free."""
    v = w.reshape(w.shape[0], -1)
    g = v @ v.T if v.shape[0] <= v.shape[1] else v.T @ v
    return g - torch.eye(g.shape[0], dtype=g.dtype)


def _one_step(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The earlier code, differentiated by autograd: one power-iteration step on the explicit matrix ``g``."""
    v = F.normalize(g @ F.normalize(u, dim=0), dim=0)
    av = g @ v
    return (F.normalize(av, dim=0) @ av).abs() ** 2


@pytest.mark.parametrize("form", ["official", "srip"])
def test_the_written_out_penalty_is_autograd_through_one_power_step_on_the_explicit_gram_matrix(form):
    """Value and gradient of the matrix-free penalty with its written-out backward equal autograd through the
    earlier code (explicit Gram matrices, one step), on the same weights and start vectors; one step is a lower
    bound of the exact squared spectral norm."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 4, 1), nn.Flatten(), nn.Linear(4, 300), nn.Linear(300, 2))
    net = net.double()
    got = methods.srip_penalty(net, form, torch.Generator().manual_seed(3))
    weights = [m.weight for m in (net[0], net[1], net[3], net[4])]
    grams = [_explicit_gram(w) for w in weights]
    starts = methods.start_vectors([g.shape[0] for g in grams], "randn" if form == "official" else "rand",
                                   torch.Generator().manual_seed(3), torch.float64)
    expect = sum(_one_step(g, u) for g, u in zip(grams, starts))
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=0)
    for w, gw, ge in zip(weights, torch.autograd.grad(got, weights), torch.autograd.grad(expect, weights)):
        torch.testing.assert_close(gw, ge, rtol=1e-10, atol=1e-12)
    for w, g, u in zip(weights, grams, starts):
        one = methods.PowerStepPenalty.apply(w, u)
        assert one <= torch.linalg.matrix_norm(g, ord=2) ** 2 * (1 + 1e-9)
    assert torch.autograd.gradcheck(methods.PowerStepPenalty.apply, (weights[1].detach().requires_grad_(), starts[1]))


def test_the_penalty_gradient_is_a_tensor_of_its_own_that_the_task_gradient_is_added_to_in_place():
    """A view (the earlier ``reshape`` of the rank-4 product) made autograd add the task's weight gradient out of
    place, a full-size copy of every weight per step (a third of Ort's extra time on ResNet-18 at batch 8)."""
    from torch.profiler import profile
    torch.manual_seed(0)
    for shape in ((6, 3, 3, 3), (40, 3)):                   # wide and tall
        w = torch.randn(shape, requires_grad=True)
        (g,) = torch.autograd.grad(methods.PowerStepPenalty.apply(w, torch.randn(min(shape[0], w[0].numel()))), w)
        assert g.shape == w.shape and not g._is_view() and g.is_contiguous()
    conv = nn.Conv2d(64, 64, 3)
    x = torch.randn(2, 64, 5, 5)
    loss = conv(x).sum() + methods.PowerStepPenalty.apply(conv.weight, torch.randn(64))
    with profile() as prof:
        loss.backward()
    adds = {e.key: e.count for e in prof.key_averages() if e.key in ("aten::add", "aten::add_")}
    assert adds == {"aten::add_": 1}, adds                   # the two weight gradients summed in place


def test_srip_penalty_zero_for_orthonormal_rows():
    net = nn.Sequential(nn.Linear(8, 4))
    with torch.no_grad():
        net[0].weight.copy_(torch.linalg.qr(torch.randn(8, 4)).Q.T)
    pen = methods.srip_penalty(net)
    assert pen < 1e-10 and torch.isfinite(torch.autograd.grad(pen, net[0].weight)[0]).all()


def test_srip_penalty_stays_float32_under_bf16_autocast():
    torch.manual_seed(0)
    net = peak_mlp()
    exact = methods.srip_penalty(net, "srip", torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = methods.srip_penalty(net, "srip", torch.Generator().manual_seed(0))
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, exact)


def test_srip_schedule():
    # the SRIP authors' adjust_ortho_decay_rate(epoch + 1): o_d = 1e-3 * o_d after epoch 20, and so on
    assert methods.srip_schedule(0) == 1e-2 and methods.srip_schedule(19) == 1e-2
    assert methods.srip_schedule(20) == pytest.approx(1e-5)
    assert methods.srip_schedule(50) == pytest.approx(1e-6) and methods.srip_schedule(49) == pytest.approx(1e-5)
    assert methods.srip_schedule(70) == pytest.approx(1e-8)
    assert methods.srip_schedule(119) == pytest.approx(1e-8) and methods.srip_schedule(120) == 0
    assert methods.srip_schedule(30, base=0.1) == pytest.approx(1e-4)


def test_ce_official_is_double_softmax():
    out, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    expect = -torch.log_softmax(torch.softmax(out, 1), 1)[torch.arange(5), y].mean()
    torch.testing.assert_close(methods.ce_official(out, y), expect)


def test_unknown_method_and_task_are_clear_errors():
    with pytest.raises(ValueError, match="unknown method 'Racecar'.*Std"):
        make_method("Racecar")
    with pytest.raises(ValueError, match="unknown task loss"):
        make_method("Std", task="hinge")
    with pytest.raises(ValueError, match="Ort form"):
        make_method("Ort", form="cayley")


def test_rr_adds_weighted_reconstruction():
    torch.manual_seed(0)
    net = peak_mlp()
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 1] * 3)
    info = StepInfo(0, 0, 0)
    std = make_method("Std").phases(net, 10)[0]
    rr = make_method("RR", lam=0.5).phases(net, 10)[0]
    l_std, _, _ = std.loss(net.eval(), x, y, info)
    l_rr, _, logs = rr.loss(net.eval(), x, y, info)
    torch.testing.assert_close(l_rr, l_std + 0.5 * logs["rr"])


def test_pre_freezes_lower_layers_while_a_layer_trains():
    torch.manual_seed(0)
    net = peak_mlp()
    phases = make_method("Pre", pre_steps=5).phases(net, 7)
    assert [p.name for p in phases] == ["pretrain-1", "pretrain-2", "finetune"]
    layer1 = {id(p) for p in list(net[1].parameters()) + list(net[2].parameters())}
    assert {id(p) for p in phases[0].params} == layer1
    assert layer1.isdisjoint({id(p) for p in phases[1].params})
    assert len(phases[2].params) == len(list(net.parameters()))
    # train phase 2 for a few steps: layer 1 (weights and BN statistics) and nothing else of the lower part changes
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(phases[1].params, lr=1e-2)
    x = torch.rand(8, 1, 28, 28)
    for _ in range(3):
        net.train()
        for m in phases[1].frozen:
            m.eval()
        loss, _, _ = phases[1].loss(net, x, None, StepInfo(0, 0, 0))
        net.zero_grad()
        loss.backward()
        opt.step()
    after = net.state_dict()
    for k in ("1.weight", "1.bias", "2.weight", "2.bias", "2.running_mean", "2.running_var"):
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["4.weight"], after["4.weight"])


def test_pre_runs_frozen_residual_blocks_without_gradients():
    """The frozen residual blocks below the unit being pretrained build no autograd graph (they are traced through,
    not called as one module): after backward their convolutions and norms hold no gradient."""
    torch.manual_seed(0)
    net = weather_resnet(5, 2, 8, 2)                          # stem, two residual blocks, output convolution
    for phase in make_method("Pre", task="mse", pre_steps=1).phases(net, 1)[2:4]:  # below: the stem and block(s)
        net.train()
        for m in phase.frozen:
            m.eval()
        loss, _, _ = phase.loss(net, torch.randn(2, 5, 8, 16), None, StepInfo(0, 0, 0))
        net.zero_grad(set_to_none=True)
        loss.backward()
        frozen = [p for m in phase.frozen for p in m.parameters()]
        assert frozen and all(p.grad is None for p in frozen)
        assert all(p.grad is not None for p in phase.params)


def test_rr_settings_are_checked_up_front():
    with pytest.raises(ValueError, match=r"a mode of \('full', 'local', 'local_padded'\)"):
        make_method("RR", mode="global")


def test_rr_can_keep_batch_norm_statistics_for_the_forward_pass():
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.tensor([0, 1] * 4)
    shared, frozen = peak_mlp().train(), peak_mlp().train()
    frozen.load_state_dict(shared.state_dict())
    reference = peak_mlp().train()
    reference.load_state_dict(shared.state_dict())
    info = StepInfo(0, 0, 0)
    make_method("RR", lam=1.0).phases(shared, 1)[0].loss(shared, x, y, info)
    make_method("RR", lam=1.0, reverse_bn_update=False).phases(frozen, 1)[0].loss(frozen, x, y, info)
    reference(x)                                   # the forward pass alone
    for k in ("2.running_mean", "2.running_var", "2.num_batches_tracked", "5.running_mean"):
        assert torch.equal(frozen.state_dict()[k], reference.state_dict()[k]), k
    assert not torch.equal(shared.state_dict()["2.running_mean"], reference.state_dict()["2.running_mean"])
    assert frozen[2].momentum == 0.1               # restored after the reverse pass


# Pre's autoencoder loss per pretraining phase, computed by the nested-Sequential walk the graph walk replaced
# (racecar_core at commit 48e4474, float64, the models and inputs below): blocks are pretrained as one unit.
EARLIER_PRE = {
    "peak": [2257.1135181705454, 287.12622247796094],
    "resnet8": [19861.603172816685, 11764.295902566386, 9612.272179366399, 8829.393650565966, 5192.76944540223],
    "weather": [597.7051167603094, 2967.9647230803994, 3681.816663901329, 260.38681379977265],
}


def test_pre_pretrains_layers_and_blocks_as_the_earlier_walk_did():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name, build, shape in (("peak", peak_mlp, (6, 1, 28, 28)),
                                   ("resnet8", lambda: resnet_cifar(8, 10), (4, 3, 16, 16)),
                                   ("weather", lambda: weather_resnet(5, 2, 8, 2), (3, 5, 8, 16))):
            torch.manual_seed(0)
            model, x = build(), torch.randn(shape)
            phases = make_method("Pre", task="ce").phases(model, 1)[:-1]
            assert len(phases) == len(EARLIER_PRE[name])
            for phase, expect in zip(phases, EARLIER_PRE[name]):
                model.train()
                for m in phase.frozen:
                    m.eval()
                torch.manual_seed(1)
                with torch.no_grad():
                    assert float(phase.loss(model, x, None, StepInfo(0, 0, 0))[0]) == pytest.approx(expect, rel=1e-9)
    finally:
        torch.set_default_dtype(old)
