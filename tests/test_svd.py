"""SVD analysis: vectors reconstruct W, signs fixed, similarity measures behave."""
import torch
from torch import nn

from racecar_core import svd


def test_svd_reconstructs_weight_and_fixes_signs():
    torch.manual_seed(0)
    w = torch.randn(10, 784)
    u, s, vh = svd.svd(w, "cpu")
    torch.testing.assert_close(u @ torch.diag(s) @ vh, w.double(), rtol=1e-10, atol=1e-10)
    idx = vh.abs().argmax(1)
    assert (vh[torch.arange(10), idx] > 0).all()
    torch.testing.assert_close(vh @ vh.T, torch.eye(10, dtype=torch.float64), atol=1e-10, rtol=0)


def test_layer_svds_batches_equal_shapes_and_reshapes_convs():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(16, 4),
                        nn.Linear(4, 4))
    res = svd.layer_svds(net, "cpu")
    assert [r.Vh.shape[1] for r in res] == [27, 36, 16, 4]
    for r, m in zip(res, [net[0], net[2], net[4], net[5]]):
        w = m.weight.detach().reshape(m.weight.shape[0], -1).double()
        torch.testing.assert_close(r.U @ torch.diag(r.S) @ r.Vh, w, rtol=1e-8, atol=1e-8)


def test_similarity_to_data():
    torch.manual_seed(0)
    data = torch.rand(2, 1, 28, 28)
    basis = torch.linalg.qr(data.reshape(2, -1).T.double()).Q.T          # spans the data exactly
    rep = svd.similarity_report(basis, torch.tensor([2.0, 1.0]), data, k=2)
    assert rep["lead_span_energy"] > 1 - 1e-9 and rep["span_dim"] == 2
    assert abs(rep["span_energy_chance"] - 2 / 784) < 1e-12
    rand = torch.linalg.qr(torch.randn(784, 2, dtype=torch.float64)).Q.T
    rep2 = svd.similarity_report(rand, torch.tensor([2.0, 1.0]), data, k=2)
    assert rep2["lead_span_energy"] < 0.05 and rep2["lead_max_cos"] < rep["lead_max_cos"]


def test_ssim():
    a = torch.rand(3, 28, 28)
    torch.testing.assert_close(svd.ssim(a, a), torch.ones(3, dtype=torch.float64))
    assert (svd.ssim(a, torch.rand(3, 28, 28)) < 0.5).all()


def test_effective_rank():
    assert abs(svd.effective_rank(torch.ones(5)) - 5) < 1e-9
    assert abs(svd.effective_rank(torch.tensor([1.0, 0, 0])) - 1) < 1e-9
