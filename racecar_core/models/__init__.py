"""Models: MLPs for the SVD tests (more follow: CIFAR ResNets, weather CNNs)."""
from .mlp import glorot_init, mlp, mnist_linear, peak_mlp

__all__ = ["glorot_init", "mlp", "mnist_linear", "peak_mlp"]
