"""Class-balanced self-training: CBST (Zou et al., ECCV 2018) and CRST (Zou et al., ICCV 2019), for classification
and segmentation.

Training alternates rounds of pseudo-labelling with epochs of training on source + pseudo-labelled target. The
task supplies the rounds: for images :class:`~syn2real.callbacks.pseudo_labels.PseudoLabelRounds` (predict every
target image, per-class thresholds k_c at portion p, ŷ = argmax p_c/k_c kept where ≥ 1, looked up by item index);
for pixels :class:`~syn2real.callbacks.pixel_pseudo_labels.PixelPseudoLabelRounds` (thresholds from all-reduced
confidence histograms, label maps on disk that the target loader crops with its image). Variants:

- ``cbst``: cross-entropy on the hard pseudo-labels;
- ``mrkld``: CBST + λ · mean_c(−log p_c) on the pseudo-labelled samples/pixels (confidence regulariser on the model);
- ``lrent``: cross-entropy on the soft pseudo-labels ŷ_c ∝ (p_c/k_c)^(1/α) (label entropy regulariser; images only).

It starts from any syn2real checkpoint (``init_checkpoint``): source-only, DANN, CDAN, ADDA's target network,
AdvEnt for segmentation.

:class:`~syn2real.methods.drst.DRST` is a subclass that labels the same rounds from a density-ratio robust classifier
(the rounds ask the method for its probabilities through ``pseudo_label_probabilities`` when it has that hook).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch

from syn2real.adversarial.base import Augmentation
from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.losses.self_training import mrkld_loss, soft_cross_entropy
from syn2real.methods.base import Batch, DAMethod
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Segmentation, Task

__all__ = ["SelfTraining", "cbst_seg_optim"]

log = logging.getLogger(__name__)


def cbst_seg_optim() -> OptimConfig:
    """CBST/CRST segmentation fine-tuning (official code): SGD, backbone lr 5e-5 and classifier 10× (5e-4), momentum
    0.9, weight decay 5e-4, poly 0.9."""
    return OptimConfig(name="sgd", lr=5e-4, backbone_lr_mult=0.1, momentum=0.9, weight_decay=5e-4, scheduler="poly",
                       power=0.9)


@null_defaults(task=lambda: Classification(NetworkConfig()), optim=OptimConfig)
class SelfTraining(DAMethod):
    """CBST / CRST.

    Args:
        task / optim / augment: as for every method (``augment`` applies to the labelled source batch); ``optim``
            defaults to the CBST code's SGD for segmentation (backbone 5e-5, classifier 5e-4, poly).
        init_checkpoint: checkpoint whose ``model.*`` weights start training (strongly recommended: self-training
            amplifies what the starting model gets right).
        variant: ``cbst``, ``mrkld`` or ``lrent`` (images only).
        rounds: the pseudo-labelling schedule (portion 0.2 + 0.05/round, cap 0.5; 2 epochs per round).
        mrkld_weight: λ of MRKLD (paper 0.1; the official classification code's effective weight was 0.01).
        lrent_alpha: α of LRENT's soft labels (paper 0.25).
        source_weight: weight of the source loss mixed into every step (0 = target only).
        target_weight: weight of the pseudo-label loss.
        augment_target: also pass the pseudo-labelled target samples (those kept this round) through ``augment``,
            with their pseudo-labels as the attack's labels; unlabelled target samples are left as they are
            (classification).
    """

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        init_checkpoint: str | None = None,
        variant: Literal["cbst", "mrkld", "lrent"] = "cbst",
        rounds: RoundConfig | None = None,
        mrkld_weight: float = 0.1,
        lrent_alpha: float = 0.25,
        source_weight: float = 1.0,
        target_weight: float = 1.0,
        augment_target: bool = False,
    ) -> None:
        super().__init__(task=task, optim=optim, augment=augment)
        if variant not in ("cbst", "mrkld", "lrent"):
            raise ValueError(f"variant must be 'cbst', 'mrkld' or 'lrent', got {variant!r}")
        if min(mrkld_weight, lrent_alpha, source_weight, target_weight) < 0 or lrent_alpha == 0:
            raise ValueError("mrkld_weight, source_weight, target_weight must be >= 0 and lrent_alpha > 0")
        if augment_target and not isinstance(self.task, Classification):
            raise ValueError("augment_target needs image-level pseudo-labels (task Classification)")
        self.variant = variant
        self.mrkld_weight = float(mrkld_weight)
        self.source_weight = float(source_weight)
        self.target_weight = float(target_weight)
        self.augment_target = bool(augment_target)
        self.init_checkpoint = init_checkpoint
        if init_checkpoint is not None:
            self.load_weights(init_checkpoint)
        else:
            log.warning("SelfTraining without init_checkpoint: the first pseudo-labels come from an untrained model")
        self.rounds = self.task.pseudo_label_rounds(rounds or RoundConfig(), soft=variant == "lrent",
                                                    lrent_alpha=lrent_alpha)

    def default_optim(self) -> OptimConfig:
        return cbst_seg_optim() if isinstance(self.task, Segmentation) else OptimConfig()

    def configure_callbacks(self) -> list[Any]:
        return [self.rounds]

    def run_summary(self) -> dict[str, Any]:
        out = super().run_summary()
        if self.rounds.history:
            out["self_training_rounds"] = self.rounds.history
        return out

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x_s, y_s = self.source_batch(batch)
        x_t, labels, soft = self.task.pseudo_labelled_target(batch, self.rounds)
        kept = labels != self.task.unlabelled
        kept_fraction = kept.float().mean()
        if self.augment_target and self.augment is not None and bool(kept.any()):
            # only the pseudo-labelled samples carry a label to attack; the rest contribute no loss anyway
            n_kept = int(kept.sum())
            x_t, labels = self.augment_labelled(x_t[kept], labels[kept], prefix="target_")
            if soft is not None:
                soft = soft[kept].repeat(labels.shape[0] // n_kept, 1)  # `concat` mode doubles the batch
            kept = torch.ones_like(labels, dtype=torch.bool)
        levels = self.task.levels(self.model, torch.cat([x_s, x_t]))
        n_s = x_s.shape[0]
        levels_s, levels_t = [lv[:n_s] for lv in levels], [lv[n_s:] for lv in levels]
        ce_s = self.task.loss(self, levels_s, y_s)
        # the target terms are means over this rank's kept samples/pixels: weighted to means over the global batch's
        ce_t, scale = self.task.masked_loss(self, levels_t, labels)
        if self.variant == "lrent":
            ce_t = soft_cross_entropy(levels_t[0], soft, kept)
        loss = self.source_weight * ce_s + self.target_weight * (ce_t * scale)
        out = {"source_ce": ce_s.detach(), "pseudo_ce": ce_t.detach(), "pseudo_kept": kept_fraction}
        if self.variant == "mrkld":
            reg = mrkld_loss(levels_t[0], kept)
            loss = loss + self.mrkld_weight * scale * reg
            out["mrkld"] = reg.detach()
        return {"loss": loss, **out}
