"""DAFormer's thing-class ImageNet feature distance: label downscaling by ratio, the thing mask and the loss by hand,
gradients (student only), the empty mask, the documented constants."""

from __future__ import annotations

import pytest
import torch

from syn2real.data.seg_labels import CITYSCAPES_CLASSES, SYNTHIA_16_CLASSES
from syn2real.losses.feature_distance import (
    CITYSCAPES_THING_CLASS_IDS,
    CITYSCAPES_THING_CLASSES,
    FEATURE_DISTANCE_RATIO,
    FEATURE_DISTANCE_WEIGHT,
    downscale_labels_by_ratio,
    feature_distance_loss,
    thing_class_ids,
    thing_pixel_mask,
)

I = 255  # noqa: E741 - ignore, short for the label maps below

# one 4x4 label map, 2x2 blocks -> a 2x2 feature grid (stride 2):
#   top-left: 4/4 car (13)          top-right: 3/4 person (11), 1/4 road -> 0.75: person
#   bottom-left: 2/4 car, 2/4 road -> 0.5 < 0.75: ignore      bottom-right: 3/4 ignore -> ignore
LABELS = torch.tensor([[[13, 13, 11, 11],
                        [13, 13, 11, 0],
                        [13, 13, I, I],
                        [0, 0, I, 1]]])


def test_constants_match_daformer() -> None:
    assert FEATURE_DISTANCE_WEIGHT == 0.005 and FEATURE_DISTANCE_RATIO == 0.75
    assert CITYSCAPES_THING_CLASS_IDS == (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    assert tuple(thing_class_ids(CITYSCAPES_CLASSES)) == CITYSCAPES_THING_CLASS_IDS
    assert "pole" not in CITYSCAPES_THING_CLASSES
    # SYNTHIA's 16 classes: no truck or train, ids shifted
    assert thing_class_ids(SYNTHIA_16_CLASSES) == [6, 7, 10, 11, 12, 13, 14, 15]


def test_downscale_by_ratio_by_hand() -> None:
    small = downscale_labels_by_ratio(LABELS, (2, 2), 0.75, num_classes=19)
    assert small.tolist() == [[[13, 11], [I, I]]]
    assert downscale_labels_by_ratio(LABELS, (2, 2), 0.5, num_classes=19)[0, 1, 0] in (0, 13)  # a tie, kept
    assert downscale_labels_by_ratio(LABELS, (4, 4)).tolist() == LABELS.tolist()  # stride 1
    assert thing_pixel_mask(LABELS, (2, 2), [11, 13]).tolist() == [[[True, True], [False, False]]]
    assert thing_pixel_mask(LABELS, (2, 2), [13]).tolist() == [[[True, False], [False, False]]]
    with pytest.raises(ValueError, match="one integer factor"):
        downscale_labels_by_ratio(LABELS, (3, 2))


def test_loss_by_hand_and_gradients() -> None:
    imagenet = torch.zeros(1, 2, 2, 2)
    student = torch.zeros(1, 2, 2, 2)
    student[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5 at the car pixel
    student[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # distance 1 at the person pixel
    student[0, :, 1, 0] = torch.tensor([6.0, 8.0])  # distance 10 at a non-thing pixel: left out
    student.requires_grad_(True)
    imagenet.requires_grad_(True)
    loss = feature_distance_loss(student, imagenet, LABELS, CITYSCAPES_THING_CLASS_IDS)
    assert loss.item() == pytest.approx((5 + 1) / 2)
    loss.backward()
    # d/dF ||F - G|| = (F - G)/||F - G|| at the two masked pixels, divided by their count 2
    expected = torch.zeros(1, 2, 2, 2)
    expected[0, :, 0, 0] = torch.tensor([0.6, 0.8]) / 2
    expected[0, :, 0, 1] = torch.tensor([0.0, 1.0]) / 2
    assert torch.allclose(student.grad, expected)
    assert imagenet.grad is None  # the ImageNet model is frozen
    # without classes (DAFormer's variant without a mask): every pixel
    every = feature_distance_loss(student, imagenet.detach(), LABELS, thing_classes=None)
    assert every.item() == pytest.approx((5 + 1 + 10 + 0) / 4)


def test_no_thing_pixel_gives_zero_with_a_graph() -> None:
    student = torch.randn(2, 3, 2, 2, requires_grad=True)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)  # road only, stride 4
    loss = feature_distance_loss(student, torch.randn(2, 3, 2, 2), labels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_batch_mean_over_masked_pixels_and_shape_errors() -> None:
    labels = torch.stack([LABELS[0], torch.full((4, 4), 13)])  # image 2: four car pixels
    student, imagenet = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    student[1] = 3.0
    # image 1: two thing pixels at distance 1; image 2: four at distance 3 -> (2 * 1 + 4 * 3) / 6
    assert feature_distance_loss(student, imagenet, labels).item() == pytest.approx(14 / 6)
    with pytest.raises(ValueError, match="same|both have shape"):
        feature_distance_loss(student, imagenet[:, :, :1], labels)
    with pytest.raises(ValueError, match=r"labels must have shape \(B, H, W\)"):
        feature_distance_loss(student, imagenet, labels[:1])
