"""Fully connected networks of the SVD tests, built as plain ``nn.Sequential`` (reversible as they are)."""
from __future__ import annotations

from torch import nn

# TF's BatchNormalization defaults used by the official code: moving-average momentum 0.9 (PyTorch 0.1), eps 1e-3.
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


def glorot_init(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every Linear/Conv2d (the official initialisation)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def mlp(sizes: list[int], norm: bool = True, activation: type[nn.Module] = nn.ReLU, last_activation: bool = True,
        flatten: bool = True) -> nn.Sequential:
    """``sizes[0] -> ... -> sizes[-1]``; each layer Linear [+ BatchNorm1d] [+ activation], Glorot-initialised."""
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least input and output sizes, got {sizes}")
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        last = i == len(sizes) - 2
        if norm and (not last or last_activation):
            layers.append(nn.BatchNorm1d(b, eps=BN_EPS, momentum=BN_MOMENTUM))
        if not last or last_activation:
            layers.append(activation())
    return glorot_init(nn.Sequential(*layers))


def mnist_linear(n_in: int = 784, n_out: int = 10) -> nn.Sequential:
    """The official MNIST SVD-test network: one linear layer, no norm, no activation."""
    return mlp([n_in, n_out], norm=False, last_activation=False)


def peak_mlp(n_in: int = 784, hidden: int = 128, n_out: int = 2) -> nn.Sequential:
    """The official peak network 784 -> 128 -> 2, every layer Linear + BatchNorm + ReLU."""
    return mlp([n_in, hidden, n_out], norm=True, last_activation=True)
