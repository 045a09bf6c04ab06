"""ASG (+ learned layer-wise lrs) and CSG through the real CLI with their VisDA-2017 configs, on a tiny tree in the
official VisDA layout: metrics, checkpoints, resume of the lr policy, and the CSG queue under 2-process DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, config_args, make_visda17_tree
from test_cli import run_cli

from syn2real.models.contrastive import NegativeQueue

CONFIGS = REPO / "configs" / "visda17"


@pytest.fixture(scope="module")
def visda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_visda17_tree(tmp_path_factory.mktemp("visda17"), per_class=2, size=40)


def tiny(visda: Path, run: Path) -> list[str]:
    """The shipped config shrunk: a tiny timm ResNet (no ImageNet file offline), 40 -> 32 px, CPU, no logger."""
    small_tf = '[{name: Resize, height: 32, width: 32}, {name: Normalize, mean: [0.485, 0.456, 0.406], ' \
               'std: [0.229, 0.224, 0.225]}]'
    return [
        "--model.init_args.task.init_args.network.backbone", "test_resnet",
        "--model.init_args.task.init_args.network.bottleneck_dim", "16",
        "--data.init_args.source.root", str(visda / "train"),
        "--data.init_args.target.root", str(visda / "validation"),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "8",
        "--data.init_args.eval_batch_size", "12",
        "--data.init_args.source_val_fraction", "0.0",
        "--data.init_args.train_transforms", small_tf,
        "--data.init_args.eval_transforms", small_tf,
        "--trainer.accelerator", "cpu",
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.num_sanity_val_steps", "0",
        "--checkpoint.monitor", "null",
        "--trainer.default_root_dir", str(run),
    ]


@pytest.mark.slow
def test_asg_with_learned_layerwise_lrs_end_to_end_and_resume(visda: Path, tmp_path: Path) -> None:
    run = tmp_path / "asg_l2o"
    l2o = ["--trainer.callbacks.init_args.interval", "1", "--trainer.callbacks.init_args.rollout", "2"]
    run_cli("fit", *config_args(CONFIGS / "asg_l2o.yaml"), *tiny(visda, run), *l2o, "--trainer.max_steps", "3",
            cwd=tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    assert m["global_step"] == 3 and 0.0 <= m["target/acc"] <= 1.0 and 0.0 <= m["target/acc_class_mean"] <= 1.0
    assert {f"target/acc_class/{c}" for c in ("aeroplane", "knife", "truck")} <= set(m)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("guide.") for k in ckpt["state_dict"])
    state = next(v for k, v in ckpt["callbacks"].items() if "LayerwiseLR" in k)
    assert state["group_names"] == [f"backbone.stage{i}" for i in range(5)] + ["head"]
    assert state["batches_seen"] == 3 and len(state["history"]) == 3
    # resume: the policy continues from the checkpoint (same weights, history goes on)
    run_cli("fit", *config_args(CONFIGS / "asg_l2o.yaml"), *tiny(visda, run), *l2o, "--trainer.max_steps", "5",
            "--ckpt_path", "last", cwd=tmp_path)
    decisions = json.loads((run / "layerwise_lr.json").read_text())["decisions"]
    assert [d["step"] for d in decisions] == [0, 1, 2, 3, 4]
    assert decisions[:3] == state["history"]
    assert all(d[f"mult/backbone.stage{i}"] in [round(0.1 * a, 1) for a in range(11)] for d in decisions for i in range(5))


@pytest.mark.slow
def test_csg_queue_under_two_process_ddp_holds_the_keys_of_both_ranks(visda: Path, tmp_path: Path) -> None:
    """2 ranks x 4 images vs 1 process x 8: BatchNorm is frozen and views are off, so both runs compute the same
    keys; the DDP queue must hold all 8 keys of every step (gathered from both ranks), not each rank's 4."""
    common = ["--model.init_args.queue_size", "64", "--model.init_args.views", "none",
              "--trainer.max_steps", "3", "--data.init_args.eval_batch_size", "6"]
    runs = {}
    for name, devices, bs in (("single", "1", "8"), ("ddp", "2", "4")):
        runs[name] = tmp_path / name
        extra = ["--trainer.strategy", "ddp"] if devices == "2" else []
        run_cli("fit", *config_args(CONFIGS / "csg.yaml"), *tiny(visda, runs[name]), *common, *extra,
                "--trainer.devices", devices, "--data.init_args.batch_size", bs, cwd=tmp_path)
    states = {n: torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
              for n, r in runs.items()}
    for stage in (0, 1):
        a, b = (states[n][f"queues.{stage}.keys"] for n in ("single", "ddp"))
        assert int(states["single"][f"queues.{stage}.ptr"]) == int(states["ddp"][f"queues.{stage}.ptr"]) == 24
        # each step's 8 keys: rank 0's 4 then rank 1's 4 under DDP; the sampler interleaves them in one process
        for step in range(3):
            block_a, block_b = a[8 * step : 8 * step + 8], b[8 * step : 8 * step + 8]
            assert torch.allclose(block_a[0::2], block_b[:4], atol=1e-4)
            assert torch.allclose(block_a[1::2], block_b[4:], atol=1e-4)
        assert torch.equal(a[24:], NegativeQueue(64, 128, seed=stage).keys[24:])  # rows not yet written: initial keys
    ma = json.loads((runs["ddp"] / "metrics.json").read_text())
    assert ma["world_size"] == 2 and 0.0 <= ma["target/acc"] <= 1.0
