"""Shared fixtures: tiny image trees written in real layouts, an isolated cache, CLI helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Never talk to W&B servers from tests; every run stays offline on disk.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
REPO = Path(__file__).resolve().parents[1]


def config_args(*configs: str | Path) -> list[str]:
    """``--config`` arguments for configs of ``configs/``: a method's file after the ``base.yaml`` of its folder
    (README "Composed configs"), overlays and files without a base as given."""
    from syn2real.command import base_config

    args: list[str] = []
    for config in configs:
        base = base_config(Path(config))
        args += [*(["--config", str(base)] if base is not None else []), "--config", str(config)]
    return args


def tiny_digits_args(max_steps: int) -> list[str]:
    """CLI overrides for a few-second digits fit on the CPU: 200 synthetic digits, batch 16, 2 % of the real digits
    held out, one validation batch, no logger, no progress bar, no sanity check, ``max_steps`` steps."""
    return [
        "--data.init_args.n_synthetic", "200",
        "--data.init_args.batch_size", "16",
        "--data.init_args.target_split", "0.02",
        "--data.init_args.source_val_fraction", "0.1",
        "--trainer.max_steps", str(max_steps),
        "--trainer.accelerator", "cpu",
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.limit_val_batches", "1",
    ]


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_class_tree(root: Path, classes: list[str], per_class: int, size: int = 28, mode: str = "L", seed: int = 0) -> Path:
    """``<root>/<class>/<i>.png`` with a class-dependent bright square so the classes are learnable."""
    rng = np.random.default_rng(seed)
    for c_idx, name in enumerate(classes):
        for i in range(per_class):
            img = rng.integers(0, 40, size=(size, size), dtype=np.uint8)
            r = 2 + 3 * (c_idx % 6)
            img[r : r + 6, r : r + 6] = 255
            if mode == "RGB":
                img = np.stack([img] * 3, axis=-1)
            write_png(root / name / f"{i:03d}.png", img)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYN2REAL_CACHE", str(tmp_path_factory.getbasetemp() / "syn2real_cache"))
    # seed_everything exports the run's seed, which the training samplers read: a test that seeds must not decide
    # the order another test's loaders draw (restored after the test by monkeypatch)
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    return make_class_tree(tmp_path / "domain", ["0", "1", "2"], per_class=8)


VISDA17_CLASSES = ["aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
                   "skateboard", "train", "truck"]


def make_visda17_tree(root: Path, per_class: int = 2, size: int = 40, seed: int = 0) -> Path:
    """A tiny VisDA-2017 download: ``train/<class>/*.png`` renders and ``validation/<class>/*.jpg`` photos, each split
    with its ``image_list.txt`` of ``<class>/<file> <label>`` lines; class c has a bright square at a c-dependent spot."""
    rng = np.random.default_rng(seed)
    for split, ext in (("train", "png"), ("validation", "jpg")):
        lines = []
        for label, name in enumerate(VISDA17_CLASSES):
            for i in range(per_class):
                img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
                r, c = 2 + 8 * (label // 4), 2 + 8 * (label % 4)
                img[r : r + 8, c : c + 8] = 255
                rel = f"{name}/{split}_{label:02d}_{i}.{ext}"
                write_png(root / split / rel, img)
                lines.append(f"{rel} {label}")
        (root / split / "image_list.txt").write_text("\n".join(lines) + "\n")
    return root


# -- segmentation runs shared by the CLI and DDP tests (tests/seg_runs.py) --------------------------------------


@pytest.fixture(scope="session")
def gta2cs_lists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny GTA5 + Cityscapes trees in the official layouts, prepared (19 classes)."""
    from seg_runs import prepare_trees

    return prepare_trees(tmp_path_factory.mktemp("gta2cs"))


@pytest.fixture(scope="session")
def seg_source_run(gta2cs_lists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch segmentation SourceOnly run (sliding-window evaluation): the starting point of the adaptation stages."""
    from seg_runs import SLIDE, fit, seg_config

    run = tmp_path_factory.mktemp("seg_source") / "source_only"
    fit(seg_config("SourceOnly", gta2cs_lists, inference=SLIDE), run)
    return run


def seg_self_training_config(lists: dict[str, Path], source_run: Path, log_dir: Path) -> dict:
    """One epoch of CRST-MRKLD from the source-only checkpoint; per-step losses in ``<log_dir>/csv``."""
    from seg_runs import seg_config

    config = seg_config("SelfTraining", lists, init_checkpoint=str(source_run / "checkpoints" / "last.ckpt"),
                        variant="mrkld", rounds={"epochs_per_round": 1, "bins": 1000})
    config["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                   "init_args": {"save_dir": str(log_dir), "name": "csv"}}
    return config


@pytest.fixture(scope="session")
def seg_self_training_run(gta2cs_lists: dict[str, Path], seg_source_run: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of pixel self-training (CRST-MRKLD) from the source-only checkpoint, single process."""
    from seg_runs import fit

    run = tmp_path_factory.mktemp("seg_st") / "self_training"
    fit(seg_self_training_config(gta2cs_lists, seg_source_run, run), run)
    return run
