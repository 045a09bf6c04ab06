"""EnlightenGAN (Jiang et al., "EnlightenGAN: Deep Light Enhancement without Paired Supervision", IEEE TIP 2021):
unpaired low-light enhancement.

One training step (manual optimisation, three Adam optimisers, the official order):

- generator G (attention-guided U-Net, residual output): λ_g · relativistic LSGAN against the global discriminator
  + λ_l · LSGAN against the local discriminator on ``n_patches`` random ``patch_size`` crops of the output
  + λ_sfp · self feature-preserving loss between input and output, globally and (λ_sfp_local) on the same patches
  of input and output;
- global discriminator D_g: relativistic LSGAN, real normal-light images vs outputs drawn from a pool of 50;
- local discriminator D_l: LSGAN, random patches of normal-light images vs the output patches.

Evaluation on paired data (``data.eval_low`` / ``data.eval_reference``): PSNR and SSIM of the enhanced images
against the clean references (``target/psnr``, ``target/ssim``), the same for the dark input
(``target/psnr_input``, ``target/ssim_input``), and mean brightness of output and reference. Images larger than
``eval_tile`` are enhanced tile by tile (:func:`syn2real.models.enlighten.enhance_tiled`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torchmetrics import MeanMetric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from syn2real.losses.gan import (
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    relativistic_lsgan_discriminator_loss,
    relativistic_lsgan_generator_loss,
)
from syn2real.losses.perceptual import self_feature_preserving_loss
from syn2real.methods.module import Syn2RealModule, null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.methods.update import optimizer_update
from syn2real.core.luminance import LUMA
from syn2real.core.rng import preserved_rng
from syn2real.models.enlighten import EnlightenDiscriminatorConfig, EnlightenGeneratorConfig, enhance_tiled
from syn2real.models.gan import ImagePool
from syn2real.models.perceptual import FeatureExtractorConfig

__all__ = ["EnlightenGAN", "crop_patches", "enlightengan_optim", "random_patch_corners"]


def enlightengan_optim() -> OptimConfig:
    """The paper's optimiser: Adam lr 1e-4, β (0.5, 0.999), no weight decay; constant for the first half of training
    (100 of 200 epochs), then linear decay to 0."""
    return OptimConfig(name="adam", lr=1e-4, betas=(0.5, 0.999), weight_decay=0.0, scheduler="linear", decay_start=0.5)


def random_patch_corners(
    batch: int, n: int, height: int, width: int, size: int, generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(batch, n, 2) top-left corners (y, x) of ``n`` random ``size``×``size`` patches per image."""
    if size > min(height, width):
        raise ValueError(f"patch_size {size} is larger than the training images ({height}x{width}); lower it")
    ys = torch.randint(0, height - size + 1, (batch, n), generator=generator)
    xs = torch.randint(0, width - size + 1, (batch, n), generator=generator)
    return torch.stack([ys, xs], dim=-1).to(device) if device is not None else torch.stack([ys, xs], dim=-1)


