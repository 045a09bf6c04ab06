"""CyCADA/CycleGAN losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from syn2real.core.cross_entropy import task_cross_entropy
from syn2real.losses.gan import (
    cycle_loss,
    identity_loss,
    label_flip_rate,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    semantic_consistency_loss,
    teacher_labels,
)


def test_lsgan_losses_by_hand() -> None:
    d_real = torch.tensor([[1.0, 0.5], [0.0, 2.0]])  # (1-1)^2, 0.25, 1, 1 -> mean 0.5625
    d_fake = torch.tensor([0.5, -1.0])  # 0.25, 1 -> mean 0.625
    assert lsgan_discriminator_loss(d_real, d_fake).item() == pytest.approx(0.5 * (0.5625 + 0.625))
    # generator: (0.5-1)^2 = 0.25, (-1-1)^2 = 4 -> mean 2.125; twice the weight of D's fake term
    assert lsgan_generator_loss(d_fake).item() == pytest.approx(2.125)


def test_cycle_and_identity_l1_by_hand() -> None:
    x_s, x_t = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    rec_s = torch.tensor([[[[0.2, -0.2], [0.0, 0.4]]]])  # mean |.| = 0.2
    rec_t = torch.full((1, 1, 2, 2), 0.5)  # mean |.| = 0.5
    assert cycle_loss(x_s, rec_s, x_t, rec_t).item() == pytest.approx(0.7)
    assert cycle_loss(x_s, rec_s, x_t, rec_t, weight=10.0).item() == pytest.approx(7.0)
    assert identity_loss(x_s, rec_s, x_t, rec_t, weight=0.5).item() == pytest.approx(0.35)


def test_semantic_consistency_is_ce_on_labels_plus_ce_on_teacher_argmax() -> None:
    fake_t_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y_s = torch.tensor([0, 0])
    fake_s_logits = torch.tensor([[0.0, 3.0]])
    on_x_t = torch.tensor([[5.0, 1.0]])  # teacher says class 0 on the real target image
    ce = lambda logits, k: -math.log(math.exp(logits[k]) / sum(math.exp(v) for v in logits))  # noqa: E731
    expected = 0.5 * (ce([2.0, 0.0], 0) + ce([0.0, 1.0], 0)) + ce([0.0, 3.0], 0)
    got = semantic_consistency_loss(fake_t_logits, y_s, fake_s_logits, on_x_t)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_teacher_labels_carry_no_gradient_and_segmentation_ce_ignores_255() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = teacher_labels(logits)
    assert labels.shape == (2, 4, 4) and not labels.requires_grad
    y = torch.full((2, 4, 4), 255)
    y[0, 0, 0] = 1
    manual = -torch.log_softmax(logits, dim=1)[0, 1, 0, 0]
    assert task_cross_entropy(logits, y).item() == pytest.approx(manual.item(), rel=1e-6)
    all_ignored = task_cross_entropy(logits, torch.full((2, 4, 4), 255))
    assert all_ignored.item() == 0.0 and all_ignored.requires_grad
    with pytest.raises(ValueError, match="labels"):
        task_cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long))


def test_label_flip_rate() -> None:
    before = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    after = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert label_flip_rate(before, after).item() == pytest.approx(0.5)
