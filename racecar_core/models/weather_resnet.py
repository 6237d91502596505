"""Rasp & Thuerey's (2021) WeatherBench ResNet, reversible: periodic padding in longitude, zero in latitude.

``periodic conv (7x7) -> LeakyReLU -> BN -> dropout``, then ``blocks`` residual blocks of two
``[periodic conv 3x3, LeakyReLU, BN, dropout]``, then a periodic 3x3 conv to the output channels. The authors' Keras
model left the LeakyReLU and batch norm at Keras's defaults: slope 0.3, momentum 0.99 (PyTorch's ``momentum`` is
1 - Keras's: 0.01) and epsilon 1e-3 (``KERAS``). The paper setting (19 blocks, 128 channels, 117 input channels) has
6,355,587 trainable parameters.
"""
from __future__ import annotations

from torch import nn

from ..layers import PeriodicConv2d, Residual

KERAS = {"leaky_slope": 0.3, "bn_momentum": 0.01, "bn_eps": 1e-3}   # Keras defaults, in PyTorch's terms
TORCH = {"leaky_slope": 0.01, "bn_momentum": 0.1, "bn_eps": 1e-5}   # PyTorch's defaults


def _unit(cin: int, cout: int, kernel: int, dropout: float, leaky_slope: float, bn_momentum: float,
          bn_eps: float) -> list[nn.Module]:
    return [PeriodicConv2d(cin, cout, kernel), nn.LeakyReLU(leaky_slope),
            nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum), nn.Dropout(dropout)]


def weather_resnet(in_channels: int, out_channels: int = 3, channels: int = 128, blocks: int = 19,
                   dropout: float = 0.1, stem_kernel: int = 7, leaky_slope: float = TORCH["leaky_slope"],
                   bn_momentum: float = TORCH["bn_momentum"], bn_eps: float = TORCH["bn_eps"]) -> nn.Sequential:
    """The forecasting ResNet as an ``nn.Sequential`` that the RR reverse pass walks (``**KERAS`` for the authors'
    activation and batch-norm settings)."""
    if blocks < 0 or channels < 1:
        raise ValueError(f"racecar: weather_resnet needs blocks >= 0 and channels >= 1, got {blocks}, {channels}")
    unit = dict(dropout=dropout, leaky_slope=leaky_slope, bn_momentum=bn_momentum, bn_eps=bn_eps)
    layers: list[nn.Module] = _unit(in_channels, channels, stem_kernel, **unit)
    for _ in range(blocks):
        layers.append(Residual(nn.Sequential(*_unit(channels, channels, 3, **unit),
                                             *_unit(channels, channels, 3, **unit))))
    layers.append(PeriodicConv2d(channels, out_channels, 3))
    return nn.Sequential(*layers)
