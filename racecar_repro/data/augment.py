"""Batched image preprocessing on the device: channel statistics, normalisation, random crop with zero padding, flip.

Everything is whole-batch tensor ops (no Python loop over samples). Randomness comes only from a CPU
``torch.Generator``, so a batch's augmentation is a deterministic function of (images, generator seed) on any device.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Stats = Sequence[float] | Tensor


def _per_channel(v: Stats, x: Tensor, what: str) -> Tensor:
    t = torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1)
    if t.numel() not in (1, x.shape[1]):
        raise ValueError(f"{what} has {t.numel()} values but the images have {x.shape[1]} channels; "
                         f"pass one value per channel (see racecar_repro.data.cifar.channel_stats)")
    return t.reshape(1, -1, 1, 1)


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, population std) of images ``[N,C,H,W]`` in 0..255 units, returned in 0..1 units (float32)."""
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"expected a non-empty image batch [N,C,H,W], got shape {tuple(x.shape)}")
    c = x.shape[1]
    s, s2 = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), chunk):  # chunked float64 sums: exact enough, and no 1 GB float copy of 50k images
        part = x[i:i + chunk].to(device="cpu", dtype=torch.float64) / 255.0
        s += part.sum(dim=(0, 2, 3))
        s2 += part.square().sum(dim=(0, 2, 3))
    n = x.numel() // c
    mean = s / n
    std = (s2 / n - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float()


def normalize(x: Tensor, mean: Stats, std: Stats, dtype: torch.dtype = torch.float32) -> Tensor:
    """Map images in 0..255 units ``[N,C,H,W]`` to ``(x/255 - mean) / std`` on x's device (uint8 becomes ``dtype``)."""
    if x.ndim != 4:
        raise ValueError(f"expected an image batch [N,C,H,W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():  # uint8 -> dtype; float input keeps its own precision
        x = x.to(dtype)
    m, sd = _per_channel(mean, x, "mean"), _per_channel(std, x, "std")
    return torch.addcmul(-m / sd, x, 1.0 / (255.0 * sd))  # one fused pass: x * 1/(255 sd) - m/sd


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Zero-pad ``[N,C,H,W]`` by ``pad``, take a random HxW crop and a random horizontal flip per sample (batched)."""
    if x.ndim != 4:
        raise ValueError(f"expected an image batch [N,C,H,W], got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if generator.device.type != "cpu":
        raise ValueError("random_crop_flip draws its offsets on the CPU: pass a CPU torch.Generator "
                         "(torch.Generator().manual_seed(seed)), not one on the accelerator")
    n, c, h, w = x.shape
    # Draw on the CPU in a fixed order (row offsets, column offsets, flips), then move the small tensors over.
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator, dtype=torch.bool)
    rows = (oy[:, None] + torch.arange(h)).to(x.device)                     # [N,H] rows of the padded image
    cols = ox[:, None] + torch.arange(w)                                    # [N,W] columns of the padded image
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(x.device)      # flipped: read the crop right to left
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    n_idx = torch.arange(n, device=x.device)[:, None, None, None]
    c_idx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def make_transform(mean: Stats, std: Stats, augment: bool, device: torch.device | str,
                   pad: int = 4, dtype: torch.dtype = torch.float32) -> Callable[[Tensor, torch.Generator], Tensor]:
    """A ``TensorBatches`` transform: move a uint8 batch to ``device``, crop+flip if ``augment``, then normalise."""
    dev = torch.device(device)

    def transform(x: Tensor, generator: torch.Generator) -> Tensor:
        x = x.to(dev, non_blocking=True)
        if augment:  # on raw pixels, so the padding is black (0), as torchvision's RandomCrop(32, padding=4)
            x = random_crop_flip(x, generator, pad)
        return normalize(x, mean, std, dtype)

    return transform
