from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from syn2real.losses.self_training import (
    class_balanced_thresholds,
    class_balanced_thresholds_from_histogram,
    confidence_histogram,
    lrent_soft_labels,
    mrkld_loss,
    portion_schedule,
    pseudo_labels,
    soft_cross_entropy,
)

INF = math.inf

# Hand example, 3 classes. Rows 0-3 are predicted as class 0 with confidences 0.9, 0.8, 0.7, 0.6; rows 4-5 as
# class 1 with 0.7, 0.5; nobody predicts class 2.
HAND = torch.tensor(
    [
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.5, 0.4],
    ]
)


def random_probs(n: int, c: int, seed: int, never: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, c, generator=gen)
    if never is not None:
        logits[:, never] = -50.0  # this class is never the argmax
    return logits.softmax(dim=1)


# ---------------------------------------------------------------------------------------------------- thresholds


def test_thresholds_hand_example_index_rule() -> None:
    # Rule: n_c = max(floor(portion * N_c), 1) kept, k_c = n_c-th largest = sorted_desc[n_c - 1].
    # class 0: N=4, portion 0.5 -> n=2 -> sorted [0.9, 0.8, 0.7, 0.6][1] = 0.8
    # class 1: N=2 -> n=1 -> [0.7, 0.5][0] = 0.7;  class 2: nobody predicts it -> +inf
    k = class_balanced_thresholds(HAND, 0.5)
    assert k.tolist() == pytest.approx([0.8, 0.7, INF])
    assert k.dtype == HAND.dtype
    # portion 0.75: class 0 n = floor(3.0) = 3 -> 0.7; class 1 n = floor(1.5) = 1 -> 0.7
    assert class_balanced_thresholds(HAND, 0.75).tolist() == pytest.approx([0.7, 0.7, INF])
    # portion 1: everything predicted is kept -> the smallest confidence per class
    assert class_balanced_thresholds(HAND, 1.0).tolist() == pytest.approx([0.6, 0.5, INF])
    # portion 0.2: floor(0.8) = 0 and floor(0.4) = 0 -> at least the single most confident one is kept
    assert class_balanced_thresholds(HAND, 0.2).tolist() == pytest.approx([0.9, 0.7, INF])


def test_thresholds_keep_exactly_the_top_portion_without_ties() -> None:
    probs = random_probs(1000, 5, seed=1)
    conf, pred = probs.max(1)
    for portion in (0.05, 0.2, 0.33, 0.5, 1.0):
        k = class_balanced_thresholds(probs, portion)
        for c in range(5):
            n_c = int((pred == c).sum())
            kept = int(((pred == c) & (conf >= k[c])).sum())
            assert kept == max(math.floor(portion * n_c), 1)


def test_thresholds_validation() -> None:
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"portion must be in \(0, 1\]"):
            class_balanced_thresholds(HAND, bad)
    with pytest.raises(ValueError, match="num_classes=4 but probs has C = 3"):
        class_balanced_thresholds(HAND, 0.5, num_classes=4)
    with pytest.raises(ValueError, match=r"probs must have shape \(N, C\) or \(N, C, H, W\), got \(6,\)"):
        class_balanced_thresholds(HAND[:, 0], 0.5)
    with pytest.raises(ValueError, match=r"ignore_mask must have shape \(6,\)"):
        class_balanced_thresholds(HAND, 0.5, ignore_mask=torch.zeros(5, dtype=torch.bool))


def test_thresholds_all_ignored_or_empty_give_inf() -> None:
    assert class_balanced_thresholds(HAND, 0.5, ignore_mask=torch.ones(6, dtype=torch.bool)).tolist() == [INF] * 3
    assert class_balanced_thresholds(torch.empty(0, 4), 0.5).tolist() == [INF] * 4


def test_thresholds_segmentation_shape_with_ignore_mask() -> None:
    probs = random_probs(2 * 6 * 7, 4, seed=2).reshape(2, 6, 7, 4).permute(0, 3, 1, 2)  # (N, C, H, W)
    ignore = torch.zeros(2, 6, 7, dtype=torch.bool)
    ignore[:, :2] = True  # e.g. padding rows
    k = class_balanced_thresholds(probs, 0.3, ignore_mask=ignore)
    flat = probs.permute(0, 2, 3, 1)[~ignore]  # (kept positions, C)
    assert torch.equal(k, class_balanced_thresholds(flat, 0.3))


# ---------------------------------------------------------------------------------------------------- pseudo-labels


