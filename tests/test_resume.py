"""A run killed with SIGKILL mid-epoch and resumed with ``--ckpt_path last`` ends exactly where the uninterrupted run
ends: same final weights, same metrics (deterministic mode, random augmentation, dropout, a cycling source loader)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cli import CONFIG, run_cli

TESTS = Path(__file__).resolve().parent

# 640 synthetic digits = 10 source batches (the source cycles within each 12-batch epoch), 4,500 target training
# digits; 30 steps = epochs 0 and 1 and a part of epoch 2; last.ckpt every 5 steps.
COMMON = [
    "--data.init_args.n_synthetic", "640",
    "--data.init_args.source_val_fraction", "0.0",
    "--data.init_args.target_split", "0.1",
    "--data.init_args.eval_batch_size", "500",
    "--data.init_args.train_transforms",
    "[{name: Affine, translate_percent: [-0.1, 0.1], rotate: [-15, 15], p: 0.8}, {name: Normalize, mean: [0.5], std: [0.5]}]",
    "--model.init_args.task.init_args.network.backbone_kwargs", "{drop_rate: 0.3}",
    "--trainer.accelerator", "cpu",
    "--trainer.max_steps", "30",
    "--trainer.limit_train_batches", "12",
    "--trainer.deterministic", "true",
    "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false",
    "--trainer.num_sanity_val_steps", "0",
    "--checkpoint.monitor", "null",
    "--checkpoint.every_n_train_steps", "5",
]
KILL_AFTER_STEP = 15  # epoch 1, batch 3: mid-epoch, mid source pass


def _step(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def _env() -> dict[str, str]:
    path = [str(TESTS), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run_cli("fit", *CONFIG, *COMMON, "--trainer.default_root_dir", str(reference), cwd=tmp_path)

    # the same run, slowed down (sleeps only) after the checkpoint to kill it at, then killed from outside
    slow = json.dumps([{"class_path": "slow_steps.SlowAfterStep", "init_args": {"step": KILL_AFTER_STEP}}])
    args = [sys.executable, "-m", "syn2real.cli", "fit", *CONFIG, *COMMON, "--trainer.callbacks", slow,
            "--trainer.default_root_dir", str(crashed)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = crashed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    try:
        while _step(last) < KILL_AFTER_STEP:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before it could be killed:\n{proc.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no checkpoint at step >= {KILL_AFTER_STEP} within 300 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _step(last)
    assert KILL_AFTER_STEP <= killed_at < 24 and killed_at % 12 != 0, killed_at  # mid-epoch

    run_cli("fit", *CONFIG, *COMMON, "--trainer.default_root_dir", str(crashed), "--ckpt_path", "last",
            cwd=tmp_path)

    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((crashed / "metrics.json").read_text())
    assert a["global_step"] == b["global_step"] == 30
    for key in ["target/acc", "target/ece", "target/acc_class_mean"]:
        assert a[key] == b[key], (key, a[key], b[key])
    wa = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    wb = torch.load(last, map_location="cpu", weights_only=True)
    assert wa["global_step"] == wb["global_step"] == 30
    assert wa["state_dict"].keys() == wb["state_dict"].keys()
    for name, tensor in wa["state_dict"].items():
        assert torch.equal(tensor, wb["state_dict"][name]), name
    # the optimiser continued from its saved moments too
    for sa, sb in zip(wa["optimizer_states"][0]["state"].values(), wb["optimizer_states"][0]["state"].values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
