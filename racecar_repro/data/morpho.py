"""Real MNIST digits with controlled factors: every image carries its digit, a known rotation and a known stroke
thickness (the information-plane experiment's tasks A and B, and the factor strips of Fig. 1b).

Thickness: ``k`` steps of morphological dilation (``k > 0``, thicker) or erosion (``k < 0``, thinner) with a 3x3
cross, i.e. by a diamond of radius ``|k|``, on the upright digit in [0, 1] (grey-level morphology: max or min over the
cross), as Morpho-MNIST thickens and thins with a disk. Rotation: by a known angle in degrees (bilinear, zero
background), after the morphology. Factors are drawn per image from the given lists with a seed, so every (digit,
rotation, thickness) combination occurs about equally often.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ANGLES = (-45.0, -22.5, 0.0, 22.5, 45.0)
THICKNESS = (-1, 0, 1, 2)


def _cross_extreme(x: Tensor, largest: bool) -> Tensor:
    """The max (or min) of each pixel and its four neighbours (a 3x3 cross), with the border outside as background."""
    pad = F.pad(x, (1, 1, 1, 1), value=0.0)
    shifts = torch.stack([pad[..., 1:-1, 1:-1], pad[..., :-2, 1:-1], pad[..., 2:, 1:-1], pad[..., 1:-1, :-2],
                          pad[..., 1:-1, 2:]])
    return shifts.amax(0) if largest else shifts.amin(0)


def morph(x: Tensor, steps: int) -> Tensor:
    """``steps`` dilations (``> 0``) or erosions (``< 0``) of images ``[N, 1, H, W]`` in [0, 1] by a 3x3 cross."""
    for _ in range(abs(steps)):
        x = _cross_extreme(x, largest=steps > 0)
    return x


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Each image ``[N, C, H, W]`` rotated counter-clockwise by its angle ``[N]`` (bilinear, zeros outside)."""
    a = torch.deg2rad(degrees.to(x.dtype))
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class FactorDigits:
    """Images ``x [N, 1, 28, 28]`` in [0, 1] and, per image, the digit and the indices of its rotation and thickness
    in ``angles`` / ``thickness`` (the factors' values)."""
    x: Tensor
    digit: Tensor
    rotation: Tensor
    thickness: Tensor
    angles: tuple[float, ...]
    steps: tuple[int, ...]
    source: str

    def factor(self, name: str) -> Tensor:
        """The labels of one factor: 'digit', 'rotation' or 'thickness'."""
        if name not in ("digit", "rotation", "thickness"):
            raise ValueError(f"racecar: unknown factor {name!r}; use 'digit', 'rotation' or 'thickness'")
        return getattr(self, name)

    def classes(self, name: str) -> int:
        """How many classes a factor has."""
        return {"digit": 10, "rotation": len(self.angles), "thickness": len(self.steps)}[name]


def render(images: Tensor, angle: Tensor, steps: Tensor) -> Tensor:
    """Upright digits ``[N, 1, H, W]`` in [0, 1], thickened/thinned by ``steps [N]`` then rotated by ``angle [N]``."""
    out = images.clone()
    for k in torch.unique(steps).tolist():
        sel = steps == k
        out[sel] = morph(images[sel], int(k))
    return rotate(out, angle).clamp_(0.0, 1.0)


def controlled_digits(images: Tensor, digits: Tensor, angles: Sequence[float] = ANGLES,
                      thickness: Sequence[int] = THICKNESS, seed: int = 0, source: str = "") -> FactorDigits:
    """Give every image (raw 0..255 or [0, 1], ``[N, 1, 28, 28]``) a rotation and a thickness drawn from the lists
    with ``seed``, and render it so."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"racecar: expected grey images [N, 1, H, W], got {tuple(images.shape)}")
    if not angles or not thickness:
        raise ValueError("racecar: angles and thickness need at least one value each")
    x = images.float()
    x = x / 255.0 if float(x.max()) > 1.0 else x
    g = torch.Generator().manual_seed(seed)
    rot = torch.randint(0, len(angles), (len(x),), generator=g)
    thick = torch.randint(0, len(thickness), (len(x),), generator=g)
    out = render(x, torch.tensor(angles, dtype=torch.float32)[rot], torch.tensor(thickness)[thick])
    return FactorDigits(out, torch.as_tensor(digits).long(), rot, thick, tuple(float(a) for a in angles),
                        tuple(int(k) for k in thickness), source)