def test_pseudo_labels_hand_example() -> None:
    # k = [0.8, 0.7, inf]; ratios p_c / k_c (class 2 always 0):
    # row0 [1.125, 0.071] -> 0;  row1 [1.0, 0.143] -> 0 (>= 1 keeps the threshold sample itself)
    # row2 [0.875, 0.286] -> ignore;  row3 [0.75, 0.429] -> ignore
    # row4 [0.25, 1.0] -> 1;  row5 [0.125, 0.714] -> ignore
    k = class_balanced_thresholds(HAND, 0.5)
    labels = pseudo_labels(HAND, k)
    assert labels.tolist() == [0, 0, -1, -1, 1, -1]
    assert labels.dtype == torch.long


def test_pseudo_labels_use_argmax_of_ratio_not_of_probs() -> None:
    # argmax p = class 0, but p / k = [0.55 / 0.8, 0.45 / 0.4] = [0.6875, 1.125] -> class 1
    probs = torch.tensor([[0.55, 0.45, 0.0]])
    assert pseudo_labels(probs, torch.tensor([0.8, 0.4, 0.9])).tolist() == [1]


def test_pseudo_labels_inf_thresholds_and_validation() -> None:
    # a one-hot prediction of a class with k = inf is not assigned to it (ratio 0), nor to anything else
    probs = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert pseudo_labels(probs, torch.tensor([0.9, INF])).tolist() == [-1, 0]
    assert pseudo_labels(probs, torch.tensor([INF, INF])).tolist() == [-1, -1]
    with pytest.raises(ValueError, match=r"thresholds must be in \(0, \+inf\]"):
        pseudo_labels(probs, torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match=r"thresholds must be in \(0, \+inf\]"):
        pseudo_labels(probs, torch.tensor([float("nan"), 0.5]))
    with pytest.raises(ValueError, match=r"thresholds must have shape \(2,\)"):
        pseudo_labels(probs, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="ignore_index=1 collides"):
        pseudo_labels(probs, torch.tensor([0.5, 0.5]), ignore_index=1)


def test_pseudo_labels_segmentation_shape_ignore_255() -> None:
    probs = random_probs(2 * 5 * 6, 4, seed=3).reshape(2, 5, 6, 4).permute(0, 3, 1, 2)
    before = probs.clone()
    k = class_balanced_thresholds(probs, 0.4)
    labels = pseudo_labels(probs, k, ignore_index=255)
    assert labels.shape == (2, 5, 6) and labels.dtype == torch.long
    assert torch.equal(probs, before)
    # same decisions as the (N, C) path on the flattened pixels
    flat = pseudo_labels(probs.permute(0, 2, 3, 1).reshape(-1, 4), k, ignore_index=255)
    assert torch.equal(labels.reshape(-1), flat)
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}
    assert (labels == 255).any() and (labels != 255).any()


# ---------------------------------------------------------------------------------------------------- histograms


@pytest.mark.parametrize("portion", [0.05, 0.2, 0.5, 1.0])
def test_histogram_thresholds_within_one_bin_of_exact(portion: float) -> None:
    bins = 10000
    probs = random_probs(5000, 7, seed=4, never=6)
    exact = class_balanced_thresholds(probs, portion)
    approx = class_balanced_thresholds_from_histogram(confidence_histogram(probs, bins=bins), portion)
    assert exact[6] == INF and approx[6] == INF  # empty class on both paths
    finite = torch.isfinite(exact)
    diff = exact[finite].double() - approx[finite].double()
    assert (diff.abs() <= 1.0 / bins).all()
    assert (diff >= 0).all()  # the histogram threshold is the bin's lower edge: never stricter


def test_histogram_thresholds_exact_on_bin_edges() -> None:
    # Confidences k/1024 are exact floats and exactly bin edges for bins = 1024, so the histogram loses nothing
    # (ties included): row = [q, (1-q)/2, (1-q)/2] with q > 0.5, columns permuted.
    bins = 1024
    gen = torch.Generator().manual_seed(5)
    # (1.0 itself is excluded: it shares the last bin [1 - 1/bins, 1] with 1023/1024.)
    q = torch.randint(520, bins, (3000,), generator=gen).double() / bins
    rows = torch.stack([q, (1 - q) / 2, (1 - q) / 2], dim=1)
    perm = torch.argsort(torch.rand(3000, 3, generator=gen), dim=1)
    probs = torch.gather(rows, 1, perm).float()
    hist = confidence_histogram(probs, bins=bins)
    for portion in (0.1, 0.25, 0.5, 0.9, 1.0):
        assert torch.equal(
            class_balanced_thresholds_from_histogram(hist, portion), class_balanced_thresholds(probs, portion)
        )


