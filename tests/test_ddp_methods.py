"""Every method family under 2-process CPU DDP (gloo) through the real CLI.

Where the maths of the two runs is the same (the data module's sampler splits one seeded permutation between the
ranks, so 2 ranks x B is 1 process x 2B; no BatchNorm in training mode, no dropout; gradients averaged), the DDP run
must end with the single-process weights and metrics up to summation order: DANN (automatic optimisation,
discriminator behind a gradient reversal layer), CBST (pseudo-label thresholds from the confidences of both ranks),
ADDA (manual, two optimisers, the gate decided on the global batch) and ASG (frozen guide, frozen BatchNorm).
Where it is not (CyCADA's image pools hold each rank's own fakes, EnlightenGAN's random patches, AdaptSegNet/AdvEnt's
random crops and BatchNorm), the run must finish with finite metrics and both ranks must hold the same weights
(:class:`ddp_checks.ParameterChecksums`). Single-process references run in this process (no interpreter start-up).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, config_args, make_visda17_tree, write_png
from ddp_checks import read_checksums
from seg_runs import fit, seg_config, write_config

DIGITS = REPO / "configs" / "digits"
STEPS = 4
COMMON = [
    "--data.init_args.n_synthetic", "640",
    "--data.init_args.source_val_fraction", "0.0",
    "--data.init_args.target_split", "0.1",   # 500 held-out real digits: 2 ranks x 250
    "--data.init_args.eval_batch_size", "250",
    "--trainer.accelerator", "cpu",
    "--trainer.max_steps", str(STEPS),
    "--model.init_args.task.init_args.network.backbone_kwargs", "{batch_norm: false}",
    "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false",
    "--trainer.num_sanity_val_steps", "0",
    "--checkpoint.monitor", "null",
    "--media.every_n_steps", "0",
]


class DDPRuns:
    """Background ``syn2real fit`` runs on 2 CPU processes each, a few at a time: on a machine shared with other jobs
    the runs of the module overlap each other and the single-process references that run in this process."""

    def __init__(self, workers: int = 3) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.jobs: dict[str, tuple[Path, Future]] = {}
        # a fixed copy: the in-process references restore os.environ while the threads start their subprocesses
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}

    def submit(self, name: str, config: str | Path, run: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "syn2real.cli", "fit", *config_args(config), *args, "--trainer.devices", "2",
               "--trainer.strategy", "ddp", "--trainer.callbacks+", "ddp_checks.ParameterChecksums",
               "--trainer.default_root_dir", str(run)]
        run.parent.mkdir(parents=True, exist_ok=True)
        job = partial(subprocess.run, cmd, cwd=run.parent, env=self.env, capture_output=True, text=True, timeout=600)
        self.jobs[name] = (run, self.pool.submit(job))

    def result(self, name: str) -> tuple[Path, dict[str, Any]]:
        """The run's folder and metrics, once both ranks finished with the same weights."""
        run, future = self.jobs[name]
        proc = future.result()
        assert proc.returncode == 0, f"DDP fit {name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        sums = read_checksums(run)
        assert len(sums) == 2 and sums[0], f"expected the checksums of 2 ranks in {run}"
        differing = [name for name in sums[0] if sums[0][name] != sums[1][name]]
        assert not differing, f"ranks ended with different weights: {differing[:5]}"
        assert all(math.isfinite(v) for pair in sums[0].values() for v in pair)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["world_size"] == 2
        return run, metrics


def _merged(first: Any, then: Any) -> Any:
    """``then`` over ``first`` as repeated ``--config`` combines these files: mappings key by key, the rest replaced."""
    if isinstance(first, dict) and isinstance(then, dict):
        return {**first, **{key: _merged(first[key], value) if key in first else value for key, value in then.items()}}
    return then


def single(config: str | Path, run: Path, *args: str) -> dict[str, Any]:
    """The same fit in one process (in this one); a method's config over the base.yaml of its folder."""
    composed: dict[str, Any] = {}
    for file in config_args(config)[1::2]:
        composed = _merged(composed, yaml.safe_load(Path(file).read_text()))
    metrics = fit(composed, run, *args, "--trainer.devices", "1")
    assert metrics["world_size"] == 1
    return metrics


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if v.is_floating_point()}


