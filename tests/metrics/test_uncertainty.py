"""Uncertainty scores: NLL, Brier and AUROC of confidence against hand-computed values (and sklearn), streaming and
rank merging of the torchmetrics state, the keys ClassificationMetrics adds without changing the others."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from syn2real.metrics.calibration import calibration_error, expected_calibration_error
from syn2real.metrics.classification import ClassificationMetrics
from syn2real.metrics.uncertainty import UncertaintyScores, auroc, brier_score, negative_log_likelihood

# two samples with known probabilities: labels 0 and 2
PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], dtype=torch.float64)
LABELS = torch.tensor([0, 2])


def test_nll_by_hand() -> None:
    logits = PROBS.log() + 5.0  # a shift changes nothing
    per_sample = negative_log_likelihood(logits, LABELS, reduction="none")
    assert torch.allclose(per_sample, torch.tensor([-math.log(0.7), -math.log(0.3)], dtype=torch.float64))
    assert negative_log_likelihood(logits, LABELS).item() == pytest.approx((-math.log(0.7) - math.log(0.3)) / 2)


def test_brier_by_hand_sums_over_classes() -> None:
    # (0.7-1)^2 + 0.2^2 + 0.1^2 = 0.14 ; 0.1^2 + 0.6^2 + (0.3-1)^2 = 0.86
    per_sample = brier_score(PROBS, LABELS, reduction="none")
    assert torch.allclose(per_sample, torch.tensor([0.14, 0.86], dtype=torch.float64))
    assert brier_score(PROBS, LABELS).item() == pytest.approx(0.5)
    # perfect one-hot prediction: 0; confidently wrong: 2
    one_hot = torch.eye(3, dtype=torch.float64)
    assert brier_score(one_hot, torch.tensor([0, 1, 2])).item() == 0.0
    assert brier_score(one_hot, torch.tensor([1, 2, 0])).item() == pytest.approx(2.0)


def test_auroc_by_hand_with_ties() -> None:
    # positive/negative pairs: (0.9, 0.8) 1, (0.9, 0.6) 1, (0.7, 0.8) 0, (0.7, 0.6) 1 -> 3/4
    assert auroc(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, False, True, False])).item() == 0.75
    # a tie between a positive and a negative counts one half: (0.9, 0.5) 1, (0.5, 0.5) 1/2 -> 3/4
    assert auroc(torch.tensor([0.9, 0.5, 0.5]), torch.tensor([True, True, False])).item() == 0.75
    assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([True, False])).item() == 0.5
    assert auroc(torch.tensor([0.1, 0.9]), torch.tensor([True, False])).item() == 0.0
    # undefined when every prediction is correct (or every one wrong)
    assert math.isnan(auroc(torch.tensor([0.1, 0.9]), torch.tensor([True, True])).item())
    assert math.isnan(auroc(torch.tensor([0.1, 0.9]), torch.tensor([False, False])).item())


def test_auroc_matches_sklearn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    scores = (torch.rand(200, generator=gen) * 10).round() / 10  # many ties
    positive = torch.rand(200, generator=gen) < scores
    expected = sklearn_metrics.roc_auc_score(positive.numpy(), scores.numpy())
    assert auroc(scores, positive).item() == pytest.approx(expected, abs=1e-12)


def test_streamed_and_merged_scores_equal_one_pass() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 5, generator=gen) * 3
    labels = torch.randint(0, 5, (40,), generator=gen)
    whole = UncertaintyScores()
    whole.update(logits, labels)
    expected = whole.compute()
    probs = logits.softmax(1)
    assert expected["nll"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert expected["brier"].item() == pytest.approx(brier_score(probs, labels).item(), rel=1e-5)
    conf, pred = probs.max(1)
    assert expected["auroc_correct"].item() == pytest.approx(auroc(conf, pred == labels).item(), rel=1e-6)
    # two "ranks" of unequal size merged by the metric's own reductions (sum / cat): the same numbers
    rank0, rank1 = UncertaintyScores(), UncertaintyScores()
    rank0.update(logits[:13], labels[:13])
    rank1.update(logits[13:25], labels[13:25])
    rank1.update(logits[25:], labels[25:])
    rank0.merge_state(rank1)
    merged = rank0.compute()
    for key in expected:
        assert merged[key].item() == pytest.approx(expected[key].item(), rel=1e-6), key


def test_classification_metrics_add_keys_and_keep_the_others() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 4, generator=gen) * 2
    labels = torch.randint(0, 4, (30,), generator=gen)
    metrics = ClassificationMetrics(4, prefix="target")
    metrics.update(logits[:10], labels[:10])
    metrics.update(logits[10:], labels[10:])
    out = metrics.compute()
    for key in ("nll", "brier", "auroc_correct"):
        assert f"target/{key}" in out
    # the existing keys are torchmetrics' values as before
    probs = logits.softmax(1)
    assert out["target/acc"].item() == MulticlassAccuracy(4, average="micro")(probs, labels).item()
    assert out["target/ece"].item() == MulticlassCalibrationError(4, n_bins=15, norm="l1")(probs, labels).item()
    assert out["target/nll"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    metrics.reset()
    assert not metrics.has_updates()


def test_calibration_error_from_confidences_equals_ece() -> None:
    gen = torch.Generator().manual_seed(3)
    probs = (torch.randn(100, 6, generator=gen) * 2).softmax(1)
    labels = torch.randint(0, 6, (100,), generator=gen)
    conf, pred = probs.max(1)
    assert calibration_error(conf, pred == labels).item() == expected_calibration_error(probs, labels).item()
    with pytest.raises(ValueError, match="confidence"):
        calibration_error(conf[:, None], pred == labels)
