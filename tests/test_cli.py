"""End-to-end runs of the real ``syn2real`` CLI on the embedded digits benchmark (shrunk)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, config_args

# Shrink the real config: few synthetic digits, few steps, a held-out target split for fast evaluation.
SMALL = [
    "--data.init_args.n_synthetic", "320",
    "--data.init_args.target_split", "0.1",
    "--data.init_args.source_val_fraction", "0.1",
    "--trainer.max_steps", "12",
    "--trainer.limit_train_batches", "6",
    "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false",
    "--media.every_n_steps", "5",
]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "syn2real.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"syn2real {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


CONFIG = config_args(REPO / "configs" / "digits" / "source_only.yaml")  # --config base.yaml --config source_only.yaml


def run_cli_parallel(*commands: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Independent ``syn2real`` commands side by side (they share no files); each must succeed."""
    full_env = {**os.environ, **(env or {})}
    procs = [subprocess.Popen([sys.executable, "-m", "syn2real.cli", *args], cwd=cwd, env=full_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
    done = []
    for args, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"syn2real {' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-5000:]}")
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_fit_writes_metrics_checkpoint_wandb_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    probe = tmp_path / "probe.json"
    env = {"PYTHONPATH": os.pathsep.join(p for p in [str(TESTS), os.environ.get("PYTHONPATH", "")] if p)}
    # every 3 steps a last.ckpt, although the monitored source/acc only exists after the first validation (step 6)
    run_cli("fit", *CONFIG, *SMALL, "--trainer.default_root_dir", str(run),
            "--checkpoint.every_n_train_steps", "3",
            "--trainer.callbacks+=ckpt_probe.LastCheckpointProbe", "--trainer.callbacks.step=4",
            f"--trainer.callbacks.out={probe}", cwd=tmp_path, env=env)
    assert json.loads(probe.read_text())["last_ckpt_step"] == 3  # Lightning alone: none before the validation

    metrics = json.loads((run / "metrics.json").read_text())
    for key in ["target/acc", "target/acc_class_mean", "target/ece", "source/acc"]:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert {f"target/acc_class/{c}" for c in range(10)} <= set(metrics)
    assert {"target/validator/entropy", "target/validator/infomax", "target/validator/snd"} <= set(metrics)
    assert metrics["stage"] == "fit" and metrics["global_step"] == 12 and metrics["seed"] == 0
    # even 12 steps on synthetic digits beat chance on the real ones
    assert metrics["target/acc"] > 0.2

    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 12 and "state_dict" in ckpt
    assert not list((run / "checkpoints").glob("*.tmp")), "no temporary checkpoint files left behind"
    assert (run / "config.yaml").is_file() and (run / "confusion_target.png").is_file()
    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert offline_runs and list(offline_runs[0].glob("*.wandb"))

    # a new fit into the same directory would overwrite the run's records: refused
    before = (run / "metrics.json").read_bytes()
    proc = run_cli("fit", *CONFIG, *SMALL, "--trainer.default_root_dir", str(run), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "already holds a run" in proc.stderr
    assert (run / "metrics.json").read_bytes() == before

    # resume with `--ckpt_path last` (resolved in <run>/checkpoints), train further with a lower lr: the command's
    # lr reaches the restored optimiser, the log says what changed, the replaced config is kept
    proc = run_cli("fit", *CONFIG, *SMALL, "--trainer.max_steps", "18", "--trainer.default_root_dir",
                   str(run), "--checkpoint.every_n_train_steps", "3", "--ckpt_path", "last",
                   "--model.init_args.optim.lr", "0.0001", cwd=tmp_path)
    assert "optim.lr: 0.001 -> 0.0001" in proc.stdout + proc.stderr
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 18
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 18
    assert {g["lr"] for g in resumed["optimizer_states"][0]["param_groups"]} == {0.0001}
    assert "lr: 0.0001" in (run / "config.yaml").read_text()
    assert ["lr: 0.001" in p.read_text() for p in (run / "config_history").iterdir()] == [True]
    # ... logging into the same W&B run
    run_ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert run_ids == {(run / "wandb_run_id").read_text().strip()}, run_ids

    # evaluations of the run (the README's command: the run's own directory) write their own records, twice the
    # same numbers, and leave the training's metrics, config and W&B run id untouched
    records = {name: (run / name).read_bytes() for name in ("metrics.json", "config.yaml", "wandb_run_id")}
    test_args = ["test", *CONFIG, *SMALL, "--ckpt_path", "last", "--trainer.default_root_dir", str(run)]
    first, _, pred = run_cli_parallel(
        test_args, [*test_args, "--trainer.logger", "false"],
        ["predict", *CONFIG, *SMALL, "--trainer.logger", "false", "--ckpt_path", str(last),
         "--trainer.default_root_dir", str(run), "--eval_name", "pred", "--model.init_args.optim.weight_decay", "0.25"],
        cwd=tmp_path)
    assert records == {name: (run / name).read_bytes() for name in records}
    tests = sorted((run / "eval").glob("test-*"))
    assert len(tests) == 2 and any(str(d) in first.stderr for d in tests)
    results = [json.loads((d / "metrics.json").read_text()) for d in tests]
    assert results[0]["stage"] == results[1]["stage"] == "test"
    assert results[0]["target/acc"] == results[1]["target/acc"]
    # an evaluation builds the checkpoint's model (its lr, not the config file's), except values on the command line
    pred_config = (run / "eval" / "pred" / "config.yaml").read_text()
    assert "lr: 0.0001" in pred_config and "weight_decay: 0.25" in pred_config
    assert f"predictions written to {run / 'eval' / 'pred' / 'predictions.csv'}" in pred.stdout
    rows = (run / "eval" / "pred" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "path,pred,class,confidence"
    assert len(rows) == 1 + 4500  # the unlabelled target training pool (90% of the 5,000 real digits)
    path, pred_id, name, conf = rows[1].split(",")
    assert Path(path).is_file() and name == pred_id and 0.0 < float(conf) <= 1.0
    # the training's records still serve the model-selection study
    assert run_cli("aggregate", "--selection", str(run / "metrics.json"), cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_unknown_config_key_fails_clearly(tmp_path: Path) -> None:
    bad = run_cli("fit", *CONFIG, "--model.init_args.task.init_args.network.no_such_key", "3", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "no_such_key" in bad.stderr
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("model:\n  class_path: syn2real.methods.SourceOnly\n  init_args:\n    optimm: {lr: 0.1}\n")
    bad = run_cli("fit", *CONFIG, "--config", str(cfg), cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "optimm" in bad.stderr


@pytest.mark.slow
def test_wandb_failure_warns_and_training_continues(tmp_path: Path) -> None:
    # A broken wandb installation: importing it raises. Training must finish and write its metrics.
    shim = tmp_path / "shim" / "wandb"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('wandb is broken in this environment')\n")
    run = tmp_path / "run"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli("fit", *CONFIG, *SMALL, "--trainer.max_steps", "3", "--trainer.default_root_dir", str(run),
                   cwd=tmp_path, env=env)
    assert "W&B logging disabled" in proc.stderr + proc.stdout
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 3


@pytest.mark.slow
def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "resnet18.pth"
    proc = run_cli("fit", *CONFIG, *SMALL, "--model.init_args.task.init_args.network.backbone", "resnet18",
                   "--model.init_args.task.init_args.network.weights", str(missing), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and str(missing) in proc.stderr


@pytest.mark.slow
def test_visda_config_runs_on_a_tiny_tree_in_the_official_layout(tmp_path: Path) -> None:
    from conftest import make_class_tree

    classes = ["aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
               "skateboard", "train", "truck"]
    for split, seed in (("train", 0), ("validation", 1)):
        root = make_class_tree(tmp_path / "visda" / split, classes, per_class=2, size=40, mode="RGB", seed=seed)
        lines = [f"{c}/{i:03d}.png {k}" for k, c in enumerate(classes) for i in range(2)]
        (root / "image_list.txt").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    run_cli(
        "fit", *config_args(REPO / "configs" / "visda17" / "source_only.yaml"),
        "--model.init_args.task.init_args.network.backbone", "resnet18",
        "--data.init_args.source.root", str(tmp_path / "visda" / "train"),
        "--data.init_args.target.root", str(tmp_path / "visda" / "validation"),
        "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0",
        "--data.init_args.source_val_fraction", "0.25",
        "--data.init_args.train_transforms", "[{name: Resize, height: 32, width: 32}, {name: Normalize}]",
        "--data.init_args.eval_transforms", "[{name: Resize, height: 32, width: 32}, {name: Normalize}]",
        "--trainer.max_steps", "2", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run),
        cwd=tmp_path,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"target/acc", "target/acc_class_mean", "target/acc_class/truck"} <= set(metrics)


def test_old_hyper_parameters_get_the_task_layout() -> None:
    from syn2real.cli import upgrade_hparams

    network = {"backbone": "resnet18", "num_classes": 10}
    old = {"_class_path": "syn2real.methods.DANN", "network": network, "optim": None, "lambda_max": 1.0}
    assert upgrade_hparams(old) == {"_class_path": "syn2real.methods.DANN", "optim": None, "lambda_max": 1.0,
                                    "task": {"class_path": "syn2real.tasks.Classification",
                                             "init_args": {"network": network}}}
    old_cycada = {"_class_path": "syn2real.methods.SegCyCADA", "network": network, "inference": {"mode": "whole"},
                  "aux_weight": 0.1, "ignore_index": 255, "lambda_gan": 1.0}
    assert upgrade_hparams(old_cycada) == {
        "_class_path": "syn2real.methods.CyCADA", "lambda_gan": 1.0,
        "task": {"class_path": "syn2real.tasks.Segmentation",
                 "init_args": {"network": network, "inference": {"mode": "whole"}, "aux_weight": 0.1}}}
    today = {"_class_path": "syn2real.methods.DANN", "task": {"class_path": "syn2real.tasks.Classification"}}
    assert upgrade_hparams(today) is today
