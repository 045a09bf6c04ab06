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


def test_resumed_run_continues_the_same_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    first = SafeWandbLogger(save_dir=str(tmp_path), offline=True)
    first.log_metrics({"train/loss": 1.0}, step=1)
    run_id = first.experiment.id
    assert first.enabled and (tmp_path / "wandb_run_id").read_text().strip() == run_id
    wandb.finish()

    resumed = SafeWandbLogger(save_dir=str(tmp_path), offline=True, continue_run=True)
    resumed.log_metrics({"train/loss": 0.5}, step=2)
    assert resumed.enabled and resumed.experiment.id == run_id
    wandb.finish()

    fresh = SafeWandbLogger(save_dir=str(tmp_path), offline=True)  # a new run in the same folder: a new id
    assert fresh.experiment.id != run_id
    assert (tmp_path / "wandb_run_id").read_text().strip() == fresh.experiment.id
    wandb.finish()


def test_wandb_calls_leave_the_random_streams_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting the run and logging scalars, images and tables must not move python/numpy/torch RNG (a seeded run
    trains the same with and without W&B)."""
    import numpy as np
    import torch
    import wandb

    from syn2real.core.rng import rng_state

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = SafeWandbLogger(save_dir=str(tmp_path), offline=True)
    torch.manual_seed(3)
    np.random.seed(3)
    before = rng_state()
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"train/loss": 1.0}, step=1)
    logger.log_image("samples", [np.zeros((8, 8, 3), dtype=np.uint8)], step=1)
    logger.log_table("per_class", ["class", "acc"], [["a", 1.0]], step=1)
    assert logger.enabled and logger.experiment.id
    after = rng_state()
    wandb.finish()
    assert before["python"] == after["python"]
    assert torch.equal(before["numpy"]["keys"], after["numpy"]["keys"]) and before["numpy"]["pos"] == after["numpy"]["pos"]
    assert torch.equal(before["torch"], after["torch"])
