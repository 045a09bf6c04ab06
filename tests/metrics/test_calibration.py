"""Temperature scaling, reliability bins and diagram."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from syn2real.metrics.calibration import (
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    reliability_bins,
)


def calibrated_toy(n: int = 4000, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(logits): these logits are calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


def test_temperature_recovers_the_overconfidence_factor_and_lowers_nll() -> None:
    logits, labels = calibrated_toy()
    overconfident = 3.0 * logits
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    nll_before = F.cross_entropy(overconfident, labels)
    nll_after = F.cross_entropy(overconfident / t, labels)
    assert nll_after < nll_before - 0.1
    ece_before = expected_calibration_error(overconfident.softmax(1), labels)
    ece_after = expected_calibration_error((overconfident / t).softmax(1), labels)
    assert ece_after < 0.5 * ece_before


def test_temperature_of_calibrated_logits_is_about_one() -> None:
    logits, labels = calibrated_toy(seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)


def test_bins_sum_to_n_and_give_the_ece() -> None:
    logits, labels = calibrated_toy(n=500)
    probs = (2 * logits).softmax(1)
    bins = reliability_bins(probs, labels, n_bins=15)
    assert bins["count"].sum() == 500
    filled = bins["count"] > 0
    gap = (bins["accuracy"][filled] - bins["confidence"][filled]).abs()
    ece = (bins["count"][filled] / 500 * gap).sum()
    assert torch.allclose(ece, expected_calibration_error(probs, labels, 15), atol=1e-6)
    assert torch.isnan(bins["accuracy"][~filled]).all()


def test_hand_values_of_two_bins() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1, 1])
    bins = reliability_bins(probs, labels, n_bins=2)  # (0, 0.5], (0.5, 1]: all four in the upper bin
    assert bins["count"].tolist() == [0, 4]
    assert bins["confidence"][1].item() == pytest.approx(0.75)
    assert bins["accuracy"][1].item() == pytest.approx(0.75)


def test_reliability_diagram_png(tmp_path) -> None:
    logits, labels = calibrated_toy(n=200)
    plot_reliability({"before": ((3 * logits).softmax(1), labels), "after": (logits.softmax(1), labels)},
                     str(tmp_path / "rel.png"))
    assert (tmp_path / "rel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        fit_temperature(torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        fit_temperature(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), init=0)
