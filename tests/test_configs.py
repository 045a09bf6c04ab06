"""Every config of ``configs/`` parses with its base (README "Composed configs"): the method class, its task and
every key exist, so a config never rots silently when code moves (e.g. the network under ``model.init_args.task``)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import yaml

from conftest import config_args
from syn2real.command import base_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if base_config(p) is not None)


def _parsed(*files: Path) -> dict:
    from syn2real.command import main

    out = io.StringIO()
    environ = dict(os.environ)
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main(["fit", *config_args(*files), "--print_config"])
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert done.value.code in (None, 0), out.getvalue()
    return yaml.safe_load(out.getvalue())


@pytest.mark.slow
def test_every_method_config_parses_with_its_base() -> None:
    assert len(CONFIGS) > 40
    for path in CONFIGS:
        config = _parsed(path)
        model = config["model"]
        task = model["init_args"].get("task")
        assert task is not None and task["class_path"] in (
            "syn2real.tasks.Classification", "syn2real.tasks.Segmentation"
        ) or model["class_path"] == "syn2real.methods.EnlightenGAN", path
        segmentation = path.parent.name in ("digits_seg", "gta2cityscapes", "synthia2cityscapes")
        if task is not None:
            assert task["class_path"].endswith("Segmentation") == segmentation, path


@pytest.mark.parametrize("method", ["cbst", "crst", "drst"])
def test_after_adaptation_overlay_applies_to_every_self_training_config(method: str) -> None:
    """configs/digits/after_adaptation.yaml goes after a self-training config and changes only what it names."""
    digits = REPO / "configs" / "digits"
    plain = _parsed(digits / f"{method}.yaml")["model"]
    config = _parsed(digits / f"{method}.yaml", digits / "after_adaptation.yaml")
    model = config["model"]
    assert model["class_path"] == plain["class_path"]
    args = model["init_args"]
    assert args["source_weight"] == 0.1
    assert (args["rounds"]["portion_start"], args["rounds"]["portion_step"], args["rounds"]["portion_cap"]) == (
        0.8, 0.05, 0.9)
    assert (args["optim"]["name"], args["optim"]["lr"], args["optim"]["momentum"]) == ("sgd", 0.001, 0.9)
    assert args["rounds"]["epochs_per_round"] == plain["init_args"]["rounds"]["epochs_per_round"]
    assert args["target_weight"] == plain["init_args"]["target_weight"]
    assert config["checkpoint"]["monitor"] == "target/validator/snd"


@pytest.mark.parametrize("folder", ["digits", "digits_seg"])
def test_randconv_overlay_applies_after_source_only(folder: str) -> None:
    """configs/<folder>/ablations/randconv.yaml adds the paper's RC_mix + consistency to the source-only config, with
    split BatchNorm (our networks have BatchNorm)."""
    configs = REPO / "configs" / folder
    config = _parsed(configs / "source_only.yaml", configs / "ablations" / "randconv.yaml")
    augment = config["model"]["init_args"]["augment"]
    assert augment["class_path"] == "syn2real.adversarial.RandConv"
    assert augment["init_args"] == {"kernel_sizes": [1, 3, 5, 7], "mixing": True, "identity_prob": 0.0,
                                    "weight": 10.0, "split_bn": True, "ignore_index": 255}
