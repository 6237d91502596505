"""Rasp & Thuerey's (2021) WeatherBench ResNet, reversible: periodic padding in longitude, zero in latitude.

``periodic conv (7x7) -> LeakyReLU -> BN -> dropout``, then ``blocks`` residual blocks of two
``[periodic conv 3x3, LeakyReLU, BN, dropout]``, then a periodic 3x3 conv to the output channels. The paper setting
(19 blocks, 128 channels, 117 input channels) has about 6.36 M parameters.
"""
from __future__ import annotations

from torch import nn

from ..layers import PeriodicConv2d, Residual


def _unit(cin: int, cout: int, kernel: int, dropout: float) -> list[nn.Module]:
    return [PeriodicConv2d(cin, cout, kernel), nn.LeakyReLU(), nn.BatchNorm2d(cout), nn.Dropout(dropout)]


def weather_resnet(in_channels: int, out_channels: int = 3, channels: int = 128, blocks: int = 19,
                   dropout: float = 0.1, stem_kernel: int = 7) -> nn.Sequential:
    """The forecasting ResNet as an ``nn.Sequential`` that the RR reverse pass walks."""
    if blocks < 0 or channels < 1:
        raise ValueError(f"racecar: weather_resnet needs blocks >= 0 and channels >= 1, got {blocks}, {channels}")
    layers: list[nn.Module] = _unit(in_channels, channels, stem_kernel, dropout)
    for _ in range(blocks):
        layers.append(Residual(nn.Sequential(*_unit(channels, channels, 3, dropout),
                                             *_unit(channels, channels, 3, dropout))))
    layers.append(PeriodicConv2d(channels, out_channels, 3))
    return nn.Sequential(*layers)