def crop_patches(images: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) images and (B, n, 2) corners -> (B·n, C, size, size) patches, image-major order."""
    if corners.ndim != 3 or corners.shape[0] != images.shape[0] or corners.shape[-1] != 2:
        raise ValueError(f"corners must have shape (B={images.shape[0]}, n, 2), got {tuple(corners.shape)}")
    patches = [
        images[b, :, y : y + size, x : x + size]
        for b in range(images.shape[0])
        for y, x in corners[b].tolist()
    ]
    return torch.stack(patches)


@null_defaults(generator=EnlightenGeneratorConfig, discriminator=EnlightenDiscriminatorConfig, optim=enlightengan_optim)
class EnlightenGAN(Syn2RealModule):
    """EnlightenGAN: attention-guided U-Net generator, global (relativistic) and local discriminators, and the self
    feature-preserving loss on a frozen feature extractor.

    Args:
        generator: the U-Net (paper: 32 base channels, BatchNorm, grey attention map).
        discriminator: global / local discriminators (ndf 64, 5 and 4 stride-2 layers).
        perceptual: frozen extractor of the self feature-preserving loss: VGG16 relu5_1 from a local VGG16 weight
            file (the paper), or any timm model from a local file / package spec.
        optim: optimiser of all three networks (Adam 1e-4, β 0.5; linear decay over the second half).
        lambda_global / lambda_local / lambda_sfp / lambda_sfp_local: loss weights (all 1, the official code).
        n_patches: random patches per image for the local discriminator and the local feature loss (6: the official
            one patch plus ``patchD_3`` 5).
        patch_size: patch side (32).
        pool_size: history of generated images for the global discriminator (50).
        eval_tile / eval_overlap: tiled enhancement of evaluation images larger than ``eval_tile``.
        grad_clip: clip each optimizer step's gradients to this total L2 norm (after 16-mixed unscaling); ``null``
            (default) does not clip. ``trainer.gradient_clip_val`` and ``accumulate_grad_batches`` do not apply to
            manually optimised methods.
        bn_recalibration: after the last training batch, re-estimate the generator's BatchNorm running statistics
            with its final weights over this many training batches (forward only, exact average; 0, the default and
            the paper, keeps the running averages of training). With few, high-lr steps the running averages lag the
            weights that produced them and inference (eval mode) is off; the final evaluation and ``last.ckpt`` see
            the recalibrated statistics.
    """

    def __init__(
        self,
        generator: EnlightenGeneratorConfig | None = None,
        discriminator: EnlightenDiscriminatorConfig | None = None,
        perceptual: FeatureExtractorConfig | None = None,
        optim: OptimConfig | None = None,
        lambda_global: float = 1.0,
        lambda_local: float = 1.0,
        lambda_sfp: float = 1.0,
        lambda_sfp_local: float = 1.0,
        n_patches: int = 6,
        patch_size: int = 32,
        pool_size: int = 50,
        eval_tile: int = 512,
        eval_overlap: int = 32,
        grad_clip: float | None = None,
        bn_recalibration: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("lambda_global", lambda_global), ("lambda_local", lambda_local),
                            ("lambda_sfp", lambda_sfp), ("lambda_sfp_local", lambda_sfp_local)):
            if value < 0:
                raise ValueError(f"model.init_args.{name} must be >= 0, got {value}")
        if n_patches < 1 or patch_size < 8:
            raise ValueError(f"n_patches must be >= 1 and patch_size >= 8, got {n_patches}, {patch_size}")
        if bn_recalibration < 0:
            raise ValueError(f"model.init_args.bn_recalibration must be >= 0 batches, got {bn_recalibration}")
        self.automatic_optimization = False
        self.grad_clip = grad_clip
        self.bn_recalibration = bn_recalibration
        self.bn_recalibrated_batches = 0
        self.strict_loading = False  # the frozen extractor is rebuilt from its weights, not stored in checkpoints
        self.gen_cfg = generator or EnlightenGeneratorConfig()
        self.disc_cfg = discriminator or EnlightenDiscriminatorConfig()
        self.optim_cfg = optim or enlightengan_optim()
        self.lambda_global, self.lambda_local = lambda_global, lambda_local
        self.lambda_sfp, self.lambda_sfp_local = lambda_sfp, lambda_sfp_local
        self.n_patches, self.patch_size = n_patches, patch_size
        self.eval_tile, self.eval_overlap = eval_tile, eval_overlap

        self.generator = self.gen_cfg.build()
        self.discriminator_global = self.disc_cfg.build_global()
        self.discriminator_local = self.disc_cfg.build_local()
        self.perceptual = (perceptual or FeatureExtractorConfig()).build()
        if patch_size < 2 * self.perceptual.reduction:
            raise ValueError(
                f"patch_size {patch_size} gives feature maps under 2x2 with the extractor {self.perceptual.name} "
                f"(stride {self.perceptual.reduction}); instance normalisation needs at least "
                f"{2 * self.perceptual.reduction} px patches"
            )
        self.pool = ImagePool(pool_size)
        self.eval_metrics = torch.nn.ModuleDict(
            {k: MeanMetric() for k in ("psnr", "ssim", "psnr_input", "ssim_input", "brightness", "brightness_input", "brightness_reference")}
        )

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("perceptual.")]:
            del state[key]
        checkpoint["syn2real_image_pools"] = {"global": self.pool.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        own = {k for k in self.state_dict() if not k.startswith("perceptual.")}
        missing = sorted(own - set(checkpoint.get("state_dict", {})))
        if missing:
            raise ValueError(f"checkpoint lacks EnlightenGAN weights {missing[:4]}; expected a checkpoint of this method")
        super().on_load_checkpoint(checkpoint)
        self.pool.load_state_dict((checkpoint.get("syn2real_image_pools") or {}).get("global", {}), self.device)

    def run_summary(self) -> dict[str, Any]:
        out = super().run_summary()
        if self.bn_recalibration:
            out["bn_recalibrated_batches"] = self.bn_recalibrated_batches
        return out

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance (B, 3, H, W) low-light images in [-1, 1]."""
        return self.generator(x)

    def patches(self, *images: torch.Tensor, corners: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The same random patches of each batch in ``images`` (B·n_patches, 3, p, p)."""
        b, _, h, w = images[0].shape
        if corners is None:
            corners = random_patch_corners(b, self.n_patches, h, w, self.patch_size)
        return tuple(crop_patches(x, corners, self.patch_size) for x in images)

    # -- training ---------------------------------------------------------------------------------
    def generator_losses(self, x_low: torch.Tensor, fake: torch.Tensor, x_normal: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named generator terms (the discriminators must be frozen by the caller); total under ``"loss"``."""
        with torch.no_grad():
            d_real = self.discriminator_global(x_normal)
        losses = {"global": relativistic_lsgan_generator_loss(d_real, self.discriminator_global(fake))}
        fake_patches, low_patches = self.patches(fake, x_low)
        losses["local"] = lsgan_generator_loss(self.discriminator_local(fake_patches))
        losses["sfp"] = self_feature_preserving_loss(self.perceptual, x_low, fake)
        losses["sfp_local"] = self_feature_preserving_loss(self.perceptual, low_patches, fake_patches)
        losses["loss"] = (
            self.lambda_global * losses["global"] + self.lambda_local * losses["local"]
            + self.lambda_sfp * losses["sfp"] + self.lambda_sfp_local * losses["sfp_local"]
        )
        self._fake_patches = fake_patches.detach()
        return losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.manual_training_step(batch, batch["low"][0].shape[0])
        if self.bn_recalibration and self._is_final_batch():
            self.recalibrate_batchnorm()

    def update_step(self, batch: dict[str, Any], optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        opt_g, opt_dg, opt_dl = optimizers
        x_low, x_normal = batch["low"][0], batch["normal"][0]
        discriminators = (self.discriminator_global, self.discriminator_local)

        fake = self.generator(x_low)
        # each update averages its own network's gradients over DDP ranks
        with optimizer_update(self, opt_g, freeze=discriminators, log=False) as update:
            gen = self.generator_losses(x_low, fake, x_normal)
            update.backward(gen["loss"], {f"generator_{k}": v for k, v in gen.items()})

        with optimizer_update(self, opt_dg, log=False) as update:
            pooled = self.pool.query(fake)
            loss_dg = relativistic_lsgan_discriminator_loss(
                self.discriminator_global(x_normal), self.discriminator_global(pooled))
            update.backward(loss_dg, {"discriminator_global": loss_dg})

        with optimizer_update(self, opt_dl, log=False) as update:
            (real_patches,) = self.patches(x_normal)
            loss_dl = lsgan_discriminator_loss(
                self.discriminator_local(real_patches), self.discriminator_local(self._fake_patches))
            update.backward(loss_dl, {"discriminator_local": loss_dl})
        logged = {"loss": gen["loss"].detach()}
        logged.update({f"generator_{k}": v.detach() for k, v in gen.items() if k != "loss"})
        logged.update({"discriminator_global": loss_dg.detach(), "discriminator_local": loss_dl.detach()})
        return logged

    def _is_final_batch(self) -> bool:
        """Whether the batch just stepped is the last of the fit (``max_steps`` reached or last batch of the last
        epoch)."""
        t = self.trainer
        if t.max_steps is not None and t.max_steps >= 0 and self.global_step >= t.max_steps:
            return True
        last_epoch = t.max_epochs is not None and t.max_epochs >= 0 and self.current_epoch + 1 >= t.max_epochs
        return bool(t.is_last_batch) and last_epoch

    def recalibrate_batchnorm(self, batches: Iterable[Any] | None = None) -> int:
        """Re-estimate the generator's BatchNorm running statistics with the current weights: reset, then the exact
        average (``momentum=None``) of the batch statistics of up to ``bn_recalibration`` training batches' low-light
        images (default: a fresh pass of the data module's training loader), forward only, random streams untouched.
        Under DDP the ranks' estimates are averaged so every rank keeps the same buffers. Returns the batches used."""
        norms = [m for m in self.generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or not self.bn_recalibration:
            return 0
        if batches is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None:
                raise RuntimeError("bn_recalibration needs the training batches: fit with a data module")
            batches = datamodule.train_dataloader()
        momenta = [m.momentum for m in norms]
        was_training = self.generator.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: the exact mean over the batches seen
        self.generator.train()
        used = 0
        try:
            with torch.no_grad(), preserved_rng():
                for item in batches:
                    batch = item[0] if isinstance(item, tuple) else item  # a CombinedLoader yields (batch, idx, dl)
                    self.generator(batch["low"][0].to(self.device))
                    used += 1
                    if used >= self.bn_recalibration:
                        break
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            self.generator.train(was_training)
        if getattr(self._trainer, "world_size", 1) > 1:
            for m in norms:
                for name in ("running_mean", "running_var"):
                    buf = getattr(m, name)
                    buf.copy_(self.trainer.strategy.reduce(buf.clone(), reduce_op="mean"))
        self.bn_recalibrated_batches = used
        return used

    def training_media(self, batch: dict[str, Any], max_images: int = 8) -> dict[str, torch.Tensor]:
        """Rows input | attention map | output (and a row of real normal-light images), in [0, 1]."""
        x = batch["low"][0][:max_images]
        normal = batch["normal"][0][: x.shape[0]]
        out = self.generator(x).clamp(-1, 1)
        attention = self.generator.attention_map(x).expand(-1, 3, -1, -1)
        rows = [(x + 1) * 0.5, attention, (out + 1) * 0.5]
        if normal.shape == x.shape:
            rows.append((normal + 1) * 0.5)
        return {"enhancement/train": torch.stack(rows).clamp(0, 1)}

    # -- evaluation -------------------------------------------------------------------------------
    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        """Inference at any resolution: tiled above ``eval_tile``; output clamped to [-1, 1]."""
        return enhance_tiled(self.generator, x, self.eval_tile, self.eval_overlap)

    def eval_step(self, batch: Any, dataloader_idx: int = 0) -> None:
        x_low, ref = batch
        out = self.enhance(x_low)
        to_unit = lambda t: ((t.float() + 1.0) * 0.5).clamp(0.0, 1.0)  # noqa: E731
        out, ref, low = to_unit(out), to_unit(ref), to_unit(x_low)
        luma = torch.tensor(LUMA, device=out.device).view(1, 3, 1, 1)
        for i in range(out.shape[0]):  # per-image scores, averaged over images
            o, r, lo = out[i : i + 1], ref[i : i + 1], low[i : i + 1]
            self.eval_metrics["psnr"].update(peak_signal_noise_ratio(o, r, data_range=1.0))
            self.eval_metrics["ssim"].update(structural_similarity_index_measure(o, r, data_range=1.0))
            self.eval_metrics["psnr_input"].update(peak_signal_noise_ratio(lo, r, data_range=1.0))
            self.eval_metrics["ssim_input"].update(structural_similarity_index_measure(lo, r, data_range=1.0))
            self.eval_metrics["brightness"].update((o * luma).sum(1).mean())
            self.eval_metrics["brightness_input"].update((lo * luma).sum(1).mean())
            self.eval_metrics["brightness_reference"].update((r * luma).sum(1).mean())

    def eval_epoch_end(self) -> None:
        if not self.eval_metrics["psnr"].update_count:
            return
        values = {f"target/{k}": m.compute() for k, m in self.eval_metrics.items()}
        for metric in self.eval_metrics.values():
            metric.reset()
        main = {"target/psnr", "target/ssim"}
        self.log_dict({k: v for k, v in values.items() if k in main}, prog_bar=True)
        self.log_dict({k: v for k, v in values.items() if k not in main})
        v = {k: float(x) for k, x in values.items()}
        self.record_evaluation(v, (
            f"PSNR {v['target/psnr']:.2f} dB (input {v['target/psnr_input']:.2f}), SSIM {v['target/ssim']:.4f}, "
            f"brightness {v['target/brightness']:.3f} (input {v['target/brightness_input']:.3f}, "
            f"reference {v['target/brightness_reference']:.3f})"
        ))

    # -- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # one schedule step per training batch (each batch steps all three optimisers once)
        optimisers = [
            self.build_optimizer([{"params": list(net.parameters()), "lr": self.optim_cfg.lr}])
            for net in (self.generator, self.discriminator_global, self.discriminator_local)
        ]
        schedulers = [self.build_scheduler(opt) for opt in optimisers]
        return optimisers, [s for s in schedulers if s is not None]
