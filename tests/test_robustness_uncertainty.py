"""The report card's uncertainty section (scores per condition, per corruption severity), the label-honest temperature
fitted on the source beside the oracle fitted on the target, and ensembles / MC dropout as the evaluated predictor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from syn2real.metrics.calibration import expected_calibration_error
from syn2real.metrics.uncertainty import auroc, brier_score
from syn2real.models.ensemble import EnsembleClassifier, MCDropout
from syn2real.robustness import evaluate_robustness, report_rows, uncertainty_rows


class Soft(nn.Module):
    """Class 1 iff the mean pixel is above 0.5, with a scale giving graded confidences (and some errors)."""

    def __init__(self, scale: float = 6.0, offset: float = 0.0) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x * 0.5 + 0.5).mean(dim=(1, 2, 3)) - 0.5 + self.offset
        return torch.stack([-m * self.scale, m * self.scale], dim=1)


def batches(seed: int, n: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    level = torch.rand(n, generator=g)
    pix = (level.view(-1, 1, 1, 1) + 0.05 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    x = (pix - 0.5) / 0.5
    y = (level + 0.2 * torch.randn(n, generator=g) > 0.5).long()  # noisy labels: some confident errors
    return [(x[: n // 2], y[: n // 2]), (x[n // 2:], y[n // 2:])]


CARD = dict(mean=(0.5,), std=(0.5,), eps=(0.05,), pgd_steps=2, max_angle=0, max_shift=0, noise=(0.2,),
            corruptions=("contrast",), severities=(1, 3), progress=False, apgd_iters=3)


def test_scores_per_condition_and_source_temperature() -> None:
    target, source = batches(0), batches(1)
    plain = evaluate_robustness(Soft(), target, **CARD)
    report = evaluate_robustness(Soft(), target, **CARD, source_batches=source, domain="target")
    # what existed keeps its values; the source temperature only adds keys
    for key in ("clean", "fgsm", "pgd", "noise", "corruptions"):
        assert report[key] == plain[key], key
    for key, value in plain["calibration"].items():
        assert report["calibration"][key] == value, key
    conditions = report["uncertainty"]["conditions"]
    attacks = ["fgsm/0.05", "pgd/0.05", "apgd_ce/0.05"] + (["apgd_dlr/0.05"] if "apgd_dlr/0.05" in conditions else [])
    assert list(conditions) == ["clean", *attacks, "noise/0.2", "corruption/contrast/1", "corruption/contrast/3"]
    # clean scores by hand from the logits
    x = torch.cat([b[0] for b in target])
    y = torch.cat([b[1] for b in target])
    logits = Soft()(x)
    probs = logits.softmax(1)
    clean = conditions["clean"]
    assert clean["acc"] == report["clean"]["acc"]
    assert math.isclose(clean["nll"], float(F.cross_entropy(logits, y)), rel_tol=1e-5)
    assert math.isclose(clean["nll"], report["clean"]["nll"], rel_tol=1e-5)
    assert math.isclose(clean["brier"], float(brier_score(probs, y)), rel_tol=1e-5)
    assert math.isclose(clean["ece"], float(expected_calibration_error(probs, y)), rel_tol=1e-6)
    assert math.isclose(clean["auroc_correct"], float(auroc(probs.max(1).values, probs.argmax(1) == y)), rel_tol=1e-9)
    assert set(report["uncertainty"]["corruption_severity"]) == {"1", "3"}
    assert report["uncertainty"]["corruption_severity"]["3"]["acc"] == conditions["corruption/contrast/3"]["acc"]
    # temperatures: the target-fitted one is an oracle; the source-fitted one is label-honest, on the same half
    cal = report["calibration"]
    assert cal["oracle"] is True and "brier_after" in cal
    honest = cal["source_fitted"]
    assert honest["temperature"] > 0 and honest["n_fit"] == 16
    rows = report_rows(report)
    assert any("oracle" in setting for _, setting, _ in rows)
    assert any("label-honest" in setting for _, setting, _ in rows)
    assert [key for key, _ in uncertainty_rows(report)][-2:] == ["corruptions, severity 1", "corruptions, severity 3"]


def test_undefined_auroc_is_null() -> None:
    level = torch.tensor([0.2, 0.8, 0.3, 0.7])
    x = (level.view(-1, 1, 1, 1).expand(4, 1, 8, 8) - 0.5) / 0.5
    report = evaluate_robustness(Soft(), [(x, (level > 0.5).long())], **{**CARD, "eps": (), "noise": (),
                                                                          "corruptions": ()})
    assert report["uncertainty"]["conditions"]["clean"]["acc"] == 1.0
    assert report["uncertainty"]["conditions"]["clean"]["auroc_correct"] is None  # all correct: undefined


def test_card_of_an_ensemble_reports_disagreement() -> None:
    target = batches(2)
    ensemble = EnsembleClassifier([Soft(offset=-0.1), Soft(offset=0.1)])
    report = evaluate_robustness(ensemble, target, **CARD)
    clean = report["uncertainty"]["conditions"]["clean"]
    assert clean["disagreement"] > 0
    x = torch.cat([b[0] for b in target])
    y = torch.cat([b[1] for b in target])
    mean = (Soft(offset=-0.1)(x).softmax(1) + Soft(offset=0.1)(x).softmax(1)) / 2
    assert math.isclose(clean["acc"], float((mean.argmax(1) == y).float().mean()))
    assert math.isclose(clean["brier"], float(brier_score(mean, y)), rel_tol=1e-5)


def test_card_with_mc_dropout() -> None:
    class Dropped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)
            self.soft = Soft()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(self.soft(x))

    report = evaluate_robustness(MCDropout(Dropped(), passes=4), batches(3), **{**CARD, "corruptions": ()})
    assert report["uncertainty"]["conditions"]["clean"]["disagreement"] > 0


def test_temperature_scaled_predictor_keeps_predictions_and_scales_confidence() -> None:
    from syn2real.robustness import TemperatureScaled

    x = batches(3)[0][0]
    plain, scaled = Soft(), TemperatureScaled(Soft(), 2.0)
    assert torch.allclose(scaled(x), plain(x) / 2.0)
    assert torch.equal(scaled(x).argmax(1), plain(x).argmax(1))
    assert bool((scaled(x).softmax(1).max(1).values <= plain(x).softmax(1).max(1).values + 1e-7).all())
    ensemble = TemperatureScaled(EnsembleClassifier([Soft(6.0), Soft(3.0, 0.1)]), 1.5)
    ensemble(x)
    assert ensemble.last_disagreement is not None and ensemble.last_disagreement.shape == (x.shape[0],)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        TemperatureScaled(Soft(), 0.0)


def test_a_runs_saved_config_loses_only_the_fit_command_keys(tmp_path) -> None:
    """`--config <run>/config.yaml` rebuilds the run for robustness/export: the fit's ckpt_path and weights_only,
    which only the fit command accepts, are dropped; everything else is kept; other files pass as given."""
    import yaml

    from syn2real.commands.loading import _without_run_keys

    run = tmp_path / "config.yaml"
    run.write_text(yaml.safe_dump({"seed_everything": 3, "model": {"class_path": "x.Y"}, "eval_name": None,
                                   "ckpt_path": "auto", "weights_only": None}, sort_keys=False))
    cleaned = yaml.safe_load(_without_run_keys(str(run)))
    assert cleaned == {"seed_everything": 3, "model": {"class_path": "x.Y"}, "eval_name": None}
    method = tmp_path / "method.yaml"
    method.write_text("model:\n  class_path: x.Y\n")
    assert _without_run_keys(str(method)) == str(method)
    assert _without_run_keys(str(tmp_path / "missing.yaml")) == str(tmp_path / "missing.yaml")
