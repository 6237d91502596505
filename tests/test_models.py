"""Models: exact parameter counts, reversibility, clear errors."""
import pytest
import torch

from racecar_core import reverse
from racecar_core.models import n_parameters, resnet_cifar, weather_resnet


def test_resnet110_has_he_et_al_parameter_count():
    assert n_parameters(resnet_cifar(110)) == 1_727_962
    assert n_parameters(resnet_cifar(20)) == 269_722


@pytest.mark.parametrize("depth", [21, 4, 111])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet_cifar(depth)


def test_resnet_reverse_pass_reconstructs_every_layer_input():
    torch.manual_seed(0)
    net = resnet_cifar(8, in_channels=1).double()
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    trace = reverse.forward_trace(net, x)
    torch.testing.assert_close(trace.output, net(x))
    pairs = reverse.reverse_pass(trace)
    # stem conv, 3 blocks, linear, and the inner conv of each block
    assert len(pairs) == 1 + 3 + 1 + 3
    assert all(d.shape == r.shape for d, r in pairs)
    assert reverse.reconstruct_input(net, x).shape == x.shape


def test_weather_resnet_paper_size_and_reverse():
    assert abs(n_parameters(weather_resnet(117)) - 6.36e6) < 0.01e6
    net = weather_resnet(5, 3, channels=8, blocks=2).double()
    x = torch.randn(2, 5, 32, 64, dtype=torch.float64)
    out, rec = reverse.rr_loss(net, x, "full", "mean")
    assert out.shape == (2, 3, 32, 64) and float(rec.detach()) > 0
    assert len(reverse.reverse_pass(reverse.forward_trace(net, x), "local")) == 1 + 2 * 2 + 1


def test_weather_resnet_paper_setting_is_the_authors_keras_model():
    from racecar_core.models.weather_resnet import KERAS
    net = weather_resnet(117, 3, channels=128, blocks=19, **KERAS)
    # 7x7x117x128+128 + 38 x (3x3x128x128+128) + 3x3x128x3+3 + 39 batch norms x (gamma, beta): Keras's trainable count
    assert n_parameters(net) == 6_355_587
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    acts = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(bn) == 39 and all(b.momentum == 0.01 and b.eps == 1e-3 for b in bn)
    assert len(acts) == 39 and all(a.negative_slope == 0.3 for a in acts)


@pytest.mark.integration
def test_torchvision_networks_read_grey_images_when_asked():
    from racecar_repro.torchvision_nets import from_torchvision
    net = from_torchvision("resnet18", 7, in_channels=1)
    assert net.conv1.in_channels == 1 and net.conv1.kernel_size == (7, 7) and net.fc.out_features == 7
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    vgg = from_torchvision("vgg11_bn", 3, in_channels=2)
    assert vgg.features[0].in_channels == 2
    with pytest.raises(ValueError, match="no network"):
        from_torchvision("not_a_net")


def test_small_cnn_halves_the_image_per_convolution_and_reverses():
    from racecar_core.models import small_cnn
    net = small_cnn((4, 8), (6,), 10, in_shape=(1, 28, 28))
    x = torch.randn(3, 1, 28, 28)
    assert net(x).shape == (3, 10) and net[5].in_features == 8 * 7 * 7
    assert reverse.reconstruct_input(net, x).shape == x.shape
    assert small_cnn((4,), (), 3, in_shape=(2, 9, 9))(torch.randn(1, 2, 9, 9)).shape == (1, 3)
    with pytest.raises(ValueError, match="at least one convolution"):
        small_cnn(())
