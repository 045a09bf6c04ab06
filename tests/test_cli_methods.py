"""Each adaptation method end to end through the real CLI with its shipped config (shrunk), chained the way a
user chains stages: source model -> ADDA / self-training from its checkpoint; plus the 2-process DDP run of
self-training, which must produce the single process's pseudo-labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import REPO, config_args
from test_cli import SMALL, run_cli
from test_ddp import COMMON

CONFIGS = REPO / "configs" / "digits"


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("source") / "run"
    run_cli("fit", *config_args(CONFIGS / "source_only.yaml"), *SMALL, "--trainer.default_root_dir", str(run),
            cwd=run.parent)
    return run


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dann", "cdan"])
def test_gradient_reversal_methods_end_to_end(name: str, tmp_path: Path) -> None:
    run = tmp_path / name
    # CDAN's run selects its checkpoint by a label-free validator instead of held-out source accuracy
    select = ["--checkpoint.monitor", "target/validator/snd"] if name == "cdan" else []
    run_cli("fit", *config_args(CONFIGS / f"{name}.yaml"), *SMALL, *select, "--trainer.default_root_dir", str(run),
            cwd=tmp_path)
    m = _metrics(run)
    assert m["global_step"] == 12 and 0.0 <= m["target/acc"] <= 1.0
    assert [h["global_step"] for h in m["eval_history"]] == [6, 12]
    assert {"target/acc", "target/validator/snd", "source/acc"} <= set(m["eval_history"][-1])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    if select:
        best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
        state = next(v for k, v in best["callbacks"].items() if "target/validator/snd" in k)
        best_snd = max(h["target/validator/snd"] for h in m["eval_history"])
        assert float(state["best_model_score"]) == pytest.approx(best_snd, rel=1e-5)


@pytest.mark.slow
def test_adda_stage_two_from_source_checkpoint(source_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "adda"
    src = source_run / "checkpoints" / "last.ckpt"
    run_cli("fit", *config_args(CONFIGS / "adda.yaml"), *SMALL, "--model.init_args.source_checkpoint", str(src),
            "--trainer.default_root_dir", str(run), cwd=tmp_path)
    m = _metrics(run)
    # manual optimisation: global_step counts the discriminator's and the (gated) encoder's optimizer steps
    assert 12 <= m["global_step"] <= 24 and 0.0 <= m["target/acc"] <= 1.0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    src_state = torch.load(src, map_location="cpu", weights_only=True)["state_dict"]
    # the frozen source encoder is saved unchanged; the target encoder moved
    for k, v in src_state.items():
        if k.startswith("model.backbone.") and v.is_floating_point():
            assert torch.equal(ckpt["state_dict"]["source_" + k], v)
    moved = [k for k, v in src_state.items() if k.startswith("model.backbone.") and "weight" in k
             and not torch.equal(ckpt["state_dict"][k], v)]
    assert moved, "the target encoder never updated"


@pytest.mark.slow
def test_adda_missing_source_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("fit", *config_args(CONFIGS / "adda.yaml"), *SMALL, "--model.init_args.source_checkpoint",
                   str(tmp_path / "nope.ckpt"), "--trainer.default_root_dir", str(tmp_path / "r"), cwd=tmp_path,
                   check=False)
    assert proc.returncode != 0 and "nope.ckpt does not exist" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("config,variant", [("cbst", "cbst"), ("crst", "mrkld"), ("crst", "lrent")])
def test_self_training_end_to_end_from_source_checkpoint(source_run: Path, tmp_path: Path, config: str,
                                                         variant: str) -> None:
    run = tmp_path / variant
    run_cli("fit", *config_args(CONFIGS / f"{config}.yaml"), *SMALL,
            "--model.init_args.init_checkpoint", str(source_run / "checkpoints" / "last.ckpt"),
            "--model.init_args.variant", variant, "--model.init_args.rounds.epochs_per_round", "1",
            "--trainer.default_root_dir", str(run), cwd=tmp_path)
    m = _metrics(run)
    rounds = m["self_training_rounds"]
    # 12 steps of 6 batches: epochs 0 and 1, one round each, portion 0.2 then 0.25
    assert [r["portion"] for r in rounds] == [0.2, 0.25]
    for r in rounds:
        assert r["kept"] == sum(r["kept_per_class"]) > 0 and r["total"] == 4500
        assert 0.0 <= r["pseudo_label_acc"] <= 1.0 and 0.0 <= r["target_ece"] <= 1.0
    assert json.loads((run / "self_training_rounds.json").read_text())["rounds"] == rounds


# the CPU DDP settings of tests/test_ddp.py (BatchNorm-free, no logger, 500 held-out real digits), 10 steps
DDP = [*COMMON, "--trainer.max_steps", "10"]


@pytest.mark.slow
def test_self_training_ddp_two_processes_give_the_single_process_pseudo_labels(tmp_path: Path) -> None:
    start = tmp_path / "start"
    run_cli("fit", *config_args(CONFIGS / "source_only.yaml"), *DDP, "--data.init_args.batch_size", "32",
            "--trainer.devices", "1", "--trainer.default_root_dir", str(start), cwd=tmp_path)
    init = str(start / "checkpoints" / "last.ckpt")
    runs = {}
    for name, devices, bs in (("single", "1", "32"), ("ddp", "2", "16")):
        runs[name] = tmp_path / name
        extra = ["--trainer.strategy", "ddp"] if devices == "2" else []
        run_cli("fit", *config_args(CONFIGS / "cbst.yaml"), *DDP, *extra, "--model.init_args.init_checkpoint", init,
                "--data.init_args.batch_size", bs, "--trainer.devices", devices,
                "--trainer.default_root_dir", str(runs[name]), cwd=tmp_path)
    states = {
        name: torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"][
            "PseudoLabelRounds"]
        for name, run in runs.items()
    }
    a, b = states["single"], states["ddp"]
    assert a["round_idx"] == b["round_idx"] == 0
    assert a["labels"].shape == (4500,)
    # the same 4,500 pseudo-labels (thresholds from the gathered predictions of both ranks), not per-shard ones
    assert torch.equal(a["labels"], b["labels"])
    assert torch.allclose(a["thresholds"], b["thresholds"])
    assert (a["labels"] >= 0).sum() > 50
    ma, mb = _metrics(runs["single"]), _metrics(runs["ddp"])
    assert mb["world_size"] == 2
    assert ma["self_training_rounds"][0]["kept_per_class"] == mb["self_training_rounds"][0]["kept_per_class"]


# a tiny CycleGAN so the chained CyCADA run stays fast on CPU
TINY_GAN = ["--model.init_args.generator.ngf", "4", "--model.init_args.generator.n_blocks", "1",
            "--model.init_args.discriminator.ndf", "8"]


@pytest.mark.slow
def test_cycada_pixel_then_feature_level_then_translate(source_run: Path, tmp_path: Path) -> None:
    pixel = tmp_path / "pixel"
    teacher = source_run / "checkpoints" / "last.ckpt"
    run_cli("fit", *config_args(CONFIGS / "cycada_pixel.yaml"), *SMALL, *TINY_GAN,
            "--model.init_args.teacher_checkpoint", str(teacher), "--trainer.max_steps", "18",
            "--trainer.default_root_dir", str(pixel), cwd=tmp_path)
    m = _metrics(pixel)
    # manual optimisation: three optimizer steps (generators, discriminators, task model) per batch
    assert m["global_step"] == 18 and 0.0 <= m["target/acc"] <= 1.0
    assert 0.0 <= m["translation/flip_st"] <= 1.0 and 0.0 <= m["translation/teacher_acc_st"] <= 1.0
    assert [h["global_step"] for h in m["eval_history"]] == [18] and "translation/flip_ts" in m["eval_history"][0]
    assert (pixel / "media" / "translation_source.png").is_file() and (pixel / "media" / "translation_target.png").is_file()
    ckpt = torch.load(pixel / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    teacher_state = torch.load(teacher, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in teacher_state.items():  # the teacher is frozen, BatchNorm statistics included
        if k.startswith("model."):
            assert torch.equal(ckpt["state_dict"]["teacher." + k[len("model."):]], v)
    assert any(k.startswith("generator_st.") for k in ckpt["state_dict"])

    feature = tmp_path / "feature"
    last = str(pixel / "checkpoints" / "last.ckpt")
    run_cli("fit", *config_args(CONFIGS / "cycada_feature.yaml"), *SMALL, "--model.init_args.source_checkpoint",
            last, "--model.init_args.source_translator", last, "--trainer.default_root_dir", str(feature), cwd=tmp_path)
    assert 0.0 <= _metrics(feature)["target/acc"] <= 1.0
    state = torch.load(feature / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    # stage 3 starts from f_T of stage 2 and keeps the translator frozen
    assert torch.equal(state["translator.generator.net.1.weight"], ckpt["state_dict"]["generator_st.net.1.weight"])
    assert torch.equal(state["source_model.head.1.weight"], ckpt["state_dict"]["model.head.1.weight"])

    digits = tmp_path / "some_digits"
    (digits / "3").mkdir(parents=True)
    source_images = sorted((Path(os.environ["SYN2REAL_CACHE"]) / "digits").rglob("*.png"))[:5]
    for i, image in enumerate(source_images):
        (digits / "3" / f"{i}.png").write_bytes(image.read_bytes())
    proc = run_cli("translate", "--ckpt", last, "--input", str(digits), "--output", str(tmp_path / "translated"),
                   "--device", "cpu", "--no_progress", cwd=tmp_path)
    assert "translated 5" in proc.stdout and len(list((tmp_path / "translated" / "3").glob("*.png"))) == 5
