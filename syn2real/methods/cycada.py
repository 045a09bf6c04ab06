"""CyCADA pixel level (Hoffman et al., ICML 2018): CycleGAN with semantic consistency, plus the task model trained on
translated source.

Stages of the paper, each a config whose checkpoint the next one loads:

1. source model f_S: ``SourceOnly`` (``configs/digits/source_only.yaml``);
2. **this method**: generators G_ST (source→target), G_TS (target→source), image discriminators D_T, D_S, the
   frozen teacher f_S (``teacher_checkpoint``) and the task model f_T trained on G_ST(x_s) with the source labels;
3. feature level: ``ADDA`` with ``source_checkpoint`` and ``source_translator`` set to this stage's checkpoint
   (f_T's target encoder is aligned with f_T on *translated* source).

Alternatively ``syn2real translate`` writes G_ST(source) to disk once and any method trains on it.

One training step (manual optimisation, three Adam optimisers):

- generators: λ_gan [(D_T(G_ST(x_s)) − 1)² + (D_S(G_TS(x_t)) − 1)²] + λ_cyc cycle L1 + λ_idt identity L1
  + λ_sem [CE(f_S(G_ST(x_s)), y_s) + CE(f_S(G_TS(x_t)), argmax f_S(x_t))];
- discriminators: LSGAN on real images vs generated ones drawn from a pool of 50;
- task model: λ_task CE(f_T(G_ST(x_s)), y_s) (translations detached; ``augment`` applies to this batch).

Evaluation adds, besides f_T's metrics, how often translation changes the frozen teacher's decision:
``translation/flip_st`` (source val: argmax f_S(x_s) vs argmax f_S(G_ST(x_s))), ``translation/teacher_acc_st``
(f_S's accuracy on translated source val) and ``translation/flip_ts`` (target: f_S(x_t) vs f_S(G_TS(x_t))).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MeanMetric

from syn2real.adversarial.advprop import expand_to_dual_bn
from syn2real.adversarial.base import Augmentation
from syn2real.losses.gan import (
    cycle_loss,
    identity_loss,
    label_flip_rate,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    semantic_consistency_loss,
    task_cross_entropy,
)
from syn2real.methods.base import Batch, DAMethod
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.methods.update import optimizer_update
from syn2real.models.checkpoint import load_model_weights
from syn2real.models.gan import (
    GeneratorConfig,
    ImagePool,
    PatchDiscriminatorConfig,
    PixelSpace,
)
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Segmentation, Task

__all__ = ["CyCADA", "cycada_gan_optim"]

log = logging.getLogger(__name__)


def cycada_gan_optim() -> OptimConfig:
    """CycleGAN/CyCADA: Adam lr 2e-4, β (0.5, 0.999), no weight decay, constant for half of training, then linear
    decay to 0."""
    return OptimConfig(name="adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, scheduler="linear", decay_start=0.5)


@null_defaults(
    task=lambda: Classification(NetworkConfig()), optim=cycada_gan_optim, generator=GeneratorConfig,
    discriminator=PatchDiscriminatorConfig, gan_optim=cycada_gan_optim,
)
class CyCADA(DAMethod):
    """CyCADA pixel-level adaptation with the task model trained on translated source.

    Args:
        task: classification or segmentation; its network is the task network f_T and the teacher f_S's
            architecture (same backbone and classes).
        teacher_checkpoint: the stage-1 source model (any syn2real checkpoint); frozen, it provides the semantic
            consistency loss and the label-flip measurements. Required when ``lambda_semantic`` > 0.
        optim: the task model's optimiser (default: Adam 2e-4, β 0.5, the GAN schedule).
        augment: applied to the translated source batch the task model trains on.
        generator / discriminator: the CycleGAN networks (ResNet generator with 9 blocks, 70×70 PatchGAN).
        gan_optim: generators' and discriminators' optimiser (Adam 2e-4, β 0.5, linear decay in the second half).
        lambda_gan / lambda_cycle / lambda_identity / lambda_semantic / lambda_task: loss weights (1, 1, 0, 1, 1;
            CyCADA uses λ_cyc = 1 where CycleGAN used 10; identity is off as in CyCADA).
        pool_size: image pool of past fakes for the discriminators (50).
        task_init: ``teacher`` starts f_T from f_S's weights, ``scratch`` from a fresh network.
        pixel_mean / pixel_std: the data's normalisation (per channel), so generators work in [-1, 1]; default 0.5
            for every channel (the digits pipeline, where data space already is [-1, 1]); the GTA5 configs give
            ImageNet's.
        grad_clip: clip each optimizer step's gradients to this total L2 norm (after 16-mixed unscaling); ``null``
            (default) does not clip. ``trainer.gradient_clip_val`` and ``accumulate_grad_batches`` do not apply to
            manually optimised methods.
    """

    def __init__(
        self,
        task: Task | None = None,
        teacher_checkpoint: str | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        generator: GeneratorConfig | None = None,
        discriminator: PatchDiscriminatorConfig | None = None,
        gan_optim: OptimConfig | None = None,
        lambda_gan: float = 1.0,
        lambda_cycle: float = 1.0,
        lambda_identity: float = 0.0,
        lambda_semantic: float = 1.0,
        lambda_task: float = 1.0,
        pool_size: int = 50,
        task_init: Literal["teacher", "scratch"] = "teacher",
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(task=task, optim=optim or cycada_gan_optim(), augment=augment)
        for name, value in (("lambda_gan", lambda_gan), ("lambda_cycle", lambda_cycle),
                            ("lambda_identity", lambda_identity), ("lambda_semantic", lambda_semantic),
                            ("lambda_task", lambda_task)):
            if value < 0:
                raise ValueError(f"model.init_args.{name} must be >= 0, got {value}")
        if task_init not in ("teacher", "scratch"):
            raise ValueError(f"task_init must be 'teacher' or 'scratch', got {task_init!r}")
        if lambda_semantic > 0 and teacher_checkpoint is None:
            raise ValueError(
                "lambda_semantic > 0 needs model.init_args.teacher_checkpoint, the stage-1 source model's .ckpt "
                "(syn2real fit --config configs/digits/base.yaml --config configs/digits/source_only.yaml); or set "
                "lambda_semantic: 0"
            )
        self.automatic_optimization = False
        self.grad_clip = grad_clip
        self.gen_cfg = generator or GeneratorConfig()
        self.disc_cfg = discriminator or PatchDiscriminatorConfig()
        self.gan_optim_cfg = gan_optim or cycada_gan_optim()
        self.lambda_gan, self.lambda_cycle, self.lambda_identity = lambda_gan, lambda_cycle, lambda_identity
        self.lambda_semantic, self.lambda_task = lambda_semantic, lambda_task
        pixel_mean = tuple(pixel_mean) if pixel_mean is not None else (0.5,) * self.gen_cfg.channels
        pixel_std = tuple(pixel_std) if pixel_std is not None else (0.5,) * self.gen_cfg.channels
        if len(pixel_mean) != self.gen_cfg.channels:
            raise ValueError(
                f"pixel_mean/pixel_std have {len(pixel_mean)} channels but generator.channels is "
                f"{self.gen_cfg.channels}; give the data's Normalize mean/std"
            )
        self.pixels = PixelSpace(pixel_mean, pixel_std)

        self.teacher = copy.deepcopy(self.model)
        if teacher_checkpoint is not None:
            load_model_weights(self.teacher, teacher_checkpoint)
        else:
            log.warning("CyCADA without teacher_checkpoint: the label-flip measurements use an untrained network")
        self.teacher.eval().requires_grad_(False)
        if task_init == "teacher":
            self.model.load_state_dict(expand_to_dual_bn(self.model, self.teacher.state_dict()))

        self.generator_st = self.gen_cfg.build()
        self.generator_ts = self.gen_cfg.build()
        self.discriminator_t = self.disc_cfg.build(self.gen_cfg.channels)  # real target vs G_ST(x_s)
        self.discriminator_s = self.disc_cfg.build(self.gen_cfg.channels)  # real source vs G_TS(x_t)
        self.pool_t, self.pool_s = ImagePool(pool_size), ImagePool(pool_size)
        self.translation_metrics = nn.ModuleDict(
            {k: MeanMetric() for k in ("flip_st", "teacher_acc_st", "flip_ts")}
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["syn2real_image_pools"] = {"t": self.pool_t.state_dict(), "s": self.pool_s.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        pools = checkpoint.get("syn2real_image_pools") or {}
        self.pool_t.load_state_dict(pools.get("t", {}), self.device)
        self.pool_s.load_state_dict(pools.get("s", {}), self.device)

    def train(self, mode: bool = True) -> CyCADA:
        super().train(mode)
        self.teacher.eval()  # frozen: its BatchNorm statistics never move
        return self

    # -- translation --------------------------------------------------------------------------------
    def translate(self, x: torch.Tensor, direction: Literal["st", "ts"] = "st") -> torch.Tensor:
        """Translate a normalised batch (data space in, data space out)."""
        generator = self.generator_st if direction == "st" else self.generator_ts
        return self.pixels.from_gan(generator(self.pixels.to_gan(x)))

    def cycle(self, x_s: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four generator passes of a step, all in GAN space."""
        g_s, g_t = self.pixels.to_gan(x_s), self.pixels.to_gan(x_t)
        fake_t = self.generator_st(g_s)
        fake_s = self.generator_ts(g_t)
        return {
            "real_s": g_s, "real_t": g_t, "fake_t": fake_t, "fake_s": fake_s,
            "rec_s": self.generator_ts(fake_t), "rec_t": self.generator_st(fake_s),
        }

    # -- training -----------------------------------------------------------------------------------
    def generator_losses(self, images: dict[str, torch.Tensor], y_s: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named generator loss terms (discriminators must be frozen by the caller); total under ``"loss"``."""
        gan = lsgan_generator_loss(self.discriminator_t(images["fake_t"])) + lsgan_generator_loss(
            self.discriminator_s(images["fake_s"])
        )
        losses = {"gan": gan, "cycle": cycle_loss(images["real_s"], images["rec_s"], images["real_t"], images["rec_t"])}
        total = self.lambda_gan * gan + self.lambda_cycle * losses["cycle"]
        if self.lambda_identity > 0:
            losses["identity"] = identity_loss(
                images["real_s"], self.generator_ts(images["real_s"]),
                images["real_t"], self.generator_st(images["real_t"]),
            )
            total = total + self.lambda_identity * losses["identity"]
        if self.lambda_semantic > 0:
            with torch.no_grad():
                on_x_t = self.teacher(x_t)
            losses["semantic"] = semantic_consistency_loss(
                self.teacher(self.pixels.from_gan(images["fake_t"])), y_s,
                self.teacher(self.pixels.from_gan(images["fake_s"])), on_x_t, self.task.ignore_index,
            )
            total = total + self.lambda_semantic * losses["semantic"]
        losses["loss"] = total
        return losses

    def discriminator_loss(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """LSGAN loss of both discriminators on real images vs pooled (detached) generated ones."""
        fake_t = self.pool_t.query(images["fake_t"])
        fake_s = self.pool_s.query(images["fake_s"])
        return lsgan_discriminator_loss(self.discriminator_t(images["real_t"]), self.discriminator_t(fake_t)) + (
            lsgan_discriminator_loss(self.discriminator_s(images["real_s"]), self.discriminator_s(fake_s))
        )

    def update_step(self, batch: Batch, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        opt_g, opt_d, opt_task = optimizers
        x_s, y_s = batch["source"]
        x_t = batch["target"][0]

        images = self.cycle(x_s, x_t)
        # each update averages exactly its own networks' gradients over DDP ranks
        with optimizer_update(self, opt_g, freeze=[self.discriminator_t, self.discriminator_s], log=False) as update:
            gen = self.generator_losses(images, y_s, x_t)
            update.backward(gen["loss"], {f"generator_{k}": v for k, v in gen.items()})

        with optimizer_update(self, opt_d, log=False) as update:
            loss_d = self.discriminator_loss(images)
            update.backward(loss_d, {"discriminator_loss": loss_d})

        x_task, y_task = self.pixels.from_gan(images["fake_t"].detach()), y_s
        x_task, y_task = self.augment_labelled(x_task, y_task)
        with optimizer_update(self, opt_task, log=False) as update:
            logits = self.model(x_task)
            loss_task = task_cross_entropy(logits, y_task, self.task.ignore_index)
            # AdvProp / Jacobian terms on the translated batch are folded in as task_<name>
            update.backward(self.lambda_task * loss_task, {"task_loss": loss_task}, fold_augment=True,
                            augment_prefix="task_")
        logged = {"loss": gen["loss"].detach()}
        logged.update({f"generator_{k}": v.detach() for k, v in gen.items() if k != "loss"})
        logged.update({
            "discriminator_loss": loss_d.detach(),
            "task_acc_translated": (logits.argmax(dim=1) == y_task).float().mean(),
        })
        logged.update({k: v.detach() for k, v in update.terms.items()})
        return logged

    def training_media(self, batch: Batch, max_images: int | None = None) -> dict[str, torch.Tensor]:
        """Images in [0, 1] for W&B, (3, N, C, H, W) each: rows source / translated / reconstructed, and
        target / to-source / reconstructed (8 images; 4 for segmentation), plus the task's rows."""
        n = max_images or (4 if isinstance(self.task, Segmentation) else 8)
        x_s, x_t = batch["source"][0][:n], batch["target"][0][:n]
        images = self.cycle(x_s, x_t)
        to_unit = lambda g: ((g.float() + 1.0) * 0.5).clamp(0, 1)  # noqa: E731
        return {
            "translation/source": to_unit(torch.stack([images["real_s"], images["fake_t"], images["rec_s"]])),
            "translation/target": to_unit(torch.stack([images["real_t"], images["fake_s"], images["rec_t"]])),
            **self.task.training_media(self, batch, n),
        }

    # -- evaluation ---------------------------------------------------------------------------------
    def eval_step(self, batch: Any, dataloader_idx: int) -> None:
        super().eval_step(batch, dataloader_idx)
        self.translation_eval_step(batch, dataloader_idx)

    def translation_eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> None:
        """How translation changes the frozen teacher's decisions (``translation/*`` metrics)."""
        x, y = batch[0], batch[1]
        before = self.teacher(x)
        if self.eval_domains[dataloader_idx] == "source":
            after = self.teacher(self.translate(x, "st"))
            self.translation_metrics["flip_st"].update(label_flip_rate(before, after), weight=x.shape[0])
            self.translation_metrics["teacher_acc_st"].update(self.task.accuracy(after, y), weight=x.shape[0])
        else:
            after = self.teacher(self.translate(x, "ts"))
            self.translation_metrics["flip_ts"].update(label_flip_rate(before, after), weight=x.shape[0])

    def eval_epoch_end(self) -> None:
        n_before = len(self.eval_history)
        super().eval_epoch_end()
        values = {}
        for name, metric in self.translation_metrics.items():
            if metric.update_count:
                values[f"translation/{name}"] = metric.compute()
                metric.reset()
        if values:
            self.log_dict(values)  # MeanMetric already aggregates across ranks
            if len(self.eval_history) > n_before:
                self.eval_history[-1].update({k: float(v) for k, v in values.items()})

    # -- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        cfg = self.gan_optim_cfg
        generators = list(self.generator_st.parameters()) + list(self.generator_ts.parameters())
        discriminators = list(self.discriminator_t.parameters()) + list(self.discriminator_s.parameters())
        opt_g = self.build_optimizer([{"params": generators, "lr": cfg.lr}], cfg)
        opt_d = self.build_optimizer([{"params": discriminators, "lr": cfg.lr}], cfg)
        opt_task = self.build_optimizer(self.param_groups())
        schedulers = [self.build_scheduler(opt_g, cfg), self.build_scheduler(opt_d, cfg), self.build_scheduler(opt_task)]
        return [opt_g, opt_d, opt_task], [s for s in schedulers if s is not None]
