"""Mean-teacher self-training (DACS, MIC) end to end through the real ``syn2real fit`` on the tiny GTA5 / Cityscapes
trees, from the source-only checkpoint: the teacher is checkpointed, a resumed run ends where the uninterrupted one
does, and two CPU DDP processes train the weights (student and teacher) of one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from seg_runs import IMAGENET, fit, seg_config, write_config
from test_cli import run_cli

from syn2real.data.seg_labels import CITYSCAPES_CLASSES

MIC = {"mask": {"block": 8, "ratio": 0.7}}


def _config(lists: dict, source_run: Path, **init_args) -> dict:
    config = seg_config("MeanTeacher", lists, init_checkpoint=str(source_run / "checkpoints" / "last.ckpt"),
                        pixel_mean=IMAGENET["pixel_mean"], pixel_std=IMAGENET["pixel_std"], **init_args)
    return config


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_dacs_and_mic_train_from_the_source_checkpoint(gta2cs_lists: dict, seg_source_run: Path,
                                                       tmp_path: Path) -> None:
    m = fit(_config(gta2cs_lists, seg_source_run, **MIC), tmp_path / "mic")
    assert m["global_step"] == 2 and 0.0 <= m["target/miou"] <= 1.0
    assert {f"target/iou/{c}" for c in CITYSCAPES_CLASSES} <= m.keys()
    ckpt = _state(tmp_path / "mic")
    state = ckpt["state_dict"]
    assert int(state["ema_step"]) == 1  # averaged before the second step
    source = torch.load(seg_source_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    key = "model.classifier.branches.0.weight"
    teacher, student, start = state["teacher." + key[len("model."):]], state[key], source["state_dict"][key]
    assert not torch.equal(student, start) and not torch.equal(teacher, student)
    # after one update with α_1 = 0.5: the teacher is the mean of the start and the student after step 1
    assert float((teacher - start).abs().max()) > 0
    hp = ckpt["hyper_parameters"]
    assert hp["mask"] == {"block": 8, "ratio": 0.7, "weight": 1.0, "strong": True} and hp["mix"] == "classmix"


def _two_epochs(lists: dict, source_run: Path) -> dict:
    # a constant lr: the stopped half run's schedule would otherwise be planned over its own 2 steps
    config = _config(lists, source_run, optim={"name": "adam", "lr": 1e-4, "scheduler": "none"}, **MIC)
    config["trainer"]["max_epochs"] = 2
    return config


@pytest.fixture(scope="module")
def full_run(gta2cs_lists: dict, seg_source_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs (4 steps) of DACS + MIC in one process, batch 2."""
    run = tmp_path_factory.mktemp("mean_teacher") / "full"
    fit(_two_epochs(gta2cs_lists, seg_source_run), run)
    return run


@pytest.mark.slow
def test_resumed_mean_teacher_run_equals_the_uninterrupted_run(gta2cs_lists: dict, seg_source_run: Path,
                                                               full_run: Path, tmp_path: Path) -> None:
    config = _two_epochs(gta2cs_lists, seg_source_run)
    half = tmp_path / "half"
    first = json.loads(json.dumps(config))
    first["trainer"]["max_epochs"] = 1
    fit(first, half)
    resumed = tmp_path / "resumed"
    fit(config, resumed, "--ckpt_path", str(half / "checkpoints" / "last.ckpt"))
    a, b = _state(full_run), _state(resumed)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k  # student, teacher, ema_step and draw_seed


@pytest.mark.slow
def test_two_ddp_processes_train_the_single_process_student_and_teacher(gta2cs_lists: dict, seg_source_run: Path,
                                                                        full_run: Path, tmp_path: Path) -> None:
    """2 ranks × 1 image = 1 process × 2: per-image draws (ClassMix, strong view, masks) seeded by the image's place in
    the global batch, the confidence share all-reduced, losses means over equal per-rank batches, frozen BatchNorm."""
    config = _two_epochs(gta2cs_lists, seg_source_run)
    ddp = tmp_path / "ddp"
    file = write_config(config, tmp_path / "ddp.yaml")
    run_cli("fit", "--config", str(file), "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--data.init_args.batch_size", "1", "--trainer.default_root_dir", str(ddp), cwd=tmp_path)
    assert json.loads((ddp / "metrics.json").read_text())["world_size"] == 2
    a, b = _state(full_run), _state(ddp)
    assert a["global_step"] == b["global_step"] == 4
    floats = [k for k, v in a["state_dict"].items() if v.is_floating_point()]
    assert any(k.startswith("teacher.") for k in floats)
    worst = max((float((a["state_dict"][k] - b["state_dict"][k]).abs().max()), k) for k in floats)
    assert worst[0] < 1e-5, worst


@pytest.mark.slow
def test_daformer_ingredients_train_end_to_end(gta2cs_lists: dict, seg_source_run: Path, tmp_path: Path) -> None:
    """DAFormer's switches together on a CNN: the DAFormer decoder, its optimiser (warm-up, no decay on norms), the
    ImageNet feature distance (thing classes found by name) and rare-class sampling of the source."""
    config = seg_config("MeanTeacher", gta2cs_lists, pixel_mean=IMAGENET["pixel_mean"], pixel_std=IMAGENET["pixel_std"],
                        ema_momentum=0.999, ignore_top=2, ignore_bottom=4, feature_distance={"weight": 0.005},
                        optim={"name": "adamw", "lr": 6e-4, "backbone_lr_mult": 0.1, "weight_decay": 0.01,
                               "scheduler": "poly", "power": 1.0, "warmup_steps": 1, "warmup_mode": "scale",
                               "warmup_ratio": 1e-6, "no_decay_keys": ["norm", "pos_embed", "pos_block"]})
    network = config["model"]["init_args"]["task"]["init_args"]["network"]
    network.update(head="daformer", daformer_channels=16, output_stride=32)
    config["data"]["init_args"]["rare_class_sampling"] = {"temperature": 0.01}
    run = tmp_path / "daformer"
    m = fit(config, run)
    assert m["global_step"] == 2 and 0.0 <= m["target/miou"] <= 1.0
    state = _state(run)["state_dict"]
    imagenet = {k[len("imagenet."):]: v for k, v in state.items() if k.startswith("imagenet.")}
    convs = [k for k, v in imagenet.items() if v.ndim == 4]
    # the frozen copy is the encoder as built (its `weights`), taken before init_checkpoint loaded the source run
    assert convs and all(not torch.equal(imagenet[k], state["model.backbone." + k]) for k in convs)
    assert any(k.startswith("model.classifier.fuse.") for k in state)  # the separable-ASPP fusion of DAFormer
