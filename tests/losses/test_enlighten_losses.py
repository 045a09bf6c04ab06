"""EnlightenGAN's losses against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from syn2real.losses.gan import relativistic_lsgan_discriminator_loss, relativistic_lsgan_generator_loss
from syn2real.losses.perceptual import instance_normalize, self_feature_preserving_loss


def test_relativistic_lsgan_against_hand_values() -> None:
    d_real = torch.tensor([1.0, 3.0])  # mean 2
    d_fake = torch.tensor([0.0, 2.0])  # mean 1
    # D: ½[mean((1-1-1)², (3-1-1)²) + mean((0-2)², (2-2)²)] = ½[(1 + 1)/2 + (4 + 0)/2] = 1.5
    assert float(relativistic_lsgan_discriminator_loss(d_real, d_fake)) == pytest.approx(1.5)
    # G: ½[mean((0-2-1)², (2-2-1)²) + mean((1-1)², (3-1)²)] = ½[(9 + 1)/2 + (0 + 4)/2] = 3.5
    assert float(relativistic_lsgan_generator_loss(d_real, d_fake)) == pytest.approx(3.5)
    # the generator's objective is the discriminator's with real and fake swapped
    assert float(relativistic_lsgan_generator_loss(d_real, d_fake)) == pytest.approx(
        float(relativistic_lsgan_discriminator_loss(d_fake, d_real))
    )
    # constant scores: reals one unit above fakes leave only the fake term, ½ (0 − 1)² = 0.5
    assert float(relativistic_lsgan_discriminator_loss(torch.ones(3), torch.zeros(3))) == pytest.approx(0.5)


def test_relativistic_generator_gradient_through_the_fakes_only() -> None:
    d_real = torch.tensor([0.5, 1.5])
    d_fake = torch.tensor([0.0, 1.0], requires_grad=True)
    relativistic_lsgan_generator_loss(d_real, d_fake).backward()
    # ∂/∂f_i of ½[mean((f - 1 - 1)²) + mean((r - mean f)²)]: (f_i − 2)/2 − ½·mean(r − mean f)·... by hand:
    # first term: (f_i − m_r − 1) / 2 with m_r = 1 -> (-1, -0.5); second: −(1/2)·mean(r − m_f)·2/2 = −(1/2)(1 − 0.5)
    expected = torch.tensor([-1.0, -0.5]) - 0.25
    assert torch.allclose(d_fake.grad, expected)


def test_instance_normalize_per_image_and_channel() -> None:
    f = torch.randn(2, 3, 4, 5) * 3 + 7
    n = instance_normalize(f)
    assert torch.allclose(n.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(n.var(dim=(2, 3), unbiased=False), torch.ones(2, 3), atol=1e-3)
    with pytest.raises(ValueError):
        instance_normalize(torch.zeros(2, 3))


def test_self_feature_preserving_loss_values() -> None:
    identity = lambda t: t  # noqa: E731  (features = pixels)
    x = torch.rand(2, 3, 6, 6)
    assert float(self_feature_preserving_loss(identity, x, x.clone())) == pytest.approx(0.0, abs=1e-10)
    # instance norm makes it blind to a per-image, per-channel brightness gain and offset ...
    assert float(self_feature_preserving_loss(identity, x, 2.5 * x + 0.3)) == pytest.approx(0.0, abs=1e-6)
    # ... but not to a change of structure: a hand value on a 1x1x1x2 map: IN([0, 1]) = [-1, 1], IN([1, 0]) = [1, -1]
    a, b = torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[1.0, 0.0]]]])
    s = 0.5 / (0.25 + 1e-5) ** 0.5  # (x − mean) / sqrt(var + eps) with mean 0.5, var 0.25
    assert float(self_feature_preserving_loss(identity, a, b)) == pytest.approx(4 * s * s, rel=1e-6)


def test_self_feature_preserving_gradient_reaches_outputs_not_inputs() -> None:
    conv = torch.nn.Conv2d(3, 4, 3).requires_grad_(False)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    y = torch.rand(1, 3, 8, 8, requires_grad=True)
    self_feature_preserving_loss(conv, x, y).backward()
    assert x.grad is None and y.grad is not None and float(y.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="same shape"):
        self_feature_preserving_loss(conv, x, y[..., :4])
