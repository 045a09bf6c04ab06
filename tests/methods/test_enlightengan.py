"""The EnlightenGAN method: one step trains the three networks and never the extractor; patches; checkpoints;
end to end through the CLI (fit -> enhance)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO, config_args, write_png
from test_cli import run_cli

from syn2real.data.lowlight import prepare_lowlight
from syn2real.data.unpaired import UnpairedImageDataModule
from syn2real.methods import EnlightenGAN
from syn2real.methods.enlightengan import crop_patches, random_patch_corners
from syn2real.models.enlighten import EnlightenDiscriminatorConfig, EnlightenGeneratorConfig
from syn2real.models.perceptual import FeatureExtractorConfig


def _method(**kwargs: object) -> EnlightenGAN:
    return EnlightenGAN(
        generator=EnlightenGeneratorConfig(ngf=4, depth=3), discriminator=EnlightenDiscriminatorConfig(ndf=4),
        perceptual=FeatureExtractorConfig("vgg16", "random"), n_patches=2, patch_size=32, **kwargs,  # type: ignore[arg-type]
    )


def _photos(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(root / f"p{i}.png", rng.integers(40, 230, size=(40, 48, 3), dtype=np.uint8))
    return root


def test_patches_same_locations_image_major() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    corners = torch.tensor([[[0, 0], [2, 3]], [[4, 1], [1, 1]]])
    patches = crop_patches(x, corners, 2)
    assert patches.shape == (4, 1, 2, 2)
    assert torch.equal(patches[1], x[0, :, 2:4, 3:5]) and torch.equal(patches[2], x[1, :, 4:6, 1:3])
    torch.manual_seed(0)
    c = random_patch_corners(3, 5, 20, 30, 8)
    assert c.shape == (3, 5, 2) and int(c[..., 0].max()) <= 12 and int(c[..., 1].max()) <= 22
    with pytest.raises(ValueError, match="larger than the training images"):
        random_patch_corners(1, 1, 10, 10, 16)
    with pytest.raises(ValueError, match="corners must have shape"):
        crop_patches(x, corners[:1], 2)


def test_one_training_step_updates_generator_and_discriminators_not_the_extractor(tmp_path: Path) -> None:
    L.seed_everything(0)
    out = tmp_path / "lowlight"
    prepare_lowlight(_photos(tmp_path / "photos"), out, seed=0)
    dm = UnpairedImageDataModule(root=str(out), crop_size=40, batch_size=2, num_workers=0)
    method = _method()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    trainer = L.Trainer(
        max_steps=3, limit_val_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(method, datamodule=dm)
    after = method.state_dict()
    for prefix in ("generator.", "discriminator_global.", "discriminator_local."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("perceptual."))
    assert len(method.pool.images) == 2
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"target/psnr", "target/ssim", "target/psnr_input", "train/generator_sfp"} <= set(metrics)
    assert np.isfinite(metrics["target/psnr"])


def test_bn_recalibration_is_the_exact_average_of_the_batch_statistics() -> None:
    method = _method(bn_recalibration=2)
    norms = [m for m in method.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen: list[torch.Tensor] = []
    norms[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    torch.manual_seed(1)
    batches = [{"low": (torch.rand(3, 3, 16, 16) * 2 - 1,)} for _ in range(3)]
    method.generator.eval()
    torch.manual_seed(5)
    assert method.recalibrate_batchnorm(batches) == 2  # stops at bn_recalibration batches
    assert len(seen) == 2 and not method.generator.training and norms[0].momentum == 0.1
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen]).mean(0)
    torch.testing.assert_close(norms[0].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norms[0].running_var, var, rtol=1e-5, atol=1e-6)
    assert int(norms[0].num_batches_tracked) == 2
    expected = torch.Generator().manual_seed(5)
    assert torch.equal(torch.rand(2), torch.rand(2, generator=expected))  # the global stream did not move
    with pytest.raises(ValueError, match="bn_recalibration"):
        _method(bn_recalibration=-1)


def test_checkpoint_drops_the_extractor_and_restores_the_pool(tmp_path: Path) -> None:
    method = _method()
    method.pool.query(torch.rand(2, 3, 8, 8))
    ckpt = {"state_dict": method.state_dict()}
    method.on_save_checkpoint(ckpt)
    assert not any(k.startswith("perceptual.") for k in ckpt["state_dict"])
    fresh = _method()
    fresh.on_load_checkpoint(ckpt)
    assert len(fresh.pool.images) == 2
    with pytest.raises(ValueError, match="lacks EnlightenGAN weights"):
        fresh.on_load_checkpoint({"state_dict": {}})


def test_loss_weights_and_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="lambda_local"):
        _method(lambda_local=-1.0)
    with pytest.raises(ValueError, match="instance normalisation needs at least 32 px"):
        EnlightenGAN(generator=EnlightenGeneratorConfig(ngf=4, depth=3), perceptual=FeatureExtractorConfig("vgg16", "random"),
                     patch_size=16)
    with pytest.raises(ValueError, match="needs local weights"):
        EnlightenGAN(generator=EnlightenGeneratorConfig(ngf=4, depth=3))


@pytest.mark.slow
def test_fit_then_enhance_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "lowlight"
    prepare_lowlight(_photos(tmp_path / "photos", n=8), data, seed=0)
    run = tmp_path / "run"
    run_cli(
        "fit", *config_args(REPO / "configs" / "enlightengan" / "lowlight_photos.yaml"),
        "--data.init_args.root", str(data), "--data.init_args.crop_size", "40", "--data.init_args.batch_size", "2",
        "--data.init_args.repeat", "2", "--model.init_args.generator.ngf", "4", "--model.init_args.discriminator.ndf", "4",
        "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--media.every_n_steps", "2",
        "--trainer.default_root_dir", str(run), cwd=tmp_path,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("target/psnr", "target/ssim", "target/psnr_input", "target/ssim_input", "target/brightness"):
        assert np.isfinite(metrics[key]), key
    assert metrics["stage"] == "fit" and len(metrics["eval_history"]) == 2
    assert 0 < metrics["bn_recalibrated_batches"] <= 18  # at most one pass over this tiny set
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert "generator.out.weight" in ckpt["state_dict"] and not any(k.startswith("perceptual.") for k in ckpt["state_dict"])
    assert (run / "media" / "enhancement_train.png").is_file()
    # resume from last.ckpt (the extractor is rebuilt, not loaded) for one more epoch
    run_cli(
        "fit", "--config", str(run / "config.yaml"), "--trainer.max_epochs", "3", "--ckpt_path", "last", cwd=tmp_path,
    )
    assert json.loads((run / "metrics.json").read_text())["epoch"] == 3
    out = tmp_path / "enhanced"
    proc = run_cli("enhance", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--input", str(data / "test" / "low"),
                   "--output", str(out), "--device", "cpu", "--no_progress",
                   "--reference", str(data / "test" / "reference"), cwd=tmp_path)
    assert "enhanced 2" in proc.stdout
    scores = json.loads((out / "enhance_eval.json").read_text())
    assert set(scores["enlightengan"]) == {"psnr_mean", "psnr_std", "ssim_mean", "ssim_std"}
    per_image = json.loads((out / "enhance_eval_per_image.json").read_text())
    assert len(per_image["enlightengan"]) == 2
