from __future__ import annotations

import logging
from pathlib import Path

import pytest

from syn2real.loggers import SafeWandbLogger


def test_wandb_failure_is_one_warning_and_a_noop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import wandb

    def no_disk(**kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(wandb, "init", no_disk)
    logger = SafeWandbLogger(save_dir=str(tmp_path), offline=True)
    with caplog.at_level(logging.WARNING, logger="syn2real.loggers"):
        logger.log_hyperparams({"lr": 0.1})
        logger.log_metrics({"train/loss": 1.0}, step=1)
        logger.log_image("samples", [], step=1)
        logger.finalize("success")
    assert not logger.enabled
    warnings = [r for r in caplog.records if "W&B logging disabled" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()


def test_offline_by_default_and_online_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert SafeWandbLogger()._args["offline"] is True
    monkeypatch.setenv("WANDB_MODE", "online")
    assert SafeWandbLogger()._args["offline"] is False
    assert SafeWandbLogger(offline=True)._args["offline"] is True
