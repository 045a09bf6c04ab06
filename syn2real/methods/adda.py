"""ADDA (Tzeng et al., CVPR 2017), also the feature-level stage of CyCADA (Hoffman et al., ICML 2018).

Stage 1 is any source model (``SourceOnly``, or CyCADA's task model on translated source). Stage 2, this method:
the *target* encoder starts as a copy of the source encoder, weights untied; the source encoder and the
classifier stay frozen; a discriminator learns to tell source encodings (label 1) from target encodings (0) and
the target encoder is trained with the inverted-label GAN loss to fool it. At test time the target encoder feeds
the frozen source classifier.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
import logging
from typing import Any, Literal

import torch

from syn2real.adversarial.base import Augmentation
from syn2real.losses.adversarial import (
    adda_discriminator_loss,
    adda_target_loss,
    domain_accuracy,
)
from syn2real.core.distributed import rank_mean
from syn2real.methods.base import Batch, DAMethod
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.methods.update import optimizer_update
from syn2real.models.discriminators import DiscriminatorConfig
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Task

__all__ = ["ADDA"]

log = logging.getLogger(__name__)


def adda_optim() -> OptimConfig:
    """ADDA digits: Adam lr 2e-4, β = (0.5, 0.999), no weight decay, constant lr."""
    return OptimConfig(name="adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, scheduler="none")


@null_defaults(
    task=lambda: Classification(NetworkConfig()), optim=adda_optim)
class ADDA(DAMethod):
    """Adversarial discriminative domain adaptation, stage 2 (manual optimisation: discriminator, then encoder).

    Args:
        task: classification; its network must describe the stage-1 network (same backbone, classes, bottleneck).
        source_checkpoint: the stage-1 checkpoint (any syn2real method's ``.ckpt``); its network initialises both
            the frozen source encoder and the trained target encoder.
        optim: the target encoder's optimiser (Adam 2e-4, β 0.5); ``discriminator_optim`` defaults to the same.
        discriminator: default ADDA's 500-500-1 MLP.
        align: ``features`` (the encoder output, ADDA) or ``logits`` (CyCADA's digits variant, with the
            ``cycada_logits`` discriminator 10-500-500-2).
        gate_accuracy: the CyCADA code's gate: update the target encoder only while the discriminator's accuracy
            on the current batch is above this value (0.6); ``null`` updates it every step (plain ADDA).
        train_head: also adapt the classifier (off in ADDA: the source classifier is reused as is).
        source_translator: a ``CyCADA`` checkpoint: its frozen source→target generator translates every source
            batch before encoding, which makes this stage CyCADA's feature level on top of its pixel level.
        grad_clip: clip each optimizer step's gradients to this total L2 norm (after 16-mixed unscaling); ``null``
            (default) does not clip. ``trainer.gradient_clip_val`` and ``accumulate_grad_batches`` do not apply to
            manually optimised methods.
    """

    supported_tasks = (Classification,)  # losses on image-level features/predictions

    def __init__(
        self,
        task: Task | None = None,
        source_checkpoint: str | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        discriminator: DiscriminatorConfig | None = None,
        discriminator_optim: OptimConfig | None = None,
        align: Literal["features", "logits"] = "features",
        gate_accuracy: float | None = 0.6,
        train_head: bool = False,
        source_translator: str | None = None,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(task=task, optim=optim or adda_optim(), augment=augment)
        if align not in ("features", "logits"):
            raise ValueError(f"align must be 'features' or 'logits', got {align!r}")
        if gate_accuracy is not None and not 0.0 <= gate_accuracy < 1.0:
            raise ValueError(f"gate_accuracy must be in [0, 1) or null, got {gate_accuracy}")
        self.automatic_optimization = False
        self.grad_clip = grad_clip
        self.align = align
        self.gate_accuracy = gate_accuracy
        self.source_checkpoint = source_checkpoint
        if source_checkpoint is not None:
            self.load_weights(source_checkpoint)
        else:
            log.warning("ADDA without model.source_checkpoint starts from random weights; stage 1 is a source model")
        self.source_model = copy.deepcopy(self.model).eval()
        self.source_model.requires_grad_(False)
        if not train_head:
            self.model.head.requires_grad_(False)
        self.disc_cfg = discriminator or DiscriminatorConfig(preset="adda" if align == "features" else "cycada_logits")
        in_features = self.model.num_features if align == "features" else self.network_cfg.num_classes
        self.discriminator = self.disc_cfg.build(in_features)
        self.disc_optim_cfg = discriminator_optim or self.optim_cfg
        self.translator: torch.nn.Module | None = None
        if source_translator is not None:
            from syn2real.models.translator import SourceTranslator

            self.translator = SourceTranslator(source_translator)

    def translate_source(self, x: torch.Tensor) -> torch.Tensor:
        """G_ST(x) in data space when a ``source_translator`` is set, else ``x``."""
        return x if self.translator is None else self.translator(x)

    def train(self, mode: bool = True) -> ADDA:
        super().train(mode)
        self.source_model.eval()  # frozen: BatchNorm statistics of the source encoder never move
        return self

    def _encode(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net.forward_features(x) if self.align == "features" else net(x)

    def update_step(self, batch: Batch, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        opt_enc, opt_d = optimizers
        x_s, _ = self.source_batch(batch)
        x_s = self.translate_source(x_s)
        x_t = batch["target"][0]
        with torch.no_grad():
            z_s = self._encode(self.source_model, x_s)
        z_t = self._encode(self.model, x_t)

        # 1) discriminator: source encodings -> 1, target encodings -> 0
        with optimizer_update(self, opt_d, log=False) as update:
            d_s, d_t = self.discriminator(z_s), self.discriminator(z_t.detach())
            loss_d = adda_discriminator_loss(d_s, d_t)
            update.backward(loss_d, {"discriminator_loss": loss_d})
        acc = domain_accuracy(d_s, d_t)

        # 2) target encoder: inverted labels, gated on the discriminator being ahead on the global batch (the mean
        # over ranks), so that every rank takes the same decision
        gate_open = self.gate_accuracy is None or float(rank_mean(self, acc)) > self.gate_accuracy
        with optimizer_update(self, opt_enc, freeze=[self.discriminator], enabled=gate_open, log=False) as update:
            loss_g = adda_target_loss(self.discriminator(z_t))
            update.backward(loss_g, {"target_gan_loss": loss_g})
        return {
            "loss": loss_g.detach(),
            "discriminator_loss": loss_d.detach(),
            "target_gan_loss": loss_g.detach(),
            "domain_acc": acc,
            "encoder_updated": torch.tensor(float(gate_open)),
        }

    def param_groups(self) -> list[dict[str, Any]]:
        return [g for g in super().param_groups() if g["params"]]

    def configure_optimizers(self) -> Any:
        opt_enc = self.build_optimizer(self.param_groups())
        cfg_d = self.disc_optim_cfg
        opt_d = self.build_optimizer(
            [{"params": list(self.discriminator.parameters()), "lr": cfg_d.lr * self.disc_cfg.lr_mult}], cfg_d
        )
        schedulers = [self.build_scheduler(opt_enc), self.build_scheduler(opt_d, cfg_d)]
        return [opt_enc, opt_d], [s for s in schedulers if s is not None]
