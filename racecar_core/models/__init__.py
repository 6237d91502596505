"""Models: MLPs for the SVD tests, a small CNN (information planes), CIFAR ResNets, the WeatherBench ResNet."""
from .cnn import small_cnn
from .mlp import glorot_init, mlp, mnist_linear, peak_mlp
from .resnet_cifar import n_parameters, resnet_cifar
from .weather_resnet import weather_resnet

__all__ = ["glorot_init", "mlp", "mnist_linear", "n_parameters", "peak_mlp", "resnet_cifar",
           "small_cnn", "weather_resnet"]
