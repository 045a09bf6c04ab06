"""Segmentation metrics against a hand-computed confusion matrix, and whole / sliding-window / flip inference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from syn2real.metrics.segmentation import (
    InferenceConfig,
    SegmentationMetrics,
    iou_from_confusion,
    segment,
    sliding_windows,
)

# 4 classes; class 3 appears in neither labels nor predictions; one pixel is ignored (255).
LABELS = torch.tensor([[[0, 0, 1], [1, 255, 2]]])
PRED = torch.tensor([[[0, 1, 1], [1, 0, 0]]])
# truth 0: predicted 0 once, 1 once; truth 1: predicted 1 twice; truth 2: predicted 0 once.
# IoU_0 = 1 / (1 + 1 FP + 1 FN) = 1/3, IoU_1 = 2 / (2 + 1 FP) = 2/3, IoU_2 = 0 / 1 = 0, IoU_3 = NaN.
HAND_IOU = [1 / 3, 2 / 3, 0.0, math.nan]


def test_iou_miou_and_pixel_accuracy_by_hand() -> None:
    metrics = SegmentationMetrics(4, prefix="target", class_names=["road", "car", "sky", "train"])
    metrics.update(PRED, LABELS)
    expected = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(metrics.confusion().long(), expected)
    out = metrics.compute()
    assert out["target/iou/road"].item() == pytest.approx(1 / 3)
    assert out["target/iou/car"].item() == pytest.approx(2 / 3)
    assert out["target/iou/sky"].item() == 0.0
    assert math.isnan(out["target/iou/train"].item())
    # the class absent from both is left out of the mean: (1/3 + 2/3 + 0) / 3, not / 4
    assert out["target/miou"].item() == pytest.approx(1 / 3)
    assert out["target/pixel_acc"].item() == pytest.approx(3 / 5)  # the ignored pixel is not counted


def test_iou_from_confusion_matches_the_hand_values() -> None:
    iou = iou_from_confusion(torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
    torch.testing.assert_close(iou, torch.tensor(HAND_IOU, dtype=torch.float64), equal_nan=True)


def test_streamed_batches_equal_one_batch_and_scores_are_argmaxed() -> None:
    one = SegmentationMetrics(4, "t")
    one.update(PRED, LABELS)
    streamed = SegmentationMetrics(4, "t")
    streamed.update(PRED[:, :1], LABELS[:, :1])
    scores = torch.nn.functional.one_hot(PRED[:, 1:], 4).permute(0, 3, 1, 2).float()  # (B, C, H, W) scores
    streamed.update(scores, LABELS[:, 1:])
    assert torch.equal(one.confusion(), streamed.confusion())
    assert streamed.has_updates()
    streamed.reset()
    assert not streamed.has_updates()


def test_labels_out_of_range_are_a_clear_error() -> None:
    metrics = SegmentationMetrics(4, "target")
    labels = LABELS.clone()
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"label values \[7\] are outside 0..3"):
        metrics.update(PRED, labels)
    with pytest.raises(ValueError, match="differ"):
        metrics.update(PRED[:, :1], LABELS)


@pytest.mark.parametrize("h,w,window,stride", [(50, 70, (32, 32), (24, 24)), (32, 32, (32, 32), (24, 24)),
                                                (40, 33, (16, 20), (16, 7)), (10, 10, (32, 32), (8, 8))])
def test_sliding_windows_cover_every_pixel_and_end_at_the_border(h: int, w: int, window: tuple, stride: tuple) -> None:
    corners = sliding_windows(h, w, window, stride)
    wh, ww = min(window[0], h), min(window[1], w)
    covered = torch.zeros(h, w, dtype=torch.int64)
    for y, x in corners:
        assert 0 <= y and y + wh <= h and 0 <= x and x + ww <= w
        covered[y:y + wh, x:x + ww] += 1
    assert bool((covered > 0).all())
    assert max(y for y, _ in corners) + wh == h and max(x for _, x in corners) + ww == w
    assert len(corners) == len(set(corners))


def test_sliding_windows_by_hand() -> None:
    # rows 0, 18 (the last aligned to the border); columns 0, 24, 38
    assert sliding_windows(50, 70, (32, 32), (24, 24)) == [(0, 0), (0, 24), (0, 38), (18, 0), (18, 24), (18, 38)]
    with pytest.raises(ValueError, match="stride must be positive"):
        sliding_windows(50, 70, (32, 32), (0, 24))
    # a stride beyond the window would leave pixels without a prediction (NaN after dividing by a zero count)
    with pytest.raises(ValueError, match="must not exceed the window"):
        sliding_windows(50, 50, (16, 16), (20, 20))
    with pytest.raises(ValueError, match="must not exceed the window"):
        segment(_conv(1), torch.randn(1, 3, 50, 50), 4, InferenceConfig(mode="slide", window=[16, 16], stride=[20, 8]))
    # ... unless the window covers the image: the default 512 x 512 window, stride 341, on a small image
    assert sliding_windows(32, 48, (512, 512), (341, 341)) == [(0, 0)]


def _conv(kernel: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(3, 4, kernel, padding=kernel // 2).eval()


def test_slide_with_a_window_at_least_the_image_equals_whole() -> None:
    net, x = _conv(3), torch.randn(2, 3, 20, 28)
    whole = segment(net, x, 4, InferenceConfig(mode="whole"))
    slide = segment(net, x, 4, InferenceConfig(mode="slide", window=[32, 32], stride=[8, 8]))
    torch.testing.assert_close(slide, whole, rtol=0, atol=0)


def test_slide_with_a_per_pixel_net_equals_whole() -> None:
    net, x = _conv(1), torch.randn(2, 3, 50, 70)
    whole = segment(net, x, 4, InferenceConfig(mode="whole"))
    slide = segment(net, x, 4, InferenceConfig(mode="slide", window=[32, 32], stride=[24, 24]))
    # overlapping windows average identical logits: equal up to one rounding of the division
    torch.testing.assert_close(slide, whole, rtol=1e-6, atol=1e-7)
    assert torch.equal(slide.argmax(1), whole.argmax(1))


def test_flip_on_a_flip_equivariant_net_equals_no_flip() -> None:
    net = _conv(3)
    with torch.no_grad():
        net.weight.copy_((net.weight + net.weight.flip(-1)) / 2)  # left-right symmetric kernels
    x = torch.randn(2, 3, 16, 24)
    plain = segment(net, x, 4, InferenceConfig())
    flipped = segment(net, x, 4, InferenceConfig(flip=True))
    torch.testing.assert_close(flipped, plain, rtol=1e-5, atol=1e-6)
    # a net that is not symmetric gives a different (averaged) answer, so the flip is really applied
    other = _conv(3, seed=1)
    assert not torch.allclose(segment(other, x, 4, InferenceConfig(flip=True)), segment(other, x, 4, InferenceConfig()))


def test_output_size_scales_and_probabilities() -> None:
    net, x = _conv(3), torch.randn(2, 3, 16, 24)
    probs = segment(net, x, 4, InferenceConfig(mode="slide", window=[8, 8], stride=[6, 6], scales=[1.0, 0.5]),
                    out_size=(32, 48))
    assert probs.shape == (2, 4, 32, 48)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 48))
    with pytest.raises(ValueError, match="inference.mode"):
        segment(net, x, 4, InferenceConfig(mode="tiles"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inference.scales"):
        segment(net, x, 4, InferenceConfig(scales=[0.0]))