def test_histogram_counts_shards_and_float_allreduce() -> None:
    probs = random_probs(600, 4, seed=6)
    conf, pred = probs.max(1)
    hist = confidence_histogram(probs, bins=100)
    assert hist.shape == (4, 100) and hist.dtype == torch.long
    assert torch.equal(hist.sum(1), torch.bincount(pred, minlength=4))
    # bin b holds [b/100, (b+1)/100)
    c0, b0 = int(pred[0]), math.floor(float(conf[0]) * 100)
    assert hist[c0, b0] >= 1
    # "ranks" holding disjoint shards: summed histograms = histogram of everything -> identical thresholds
    shards = confidence_histogram(probs[:250], bins=100) + confidence_histogram(probs[250:], bins=100)
    assert torch.equal(shards, hist)
    for portion in (0.2, 0.5):
        k = class_balanced_thresholds_from_histogram(hist, portion)
        assert torch.equal(k, class_balanced_thresholds_from_histogram(hist.float(), portion))


def test_histogram_segmentation_and_confidence_one() -> None:
    probs = random_probs(2 * 4 * 4, 3, seed=7).reshape(2, 4, 4, 3).permute(0, 3, 1, 2)
    ignore = torch.zeros(2, 4, 4, dtype=torch.bool)
    ignore[0] = True
    hist = confidence_histogram(probs, bins=50, ignore_mask=ignore)
    assert int(hist.sum()) == 16
    assert torch.equal(hist, confidence_histogram(probs[1:], bins=50))
    # a confidence of exactly 1.0 goes to the last bin
    one_hot = confidence_histogram(torch.tensor([[1.0, 0.0]]), bins=10)
    assert one_hot[0, 9] == 1 and int(one_hot.sum()) == 1


def test_histogram_threshold_hand_example() -> None:
    # class 0 has 4 samples in bins 9, 8, 7, 6 (bins = 10); portion 0.5 -> the 2nd largest lies in bin 8 -> 0.8
    hist = torch.zeros(2, 10, dtype=torch.long)
    hist[0, [6, 7, 8, 9]] = 1
    assert class_balanced_thresholds_from_histogram(hist, 0.5).tolist() == pytest.approx([0.8, INF])
    with pytest.raises(ValueError, match=r"hist must have shape \(C, B\)"):
        class_balanced_thresholds_from_histogram(torch.zeros(10), 0.5)


# ---------------------------------------------------------------------------------------------------- schedule


def test_portion_schedule() -> None:
    assert [portion_schedule(r) for r in range(8)] == [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.5]
    assert portion_schedule(2, start=0.1, step=0.2, cap=0.9) == 0.5
    with pytest.raises(ValueError, match="round_idx"):
        portion_schedule(-1)


# ---------------------------------------------------------------------------------------------------- CRST


def test_mrkld_hand_values() -> None:
    # row 0: logits (0, 0) -> p = (1/2, 1/2) -> mean_c(-log p_c) = log 2
    # row 1: logits (0, log 3) -> p = (1/4, 3/4) -> (log 4 + log 4/3) / 2 = log 4 - log(3) / 2
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    r0, r1 = math.log(2), math.log(4) - math.log(3) / 2
    assert mrkld_loss(logits).item() == pytest.approx((r0 + r1) / 2, rel=1e-6)
    assert mrkld_loss(logits, torch.tensor([True, False])).item() == pytest.approx(r0, rel=1e-6)
    assert mrkld_loss(logits, torch.tensor([False, True])).item() == pytest.approx(r1, rel=1e-6)
    # = KL(uniform || p) + log C
    z = torch.randn(5, 4)
    kl = F.kl_div(z.log_softmax(1), torch.full((5, 4), 0.25), reduction="batchmean")
    assert mrkld_loss(z).item() == pytest.approx(kl.item() + math.log(4), rel=1e-5)


