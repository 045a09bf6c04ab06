"""Semantic segmentation methods (GTA5→Cityscapes, SYNTHIA→Cityscapes, segmentation digits).

- :class:`SegSourceOnly`: DeepLabV2 trained on the labelled source (the baseline).
- :class:`OutputSpaceAdaptation`: AdaptSegNet (Tsai et al., CVPR 2018; discriminator on softmax maps) and AdvEnt
  (Vu et al., CVPR 2019; discriminator on self-information maps, optional MinEnt). With ``source_translator`` it
  trains on CyCADA-translated source: CyCADA's feature level for segmentation.
- :class:`SegSelfTraining`: CBST / CRST-MRKLD at pixel level (Zou et al., ECCV 2018 / ICCV 2019), pseudo-labels from
  all-reduced confidence histograms (:class:`~syn2real.callbacks.pixel_pseudo_labels.PixelPseudoLabelRounds`).
- :class:`SegCyCADA`: CyCADA pixel level (Hoffman et al., ICML 2018) with a frozen segmentation teacher.

They share :class:`SegmentationMixin`: the network (:class:`~syn2real.models.segmentation.SegNetworkConfig`), mIoU
metrics, whole/sliding-window inference (``inference``), the cross-entropy with ignore label 255 (plus the 0.1-weighted
auxiliary level when ``network.multi_level``), and W&B rows image | ground truth | prediction (| pseudo-label).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.base import Augmentation
from syn2real.callbacks.pixel_pseudo_labels import PixelPseudoLabelRounds, PixelRoundConfig
from syn2real.core.display import display_rgb as _display  # moved
from syn2real.losses.adversarial import adda_target_loss, domain_accuracy, domain_adversarial_loss
from syn2real.losses.gan import IGNORE_INDEX, task_cross_entropy
from syn2real.losses.output_space import entropy_loss, self_information_map
from syn2real.losses.self_training import mrkld_loss
from syn2real.methods.base import (
    Batch,
    DAMethod,
    OptimConfig,
    average_gradients,
    backward_local,
    build_optimizer,
    global_mean_weight,
    load_model_weights,
    null_defaults,
    step_schedulers,
)
from syn2real.methods.cycada import CyCADA, SourceTranslator, cycada_gan_optim
from syn2real.methods.guard import guard_losses
from syn2real.metrics.segmentation import InferenceConfig, SegmentationMetrics, segment
from syn2real.metrics.validators import EntropyValidator
from syn2real.models.discriminators import ConvDiscriminator
from syn2real.models.gan import GeneratorConfig, PatchDiscriminatorConfig
from syn2real.models.segmentation import SegNetworkConfig, build_segmenter, upsample

__all__ = [
    "OutputSpaceAdaptation", "SegCyCADA", "SegSelfTraining", "SegSourceOnly", "SegmentationMixin", "colorize",
    "deeplab_optim",
]

log = logging.getLogger(__name__)


def deeplab_optim() -> OptimConfig:
    """DeepLabV2 fine-tuning in AdaptSegNet/AdvEnt: SGD, backbone lr 2.5e-4 and classifier 10× (2.5e-3), momentum
    0.9, weight decay 5e-4, poly schedule with power 0.9."""
    return OptimConfig(name="sgd", lr=2.5e-3, backbone_lr_mult=0.1, momentum=0.9, weight_decay=5e-4, scheduler="poly",
                       power=0.9)


def palette(num_classes: int) -> torch.Tensor:
    """(num_classes, 3) uint8 colours: the Cityscapes palette for its 19/16/13-class sets, distinct colours otherwise."""
    from syn2real.data.seg_labels import palette_for

    if num_classes in (19, 16, 13):
        return torch.as_tensor(palette_for(num_classes), dtype=torch.uint8).reshape(num_classes, 3)
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colours = [[int(255 * v) for v in cmap(i % 20)[:3]] for i in range(num_classes)]
    return torch.tensor(colours, dtype=torch.uint8)


def colorize(labels: torch.Tensor, num_classes: int, colours: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W) class indices (255 = ignore, shown white) -> (B, 3, H, W) colours in [0, 1]; ``colours`` (C, 3)
    uint8 defaults to :func:`palette`."""
    colours = palette(num_classes) if colours is None else torch.as_tensor(colours, dtype=torch.uint8).reshape(-1, 3)
    colours = torch.cat([colours, torch.full((1, 3), 255, dtype=torch.uint8)]).to(labels.device)
    idx = torch.where((labels >= 0) & (labels < num_classes), labels, torch.full_like(labels, num_classes))
    return colours[idx.long()].permute(0, 3, 1, 2).float() / 255.0


