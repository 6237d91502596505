"""Models: MLPs for the SVD tests (more follow: CIFAR ResNets, weather CNNs)."""
from .mlp import glorot_init, mlp, mnist_linear, peak_mlp
from .resnet_cifar import n_parameters, resnet_cifar

__all__ = ["glorot_init", "mlp", "mnist_linear", "n_parameters", "peak_mlp", "resnet_cifar"]
