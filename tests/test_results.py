"""``syn2real aggregate``: mean ± std over runs and the model-selection study over eval histories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from syn2real.results import _spearman, aggregate, selection_study


def write(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_aggregate_mean_and_sample_std(tmp_path: Path) -> None:
    files = [write(tmp_path / f"{i}.json", {"target/acc": v, "seed": i, "eval_history": [],
                                           "code": {"commit": "abc", "dirty": False, "threads": 1}})
             for i, v in enumerate([0.8, 0.9, 1.0])]
    out = aggregate(files)
    assert out["target/acc"][0] == pytest.approx(0.9) and out["target/acc"][1] == pytest.approx(0.1)
    assert "seed" not in out and "eval_history" not in out and not any(k.startswith("code/") for k in out)


def test_spearman_by_hand() -> None:
    assert _spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert _spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks a = (0, 1, 2, 3), b = (0, 2, 1, 3): 1 - 6 * 2 / (4 * 15) = 0.8
    assert _spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert _spearman([1, 1, 1], [1, 2, 3]) is None and _spearman([1, 2], [1, 2]) is None


def test_selection_study_regret_and_choice(tmp_path: Path) -> None:
    hist = [
        {"epoch": 0, "target/acc": 0.70, "target/validator/snd": 1.0, "source/acc": 0.99},
        {"epoch": 1, "target/acc": 0.90, "target/validator/snd": 3.0, "source/acc": 0.97},
        {"epoch": 2, "target/acc": 0.80, "target/validator/snd": 2.0, "source/acc": 0.98},
    ]
    f = write(tmp_path / "m.json", {"eval_history": hist})
    out = selection_study([f])
    assert out["target/validator/snd"]["chosen_acc"] == pytest.approx(0.90)
    assert out["target/validator/snd"]["regret"] == pytest.approx(0.0)
    assert out["target/validator/snd"]["spearman"] == pytest.approx(1.0)
    assert out["source/acc"]["chosen_acc"] == pytest.approx(0.70) and out["source/acc"]["regret"] == pytest.approx(0.2)
    assert out["last"]["chosen_acc"] == pytest.approx(0.80) and math.isnan(out["last"]["spearman"])
    assert "target/validator/entropy" not in out  # not logged in this history
    with pytest.raises(ValueError, match="no eval_history"):
        selection_study([write(tmp_path / "empty.json", {"target/acc": 0.5})])


def test_compare_prints_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from syn2real.results import compare

    a = write(tmp_path / "a.json", {"target/acc": 0.7728, "target/ece": 0.17})
    b = write(tmp_path / "b.json", {"target/acc": 0.9144, "target/ece": 0.04})
    compare([f"source-only={a}", f"DANN={b}"])
    out = capsys.readouterr().out
    assert "source-only" in out and "DANN" in out and "77.28 %" in out and "91.44 %" in out
    with pytest.raises(SystemExit, match="does not exist"):
        compare([f"x={tmp_path / 'missing.json'}"])


def test_aggregate_flattens_nested_reports(tmp_path) -> None:
    import json

    from syn2real.results import aggregate

    files = []
    for i, acc in enumerate([0.8, 0.9]):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps({"n_images": 10, "clean": {"acc": acc}, "pgd": {"steps": 40, "acc": {"0.3": acc / 2}},
                                    "corruptions": {"unavailable": {"fog": "error"}}}))
        files.append(path)
    result = aggregate(files)
    assert result["clean/acc"][0] == pytest.approx(0.85) and result["pgd/acc/0.3"][0] == pytest.approx(0.425)
    assert "n_images" not in result and "pgd/steps" not in result and "corruptions/unavailable/fog" not in result


def test_aggregate_leaves_out_null_per_class_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from syn2real.results import main

    # class c is absent from the labels of run 0 (null in its metrics.json), present in runs 1 and 2
    files = [write(tmp_path / f"{i}.json", {"target/acc": 0.5, "target/acc_class/c": c})
             for i, c in enumerate([None, 0.4, 0.6])]
    out = aggregate(files)
    assert out["target/acc_class/c"][0] == pytest.approx(0.5) and out["target/acc_class/c"][2] == 2
    assert out["target/acc"][2] == 3
    main([*files, "--all"])
    assert "(2 of 3 runs)" in capsys.readouterr().out
    assert "target/acc_class/c" not in aggregate(files[:1])  # null everywhere: no value


def test_selection_table_shows_full_criterion_names(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syn2real.results import SELECTION_CRITERIA, main

    monkeypatch.setenv("COLUMNS", "80")  # an 80-column terminal cut all three to "target/validat…"
    hist = [{"epoch": i, "target/acc": 0.7 + 0.01 * i, **{c: float(i) for c in SELECTION_CRITERIA}} for i in range(3)]
    main(["--selection", write(tmp_path / "m.json", {"eval_history": hist})])
    out = capsys.readouterr().out
    for name in SELECTION_CRITERIA:
        assert name in out
