"""Reversible building blocks that torch lacks: residual blocks, the option-A shortcut, periodic convolutions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rules import conv_transpose


class Residual(nn.Module):
    """``y = S x + F(x)`` with ``F`` a branch (e.g. an ``nn.Sequential``) and ``S`` the shortcut (identity by default).

    Nothing special for the reverse pass: it traces the addition and sends the signal of the sum into the branch
    and the shortcut (``racecar_core.reverse``). Put the activation that follows the addition *after* the block in
    the enclosing ``nn.Sequential``; the walk re-applies it as the lower layer's activation of the next block.
    """

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.branch(x)


class OptionAShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by ``stride`` and pad zero channels (half before, half after)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.front = (out_channels - in_channels) // 2

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.front, self.out_channels - self.in_channels - self.front))

    def racecar_adjoint(self, y: Tensor, input_shape: torch.Size) -> Tensor:
        """Take the real channels back and scatter them into the strided positions of a zero input."""
        x = y.new_zeros(input_shape)
        x[:, :, ::self.stride, ::self.stride] = y[:, self.front:self.front + self.in_channels]
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class PeriodicConv2d(nn.Conv2d):
    """Convolution on a lat-lon grid: periodic (wrap-around) padding in longitude, zero padding in latitude.

    Its transpose is the adjoint of pad-then-conv: transposed convolution, then the padding folded back (rows of
    the latitude padding dropped, columns of the longitude padding added onto the columns they were copied from).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)
        self.pad = (kernel_size - 1) // 2

    def _padded(self, x: Tensor) -> Tensor:
        p = self.pad
        return F.pad(F.pad(x, (p, p, 0, 0), mode="circular"), (0, 0, p, p))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self._padded(x), self.weight, self.bias, self.stride)

    def racecar_padded_pair(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The padded input and its reconstruction by the transposed *unpadded* convolution of ``y`` (the output
        without the bias): the ``local_padded`` pair of the authors' WeatherBench draft."""
        xp = self._padded(x)
        return xp, conv_transpose(self, y, xp.shape)

    def racecar_transpose(self, y: Tensor, input_shape: torch.Size) -> Tensor:
        """``(pad-then-conv)^T y`` without the bias."""
        p = self.pad
        h, w = input_shape[-2] + 2 * p, input_shape[-1] + 2 * p
        z = conv_transpose(self, y, torch.Size((*input_shape[:-2], h, w)))  # the unpadded conv's transpose
        z = z[..., p:h - p, :]
        if p == 0:
            return z
        core = z[..., p:w - p].clone()
        core[..., -p:] += z[..., :p]          # left padding columns were copies of the last columns
        core[..., :p] += z[..., w - p:]       # right padding columns were copies of the first columns
        return core
