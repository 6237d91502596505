"""torchvision's classification networks as they come, for "RR on your own network"."""
from __future__ import annotations

from torch import nn


def from_torchvision(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """``torchvision.models.<name>(num_classes=...)``, its first convolution swapped for one that reads
    ``in_channels`` channels (same kernel, stride, padding) when that is not 3 (grey images)."""
    import torchvision
    if not hasattr(torchvision.models, name) or not callable(getattr(torchvision.models, name)):
        raise ValueError(f"racecar: torchvision.models has no network {name!r} (e.g. resnet18, resnet50, vgg11_bn)")
    model = getattr(torchvision.models, name)(num_classes=num_classes)
    if in_channels != 3:
        parent_name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
        owner, _, attr = parent_name.rpartition(".")
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                        conv.groups, conv.bias is not None, conv.padding_mode)
        setattr(model.get_submodule(owner) if owner else model, attr, new)
    return model
