from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from syn2real.metrics.calibration import expected_calibration_error
from syn2real.metrics.classification import ClassificationMetrics


def test_ece_hand_computed() -> None:
    # Four samples, two bins. Bin (0, 0.5]: conf 0.4 (wrong) -> |0 - 0.4| = 0.4 with weight 1/4.
    # Bin (0.5, 1]: confs 0.9 (right), 0.8 (right), 0.6 (wrong) -> acc 2/3, conf 2.3/3, |.| = 0.3/3 = 0.1, weight 3/4.
    probs = torch.tensor([[0.4, 0.35, 0.25], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 0, 1, 2])
    ece = expected_calibration_error(probs, labels, n_bins=2)
    assert ece.item() == pytest.approx(0.25 * 0.4 + 0.75 * 0.1, abs=1e-6)


def test_ece_perfectly_calibrated_and_torchmetrics_agree() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])).item() == 0.0
    torch.manual_seed(0)
    logits = torch.randn(500, 10) * 3
    labels = torch.randint(0, 10, (500,))
    probs = logits.softmax(1)
    ours = expected_calibration_error(probs, labels, n_bins=15)
    ref = MulticlassCalibrationError(10, n_bins=15, norm="l1")(probs, labels)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)


def test_ece_shape_check() -> None:
    with pytest.raises(ValueError, match="expected probs"):
        expected_calibration_error(torch.rand(4), torch.zeros(4))


def test_classification_metrics_names_and_values() -> None:
    m = ClassificationMetrics(3, prefix="target", class_names=["a", "b", "c"])
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 0, 2, 0, 1])
    m.update(logits, labels)
    out = m.compute()
    assert out["target/acc"].item() == pytest.approx(4 / 6)
    # per class: a 2/3, b 1/2, c 1/1
    assert out["target/acc_class/a"].item() == pytest.approx(2 / 3)
    assert out["target/acc_class/b"].item() == pytest.approx(1 / 2)
    assert out["target/acc_class/c"].item() == pytest.approx(1.0)
    assert out["target/acc_class_mean"].item() == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert 0.0 <= out["target/ece"].item() <= 1.0
    assert m.confusion().tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m.reset()
    assert not m.has_updates()


def test_a_class_absent_from_the_labels_has_no_accuracy_and_is_left_out_of_the_mean() -> None:
    # labels use a and b only; c is predicted twice (both wrong), d never appears.
    # a: 3 of 4 right, b: 1 of 2 right -> acc_class_mean (3/4 + 1/2) / 2 = 0.625; c and d: no accuracy (NaN)
    # (torchmetrics' macro average counted c as 0: (3/4 + 1/2 + 0) / 3 = 0.4167)
    m = ClassificationMetrics(4, prefix="target", class_names=["a", "b", "c", "d"])
    pred = torch.tensor([0, 0, 0, 2, 1, 2])
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    m.update(torch.nn.functional.one_hot(pred, 4).float() * 5, labels)
    out = m.compute()
    assert out["target/acc"].item() == pytest.approx(4 / 6)
    assert out["target/acc_class/a"].item() == pytest.approx(3 / 4)
    assert out["target/acc_class/b"].item() == pytest.approx(1 / 2)
    assert torch.isnan(out["target/acc_class/c"]) and torch.isnan(out["target/acc_class/d"])
    assert out["target/acc_class_mean"].item() == pytest.approx(0.625)


def test_absent_class_is_null_in_metrics_json(tmp_path) -> None:
    from types import SimpleNamespace

    from syn2real.callbacks.metrics_json import MetricsJSON

    m = ClassificationMetrics(3, prefix="target", class_names=["a", "b", "c"])
    m.update(torch.tensor([[5.0, 0, 0], [0, 0, 5.0]]), torch.tensor([0, 1]))
    trainer = SimpleNamespace(callback_metrics=m.compute())
    collected = MetricsJSON().collect(trainer)  # type: ignore[arg-type]
    assert collected["target/acc_class/c"] is None and collected["target/acc_class/b"] == 0.0
    assert collected["target/acc_class_mean"] == pytest.approx(0.5)