def assert_same_run(a_run: Path, b_run: Path, a: dict, b: dict, keys: tuple[str, ...], n_eval: int,
                    atol: float) -> None:
    """Same steps, weights equal up to ``atol``, metrics equal up to one flipped prediction of ``n_eval``."""
    assert a["global_step"] == b["global_step"] == STEPS
    wa, wb = weights(a_run), weights(b_run)
    assert wa.keys() == wb.keys()
    worst = max((float((wa[k] - wb[k]).abs().max()), k) for k in wa)
    assert worst[0] <= atol, worst
    for key in keys:
        assert abs(a[key] - b[key]) <= 1 / n_eval + 1e-9, (key, a[key], b[key])


def visda_args(visda: Path) -> list[str]:
    """configs/visda17/asg.yaml shrunk: a tiny timm ResNet (no ImageNet file offline), 32 px, CPU, no logger."""
    tf = "[{name: Resize, height: 32, width: 32}, {name: Normalize, mean: [0.485, 0.456, 0.406], " \
         "std: [0.229, 0.224, 0.225]}]"
    return [
        "--model.init_args.task.init_args.network.backbone", "test_resnet", "--model.init_args.task.init_args.network.bottleneck_dim", "16",
        "--data.init_args.source.root", str(visda / "train"), "--data.init_args.target.root", str(visda / "validation"),
        "--data.init_args.num_workers", "0", "--data.init_args.eval_batch_size", "12",
        "--data.init_args.source_val_fraction", "0.0",
        "--data.init_args.train_transforms", tf, "--data.init_args.eval_transforms", tf,
        "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.num_sanity_val_steps", "0", "--checkpoint.monitor", "null", "--trainer.max_steps", str(STEPS),
    ]


DIGITS_FAMILIES = {  # config, extra arguments (the stage-1 checkpoint is appended where the method needs one)
    "dann": ["--model.init_args.discriminator.dropout", "0.0"],  # per-rank dropout masks are not one process's
    "cbst": ["--model.init_args.init_checkpoint"],
    "adda": ["--model.init_args.source_checkpoint"],
}
CYCADA = [*COMMON, "--data.init_args.batch_size", "16", "--model.init_args.generator.ngf", "4",
          "--model.init_args.generator.n_blocks", "1", "--model.init_args.discriminator.ndf", "4",
          "--model.init_args.pool_size", "8", "--model.init_args.teacher_checkpoint"]
ENLIGHTEN = ["--data.init_args.crop_size", "40", "--data.init_args.batch_size", "1", "--data.init_args.repeat", "2",
             "--model.init_args.generator.ngf", "4", "--model.init_args.discriminator.ndf", "4",
             "--trainer.max_steps", "3", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
             "--trainer.logger", "false", "--media.every_n_steps", "0"]


