"""``syn2real ensemble`` end to end on the embedded digits (tiny): two seeded members trained (and skipped once
finished), evaluated as one predictor with MC dropout in their own records directory, predictions with the
disagreement column, and the report card of the ensemble."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import REPO, config_args, tiny_digits_args

from syn2real.commands.ensemble import ensemble_root, member_dirs, run_of

CONFIG = config_args(REPO / "configs" / "digits" / "source_only.yaml")
DROPOUT = ["--model.init_args.task.init_args.network.dropout", "0.3"]


def test_member_dirs_and_default_root(tmp_path: Path) -> None:
    assert member_dirs(tmp_path, 2, first_seed=3) == [(3, tmp_path / "seed3"), (4, tmp_path / "seed4")]
    a = tmp_path / "runs" / "seed0" / "checkpoints" / "best.ckpt"
    b = tmp_path / "runs" / "seed1" / "checkpoints" / "best.ckpt"
    assert run_of(a) == (tmp_path / "runs" / "seed0").resolve()
    assert ensemble_root([a, b]) == (tmp_path / "runs" / "ensemble").resolve()
    with pytest.raises(ValueError, match="members"):
        member_dirs(tmp_path, 0)


def test_evaluation_needs_two_members_or_mc_dropout(tmp_path: Path) -> None:
    from syn2real.command import main

    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit, match="at least two"):
        main(["ensemble", "test", "--ckpt", str(ckpt), *CONFIG])
    with pytest.raises(SystemExit, match="--root"):
        main(["ensemble", "fit", "--members", "2", *CONFIG])


@pytest.mark.slow
def test_ensemble_fit_test_predict_and_report_card(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from syn2real.command import main

    root = tmp_path / "members"
    tiny = tiny_digits_args(3)
    main(["ensemble", "fit", "--members", "2", "--root", str(root), *CONFIG, *tiny, *DROPOUT])
    records = {}
    for seed in (0, 1):
        metrics = json.loads((root / f"seed{seed}" / "metrics.json").read_text())
        assert metrics["seed"] == seed
        for key in ("target/nll", "target/brier", "target/auroc_correct", "source/nll", "source/brier"):
            assert key in metrics, key
        records[seed] = (root / f"seed{seed}" / "metrics.json").read_bytes()
    # finished members are skipped
    main(["ensemble", "fit", "--members", "2", "--root", str(root), *CONFIG, *tiny, *DROPOUT])
    assert capsys.readouterr().out.count("skipped") == 2

    ckpts = [str(root / f"seed{s}" / "checkpoints" / "last.ckpt") for s in (0, 1)]
    main(["ensemble", "test", "--ckpt", *ckpts, "--mc_dropout", "2", *CONFIG, *tiny])
    tests = sorted((root / "ensemble" / "eval").glob("test-*"))
    assert len(tests) == 1
    result = json.loads((tests[0] / "metrics.json").read_text())
    assert result["stage"] == "test" and result["target/disagreement"] > 0
    assert 0 <= result["target/brier"] <= 2 and result["target/nll"] > 0
    config = (tests[0] / "config.yaml").read_text()
    assert "mc_dropout: 2" in config and ckpts[1] in config
    assert records == {s: (root / f"seed{s}" / "metrics.json").read_bytes() for s in (0, 1)}  # members untouched

    main(["ensemble", "predict", "--ckpt", *ckpts, *CONFIG, *tiny, "--eval_name", "pred"])
    with open(root / "ensemble" / "eval" / "pred" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"path", "pred", "class", "confidence", "disagreement"}
    assert all(float(r["disagreement"]) >= 0 for r in rows)

    from syn2real.robustness import main as robustness

    card = ["--ckpt", *ckpts, "--mc_dropout", "2", *CONFIG, *tiny, "--eps", "0.1", "--pgd_steps", "1",
            "--max_angle", "0", "--max_shift", "0", "--noise", "--corruptions", "none", "--max_images", "16",
            "--no_wandb", "--device", "cpu"]
    # the card builds the network from the config given: without its dropout, MC dropout is refused
    with pytest.raises(SystemExit, match="no dropout layer"):
        robustness(card)
    report = robustness([*card, *DROPOUT])
    assert report["members"] == ckpts and report["mc_dropout"] == 2
    assert (root / "ensemble" / "robustness" / "robustness.json").is_file()
    assert report["uncertainty"]["conditions"]["clean"]["disagreement"] > 0
    assert report["calibration"]["oracle"] is True and report["calibration"]["source_fitted"]["temperature"] > 0

