"""The mutual-information estimators against distributions whose mutual information is known, and their limits."""
import math

import pytest
import torch

from racecar_core import information as info


def test_binning_limits_one_bin_and_every_sample_apart():
    t, y = torch.randn(64, 3), torch.arange(64) % 2
    assert info.binning_mi(t, y, bins=1) == (0.0, 0.0)
    ramp = torch.arange(64.0).reshape(64, 1)               # a deterministic invertible map of the sample
    ixt, ity = info.binning_mi(ramp, y, bins=64)
    assert ixt == pytest.approx(math.log2(64)) and ity == pytest.approx(1.0)   # I(T; Y) = H(Y) when T tells X


def test_binning_discrete_channels_copy_and_independence():
    y = torch.arange(1200) % 4
    copy = torch.nn.functional.one_hot(y, 4).float()
    assert info.binning_mi(copy, y, bins=2) == pytest.approx((2.0, 2.0))       # T = Y: I = H(Y) = 2 bits
    t = (torch.arange(1200) // 4 % 3).float().reshape(-1, 1)                    # every (t, y) pair equally often
    ixt, ity = info.binning_mi(t, y, bins=3)
    assert ixt == pytest.approx(math.log2(3)) and ity == pytest.approx(0.0, abs=1e-12)


def test_binning_is_invariant_to_positive_affine_maps_and_unit_order():
    torch.manual_seed(0)
    t, y = torch.randn(500, 4), torch.randint(0, 3, (500,))
    base = info.binning_mi(t, y, bins=10)
    assert info.binning_mi(2.0 * t + 0.5, y, bins=10) == pytest.approx(base)
    assert info.binning_mi(t[:, [2, 0, 3, 1]], y, bins=10) == pytest.approx(base)
    fine, coarse = info.binning_mi(t, y, bins=40), info.binning_mi(t, y, bins=3)
    assert coarse[0] <= base[0] <= fine[0] <= math.log2(500)                  # more bins, more information


def test_binning_with_a_fixed_range_clips_into_the_end_bins():
    y = torch.zeros(4, dtype=torch.long)
    t = torch.tensor([[-5.0], [-1.0], [1.0], [5.0]])
    assert info.binning_mi(t, y, bins=2, value_range=(-1.0, 1.0))[0] == pytest.approx(1.0)  # two symbols of two


@pytest.mark.parametrize("d, var", [(1, 0.1), (2, 0.1), (1, 1.0), (4, 0.5)])
def test_kde_bounds_bracket_a_gaussian_channel(d, var):
    """T = h + N(0, var) with h ~ N(0, I_d): I(h; T) = d/2 log2(1 + 1/var); the bounds hold it between them (to
    0.05 bits of sampling error at N = 2000), at most d bits apart (Kolchinsky & Tracey)."""
    torch.manual_seed(0)
    h, y = torch.randn(2000, d), torch.randint(0, 2, (2000,))
    true = d / 2 * math.log2(1 + 1 / var)
    upper, lower = info.kde_mi(h, y, var, "upper")[0], info.kde_mi(h, y, var, "lower")[0]
    assert lower - 0.05 <= true <= upper + 0.05 and 0 <= upper - lower <= d


def test_kde_limits_and_discrete_channels():
    torch.manual_seed(0)
    t, y = torch.randn(100, 2), torch.arange(100) % 2
    tiny, huge = info.kde_mi(t, y, 1e-8), info.kde_mi(t, y, 1e8)
    assert tiny == pytest.approx((math.log2(100), 1.0), abs=1e-6)               # every sample told apart
    assert huge == pytest.approx((0.0, 0.0), abs=1e-6)                          # nothing gets through the noise
    labels = torch.arange(1000) % 4
    copy = torch.nn.functional.one_hot(labels, 4).double() * 10
    assert info.kde_mi(copy, labels, 1e-2) == pytest.approx((2.0, 2.0), abs=1e-6)
    independent = info.kde_mi(torch.randn(2000, 1), torch.randint(0, 2, (2000,)), 0.1)[1]
    assert 0 <= independent < 0.05                                              # small positive sampling bias


def test_information_plane_and_clear_errors():
    torch.manual_seed(0)
    layers, y = [torch.randn(50, 3), torch.randn(50, 2)], torch.arange(50) % 5
    plane = info.information_plane(layers, y, "binning", bins=8)
    assert len(plane) == 2 and plane[0] == info.binning_mi(layers[0], y, bins=8)
    assert info.information_plane(layers, y, "kde", noise_var=0.1)[1] == info.kde_mi(layers[1], y, 0.1)
    with pytest.raises(ValueError, match="unknown estimator"):
        info.information_plane(layers, y, "knn")
    with pytest.raises(ValueError, match="bins"):
        info.binning_mi(layers[0], y, bins=0)
    with pytest.raises(ValueError, match="noise_var"):
        info.kde_mi(layers[0], y, 0.0)
    with pytest.raises(ValueError, match="bound"):
        info.kde_entropy(layers[0], 0.1, "middle")
