"""The data sets of the reproduction: the shared ``ImageSet`` container and ``MissingDataError`` here; one module per
source (``mnist``, ``peak``, ``official``, ``cifar``, ``weatherbench``, ...); which of them can be had now in
``availability``."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """Train/test images in raw pixel units (0..255): x is ``[N,C,H,W]`` (float32 for MNIST and peak, uint8 for
    CIFAR and Fashion-MNIST), y is ``[N]`` int64; ``source`` says where they came from, for people."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    synthetic: bool
    classes: list[str] | None = None     # the class names, by label, where the data set has them

    def fingerprint(self) -> str:
        """A digest of the images and labels, not of where they were read from: run caches key on it, so a run is
        found again after the data folder moved or was downloaded afresh, and a different subset is a different run."""
        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().data)
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"ImageSet(train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"synthetic={self.synthetic}, source={self.source!r})")


class MissingDataError(FileNotFoundError):
    """A data set is not on disk and cannot be fetched or generated; the message says how to get it."""
