from __future__ import annotations

import math

import pytest
import torch

from syn2real.losses.guidance import guidance_kl


def test_kl_is_zero_when_student_equals_guide() -> None:
    logits = torch.randn(6, 1000)
    assert float(guidance_kl(logits.clone(), logits)) == pytest.approx(0.0, abs=1e-6)
    # also per pixel (segmentation logits)
    seg = torch.randn(2, 19, 4, 5)
    assert float(guidance_kl(seg.clone(), seg)) == pytest.approx(0.0, abs=1e-6)


def test_kl_hand_value_direction_and_temperature() -> None:
    # guide p = softmax([0, ln 3]) = (1/4, 3/4); student q = softmax([0, 0]) = (1/2, 1/2)
    guide = torch.tensor([[0.0, math.log(3.0)]])
    student = torch.zeros(1, 2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL(p || q)
    assert float(guidance_kl(student, guide)) == pytest.approx(expected, rel=1e-6)
    reverse = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(guidance_kl(guide, student)) == pytest.approx(reverse, rel=1e-6)  # not symmetric
    # T = 2: guide softmax([0, ln 3 / 2]) = (1, √3)/(1 + √3)
    p1 = 1 / (1 + math.sqrt(3))
    p2 = 1 - p1
    assert float(guidance_kl(student, guide, temperature=2.0)) == pytest.approx(
        p1 * math.log(p1 / 0.5) + p2 * math.log(p2 / 0.5), rel=1e-6)
    # batch mean
    two = guidance_kl(torch.zeros(2, 2), torch.stack([guide[0], torch.zeros(2)]))
    assert float(two) == pytest.approx(expected / 2, rel=1e-6)


def test_gradients_never_reach_the_guide() -> None:
    student = torch.randn(3, 10, requires_grad=True)
    guide = torch.randn(3, 10, requires_grad=True)
    guidance_kl(student, guide).backward()
    assert guide.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        guidance_kl(torch.zeros(2, 3), torch.zeros(2, 4))
