"""AdvEnt self-information maps and entropy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from syn2real.losses.output_space import entropy_loss, self_information_map


def test_uniform_is_one_and_one_hot_is_zero() -> None:
    for c in (2, 5, 19):
        uniform = torch.full((2, c, 3, 4), 1.0 / c)
        assert entropy_loss(uniform).item() == pytest.approx(1.0)
        torch.testing.assert_close(self_information_map(uniform).sum(1), torch.ones(2, 3, 4))
        one_hot = torch.nn.functional.one_hot(torch.randint(0, c, (2, 3, 4)), c).permute(0, 3, 1, 2).float()
        assert entropy_loss(one_hot).item() == 0.0
        assert torch.all(self_information_map(one_hot) == 0)


def test_two_class_example_by_hand() -> None:
    # pixel 1: (0.25, 0.75); pixel 2: (0.5, 0.5). log2 C = 1 for C = 2.
    probs = torch.tensor([0.25, 0.5, 0.75, 0.5]).reshape(1, 2, 1, 2)
    info = self_information_map(probs)
    expected = torch.tensor([-0.25 * math.log2(0.25), 0.5, -0.75 * math.log2(0.75), 0.5]).reshape(1, 2, 1, 2)
    torch.testing.assert_close(info, expected)
    h1 = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # 0.8113
    assert entropy_loss(probs).item() == pytest.approx((h1 + 1.0) / 2, rel=1e-6)


def test_four_classes_normalised_by_log2_c() -> None:
    probs = torch.tensor([0.5, 0.5, 0.0, 0.0]).reshape(1, 4, 1, 1)
    assert entropy_loss(probs).item() == pytest.approx(1.0 / 2.0)  # 1 bit of log2(4) = 2 bits


def test_gradient_flows_and_is_finite_at_zero_probabilities() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    entropy_loss(logits.softmax(1)).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    probs = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1).requires_grad_(True)
    entropy_loss(probs).backward()
    assert torch.isfinite(probs.grad).all()


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"self_information_map: probs must have shape \(B, C, H, W\) or \(B, C\)"):
        self_information_map(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="entropy_loss: need at least 2 classes"):
        entropy_loss(torch.ones(1, 1, 2, 2))


def test_entropy_loss_of_image_level_probabilities_by_hand() -> None:
    # (B, C): the mean over images of -sum p log2 p / log2 C
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert torch.isclose(entropy_loss(probs), torch.tensor((0.5 + 0.0) / 2))
    # the same images as 1x1 maps give the same value
    assert torch.isclose(entropy_loss(probs.reshape(2, 4, 1, 1)), entropy_loss(probs))
