"""``syn2real shift``: the severity curves read from robustness cards, averaged over repeated labels, the summary rows,
the figure and curves JSON, and clear errors for a report without per-severity scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from syn2real.commands.shift import curves, main, read_curve, summary_rows


def _card(path: Path, acc: list[float], ece: list[float]) -> str:
    """A minimal robustness.json: clean + severities 1..len(acc)-1, NLL = 1 - acc, Brier = (1 - acc) / 2."""
    def row(a: float, e: float) -> dict[str, float | None]:
        return {"acc": a, "nll": 1 - a, "brier": (1 - a) / 2, "ece": e, "auroc_correct": None}

    report = {"uncertainty": {"conditions": {"clean": row(acc[0], ece[0])},
                              "corruption_severity": {str(s): row(a, e) for s, (a, e) in
                                                      enumerate(zip(acc[1:], ece[1:]), start=1)}}}
    path.write_text(json.dumps(report))
    return str(path)


def test_a_curve_starts_at_the_clean_set_and_follows_the_severities(tmp_path: Path) -> None:
    curve = read_curve(_card(tmp_path / "a.json", [0.9, 0.8, 0.7], [0.05, 0.1, 0.2]))
    assert curve["severity"] == [0.0, 1.0, 2.0]
    assert curve["acc"] == [0.9, 0.8, 0.7]
    assert curve["nll"] == pytest.approx([0.1, 0.2, 0.3])
    assert curve["brier"] == pytest.approx([0.05, 0.1, 0.15])


def test_a_label_given_twice_is_averaged_with_its_sample_std(tmp_path: Path) -> None:
    a = _card(tmp_path / "a.json", [0.9, 0.8], [0.1, 0.2])
    b = _card(tmp_path / "b.json", [0.7, 0.6], [0.3, 0.4])
    c = _card(tmp_path / "c.json", [0.5, 0.5], [0.0, 0.0])
    data = curves([("x", a), ("y", c), ("x", b)])
    assert list(data) == ["x", "y"] and data["x"]["n"] == 2 and data["y"]["n"] == 1
    assert data["x"]["acc"] == pytest.approx([0.8, 0.7])
    assert data["x"]["acc_std"] == pytest.approx([math.sqrt(0.02), math.sqrt(0.02)])
    assert data["y"]["ece_std"] == [0.0, 0.0]
    row = summary_rows(data)[0]
    # clean acc, mean over severities >= 1, last severity; ECE likewise (in %); NLL and Brier means over severities
    assert row == ["x", "2", "80.00", "70.00", "70.00", "20.00", "30.00", "30.00", "0.300", "0.150"]


def test_shift_command_writes_the_figure_and_the_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _card(tmp_path / "a.json", [0.9, 0.8, 0.6], [0.05, 0.1, 0.2])
    b = _card(tmp_path / "b.json", [0.95, 0.9, 0.8], [0.02, 0.04, 0.06])
    out = tmp_path / "fig" / "shift.png"
    main(["--report", f"vanilla={a}", "--report", f"ensemble of 5={b}", "--output", str(out), "--no_wandb"])
    assert out.is_file() and out.stat().st_size > 10_000
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["label"] for r in saved["reports"]] == ["vanilla", "ensemble of 5"]
    assert saved["curves"]["ensemble of 5"]["acc"] == [0.95, 0.9, 0.8]
    assert "| ensemble of 5 | 1 | 95.00 | 85.00 | 80.00 |" in capsys.readouterr().out


def test_a_report_without_per_severity_scores_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"clean": {"acc": 0.9}}))
    with pytest.raises(SystemExit, match=r"old.json has no per-severity uncertainty scores"):
        read_curve(bad)
    with pytest.raises(SystemExit, match="cannot read"):
        read_curve(tmp_path / "missing.json")
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        main(["--report", str(bad), "--output", str(tmp_path / "x.png"), "--no_wandb"])
