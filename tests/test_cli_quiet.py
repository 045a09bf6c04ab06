"""A run's output is what the user needs: no known Lightning/W&B noise, no terminal codes in a pipe, right epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, config_args, tiny_digits_args

from syn2real.command import lightning_args

CONFIG = config_args(REPO / "configs" / "digits" / "source_only.yaml")
NOISE = [
    "args parameter is intended to run from within Python",  # LightningCLI, with the whole argv
    "litlogger",  # Lightning's advertisement
    "anonymous setting has no effect",  # wandb, from Lightning's WandbLogger
    "isinstance(treespec, LeafSpec)",  # torch deprecation inside Lightning
]


def _syn2real(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    env.pop("WANDB_SILENT", None)  # as a user runs it
    done = subprocess.run([sys.executable, "-m", "syn2real", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_validate_and_test_default_to_syn2real_table_only() -> None:
    assert lightning_args(["validate", "--config", "x.yaml"]) == ["validate", "--verbose=false", "--config", "x.yaml"]
    assert lightning_args(["test", "--verbose", "true"])[:2] == ["test", "--verbose=false"]  # a later value wins
    assert lightning_args(["fit", "--config", "x.yaml"]) == ["fit", "--config", "x.yaml"]


@pytest.mark.slow
def test_a_piped_run_is_quiet_plain_and_names_the_right_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # W&B offline logger of the config kept, progress bar left to its default; 5 steps with a validation at step 3:
    # the final weights (step 5, still epoch 0) are evaluated after fit
    args = [a for a in tiny_digits_args(5) if a not in ("--trainer.logger", "false", "--trainer.enable_progress_bar")]
    fit = _syn2real("fit", *CONFIG, *args, "--trainer.val_check_interval", "3",
                    "--trainer.default_root_dir", str(run), cwd=tmp_path)
    out = fit.stdout + fit.stderr
    for noise in NOISE:
        assert noise not in out, noise
    assert "\x1b[" not in fit.stdout and "\x1b[" not in fit.stderr, "terminal codes in piped output"
    assert "Epoch 0/" not in fit.stdout, "no progress bar frames in a pipe"
    assert "wandb sync" in fit.stderr  # W&B's closing lines still there, plain
    evaluations = [line.split(":")[0] for line in fit.stderr.splitlines() if line.startswith("epoch ")]
    assert evaluations == ["epoch 0 step 3", "epoch 0 step 5"], fit.stderr
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 5

    val = _syn2real("validate", *CONFIG, *tiny_digits_args(5), "--trainer.default_root_dir",
                    str(tmp_path / "val"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    out = val.stdout + val.stderr
    assert "DataLoader 0" not in out and "DataLoader 1" not in out
    assert "syn2real validate: final metrics" in val.stdout
    for noise in NOISE:
        assert noise not in out, noise
