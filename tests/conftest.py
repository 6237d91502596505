"""Shared fixtures: a private data folder, a machine without network, double precision."""
from pathlib import Path

import pytest
import torch


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """``RACECAR_DATA_DIR`` pointed at an empty folder of this test's own."""
    root = tmp_path / "data"
    monkeypatch.setenv("RACECAR_DATA_DIR", str(root))
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Make every torchvision download fail at once, as on a machine without network."""
    from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST

    def _refuse(self):
        raise RuntimeError("network refused (test)")

    for cls in (MNIST, FashionMNIST, CIFAR10, CIFAR100):
        monkeypatch.setattr(cls, "download", _refuse)


@pytest.fixture
def float64():
    """torch's default dtype float64 for the test (exact adjoint checks), restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