def test_mrkld_segmentation_and_empty_mask() -> None:
    assert mrkld_loss(torch.zeros(2, 3, 4, 4)).item() == pytest.approx(math.log(3))
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = mrkld_loss(z, torch.zeros(2, 4, 4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.equal(z.grad, torch.zeros_like(z))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 4, 4\)"):
        mrkld_loss(z, torch.ones(2, 4, dtype=torch.bool))


def test_lrent_soft_labels_closed_form() -> None:
    probs = random_probs(20, 4, seed=8).double()
    k = torch.tensor([0.5, 0.8, 0.3, 0.9], dtype=torch.float64)
    alpha = 0.25
    soft = lrent_soft_labels(probs, k, alpha)
    raw = (probs / k) ** (1 / alpha)  # y_c ∝ (p_c / k_c)^(1/α)
    assert torch.allclose(soft, raw / raw.sum(1, keepdim=True), rtol=1e-10, atol=1e-12)
    assert torch.allclose(soft.sum(1), torch.ones(20, dtype=torch.float64))
    # hand value: p = (0.6, 0.4), k = (1, 1), α = 0.5 -> (0.36, 0.16) / 0.52
    hand = lrent_soft_labels(torch.tensor([[0.6, 0.4]]), torch.tensor([1.0, 1.0]), alpha=0.5)
    assert hand.tolist()[0] == pytest.approx([0.36 / 0.52, 0.16 / 0.52], rel=1e-5)
    # α = 1 and k = 1: the soft label is p itself
    assert torch.allclose(lrent_soft_labels(probs, torch.ones(4, dtype=torch.float64), 1.0), probs)


def test_lrent_inf_threshold_segmentation_and_fallback() -> None:
    probs = random_probs(2 * 3 * 3, 3, seed=9).reshape(2, 3, 3, 3).permute(0, 3, 1, 2)
    soft = lrent_soft_labels(probs, torch.tensor([0.6, INF, 0.7]))
    assert soft.shape == probs.shape
    assert torch.allclose(soft.sum(1), torch.ones(2, 3, 3))
    assert torch.equal(soft[:, 1], torch.zeros(2, 3, 3))  # class with k = inf gets no mass
    # every ratio zero -> falls back to probs (no NaN)
    out = lrent_soft_labels(torch.tensor([[0.0, 1.0]]), torch.tensor([0.5, INF]))
    assert out.tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="alpha must be a finite positive"):
        lrent_soft_labels(probs, torch.ones(3), alpha=0.0)


def test_soft_cross_entropy_matches_ce_for_one_hot() -> None:
    torch.manual_seed(0)
    z = torch.randn(6, 5)
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    one_hot = F.one_hot(y, 5).float()
    assert torch.allclose(soft_cross_entropy(z, one_hot), F.cross_entropy(z, y))
    keep = torch.tensor([True, False, True, True, False, True])
    y_ign = torch.where(keep, y, torch.full_like(y, -1))
    assert torch.allclose(soft_cross_entropy(z, one_hot, keep), F.cross_entropy(z, y_ign, ignore_index=-1))
    # segmentation
    zs = torch.randn(2, 4, 3, 3)
    ys = torch.randint(0, 4, (2, 3, 3))
    assert torch.allclose(soft_cross_entropy(zs, F.one_hot(ys, 4).permute(0, 3, 1, 2).float()), F.cross_entropy(zs, ys))


def test_soft_cross_entropy_hand_value_and_zero_targets() -> None:
    # logits (0, log 3) -> q = (1/4, 3/4); t = (1/2, 1/2) -> -(0.5 log 1/4 + 0.5 log 3/4) = log 4 - log(3) / 2
    z = torch.tensor([[0.0, math.log(3.0)]])
    assert soft_cross_entropy(z, torch.tensor([[0.5, 0.5]])).item() == pytest.approx(math.log(4) - math.log(3) / 2)
    # a zero target on a -inf log-probability contributes 0, not NaN
    z_inf = torch.tensor([[0.0, -float("inf")]])
    assert soft_cross_entropy(z_inf, torch.tensor([[1.0, 0.0]])).item() == 0.0
    with pytest.raises(ValueError, match=r"soft_targets must have the shape of logits \(1, 2\)"):
        soft_cross_entropy(z, torch.ones(1, 3))


def test_crst_pipeline_gradients() -> None:
    # round trip: thresholds -> pseudo-labels -> LRENT targets + MRKLD on the kept positions
    logits = torch.randn(8, 3, 4, 4, requires_grad=True)
    probs = logits.detach().softmax(1)
    k = class_balanced_thresholds(probs, 0.5)
    labels = pseudo_labels(probs, k, ignore_index=255)
    keep = labels != 255
    soft = lrent_soft_labels(probs, k)
    loss = soft_cross_entropy(logits, soft, keep) + 0.1 * mrkld_loss(logits, keep)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None
    # positions not kept get no gradient
    assert torch.equal(logits.grad.permute(0, 2, 3, 1)[~keep], torch.zeros(int((~keep).sum()), 3))
