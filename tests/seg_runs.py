"""Segmentation runs through the real CLI on tiny official-layout trees: the trees and their preparation, a shrunk
config per method (resnet18, ASPP rates 1/2, 32x32 crops, one epoch) and an in-process ``syn2real fit``."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from seg_layouts import make_cityscapes_tree, make_gta5_tree, make_synthia_tree

from syn2real.data.seg_prep import prepare_cityscapes, prepare_gta5, prepare_synthia

NORMALIZE = {"name": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
IMAGENET = {"pixel_mean": NORMALIZE["mean"], "pixel_std": NORMALIZE["std"]}
SLIDE = {"mode": "slide", "window": [32, 32], "stride": [24, 24]}


def prepare_trees(root: Path, source: str = "gta5", num_classes: int = 19) -> dict[str, Path]:
    """Tiny GTA5 (or SYNTHIA) + Cityscapes downloads, prepared; returns the list files."""
    root.mkdir(parents=True, exist_ok=True)
    if source == "gta5":
        prepare_gta5(make_gta5_tree(root / "GTA5", n=4, size=(64, 32)), num_classes=num_classes)
        src = root / "GTA5" / "syn2real" / f"{num_classes}classes"
    else:
        prepare_synthia(make_synthia_tree(root / "SYNTHIA", n=4, size=(64, 32)), num_classes=num_classes)
        src = root / "SYNTHIA" / "syn2real" / f"{num_classes}classes"
    prepare_cityscapes(make_cityscapes_tree(root / "cityscapes", n_train=4, n_val=2, size=(64, 32)),
                       num_classes=num_classes)
    tgt = root / "cityscapes" / "syn2real" / f"{num_classes}classes"
    return {"source": src / "train.txt", "target": tgt / "train.txt", "target_eval": tgt / "val.txt"}


def seg_config(method: str, lists: dict[str, Path], num_classes: int = 19, **init_args: Any) -> dict[str, Any]:
    """The shrunk config of ``syn2real.methods.<method>`` for segmentation (CPU, one epoch, no logger, no W&B media);
    ``inference`` goes to the task, the other ``init_args`` to the method."""
    task_args = {"network": {"backbone": "resnet18", "num_classes": num_classes, "aspp_rates": [1, 2]}}
    if "inference" in init_args:
        task_args["inference"] = copy.deepcopy(init_args.pop("inference"))
    return {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 1},
        "model": {"class_path": f"syn2real.methods.{method}",
                  "init_args": {"task": {"class_path": "syn2real.tasks.Segmentation", "init_args": task_args},
                                **copy.deepcopy(init_args)}},
        "data": {"class_path": "syn2real.data.SegmentationDataModule", "init_args": {
            "source": {"list_file": str(lists["source"])},
            "target": {"list_file": str(lists["target"]), "labelled": True},
            "target_eval": {"list_file": str(lists["target_eval"])},
            "batch_size": 2, "eval_batch_size": 1, "num_workers": 0,
            "train_transforms": [{"name": "RandomCrop", "height": 32, "width": 32},
                                 {"name": "HorizontalFlip", "p": 0.5}, NORMALIZE],
            "eval_transforms": [NORMALIZE],
            "eval_label_resolution": "native",
        }},
        "checkpoint": {"monitor": None},
        "media": {"every_n_steps": 0, "save_confusion_png": False},
    }


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fit(config: dict[str, Any], run: Path, *extra: str) -> dict[str, Any]:
    """``syn2real fit --config <config> --trainer.default_root_dir <run> *extra`` in this process; metrics.json."""
    from syn2real.command import main

    file = write_config(config, run.parent / f"{run.name}.yaml")
    argv, sys.argv = sys.argv, ["syn2real"]  # LightningCLI warns when pytest's own arguments are on sys.argv
    environ = dict(os.environ)  # seed_everything exports PL_GLOBAL_SEED / PL_SEED_WORKERS: keep other tests clean
    try:
        main(["fit", "--config", str(file), "--trainer.default_root_dir", str(run), *extra])
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    return json.loads((run / "metrics.json").read_text())
