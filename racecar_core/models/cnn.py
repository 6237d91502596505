"""A small convolutional network for the information-plane experiment (``small_cnn``)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .mlp import glorot_init


def small_cnn(channels: Sequence[int] = (8, 16), hidden: Sequence[int] = (16,), n_out: int = 10,
              activation: type[nn.Module] = nn.Tanh, in_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Sequential:
    """``len(channels)`` 5x5 convolutions of stride 2 (each halves the image, rounding up) with ``activation``, then
    fully connected layers of ``hidden`` units with ``activation`` and a linear output of ``n_out``; no norms (the
    information-bottleneck setting), Glorot-initialised. ``D_m`` of the planes: every activation's output."""
    if not channels:
        raise ValueError("small_cnn needs at least one convolution (channels), got none; use models.mlp otherwise")
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 5, stride=2, padding=2), activation()]
        c, h, w = out, (h + 1) // 2, (w + 1) // 2
    layers.append(nn.Flatten())
    width = c * h * w
    for units in hidden:
        layers += [nn.Linear(width, units), activation()]
        width = units
    layers.append(nn.Linear(width, n_out))
    return glorot_init(nn.Sequential(*layers))
