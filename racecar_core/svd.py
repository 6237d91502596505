"""SVD analysis of weight layers: singular vectors as images, and how much they look like the training data.

For a layer ``M`` (PyTorch weight, [out, in]), the *right* singular vectors are the rows of ``Vh`` in
``M = U S Vh``: vectors in the input space, shown as images. (The official ``kernel_SVD.py`` took rows of the left
factor of ``W^T`` instead; this module does it right.) Signs are fixed so that the largest-magnitude entry is
positive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reverse


@dataclass
class LayerSVD:
    """``U``, ``S``, ``Vh`` of one weight layer (conv kernels reshaped to [C_out, C_in*k*k])."""
    name: str
    U: Tensor
    S: Tensor
    Vh: Tensor


def fix_signs(u: Tensor, vh: Tensor) -> tuple[Tensor, Tensor]:
    """Flip each singular pair so the largest-magnitude entry of the right vector is positive."""
    idx = vh.abs().argmax(dim=-1, keepdim=True)
    sign = torch.sign(torch.gather(vh, -1, idx))
    sign[sign == 0] = 1
    return u * sign.transpose(-1, -2), vh * sign


def svd(weight: Tensor, device: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Sign-fixed thin SVD of a weight (or a batch of them): float64 on the CPU, float32 on CUDA (``device=None``:
    CUDA when there is one, so pass "cpu" for machine-independent precision, as the SVD test does)."""
    w = weight.detach()
    if w.dim() != 3:  # a single layer (conv kernels flattened); 3-d input is a batch of matrices
        w = w.reshape(w.shape[0], -1)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    w = w.to(device, torch.float64 if device == "cpu" else torch.float32)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    u, vh = fix_signs(u, vh)
    return u.cpu().double(), s.cpu().double(), vh.cpu().double()


def layer_svds(model: nn.Module, device: str | None = None) -> list[LayerSVD]:
    """SVD of every weight layer of a reversible model, bottom first (layers of equal shape batched together)."""
    weights = [m.weight.detach() for m in reverse.weight_modules(model)]
    flat = [w.reshape(w.shape[0], -1) for w in weights]
    out: list[LayerSVD | None] = [None] * len(flat)
    by_shape: dict[tuple, list[int]] = {}
    for i, w in enumerate(flat):
        by_shape.setdefault(tuple(w.shape), []).append(i)
    for idx in by_shape.values():
        u, s, vh = svd(torch.stack([flat[i] for i in idx]), device)
        for j, i in enumerate(idx):
            out[i] = LayerSVD(f"layer{i + 1}", u[j], s[j], vh[j])
    return out  # type: ignore[return-value]


def cosine_to_data(vectors: Tensor, data: Tensor) -> Tensor:
    """|cosine| between each vector (rows) and each data item (rows, flattened): [n_vectors, n_data]."""
    v = F.normalize(vectors.double().reshape(len(vectors), -1), dim=1)
    d = F.normalize(data.double().reshape(len(data), -1), dim=1)
    return (v @ d.T).abs()


def span_energy(vectors: Tensor, data: Tensor, tol: float = 1e-8) -> tuple[Tensor, int]:
    """Fraction of each unit vector's energy inside the span of the data items, and that span's dimension."""
    d = data.double().reshape(len(data), -1)
    u, s, _ = torch.linalg.svd(d.T, full_matrices=False)
    basis = u[:, s > tol * s.max()]
    v = F.normalize(vectors.double().reshape(len(vectors), -1), dim=1)
    return (v @ basis).pow(2).sum(dim=1), basis.shape[1]


def _gauss_window(size: int = 7, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity of image pairs [N, H, W] (Gaussian window 7x7, sigma 1.5, the usual constants)."""
    a, b = a.double()[:, None], b.double()[:, None]
    w = _gauss_window()
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    saa = F.conv2d(a * a, w) - mu_a ** 2
    sbb = F.conv2d(b * b, w) - mu_b ** 2
    sab = F.conv2d(a * b, w) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m.mean(dim=(1, 2, 3))


def to_unit_range(x: Tensor) -> Tensor:
    """Min-max rescale each item of a batch to [0, 1] (singular vectors for display and SSIM)."""
    flat = x.double().reshape(len(x), -1)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(x.shape)


def effective_rank(s: Tensor) -> float:
    """exp(entropy) of the normalised singular values (Roy & Vetterli 2007)."""
    p = s.double() / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def similarity_report(vh: Tensor, s: Tensor, train_images: Tensor, k: int) -> dict:
    """How much the right singular vectors of a layer look like the training images.

    Leading ``k`` vectors: mean over them of the max |cos| to any training image, the fraction of their energy in
    the span of the training images (chance: span dim / input dim) and SSIM to the best-matching image; the same
    max |cos| for the best ``k`` vectors of *all* singular vectors, with their ranks; a spectrum summary.
    """
    data = train_images.reshape(len(train_images), -1).double()
    k = min(k, len(vh))
    cos = cosine_to_data(vh, data)
    best_cos, best_img = cos.max(dim=1)
    energy, span_dim = span_energy(vh, data)
    side = int(round(math.sqrt(data.shape[1])))
    lead = to_unit_range(vh[:k]).reshape(k, side, side)
    match = to_unit_range(data[best_img[:k]]).reshape(k, side, side)
    top = torch.argsort(best_cos, descending=True)[:k]
    return {
        "k": k,
        "lead_max_cos": float(best_cos[:k].mean()),
        "lead_max_cos_each": best_cos[:k].tolist(),
        "lead_span_energy": float(energy[:k].mean()),
        "span_dim": span_dim,
        "span_energy_chance": span_dim / data.shape[1],
        "lead_ssim": float(ssim(lead, match).mean()),
        "best_k_max_cos": float(best_cos[top].mean()),
        "best_k_ranks": (top + 1).tolist(),
        "singular_values": s.tolist(),
        "condition_number": float(s.max() / s.min().clamp_min(1e-300)),
        "effective_rank": effective_rank(s),
        "top_k_energy": float((s[:k] ** 2).sum() / (s ** 2).sum()),
    }

