"""Mutual information of a layer's activations with the input and the label: the two estimators of the
information-plane literature, in bits, batched (on the GPU when the activations are there).

A layer's activations ``T`` (one row per sample) are a deterministic function of the sample ``X``, so ``I(X; T)``
depends only on how the estimator turns ``T`` into a random variable:

- **Binning** (Shwartz-Ziv & Tishby 2017): every unit is discretised into ``bins`` equal bins over a range (the
  layer's own min..max, or a fixed one such as tanh's [-1, 1]); each sample's pattern of bins is a symbol. ``X`` is
  the sample identity (uniform over the samples), so ``I(X; T) = H(T)`` and ``I(T; Y) = H(T) - H(T | Y)``, from the
  symbols' empirical frequencies. Limits: one bin gives 0; enough bins to tell every sample apart give
  ``log2(N)``.
- **KDE** (Kolchinsky & Tracey 2017, as used by Saxe et al. 2018): ``T + Z`` with Gaussian noise ``Z`` of variance
  ``noise_var`` per unit makes ``T`` a mixture of ``N`` Gaussians, whose entropy the pairwise-distance estimator
  bounds from above (``bound="upper"``: KL divergences) or below (``"lower"``: Bhattacharyya distances):
  ``H(T) <= -1/N sum_i log 1/N sum_j exp(-||t_i - t_j||^2 / (2 var)) + d/2 log(2 pi e var)``, and
  ``I(X; T) = H(T) - H(T | X)`` with ``H(T | X) = d/2 log(2 pi e var)``, ``I(T; Y) = H(T) - sum_y p(y) H(T | Y=y)``.
  Limits: tiny noise gives ``log2(N)``, huge noise 0.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

LOG2 = math.log(2.0)
Bound = Literal["upper", "lower"]


def _as_rows(t: Tensor) -> Tensor:
    if t.dim() < 1 or len(t) == 0:
        raise ValueError(f"racecar: activations need one row per sample, got shape {tuple(t.shape)}")
    return t.reshape(len(t), -1)


def bin_codes(t: Tensor, bins: int, value_range: tuple[float, float] | None = None) -> Tensor:
    """Each sample's pattern of bins as one integer symbol ``[N]`` (0 .. number of distinct patterns - 1).

    ``value_range``: the bins' range (values outside are clipped into the end bins); None: the layer's own
    min..max over all samples and units."""
    if bins < 1:
        raise ValueError(f"racecar: bins must be >= 1, got {bins}")
    t = _as_rows(t).double()
    lo, hi = (float(t.min()), float(t.max())) if value_range is None else value_range
    if not hi > lo:
        return torch.zeros(len(t), dtype=torch.long, device=t.device)
    idx = torch.floor((t - lo) / (hi - lo) * bins).clamp_(0, bins - 1).long()
    return torch.unique(idx, dim=0, return_inverse=True)[1]


def entropy_bits(codes: Tensor) -> float:
    """Entropy in bits of the empirical distribution of integer symbols."""
    counts = torch.bincount(codes).double()
    p = counts[counts > 0] / len(codes)
    return float(-(p * torch.log2(p)).sum())


def binning_mi(t: Tensor, y: Tensor, bins: int = 30, value_range: tuple[float, float] | None = None
               ) -> tuple[float, float]:
    """``(I(X; T), I(T; Y))`` in bits by binning (module docstring)."""
    codes = bin_codes(t, bins, value_range)
    h = entropy_bits(codes)
    y = y.to(codes.device)
    h_given_y = sum(float((y == c).float().mean()) * entropy_bits(codes[y == c]) for c in torch.unique(y))
    return h, h - h_given_y


def _mixture_entropy(t: Tensor, var: float, chunk: int = 2048) -> Tensor:
    """The pairwise-distance upper bound (nats) of the entropy of the mixture of N(t_i, var I), chunked over rows."""
    n, d = t.shape
    lse = []
    for i in range(0, n, chunk):
        dist = torch.cdist(t[i:i + chunk], t).pow(2)
        lse.append(torch.logsumexp(-dist / (2 * var), dim=1))
    lprob = torch.cat(lse) - math.log(n) - d / 2 * math.log(2 * math.pi * var)
    return -lprob.mean() + d / 2


def kde_entropy(t: Tensor, noise_var: float, bound: Bound = "upper") -> float:
    """An upper (KL) or lower (Bhattacharyya) bound, in bits, of the entropy of ``T + N(0, noise_var I)``."""
    if noise_var <= 0:
        raise ValueError(f"racecar: noise_var must be positive, got {noise_var}")
    t = _as_rows(t).double()
    d = t.shape[1]
    if bound == "upper":
        h = _mixture_entropy(t, noise_var)
    elif bound == "lower":   # Bhattacharyya distances of equal Gaussians: the KL form at 4 var, shifted
        h = _mixture_entropy(t, 4 * noise_var) + d / 2 * math.log(0.25)
    else:
        raise ValueError(f"racecar: bound must be 'upper' or 'lower', got {bound!r}")
    return float(h) / LOG2


def kde_mi(t: Tensor, y: Tensor, noise_var: float = 1e-1, bound: Bound = "upper") -> tuple[float, float]:
    """``(I(X; T), I(T; Y))`` in bits by the pairwise-distance KDE bound (module docstring)."""
    t = _as_rows(t).double()
    d = t.shape[1]
    h = kde_entropy(t, noise_var, bound)
    h_noise = d / 2 * math.log(2 * math.pi * math.e * noise_var) / LOG2
    y = y.to(t.device)
    h_given_y = sum(float((y == c).double().mean()) * kde_entropy(t[y == c], noise_var, bound)
                    for c in torch.unique(y))
    return h - h_noise, h - h_given_y


def information_plane(layers: list[Tensor], y: Tensor, estimator: str = "binning",
                      **kwargs) -> list[tuple[float, float]]:
    """``(I(X; D_m), I(D_m; Y))`` for each layer's activations ``D_m`` (``estimator``: 'binning' or 'kde', with
    its keyword settings)."""
    if estimator not in ("binning", "kde"):
        raise ValueError(f"racecar: unknown estimator {estimator!r}; use 'binning' or 'kde'")
    return [(binning_mi if estimator == "binning" else kde_mi)(t, y, **kwargs) for t in layers]
