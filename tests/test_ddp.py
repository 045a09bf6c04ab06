"""2-process CPU DDP (gloo) through the real CLI gives the single-process metrics.

With the same global batch (2 x 16 vs 1 x 32), the data module's seeded sampler (rank r takes every
second index of the same permutation: the union of the two rank batches is the single-process batch),
no BatchNorm (SyncBatchNorm is GPU-only) and gradient averaging, the
maths of both runs is identical; only floating-point summation order differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import CONFIG, run_cli

COMMON = [
    "--data.init_args.n_synthetic", "640",
    "--data.init_args.source_val_fraction", "0.0",
    "--data.init_args.target_split", "0.1",   # 500 held-out real digits: divisible by 2 ranks x 250
    "--data.init_args.eval_batch_size", "250",
    "--trainer.accelerator", "cpu",
    "--trainer.max_steps", "40",
    # SyncBatchNorm needs GPUs; without BatchNorm the per-rank forward is exactly the single-process one
    "--model.init_args.task.init_args.network.backbone_kwargs", "{batch_norm: false}",
    "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false",
    "--trainer.num_sanity_val_steps", "0",
    "--checkpoint.monitor", "null",
]


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_cli("fit", *CONFIG, *COMMON, "--data.init_args.batch_size", "32", "--trainer.devices", "1",
            "--trainer.default_root_dir", str(single), cwd=tmp_path)
    run_cli("fit", *CONFIG, *COMMON, "--data.init_args.batch_size", "16", "--trainer.devices", "2",
            "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(ddp), cwd=tmp_path)
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert a["global_step"] == b["global_step"] == 40
    assert a["target/acc"] > 0.3  # a model that learned something, not a trivial agreement
    # equal up to summation order: at most one of 500 predictions may flip
    for key in ["target/acc", "target/acc_class_mean"]:
        assert abs(a[key] - b[key]) <= 1 / 500 + 1e-9, (key, a[key], b[key])
    assert abs(a["target/ece"] - b["target/ece"]) < 5e-3
    # the uncertainty scores: sums summed and per-sample confidences gathered across ranks
    for key in ["target/nll", "target/brier", "target/auroc_correct"]:
        assert abs(a[key] - b[key]) < 5e-3, (key, a[key], b[key])
