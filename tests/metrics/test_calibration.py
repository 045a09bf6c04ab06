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
    bins = reliability_bins(probs, labels, n_bins=2)  # [0, 0.5), [0.5, 1), {1.0}: all four in the upper bin
    assert bins["count"].tolist() == [0, 4, 0]
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


def _top(conf: list[float], classes: int = 4) -> torch.Tensor:
    """(N, classes) probabilities whose max, ``conf``, is class 0 and the rest share 1 − conf equally."""
    c = torch.tensor(conf, dtype=torch.float64)
    rest = ((1 - c) / (classes - 1)).unsqueeze(1).expand(-1, classes - 1)
    return torch.cat([c.unsqueeze(1), rest], dim=1)


def test_ece_bins_are_half_open_with_a_bin_for_confidence_one_by_hand() -> None:
    # 4 bins [0, .25) [.25, .5) [.5, .75) [.75, 1) and {1.0}; every confidence is exact in binary.
    # .625 wrong -> [.5, .75): |0 - .625| * 1/5 = .125
    # .75, .75, .875 right -> [.75, 1): |1 - .791 666| * 3/5 = .125
    # 1.0 wrong -> {1.0}: |0 - 1| * 1/5 = .2
    # (the old (lo, hi] bins gave .2: {.625, .75, .75} and {.875, 1.0})
    probs = _top([0.75, 0.75, 0.625, 1.0, 0.875])
    labels = torch.tensor([0, 0, 1, 1, 0])
    assert expected_calibration_error(probs, labels, n_bins=4).item() == pytest.approx(0.45, abs=1e-7)
    bins = reliability_bins(probs, labels, n_bins=4)
    assert bins["count"].tolist() == [0, 0, 1, 3, 1]
    assert bins["accuracy"][4].item() == 0.0 and bins["confidence"][4].item() == 1.0


def test_ece_confidence_one_mixed_with_095_by_hand() -> None:
    # 15 bins: the two 0.95s (right) in [14/15, 1): .05 * 2/4; the two 1.0s (one right) in {1.0}: .5 * 2/4
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.95, 0.05], [0.95, 0.05]])
    labels = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, labels).item() == pytest.approx(0.275, abs=1e-6)


@pytest.mark.parametrize("n_bins", [4, 10, 15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ece_equals_torchmetrics_on_bin_edges(n_bins: int, dtype: torch.dtype) -> None:
    from torchmetrics.functional.classification import multiclass_calibration_error

    classes = 5
    edges = torch.linspace(0, 1, n_bins + 1)
    on_edges = [float(e) for e in edges if e >= 1 / classes]  # every bin edge a top-1 confidence can take
    near = [0.5 * (a + b) for a, b in zip(on_edges, on_edges[1:])]
    conf = (on_edges + near) * 3
    probs = _top(conf, classes).to(dtype)
    labels = torch.arange(len(conf)) % 3  # class 0 (the top one) every third sample
    ours = expected_calibration_error(probs, labels, n_bins)
    theirs = multiclass_calibration_error(probs, labels, classes, n_bins=n_bins, norm="l1")
    assert ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs)
