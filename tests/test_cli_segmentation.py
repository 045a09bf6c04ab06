"""Segmentation end to end through the real ``syn2real fit`` on tiny GTA5 / SYNTHIA / Cityscapes trees in the official
layouts, prepared by the data-prep functions, chained the way a user chains stages: source-only -> output-space
adaptation, pixel self-training (from its checkpoint) and CyCADA (with it as the teacher)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from seg_runs import IMAGENET, fit, prepare_trees, seg_config

from syn2real.data.seg_labels import CITYSCAPES_CLASSES, SYNTHIA_16_CLASSES


def _load(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _check_metrics(m: dict, classes: list[str]) -> None:
    assert 0.0 <= m["target/miou"] <= 1.0 and 0.0 <= m["target/pixel_acc"] <= 1.0
    ious = {k[len("target/iou/"):]: v for k, v in m.items() if k.startswith("target/iou/")}
    assert set(ious) == set(classes)
    # null (NaN) only for a class absent from both the labels and the predictions; the mean skips it
    present = [v for v in ious.values() if v is not None]
    assert present and m["target/miou"] == pytest.approx(sum(present) / len(present), rel=1e-5)


def test_source_only_end_to_end(seg_source_run: Path) -> None:
    m = json.loads((seg_source_run / "metrics.json").read_text())
    assert m["stage"] == "fit" and m["global_step"] == 2 and m["world_size"] == 1  # 4 GTA5 images / batch 2
    _check_metrics(m, CITYSCAPES_CLASSES)
    ckpt = _load(seg_source_run)
    assert ckpt["global_step"] == 2
    assert ckpt["state_dict"]["model.classifier.branches.1.weight"].shape == (19, 512, 3, 3)
    state = ckpt["state_dict"]
    # frozen BatchNorm: no batch counter, statistics still the initial ones after training
    assert not any(k.startswith("model.backbone.") and k.endswith("num_batches_tracked") for k in state)
    assert torch.equal(state["model.backbone.bn1.running_var"], torch.ones(64))


def test_output_space_adaptation_from_the_source_checkpoint(gta2cs_lists: dict, seg_source_run: Path,
                                                            tmp_path: Path) -> None:
    start = str(seg_source_run / "checkpoints" / "last.ckpt")
    m = fit(seg_config("OutputSpaceAdaptation", gta2cs_lists, init_checkpoint=start, discriminator_channels=[8, 16],
                       entropy_weight=0.001), tmp_path / "advent")
    _check_metrics(m, CITYSCAPES_CLASSES)
    state = _load(tmp_path / "advent")["state_dict"]
    source = torch.load(start, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("discriminators.0.") for k in state)
    assert not torch.equal(state["model.classifier.branches.0.weight"], source["model.classifier.branches.0.weight"])


def test_self_training_writes_pseudo_label_pngs_and_its_round(seg_self_training_run: Path) -> None:
    run = seg_self_training_run
    pngs = sorted((run / "pseudo_labels").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(4)]
    for png in pngs:
        with Image.open(png) as img:
            label = np.array(img)
        assert img.mode == "L" and label.shape == (32, 64)  # the Cityscapes image size (no resize in eval)
        assert set(np.unique(label).tolist()) <= set(range(19)) | {255}
    rounds = json.loads((run / "self_training_rounds.json").read_text())["rounds"]
    assert len(rounds) == 1
    r = rounds[0]
    assert r["round"] == 0 and r["portion"] == 0.2 and r["pixels"] == 4 * 32 * 64 and 0 < r["kept"] < r["pixels"]
    assert r["classes"] == CITYSCAPES_CLASSES and len(r["thresholds"]) == 19
    assert 0.0 <= r["pseudo_label_acc"] <= 1.0  # the target list has labels: diagnostics only
    m = json.loads((run / "metrics.json").read_text())
    _check_metrics(m, CITYSCAPES_CLASSES)
    assert m["self_training_rounds"] == rounds
    state = _load(run)["callbacks"]["PixelPseudoLabelRounds"]
    assert state["round_idx"] == 0 and state["thresholds"].shape == (19,)
    # the training batches carried the written pseudo-labels (cropped with their images), not all-255 maps
    rows = list(csv.DictReader(next((run / "csv").rglob("metrics.csv")).open()))
    kept = [float(r["train/pseudo_kept"]) for r in rows if r.get("train/pseudo_kept")]
    assert len(kept) == 2 and all(0.0 < k < 1.0 for k in kept)
    assert all(float(r["train/mrkld"]) > 0 for r in rows if r.get("train/mrkld"))


def test_cycada_with_the_source_model_as_teacher(gta2cs_lists: dict, seg_source_run: Path, tmp_path: Path) -> None:
    teacher = str(seg_source_run / "checkpoints" / "last.ckpt")
    m = fit(seg_config("CyCADA", gta2cs_lists, teacher_checkpoint=teacher, pool_size=2,
                       generator={"ngf": 8, "n_blocks": 2, "channels": 3}, discriminator={"ndf": 8}, **IMAGENET),
            tmp_path / "cycada")
    _check_metrics(m, CITYSCAPES_CLASSES)
    assert m["global_step"] == 3 * 2  # generators, discriminators, task model per batch
    assert 0.0 <= m["translation/flip_ts"] <= 1.0
    state = _load(tmp_path / "cycada")["state_dict"]
    source = torch.load(teacher, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in source.items():  # the teacher is frozen
        assert torch.equal(state["teacher." + k[len("model."):]], v), k
    assert any(k.startswith("generator_st.") for k in state)


def test_synthia_16_classes_source_only(tmp_path: Path) -> None:
    lists = prepare_trees(tmp_path / "data", source="synthia", num_classes=16)
    assert lists["source"].parent.joinpath("classes.txt").read_text().split("\n")[:16] == SYNTHIA_16_CLASSES
    config = seg_config("SourceOnly", lists, num_classes=16)
    # predict at half resolution, score at the labels' native 64 x 32
    config["data"]["init_args"]["eval_transforms"].insert(0, {"name": "Resize", "height": 16, "width": 32})
    m = fit(config, tmp_path / "synthia16")
    _check_metrics(m, SYNTHIA_16_CLASSES)
    assert _load(tmp_path / "synthia16")["state_dict"]["model.classifier.branches.0.bias"].shape == (16,)


def test_a_class_count_mismatch_between_network_and_lists_fails_loudly(gta2cs_lists: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model.task.network.num_classes is 16 but the data has 19 classes"):
        fit(seg_config("SourceOnly", gta2cs_lists, num_classes=16), tmp_path / "mismatch")


def test_a_checkpoint_from_before_the_task_split_evaluates(gta2cs_lists: dict, seg_source_run: Path,
                                                         tmp_path: Path) -> None:
    """A segmentation checkpoint written before methods took a ``task:`` (``SegSourceOnly`` with ``network``,
    ``inference`` and ``aux_weight`` on the method) is evaluated with its own hyper-parameters, to the same numbers."""
    import os
    import sys

    from seg_runs import write_config

    from syn2real.command import main

    ckpt = _load(seg_source_run)
    hparams = dict(ckpt["hyper_parameters"])
    task = hparams.pop("task")["init_args"]
    hparams.update(_class_path="syn2real.methods.SegSourceOnly", **task)
    ckpt["hyper_parameters"] = hparams
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    config = seg_config("SourceOnly", gta2cs_lists)  # its model is replaced by the checkpoint's hyper-parameters
    file = write_config(config, tmp_path / "test.yaml")
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = ["syn2real"]
    try:
        main(["test", "--config", str(file), "--ckpt_path", str(old), "--trainer.default_root_dir",
              str(tmp_path / "eval_run"), "--eval_name", "old"])
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    m = json.loads((tmp_path / "eval_run" / "eval" / "old" / "metrics.json").read_text())
    fit_metrics = json.loads((seg_source_run / "metrics.json").read_text())
    assert m["target/miou"] == pytest.approx(fit_metrics["target/miou"], abs=1e-6)
