"""Class-balanced self-training: CBST (Zou et al., ECCV 2018) and CRST (Zou et al., ICCV 2019).

Training alternates rounds of pseudo-labelling (:class:`~syn2real.callbacks.pseudo_labels.PseudoLabelRounds`:
predict every target image, per-class thresholds k_c at portion p, ŷ = argmax p_c/k_c kept where ≥ 1) with
epochs of training on source + pseudo-labelled target. Variants:

- ``cbst``: cross-entropy on the hard pseudo-labels;
- ``mrkld``: CBST + λ · mean_c(−log p_c) on the pseudo-labelled samples (confidence regulariser on the model);
- ``lrent``: cross-entropy on the soft pseudo-labels ŷ_c ∝ (p_c/k_c)^(1/α) (label entropy regulariser).

It starts from any syn2real checkpoint (``init_checkpoint``): source-only, DANN, CDAN, ADDA's target network.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from syn2real.adversarial.base import Augmentation
from syn2real.callbacks.pseudo_labels import PseudoLabelRounds, RoundConfig
from syn2real.losses.self_training import mrkld_loss, soft_cross_entropy
from syn2real.methods.base import (
    Batch,
    DAMethod,
    OptimConfig,
    global_mean_weight,
    load_model_weights,
    null_defaults,
)
from syn2real.models.heads import NetworkConfig

__all__ = ["SelfTraining"]


@null_defaults(network=NetworkConfig, optim=OptimConfig)
class SelfTraining(DAMethod):
    """CBST / CRST for classification.

    Args:
        network / optim / augment: as for every method (``augment`` applies to the labelled source batch).
        init_checkpoint: checkpoint whose ``model.*`` weights start training (strongly recommended: self-training
            amplifies what the starting model gets right).
        variant: ``cbst``, ``mrkld`` or ``lrent``.
        rounds: the pseudo-labelling schedule (portion 0.2 + 0.05/round, cap 0.5; 2 epochs per round).
        mrkld_weight: λ of MRKLD (paper 0.1; the official code's effective weight was 0.01).
        lrent_alpha: α of LRENT's soft labels (paper 0.25).
        source_weight: weight of the source cross-entropy mixed into every step (0 = target only).
        target_weight: weight of the pseudo-label loss.
        augment_target: also pass the pseudo-labelled target samples (those kept this round) through ``augment``,
            with their pseudo-labels as the attack's labels; unlabelled target samples are left as they are.
    """

    def __init__(
        self,
        network: NetworkConfig | None = None,
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
        super().__init__(network=network, optim=optim, augment=augment)
        if variant not in ("cbst", "mrkld", "lrent"):
            raise ValueError(f"variant must be 'cbst', 'mrkld' or 'lrent', got {variant!r}")
        if min(mrkld_weight, lrent_alpha, source_weight, target_weight) < 0 or lrent_alpha == 0:
            raise ValueError("mrkld_weight, source_weight, target_weight must be >= 0 and lrent_alpha > 0")
        self.variant = variant
        self.mrkld_weight = float(mrkld_weight)
        self.source_weight = float(source_weight)
        self.target_weight = float(target_weight)
        self.augment_target = bool(augment_target)
        self.init_checkpoint = init_checkpoint
        if init_checkpoint is not None:
            load_model_weights(self.model, init_checkpoint)
        self.rounds = PseudoLabelRounds(rounds or RoundConfig(), soft=variant == "lrent", lrent_alpha=lrent_alpha)

    def configure_callbacks(self) -> list[Any]:
        return [self.rounds]

    def run_summary(self) -> dict[str, Any]:
        out = super().run_summary()
        if self.rounds.history:
            out["self_training_rounds"] = self.rounds.history
        return out

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.rounds.labels is None:
            raise RuntimeError("SelfTraining: no pseudo-labels yet; PseudoLabelRounds must run before training")
        x_s, y_s = self.source_batch(batch)
        if len(batch["target"]) != 3:
            raise ValueError(
                "SelfTraining needs target batches (image, label, index) to look pseudo-labels up; the target "
                "training set of syn2real.data.DomainPairDataModule yields them (TransformedSubset(return_index=True))"
            )
        x_t, _, idx = batch["target"]  # the target label is never used
        labels = self.rounds.labels.to(idx.device)[idx]
        kept = labels >= 0
        kept_fraction = kept.float().mean()
        soft = self.rounds.soft_labels.to(idx.device)[idx] if self.variant == "lrent" else None
        if self.augment_target and self.augment is not None and bool(kept.any()):
            # only the pseudo-labelled samples carry a label to attack; the rest contribute no loss anyway
            n_kept = int(kept.sum())
            x_t, labels = self.augment_labelled(x_t[kept], labels[kept], prefix="target_")
            if soft is not None:
                soft = soft[kept].repeat(labels.shape[0] // n_kept, 1)  # `concat` mode doubles the batch
            kept = torch.ones_like(labels, dtype=torch.bool)
        logits = self.model(torch.cat([x_s, x_t]))
        n_s = x_s.shape[0]
        logits_s, logits_t = logits[:n_s], logits[n_s:]
        ce_s = F.cross_entropy(logits_s, y_s)
        if self.variant == "lrent":
            ce_t = soft_cross_entropy(logits_t, soft, kept)
        else:
            per_sample = F.cross_entropy(logits_t, labels.clamp_min(0), reduction="none")
            ce_t = torch.where(kept, per_sample, torch.zeros_like(per_sample)).sum() / kept.sum().clamp_min(1)
        # the target terms are means over this rank's kept samples: weighted to means over the global batch's
        scale = global_mean_weight(self, kept.sum())
        loss = self.source_weight * ce_s + self.target_weight * scale * ce_t
        out = {"source_ce": ce_s, "pseudo_ce": ce_t, "pseudo_kept": kept_fraction}
        if self.variant == "mrkld":
            reg = mrkld_loss(logits_t, kept)
            loss = loss + self.mrkld_weight * scale * reg
            out["mrkld"] = reg
        return {"loss": loss, **out}
