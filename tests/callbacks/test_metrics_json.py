"""metrics.json: stable names, NaN as null, the run's bookkeeping, and one summary table per command (none that is
empty, none for a fit the CLI evaluates once more)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from syn2real.callbacks.metrics_json import MetricsJSON


def _trainer(tmp_path: Path, metrics: dict, global_step: int = 10, last_eval_step: int | None = 10) -> SimpleNamespace:
    module = SimpleNamespace(last_eval_step=last_eval_step, run_summary=lambda: {"eval_history": [{"global_step": 5}]})
    return SimpleNamespace(callback_metrics=metrics, current_epoch=1, global_step=global_step, world_size=1,
                           default_root_dir=str(tmp_path), lightning_module=module, interrupted=False)


METRICS = {"target/acc": torch.tensor(0.5), "target/acc_class/3": torch.tensor(math.nan), "train/loss": torch.tensor(1.0),
           "source/ece": 0.25, "target/confusion": torch.ones(2, 2)}


def test_written_metrics_keep_evaluation_scalars_and_write_nan_as_null(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    MetricsJSON(print_summary=False)._write(_trainer(tmp_path, METRICS), "test")
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["target/acc"] == 0.5 and data["target/acc_class/3"] is None and data["source/ece"] == 0.25
    assert "train/loss" not in data and "target/confusion" not in data  # training scalars and tensors are not results
    assert (data["stage"], data["epoch"], data["global_step"], data["seed"], data["world_size"]) == ("test", 1, 10, 7, 1)
    assert data["eval_history"] == [{"global_step": 5}]
    code = data["code"]  # what produced the numbers
    assert code["threads"] == torch.get_num_threads() and code["torch"] == torch.__version__
    assert code["syn2real"] and set(code) == {"syn2real", "commit", "dirty", "torch", "threads"}
    if code["commit"] is not None:  # a git checkout: the full hash, and whether tracked files differ from it
        assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)


@pytest.mark.parametrize(("stage", "last_eval_step", "metrics", "table"), [
    ("fit", 10, METRICS, True),           # the fit ended on an evaluation: its table
    ("fit", 6, METRICS, False),           # the CLI evaluates the last steps and prints that table instead
    ("validate", 6, METRICS, True),
    ("test", 10, {"train/loss": torch.tensor(1.0)}, False),  # nothing to show: no empty table
])
def test_one_summary_table_per_command_and_never_an_empty_one(tmp_path: Path, capsys, stage, last_eval_step, metrics,
                                                               table) -> None:
    MetricsJSON()._write(_trainer(tmp_path, metrics, last_eval_step=last_eval_step), stage)
    out = capsys.readouterr().out
    assert ("final" in out and "┃ metric" in out) is table
    if stage != "fit" or table:
        assert f"metrics written to {tmp_path / 'metrics.json'}" in out.splitlines()
