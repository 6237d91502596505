"""CIFAR ResNets of He et al. (2016): depth 6n+2, 16/32/64 channels, option-A shortcuts, as a reversible Sequential.

Layout: conv3x3-BN-ReLU, then 3 stages of n blocks ``Residual(conv-BN-ReLU-conv-BN, shortcut)`` each followed by a
ReLU, then global average pooling and a linear classifier. ResNet-110 (n = 18) has 1,727,962 parameters.
"""
from __future__ import annotations

from torch import nn

from ..layers import OptionAShortcut, Residual


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def basic_block(cin: int, cout: int, stride: int) -> Residual:
    """``Residual(conv-BN-ReLU-conv-BN)`` with the identity or an option-A shortcut."""
    branch = nn.Sequential(_conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(),
                           _conv3x3(cout, cout), nn.BatchNorm2d(cout))
    shortcut = OptionAShortcut(cin, cout, stride) if stride != 1 or cin != cout else None
    return Residual(branch, shortcut)


def check_depth(depth: int) -> None:
    """A CIFAR ResNet has depth ``6n+2``; anything else is an error that says so."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"racecar: CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")


def resnet_cifar(depth: int = 110, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Sequential:
    """The CIFAR ResNet of depth ``6n+2`` (20, 32, 44, 56, 110, ...), Kaiming-normal initialised."""
    check_depth(depth)
    n = (depth - 2) // 6
    layers: list[nn.Module] = [_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage, mult in enumerate((1, 2, 4)):
        cout = width * mult
        for b in range(n):
            layers += [basic_block(cin, cout, 2 if stage > 0 and b == 0 else 1), nn.ReLU()]
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return model


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