class SegmentationMixin:
    """Turns a :class:`DAMethod` into a segmentation method (see the module docstring). Subclasses set
    ``self.inference`` and ``self.aux_weight`` in ``__init__``."""

    network_cfg: SegNetworkConfig
    inference: InferenceConfig
    aux_weight: float = 0.1
    ignore_index: int = IGNORE_INDEX

    def build_network(self) -> nn.Module:
        if not isinstance(self.network_cfg, SegNetworkConfig):
            raise TypeError(
                f"{type(self).__name__} needs model.network to be a segmentation network (backbone, num_classes, head, "
                f"aspp_rates, ...), got {type(self.network_cfg).__name__}"
            )
        return build_segmenter(self.network_cfg)

    def build_domain_metrics(self, domain: str) -> nn.Module:
        return SegmentationMetrics(self.network_cfg.num_classes, prefix=domain)

    def build_validators(self) -> dict[str, nn.Module]:
        return {"entropy": EntropyValidator()}  # mean pixel entropy; SND's N×N similarity does not scale to pixels

    # -- losses -------------------------------------------------------------------------------------
    def segmentation_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every level (main first), upsampled to the input size."""
        return [upsample(level, x.shape[-2:]) for level in self.model.forward_levels(x)]

    def segmentation_loss(
        self, levels: Sequence[torch.Tensor], labels: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CE(main) + ``aux_weight`` · CE(auxiliary level), ignoring label 255, times ``weight`` (default
        :meth:`global_pixel_weight` of ``labels``: the mean over the labelled pixels of the global batch under DDP)."""
        loss = task_cross_entropy(levels[0], labels, self.ignore_index)
        for aux in levels[1:]:
            loss = loss + self.aux_weight * task_cross_entropy(aux, labels, self.ignore_index)
        return loss * (self.global_pixel_weight(labels) if weight is None else weight)

    def global_pixel_weight(self, labels: torch.Tensor) -> torch.Tensor:
        """:func:`~syn2real.methods.base.global_mean_weight` of this rank's labelled (not ignored) pixels: without it a
        rank whose crops are mostly ignored (pseudo-labels, GTA5's void) would weigh as much as one full of labels."""
        return global_mean_weight(self, (labels != self.ignore_index).sum())

    @staticmethod
    def pixel_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        valid = labels != IGNORE_INDEX
        return ((logits.argmax(1) == labels) & valid).sum() / valid.sum().clamp_min(1)

    def colorize(self, labels: torch.Tensor) -> torch.Tensor:
        """Label maps in the data's palette (``datamodule.palette`` when it has one)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return colorize(labels, self.network_cfg.num_classes, getattr(dm, "palette", None))

    # -- evaluation ---------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._eval_sample = None  # the W&B sample is taken from this evaluation, not the sanity check

    def on_test_epoch_start(self) -> None:
        self._eval_sample = None

    def segment(self, x: torch.Tensor, out_size: Sequence[int] | None = None) -> torch.Tensor:
        """Class probabilities of a batch under the method's ``inference`` settings, at ``out_size``."""
        return segment(self.model, x, self.network_cfg.num_classes, self.inference, out_size)

    def _eval_step(self, batch: Any, dataloader_idx: int) -> None:
        x, y = batch[0], batch[1]
        domain = self.eval_domains[dataloader_idx]
        probs = self.segment(x, y.shape[-2:])
        pred = probs.argmax(dim=1)
        self.eval_metrics[domain].update(pred, y)
        if domain == "target":
            self.validators["entropy"].update(probs.permute(0, 2, 3, 1).reshape(-1, probs.shape[1]))
            if getattr(self, "_eval_sample", None) is None:  # the first target images of this evaluation, for W&B
                self._eval_sample = (x[:4].detach().cpu(), y[:4].cpu(), pred[:4].cpu())

    def eval_media(self) -> dict[str, torch.Tensor]:
        """Rows image | ground truth | prediction of the first evaluated target images (then forgotten)."""
        sample, self._eval_sample = getattr(self, "_eval_sample", None), None
        if sample is None:
            return {}
        x, y, pred = sample
        image = F.interpolate(_display(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        return {"segmentation/eval_target": torch.stack([image, self.colorize(y), self.colorize(pred)])}

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        conf, pred = self.segment(batch[0]).max(dim=1)
        return {"pred": pred, "confidence": conf}

    def training_media(self, batch: Batch, max_images: int = 4) -> dict[str, torch.Tensor]:
        """W&B rows (image, ground truth, prediction[, pseudo-label]) of the source and target batches, in [0, 1]."""
        media: dict[str, torch.Tensor] = {}
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for domain in ("source", "target"):
                    item = batch.get(domain)
                    if item is None:
                        continue
                    x, y = item[0][:max_images], item[1][:max_images]
                    pred = self.segment(x).argmax(dim=1)
                    rows = [_display(x)]
                    if domain == "source":
                        rows += [self.colorize(y), self.colorize(pred)]
                    else:
                        rows += [self.colorize(pred), self.colorize(y)]  # target labels in training are pseudo-labels
                    media[f"segmentation/{domain}"] = torch.stack(rows)
        finally:
            self.train(was_training)
        return media


@null_defaults(network=SegNetworkConfig, optim=deeplab_optim)
class SegSourceOnly(SegmentationMixin, DAMethod):
    """Source-only segmentation: CE on the labelled source (+ 0.1 · auxiliary level); the target is ignored.

    Args:
        network: DeepLabV2 (ResNet-101, ASPP 6/12/18/24, frozen BatchNorm) by default.
        optim: DeepLab's SGD (backbone 2.5e-4, classifier 2.5e-3, poly 0.9).
        augment: applied to the labelled source batch.
        inference: evaluation (whole image or sliding window, flip, scales).
        aux_weight: weight of the auxiliary level's CE with ``network.multi_level`` (0.1).
        init_checkpoint: continue from a syn2real checkpoint's ``model.*`` (the control for adaptation runs that
            start from a source model: the same extra steps on the source alone).
    """

    def __init__(
        self,
        network: SegNetworkConfig | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        inference: InferenceConfig | None = None,
        aux_weight: float = 0.1,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__(network=network or SegNetworkConfig(), optim=optim or deeplab_optim(), augment=augment)
        self.inference = inference or InferenceConfig()
        self.aux_weight = float(aux_weight)
        if init_checkpoint is not None:
            load_model_weights(self.model, init_checkpoint, optional=("aux_classifier.",))

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = self.source_batch(batch)
        levels = self.segmentation_logits(x)
        loss = self.segmentation_loss(levels, y)
        return {"loss": loss, "source_ce": loss.detach(), "source_pixel_acc": self.pixel_accuracy(levels[0], y)}


def advent_discriminator_optim() -> OptimConfig:
    """Output-space discriminators in AdaptSegNet/AdvEnt: Adam lr 1e-4, β (0.9, 0.99), no weight decay, poly 0.9."""
    return OptimConfig(name="adam", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, scheduler="poly", power=0.9)


@null_defaults(network=SegNetworkConfig, optim=deeplab_optim, discriminator_optim=advent_discriminator_optim)
class OutputSpaceAdaptation(SegmentationMixin, DAMethod):
    """AdaptSegNet / AdvEnt output-space adversarial adaptation (manual optimisation: segmenter, then discriminator).

    Per step: (1) CE on the source (discriminators frozen); (2) the target's maps (softmax or self-information) go to
    the discriminator of each level and the segmenter minimises λ_l · BCE(D_l(target map), source) (+ ``entropy_weight``
    · MinEnt); one SGD step on both gradients; (3) the discriminators learn source (1) vs target (0) maps, detached.

    Args:
        network / optim / augment / inference / aux_weight: as :class:`SegSourceOnly`.
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

    def __init__(
        self,
        network: SegNetworkConfig | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        inference: InferenceConfig | None = None,
        aux_weight: float = 0.1,
        discriminator_input: Literal["entropy", "softmax"] = "entropy",
        lambda_adv: list[float] | None = None,
        entropy_weight: float = 0.0,
        discriminator_channels: list[int] | None = None,
        discriminator_optim: OptimConfig | None = None,
        source_translator: str | None = None,
        init_checkpoint: str | None = None,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(network=network or SegNetworkConfig(), optim=optim or deeplab_optim(), augment=augment)
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
        self.inference = inference or InferenceConfig()
        self.aux_weight = float(aux_weight)
        self.discriminator_input = discriminator_input
        self.lambda_adv = [float(v) for v in lambda_adv]
        self.entropy_weight = float(entropy_weight)
        channels = tuple(discriminator_channels or (64, 128, 256, 512))
        n = self.network_cfg.num_classes
        self.discriminators = nn.ModuleList(ConvDiscriminator(n, channels) for _ in range(levels))
        self.disc_optim_cfg = discriminator_optim or advent_discriminator_optim()
        if init_checkpoint is not None:  # a single-level run may start a multi-level one (fresh auxiliary classifier)
            load_model_weights(self.model, init_checkpoint, optional=("aux_classifier.",))
        self.translator = SourceTranslator(source_translator) if source_translator is not None else None

    def translate_source(self, x: torch.Tensor) -> torch.Tensor:
        """G_ST(x) in data space when a ``source_translator`` is set, else ``x``."""
        return x if self.translator is None else self.translator(x)

    def discriminator_maps(self, logits: torch.Tensor) -> torch.Tensor:
        """What a discriminator sees: softmax maps (AdaptSegNet) or self-information maps (AdvEnt)."""
        probs = logits.float().softmax(dim=1)
        return self_information_map(probs) if self.discriminator_input == "entropy" else probs

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opt_seg, opt_d = self.optimizers()
        x_s, y_s = self.source_batch(batch)
        x_s = self.translate_source(x_s)
        x_t = batch["target"][0]
        for d in self.discriminators:
            d.requires_grad_(False)
        opt_seg.zero_grad()
        levels_s = self.segmentation_logits(x_s)
        loss_seg = self.segmentation_loss(levels_s, y_s) + sum(self.pop_augment_losses().values())
        guard_losses(self, {"source_ce": loss_seg})
        backward_local(self, loss_seg)  # two backward passes, one all-reduce of the segmenter's gradients
        levels_t = self.segmentation_logits(x_t)
        maps_t = [self.discriminator_maps(level) for level in levels_t]
        loss_adv = sum(w * adda_target_loss(d(m)) for w, d, m in zip(self.lambda_adv, self.discriminators, maps_t))
        loss_ent = entropy_loss(levels_t[0].float().softmax(dim=1))
        guard_losses(self, {"adversarial": torch.as_tensor(loss_adv), "target_entropy": loss_ent})
        backward_local(self, loss_adv + self.entropy_weight * loss_ent)
        average_gradients(self, opt_seg)
        opt_seg.step()

        for d in self.discriminators:
            d.requires_grad_(True)
        opt_d.zero_grad()
        maps_s = [self.discriminator_maps(level.detach()) for level in levels_s]
        loss_d = torch.zeros((), device=x_s.device)
        acc_d = []
        for d, m_s, m_t in zip(self.discriminators, maps_s, maps_t):
            d_s, d_t = d(m_s), d(m_t.detach())
            loss_d = loss_d + domain_adversarial_loss(d_s, d_t)
            acc_d.append(domain_accuracy(d_s, d_t))
        guard_losses(self, {"discriminator_loss": loss_d})
        backward_local(self, loss_d)
        average_gradients(self, opt_d)
        opt_d.step()
        step_schedulers(self)

        bs = x_s.shape[0]
        self.log("train/loss", (loss_seg + loss_adv).detach(), prog_bar=True, batch_size=bs)
        self.log_dict({
            "train/source_ce": loss_seg.detach(),
            "train/adversarial": torch.as_tensor(loss_adv).detach(),
            "train/target_entropy": loss_ent.detach(),
            "train/discriminator_loss": loss_d.detach(),
            "train/discriminator_acc": acc_d[0],
            "train/source_pixel_acc": self.pixel_accuracy(levels_s[0].detach(), y_s),
        }, batch_size=bs)

    def configure_optimizers(self) -> Any:
        opt_seg = self.build_optimizer(self.param_groups())
        cfg = self.disc_optim_cfg
        opt_d = build_optimizer([{"params": list(self.discriminators.parameters()), "lr": cfg.lr}], cfg)
        schedulers = [s for s in (self.build_scheduler(opt_seg), self.build_scheduler(opt_d, cfg)) if s is not None]
        return [opt_seg, opt_d], schedulers


def cbst_seg_optim() -> OptimConfig:
    """CBST/CRST segmentation fine-tuning (official code): SGD, backbone lr 5e-5 and classifier 10× (5e-4), momentum
    0.9, weight decay 5e-4, poly 0.9."""
    return OptimConfig(name="sgd", lr=5e-4, backbone_lr_mult=0.1, momentum=0.9, weight_decay=5e-4, scheduler="poly",
                       power=0.9)


@null_defaults(network=SegNetworkConfig, optim=cbst_seg_optim)
class SegSelfTraining(SegmentationMixin, DAMethod):
    """CBST / CRST-MRKLD for segmentation: rounds of pixel pseudo-labels (class-balanced thresholds from all-reduced
    confidence histograms, written as PNGs the target loader crops with its image), then training on source CE +
    pseudo-label CE (+ λ · MRKLD on pseudo-labelled pixels).

    Args:
        network / optim / augment / inference / aux_weight: as :class:`SegSourceOnly`; ``optim`` defaults to the
            CBST code's SGD (backbone 5e-5, classifier 5e-4, poly).
        init_checkpoint: the starting model (source-only or output-space adapted), strongly recommended.
        variant: ``cbst`` or ``mrkld`` (CRST's model regulariser; LRENT's soft pixel labels would need C maps per
            image on disk and are not offered for segmentation).
        rounds: the pseudo-labelling schedule (portion 0.2 + 0.05 per round, cap 0.5; 2 epochs per round).
        mrkld_weight: λ of MRKLD (paper 0.1).
        source_weight / target_weight: weights of the source CE and the pseudo-label CE.
    """

    def __init__(
        self,
        network: SegNetworkConfig | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        inference: InferenceConfig | None = None,
        aux_weight: float = 0.1,
        init_checkpoint: str | None = None,
        variant: Literal["cbst", "mrkld"] = "cbst",
        rounds: PixelRoundConfig | None = None,
        mrkld_weight: float = 0.1,
        source_weight: float = 1.0,
        target_weight: float = 1.0,
    ) -> None:
        super().__init__(network=network or SegNetworkConfig(), optim=optim or cbst_seg_optim(), augment=augment)
        if variant not in ("cbst", "mrkld"):
            raise ValueError(f"segmentation self-training variant must be 'cbst' or 'mrkld', got {variant!r}")
        if min(mrkld_weight, source_weight, target_weight) < 0:
            raise ValueError("mrkld_weight, source_weight and target_weight must be >= 0")
        self.inference = inference or InferenceConfig()
        self.aux_weight = float(aux_weight)
        self.variant = variant
        self.mrkld_weight, self.source_weight, self.target_weight = float(mrkld_weight), float(source_weight), float(
            target_weight)
        self.init_checkpoint = init_checkpoint
        if init_checkpoint is not None:
            load_model_weights(self.model, init_checkpoint, optional=("aux_classifier.",))
        else:
            log.warning("SegSelfTraining without init_checkpoint: the first pseudo-labels come from an untrained model")
        self.rounds = PixelPseudoLabelRounds(rounds or PixelRoundConfig())

    def configure_callbacks(self) -> list[Any]:
        return [self.rounds]

    def run_summary(self) -> dict[str, Any]:
        out = super().run_summary()
        if self.rounds.history:
            out["self_training_rounds"] = self.rounds.history
        return out

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x_s, y_s = self.source_batch(batch)
        x_t, pseudo = batch["target"][0], batch["target"][1]
        n_s = x_s.shape[0]
        levels = self.segmentation_logits(torch.cat([x_s, x_t]))
        loss_s = self.segmentation_loss([lv[:n_s] for lv in levels], y_s)
        w_t = self.global_pixel_weight(pseudo)  # pseudo-labelled pixels vary most between ranks
        loss_t = self.segmentation_loss([lv[n_s:] for lv in levels], pseudo, weight=w_t)
        kept = pseudo != IGNORE_INDEX
        loss = self.source_weight * loss_s + self.target_weight * loss_t
        out = {"source_ce": loss_s.detach(), "pseudo_ce": loss_t.detach(), "pseudo_kept": kept.float().mean()}
        if self.variant == "mrkld":
            reg = mrkld_loss(levels[0][n_s:], kept)
            loss = loss + self.mrkld_weight * w_t * reg
            out["mrkld"] = reg.detach()
        return {"loss": loss, **out}


@null_defaults(
    network=SegNetworkConfig, optim=cycada_gan_optim, generator=GeneratorConfig,
    discriminator=PatchDiscriminatorConfig, gan_optim=cycada_gan_optim,
)
class SegCyCADA(SegmentationMixin, CyCADA):
    """CyCADA pixel level for segmentation: CycleGAN + semantic consistency through a frozen segmentation teacher
    (per-pixel CE on G_ST(x_s) with the source labels, and on G_TS(x_t) with the teacher's own target predictions),
    and the segmenter f_T trained on translated source. Arguments as :class:`~syn2real.methods.cycada.CyCADA`, with a
    segmentation ``network`` and ``inference``; ``pixel_mean``/``pixel_std`` must be the data's Normalize values
    (ImageNet for the GTA5 configs)."""

    def __init__(
        self,
        network: SegNetworkConfig | None = None,
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
        inference: InferenceConfig | None = None,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(
            network=network or SegNetworkConfig(), teacher_checkpoint=teacher_checkpoint, optim=optim, augment=augment,
            generator=generator, discriminator=discriminator, gan_optim=gan_optim, lambda_gan=lambda_gan,
            lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, lambda_semantic=lambda_semantic,
            lambda_task=lambda_task, pool_size=pool_size, task_init=task_init, pixel_mean=pixel_mean,
            pixel_std=pixel_std, ignore_index=IGNORE_INDEX, grad_clip=grad_clip,
        )
        self.inference = inference or InferenceConfig()
        self.aux_weight = 0.1

    def _eval_step(self, batch: Any, dataloader_idx: int) -> None:
        SegmentationMixin._eval_step(self, batch, dataloader_idx)
        self.translation_eval_step(batch, dataloader_idx)

    def teacher_accuracy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pixel accuracy of the teacher (ignore 255), its logits upsampled to the label size."""
        return self.pixel_accuracy(upsample(logits, y.shape[-2:]), y)

    def training_media(self, batch: Batch, max_images: int = 4) -> dict[str, torch.Tensor]:
        media = CyCADA.training_media(self, batch, max_images)
        media.update(SegmentationMixin.training_media(self, batch, max_images))
        return media
