"""Segmentation-only methods (GTA5→Cityscapes, SYNTHIA→Cityscapes, segmentation digits): their losses live on pixel
maps. Source-only, MinEnt, self-training and CyCADA serve segmentation through their ``task``
(:class:`~syn2real.tasks.Segmentation`).

- :class:`OutputSpaceAdaptation`: AdaptSegNet (Tsai et al., CVPR 2018; discriminator on softmax maps) and AdvEnt
  (Vu et al., CVPR 2019; discriminator on self-information maps, optional MinEnt). With ``source_translator`` it
  trains on CyCADA-translated source: CyCADA's feature level for segmentation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from syn2real.adversarial.base import Augmentation
from syn2real.losses.adversarial import adda_target_loss, domain_accuracy, domain_adversarial_loss
from syn2real.losses.output_space import entropy_loss, self_information_map
from syn2real.methods.base import Batch, DAMethod
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig, build_optimizer, deeplab_optim
from syn2real.methods.update import optimizer_update
from syn2real.models.discriminators import ConvDiscriminator
from syn2real.models.segmentation import SegNetworkConfig
from syn2real.tasks import Segmentation, Task

__all__ = ["OutputSpaceAdaptation", "advent_discriminator_optim"]

log = logging.getLogger(__name__)


def advent_discriminator_optim() -> OptimConfig:
    """Output-space discriminators in AdaptSegNet/AdvEnt: Adam lr 1e-4, β (0.9, 0.99), no weight decay, poly 0.9."""
    return OptimConfig(name="adam", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, scheduler="poly", power=0.9)


@null_defaults(task=lambda: Segmentation(SegNetworkConfig()), optim=deeplab_optim, discriminator_optim=advent_discriminator_optim)
class OutputSpaceAdaptation(DAMethod):
    """AdaptSegNet / AdvEnt output-space adversarial adaptation (manual optimisation: segmenter, then discriminator).

    Per step: (1) CE on the source (discriminators frozen); (2) the target's maps (softmax or self-information) go to
    the discriminator of each level and the segmenter minimises λ_l · BCE(D_l(target map), source) (+ ``entropy_weight``
    · MinEnt); one SGD step on both gradients; (3) the discriminators learn source (1) vs target (0) maps, detached.

    Args:
        task / optim / augment: as every method; the task must be :class:`~syn2real.tasks.Segmentation`.
        discriminator_input: ``entropy`` (AdvEnt, default) or ``softmax`` (AdaptSegNet).
        lambda_adv: adversarial weight per level: ``[0.001]`` single level (AdvEnt, AdaptSegNet single-level),
            ``[0.001, 0.0002]`` with ``network.multi_level`` (AdaptSegNet multi-level: main, auxiliary).
        entropy_weight: AdvEnt's MinEnt weight on the target (0 = off; 0.001 alone in the paper).
        discriminator_channels: widths of the 4×4 stride-2 conv discriminator (64-128-256-512, then 1).
        discriminator_optim: Adam 1e-4, β (0.9, 0.99), poly.
        source_translator: a CyCADA checkpoint; the source is translated by its G_ST before the segmenter sees it.
        init_checkpoint: start from a syn2real checkpoint's ``model.*`` (e.g. the source-only run).
        grad_clip: clip each optimizer step's gradients to this total L2 norm (after 16-mixed unscaling); ``null``
            (default) does not clip. ``trainer.gradient_clip_val`` and ``accumulate_grad_batches`` do not apply to
            manually optimised methods.
    """

    supported_tasks = (Segmentation,)  # pixel maps

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        discriminator_input: Literal["entropy", "softmax"] = "entropy",
        lambda_adv: list[float] | None = None,
        entropy_weight: float = 0.0,
        discriminator_channels: list[int] | None = None,
        discriminator_optim: OptimConfig | None = None,
        source_translator: str | None = None,
        init_checkpoint: str | None = None,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(task=task, optim=optim or deeplab_optim(), augment=augment)
        if discriminator_input not in ("entropy", "softmax"):
            raise ValueError(f"discriminator_input must be 'entropy' or 'softmax', got {discriminator_input!r}")
        levels = 2 if self.network_cfg.multi_level else 1
        lambda_adv = list(lambda_adv) if lambda_adv is not None else [0.001, 0.0002][:levels]
        if len(lambda_adv) != levels or any(v < 0 for v in lambda_adv) or entropy_weight < 0:
            raise ValueError(
                f"lambda_adv needs one non-negative weight per output level ({levels}; network.multi_level="
                f"{self.network_cfg.multi_level}), got {lambda_adv}; entropy_weight must be >= 0, got {entropy_weight}"
            )
        self.automatic_optimization = False
        self.grad_clip = grad_clip
        self.discriminator_input = discriminator_input
        self.lambda_adv = [float(v) for v in lambda_adv]
        self.entropy_weight = float(entropy_weight)
        channels = tuple(discriminator_channels or (64, 128, 256, 512))
        n = self.network_cfg.num_classes
        self.discriminators = nn.ModuleList(ConvDiscriminator(n, channels) for _ in range(levels))
        self.disc_optim_cfg = discriminator_optim or advent_discriminator_optim()
        if init_checkpoint is not None:  # a single-level run may start a multi-level one (fresh auxiliary classifier)
            self.load_weights(init_checkpoint)
        self.translator: nn.Module | None = None
        if source_translator is not None:
            from syn2real.models.translator import SourceTranslator

            self.translator = SourceTranslator(source_translator)

    def translate_source(self, x: torch.Tensor) -> torch.Tensor:
        """G_ST(x) in data space when a ``source_translator`` is set, else ``x``."""
        return x if self.translator is None else self.translator(x)

    def discriminator_maps(self, logits: torch.Tensor) -> torch.Tensor:
        """What a discriminator sees: softmax maps (AdaptSegNet) or self-information maps (AdvEnt)."""
        probs = logits.float().softmax(dim=1)
        return self_information_map(probs) if self.discriminator_input == "entropy" else probs

    def update_step(self, batch: Batch, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        opt_seg, opt_d = optimizers
        x_s, y_s = self.source_batch(batch)
        x_s = self.translate_source(x_s)
        x_t = batch["target"][0]
        # the segmenter: source CE, then the adversarial (+ MinEnt) target terms with the discriminators frozen; two
        # backward passes (the source graph is freed before the target forward), one all-reduce, one step
        with optimizer_update(self, opt_seg, freeze=list(self.discriminators), log=False) as update:
            levels_s = self.task.levels(self.model, x_s)
            loss_seg = self.task.loss(self, levels_s, y_s)
            loss_seg = update.backward(loss_seg, {"source_ce": loss_seg}, fold_augment=True)
            levels_t = self.task.levels(self.model, x_t)
            maps_t = [self.discriminator_maps(level) for level in levels_t]
            loss_adv = sum(w * adda_target_loss(d(m)) for w, d, m in zip(self.lambda_adv, self.discriminators, maps_t))
            loss_ent = entropy_loss(levels_t[0].float().softmax(dim=1))
            update.backward(loss_adv + self.entropy_weight * loss_ent,
                            {"adversarial": torch.as_tensor(loss_adv), "target_entropy": loss_ent})

        # the discriminators: source (1) vs target (0) maps, detached
        with optimizer_update(self, opt_d, log=False) as update:
            maps_s = [self.discriminator_maps(level.detach()) for level in levels_s]
            loss_d = torch.zeros((), device=x_s.device)
            acc_d = []
            for d, m_s, m_t in zip(self.discriminators, maps_s, maps_t):
                d_s, d_t = d(m_s), d(m_t.detach())
                loss_d = loss_d + domain_adversarial_loss(d_s, d_t)
                acc_d.append(domain_accuracy(d_s, d_t))
            update.backward(loss_d, {"discriminator_loss": loss_d})
        return {
            "loss": (loss_seg + loss_adv).detach(),
            "source_ce": loss_seg.detach(),
            "adversarial": torch.as_tensor(loss_adv).detach(),
            "target_entropy": loss_ent.detach(),
            "discriminator_loss": loss_d.detach(),
            "discriminator_acc": acc_d[0],
            "source_pixel_acc": self.task.accuracy(levels_s[0].detach(), y_s),
        }

    def configure_optimizers(self) -> Any:
        opt_seg = self.build_optimizer(self.param_groups())
        cfg = self.disc_optim_cfg
        opt_d = build_optimizer([{"params": list(self.discriminators.parameters()), "lr": cfg.lr}], cfg,
                                self.named_parameters())
        schedulers = [s for s in (self.build_scheduler(opt_seg), self.build_scheduler(opt_d, cfg)) if s is not None]
        return [opt_seg, opt_d], schedulers