def digits_args(family: str, checkpoint: Path) -> list[str]:
    extra = DIGITS_FAMILIES[family]
    return [*COMMON, *extra, str(checkpoint)] if extra[-1].endswith("checkpoint") else [*COMMON, *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, gta2cs_lists: dict) -> Iterator[dict[str, Any]]:
    """Starts every DDP fit of the module in the background; the tests wait for theirs."""
    root = tmp_path_factory.mktemp("ddp_methods")
    jobs = DDPRuns()
    visda = make_visda17_tree(root / "visda17", per_class=2, size=40)
    jobs.submit("asg", REPO / "configs" / "visda17" / "asg.yaml", root / "asg" / "ddp", *visda_args(visda),
                "--data.init_args.batch_size", "4")
    jobs.submit("dann", DIGITS / "dann.yaml", root / "dann" / "ddp", *digits_args("dann", Path()),
                "--data.init_args.batch_size", "16")
    osa = write_config(seg_config("OutputSpaceAdaptation", gta2cs_lists), root / "osa" / "osa.yaml")
    jobs.submit("osa", osa, root / "osa" / "ddp", "--data.init_args.batch_size", "1")

    from syn2real.data.lowlight import prepare_lowlight

    rng = np.random.default_rng(0)
    for i in range(8):
        write_png(root / "photos" / f"p{i}.png", rng.integers(40, 230, size=(40, 48, 3), dtype=np.uint8))
    prepare_lowlight(root / "photos", root / "lowlight", seed=0)
    jobs.submit("enlightengan", REPO / "configs" / "enlightengan" / "lowlight_photos.yaml", root / "enlightengan" / "ddp",
                "--data.init_args.root", str(root / "lowlight"), *ENLIGHTEN)

    # stage 1 of ADDA, CyCADA and CBST: a briefly trained source-only digits model without BatchNorm
    source = root / "source_only"
    single(DIGITS / "source_only.yaml", source, *COMMON, "--data.init_args.batch_size", "32", "--trainer.max_steps", "10")
    checkpoint = source / "checkpoints" / "last.ckpt"
    for family in ("cbst", "adda"):
        jobs.submit(family, DIGITS / f"{family}.yaml", root / family / "ddp", *digits_args(family, checkpoint),
                    "--data.init_args.batch_size", "16")
    jobs.submit("cycada", DIGITS / "cycada_pixel.yaml", root / "cycada" / "ddp", *CYCADA, str(checkpoint))
    yield {"jobs": jobs, "checkpoint": checkpoint, "visda": visda}
    jobs.pool.shutdown(wait=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dann", "cbst", "adda"])
def test_ddp_matches_single_process(family: str, runs: dict[str, Any]) -> None:
    single_run = runs["jobs"].jobs[family][0].parent / "single"  # while the DDP fit runs in the background
    a = single(DIGITS / f"{family}.yaml", single_run, *digits_args(family, runs["checkpoint"]),
               "--data.init_args.batch_size", "32")
    ddp_run, b = runs["jobs"].result(family)
    # Adam (ADDA) normalises each gradient: a summation-order difference in a near-zero one moves a weight by ~lr
    assert_same_run(single_run, ddp_run, a, b, ("target/acc", "target/acc_class_mean"), 500,
                    atol=1e-3 if family == "adda" else 1e-5)
    if family == "cbst":  # round 0 labels the target before any step: thresholds from the gathered confidences
        ra, rb = a["self_training_rounds"], b["self_training_rounds"]
        assert len(ra) == len(rb) == 1
        assert np.allclose(ra[0]["thresholds"], rb[0]["thresholds"], atol=1e-6)
        assert ra[0]["kept"] == rb[0]["kept"]
    if family == "adda":  # a trained stage 1 (the gate then decides on a meaningful accuracy)
        assert a["target/acc"] > 0.2


@pytest.mark.slow
def test_asg_ddp_matches_single_process(runs: dict[str, Any]) -> None:
    """Frozen ImageNet guide and frozen BatchNorm: the maths of 2 x 4 images is that of 1 x 8."""
    single_run = runs["jobs"].jobs["asg"][0].parent / "single"
    with pytest.warns(UserWarning, match="random classifier"):  # no ImageNet file offline
        a = single(REPO / "configs" / "visda17" / "asg.yaml", single_run, *visda_args(runs["visda"]),
                   "--data.init_args.batch_size", "8")
    ddp_run, b = runs["jobs"].result("asg")
    assert_same_run(single_run, ddp_run, a, b, ("target/acc",), 24, atol=1e-5)
    state = torch.load(single_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    tracked = {k: int(v) for k, v in state.items() if k.startswith("model.") and k.endswith("num_batches_tracked")}
    assert tracked and not any(tracked.values()), "freeze_bn: BatchNorm statistics must not move in training"


@pytest.mark.slow
def test_cycada_pixel_ranks_stay_synchronised(runs: dict[str, Any]) -> None:
    """Three optimisers, discriminators frozen during the generator step, one image pool per rank."""
    _, m = runs["jobs"].result("cycada")
    assert m["global_step"] >= STEPS  # manual optimisation counts every optimiser's steps
    assert math.isfinite(m["target/acc"]) and math.isfinite(m["translation/flip_ts"])


@pytest.mark.slow
def test_enlightengan_ranks_stay_synchronised(runs: dict[str, Any]) -> None:
    """Three optimisers on the unpaired low/normal-light module, random patches and a pool per rank."""
    _, m = runs["jobs"].result("enlightengan")
    assert m["global_step"] >= 3 and math.isfinite(m["target/psnr"]) and math.isfinite(m["target/ssim"])


@pytest.mark.slow
def test_output_space_adaptation_ranks_stay_synchronised(runs: dict[str, Any]) -> None:
    """Two backward passes into the segmenter before its step, then the discriminator's; per-rank random crops."""
    _, m = runs["jobs"].result("osa")
    assert m["global_step"] == 4  # 4 source images, 2 ranks x 1, one epoch: 2 batches x 2 optimiser steps
    assert math.isfinite(m["target/miou"])
