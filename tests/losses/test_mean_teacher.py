"""The pieces of mean-teacher self-training by hand: the momentum ramp and EMA update, the confidence weight,
ClassMix masks and mixed labels, MIC's block masks, the weighted cross-entropy, and the strong view."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from syn2real.data.strong_view import StrongViewConfig, _odd_tenth, strong_view
from syn2real.losses.mean_teacher import (
    block_mask,
    class_mix_masks,
    confidence_weight,
    ema_momentum,
    ema_update,
    mix,
    weighted_cross_entropy,
)


def test_momentum_ramps_up_to_alpha() -> None:
    assert ema_momentum(1, 0.99) == pytest.approx(0.5)
    assert ema_momentum(9, 0.99) == pytest.approx(0.9)
    assert ema_momentum(99, 0.99) == pytest.approx(0.99)
    assert ema_momentum(5000, 0.99) == 0.99
    with pytest.raises(ValueError, match="after the first optimiser step"):
        ema_momentum(0, 0.99)


def test_ema_update_by_hand_parameters_and_buffers() -> None:
    teacher, student = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([1.0, 2.0]))
        student.weight.copy_(torch.tensor([3.0, 6.0]))
        teacher.running_mean.copy_(torch.tensor([0.0, 0.0]))
        student.running_mean.copy_(torch.tensor([1.0, -1.0]))
    student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.75)
    torch.testing.assert_close(teacher.weight.data, torch.tensor([1.5, 3.0]))  # 0.75·1 + 0.25·3, 0.75·2 + 0.25·6
    torch.testing.assert_close(teacher.running_mean, torch.tensor([0.25, -0.25]))
    assert int(teacher.num_batches_tracked) == 7  # integer buffers are copied
    torch.testing.assert_close(student.weight.data, torch.tensor([3.0, 6.0]))  # the student is untouched
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(teacher, nn.Linear(2, 2), 0.5)


def test_confidence_weight_share_and_probability() -> None:
    conf = torch.tensor([[0.99, 0.5], [0.97, 0.968]])
    w = confidence_weight(conf, 0.968)
    torch.testing.assert_close(w, torch.full((2, 2), 0.75))  # 3 of 4 elements ≥ 0.968
    w = confidence_weight(conf, 0.968, count=(torch.tensor(3), torch.tensor(8)))  # e.g. summed over two ranks
    torch.testing.assert_close(w, torch.full((2, 2), 0.375))
    torch.testing.assert_close(confidence_weight(conf, 0.968, "probability"), conf)
    torch.testing.assert_close(confidence_weight(conf, 0.968, "threshold"), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="'share', 'probability' or 'threshold'"):
        confidence_weight(conf, 0.9, "hard")


def test_class_mix_masks_paste_half_of_each_images_classes() -> None:
    labels = torch.tensor([[[0, 0, 1], [2, 3, 255]],   # classes 0, 1, 2, 3 (+ ignore): 2 chosen
                           [[5, 5, 5], [5, 255, 7]]])  # classes 5, 7: 1 chosen; 3 classes would give 2
    torch.manual_seed(0)
    masks = class_mix_masks(labels)
    for label, m in zip(labels, masks):
        classes = [c for c in label.unique().tolist() if c != 255]
        chosen = sorted(set(label[m].tolist()))
        assert len(chosen) == (len(classes) + 1) // 2 and set(chosen) <= set(classes)
        torch.testing.assert_close(m, torch.isin(label, torch.tensor(chosen)))  # every pixel of a chosen class
        assert not bool(m[label == 255].any())  # ignored pixels are never pasted
    # by hand: mask [[1, 0], [0, 1]] pastes source pixels (0, 0) and (1, 1)
    mask = torch.tensor([[[True, False], [False, True]]])
    src_img, tgt_img = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    torch.testing.assert_close(mix(mask, src_img, tgt_img), mask.unsqueeze(1).float().expand(1, 3, 2, 2))
    y_s, pseudo = torch.tensor([[[4, 4], [4, 4]]]), torch.tensor([[[1, 2], [3, 0]]])
    torch.testing.assert_close(mix(mask, y_s, pseudo), torch.tensor([[[4, 2], [3, 4]]]))
    w = torch.full((1, 2, 2), 0.3)
    torch.testing.assert_close(mix(mask, torch.ones_like(w), w), torch.tensor([[[1.0, 0.3], [0.3, 1.0]]]))


def test_class_mix_is_deterministic_under_a_seed() -> None:
    labels = torch.randint(0, 11, (4, 16, 16), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    a = class_mix_masks(labels)
    torch.manual_seed(3)
    assert torch.equal(a, class_mix_masks(labels))
    # per-image generators: an image's mask depends on its own generator only (DDP ranks draw what one process does)
    gens = [torch.Generator().manual_seed(s) for s in (10, 11, 12, 13)]
    both = class_mix_masks(labels, generators=gens)
    second_half = class_mix_masks(labels[2:], generators=[torch.Generator().manual_seed(s) for s in (12, 13)])
    assert torch.equal(both[2:], second_half)


def test_block_mask_grid_ratio_and_seed() -> None:
    torch.manual_seed(0)
    m = block_mask(64, 48, 48, 6, 0.7)
    assert m.shape == (64, 1, 48, 48) and set(m.unique().tolist()) <= {0.0, 1.0}
    cells = m[:, :, ::6, ::6]  # one value per 6 × 6 block: constant inside each block
    torch.testing.assert_close(m, cells.repeat_interleave(6, dim=2).repeat_interleave(6, dim=3))
    assert abs(1 - float(cells.mean()) - 0.7) < 0.03  # 4,096 blocks, 70 % hidden
    torch.manual_seed(0)
    assert torch.equal(m, block_mask(64, 48, 48, 6, 0.7))
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    one = block_mask(1, 48, 48, 6, 0.7, generators=[torch.Generator().manual_seed(2)])
    assert torch.equal(block_mask(2, 48, 48, 6, 0.7, generators=gens)[1:], one)
    assert block_mask(2, 28, 28, 64, 0.5).shape == (2, 1, 28, 28)  # a block larger than the image: one cell
    with pytest.raises(ValueError, match="ratio"):
        block_mask(1, 8, 8, 2, 1.5)


def test_weighted_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels, weight = torch.tensor([0, 1]), torch.tensor([0.5, 1.0])
    ce0, ce1 = -math.log(math.exp(2) / (math.exp(2) + 1)), math.log(2)
    assert float(weighted_cross_entropy(logits, labels, weight)) == pytest.approx((0.5 * ce0 + ce1) / 2)
    # pixels: an ignored pixel contributes 0 and counts in the mean
    logits = torch.zeros(1, 2, 1, 2)
    labels, weight = torch.tensor([[[0, 255]]]), torch.ones(1, 1, 2)
    assert float(weighted_cross_entropy(logits, labels, weight)) == pytest.approx(math.log(2) / 2)


def test_strong_view_is_photometric_deterministic_and_keeps_the_normalisation() -> None:
    assert [_odd_tenth(s) for s in (48, 28, 512, 1024, 5)] == [5, 3, 51, 103, 1]
    x = torch.rand(4, 3, 20, 20) * 2 - 1
    torch.manual_seed(0)
    a = strong_view(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    torch.manual_seed(0)
    b = strong_view(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.equal(a, b) and a.shape == x.shape and a is not x
    assert float(a.min()) >= -1 - 1e-5 and float(a.max()) <= 1 + 1e-5  # pixels stay in [0, 1]
    off = strong_view(x, (0.5,), (0.5,), StrongViewConfig(jitter_strength=0.0, blur=False))
    assert torch.equal(off, x)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7, 8)]
    per_image = strong_view(x, (0.5,) * 3, (0.5,) * 3, generators=gens)
    last = strong_view(x[3:], (0.5,) * 3, (0.5,) * 3, generators=[torch.Generator().manual_seed(8)])
    torch.testing.assert_close(per_image[3:], last)
    grey = strong_view(torch.rand(2, 1, 12, 12), (0.5,), (0.5,), StrongViewConfig(jitter_p=0.0))  # jitter always
    assert grey.shape == (2, 1, 12, 12)
