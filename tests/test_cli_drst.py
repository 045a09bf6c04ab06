"""DRST through the real CLI with ``configs/digits/drst.yaml`` (shrunk), chained from a source-only checkpoint: two
rounds (one per epoch) on one process and on 2 CPU processes (gloo) must give the same pseudo-labels, thresholds and
mean density ratios: the domain classifier's gradients are averaged like the rest and the rounds gather the robust
probabilities and ratios of both ranks before choosing thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, config_args
from test_cli import run_cli, run_cli_parallel
from test_ddp import COMMON

CONFIGS = REPO / "configs" / "digits"
# BatchNorm-free digits CNN, 500 held-out real digits, 2 training batches per epoch: rounds at epochs 0 and 1
TINY = [*COMMON, "--trainer.max_steps", "4", "--trainer.limit_train_batches", "2",
        "--model.init_args.rounds.epochs_per_round", "1", "--media.every_n_steps", "0"]


def _state(run: Path) -> dict:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {"rounds": ckpt["callbacks"]["PseudoLabelRounds"], "weights": ckpt["state_dict"]}


@pytest.mark.slow
def test_drst_ddp_two_processes_give_the_single_process_pseudo_labels(tmp_path: Path) -> None:
    start = tmp_path / "start"
    run_cli("fit", *config_args(CONFIGS / "source_only.yaml"), *COMMON, "--trainer.max_steps", "10",
            "--data.init_args.batch_size", "32", "--trainer.devices", "1", "--trainer.default_root_dir", str(start),
            cwd=tmp_path)
    init = ["--model.init_args.init_checkpoint", str(start / "checkpoints" / "last.ckpt")]
    runs = {"single": tmp_path / "single", "ddp": tmp_path / "ddp"}
    drst = [*config_args(CONFIGS / "drst.yaml"), *TINY, *init]
    run_cli_parallel(
        ["fit", *drst, "--data.init_args.batch_size", "32", "--trainer.devices", "1",
         "--trainer.default_root_dir", str(runs["single"])],
        ["fit", *drst, "--data.init_args.batch_size", "16", "--trainer.devices", "2", "--trainer.strategy", "ddp",
         "--trainer.default_root_dir", str(runs["ddp"])],
        cwd=tmp_path,
    )
    a, b = _state(runs["single"]), _state(runs["ddp"])
    ra, rb = a["rounds"], b["rounds"]
    assert ra["round_idx"] == rb["round_idx"] == 1  # round 1 labels with a domain classifier trained for 2 steps
    assert ra["labels"].shape == (4500,) and (ra["labels"] >= 0).sum() > 50
    assert torch.equal(ra["labels"], rb["labels"])
    assert torch.allclose(ra["thresholds"], rb["thresholds"], atol=1e-5)
    # the domain classifier ends close (gradients averaged over the ranks), not equal: digits_cnn's BatchNorm
    # normalises each rank's 16 images with their own statistics (one process: 32), so the features differ slightly,
    # and Adam (lr 1e-3 for this head) turns small gradient differences into steps of up to the lr (measured: 2.8e-3
    # after the run). The counts are per rank, their ratio n_t / n_s (the prior correction) is the same.
    for key in ("domain_classifier.net.0.weight", "domain_classifier.net.4.weight"):
        assert torch.allclose(a["weights"][key], b["weights"][key], atol=1e-2), key
    ca, cb = a["weights"]["domain_counts"], b["weights"]["domain_counts"]
    assert ca.tolist() == [128.0, 128.0] and cb.tolist() == [64.0, 64.0]
    ma = json.loads((runs["single"] / "metrics.json").read_text())
    mb = json.loads((runs["ddp"] / "metrics.json").read_text())
    assert mb["world_size"] == 2
    ha, hb = ma["self_training_rounds"], mb["self_training_rounds"]
    assert [h["portion"] for h in ha] == [0.2, 0.25]
    for x, y in zip(ha, hb):
        assert x["kept_per_class"] == y["kept_per_class"]
        assert x["mean_density_ratio"] == pytest.approx(y["mean_density_ratio"], rel=1e-4)
        assert 0.1 <= x["mean_density_ratio"] <= 10.0 and 0.0 <= x["pseudo_label_acc"] <= 1.0
    assert ha[1]["mean_density_ratio"] != pytest.approx(ha[0]["mean_density_ratio"], rel=1e-3)  # the ratio learned
