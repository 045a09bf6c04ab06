"""Distributionally robust self-training (DRST; Wang, Liu, Yu, Yue, Anandkumar, arXiv 2010.05784): CBST whose
pseudo-labeller is a robust classifier, less confident where the target is unlike the source.

It is :class:`~syn2real.methods.self_training.SelfTraining` (the same class-balanced rounds, the same
:class:`~syn2real.callbacks.pseudo_labels.PseudoLabelRounds` callback) with three changes:

- a *domain classifier* d (an MLP, :class:`~syn2real.models.discriminators.DiscriminatorConfig`) on the task
  network's bottleneck features, trained every step with BCE (source = 1, target = 0) on **detached** features: it
  estimates the density ratio r(x) = p_s(x)/p_t(x) = d/(1−d) · n_t/n_s (:func:`~syn2real.losses.drst.density_ratio`,
  clamped to [``ratio_min``, ``ratio_max``]) without changing the task network (unlike DANN it is not adversarial).
  The public code trains a second ResNet-101 on the images instead; ours costs one small MLP and reads the features
  the network computes anyway, at the price of a ratio measured in the adapting network's own feature space;
- the rounds label from the *robust classifier* softmax(r(x) · f(x)) through the hook
  :meth:`DRST.pseudo_label_probabilities` (flatter predictions, hence fewer pseudo-labels, where r is small); each
  round also records the mean ratio over the target set and over the kept samples (``mean_density_ratio``,
  ``mean_density_ratio_kept``);
- the source and pseudo-labelled target losses are the robust classifier's cross-entropy with the robust-learning
  gradient softmax(r·f) − onehot (``gradient: robust``, as the public code's hand-written backward) or autograd's
  r · (softmax(r·f) − onehot) (``gradient: autograd``); see :mod:`syn2real.losses.drst`.

Everything is automatic optimisation: under DDP the domain classifier's gradients are averaged with the rest, and the
rounds gather the robust probabilities and ratios of all ranks before the thresholds, so 2 processes give one
process's pseudo-labels. The public code steps its domain classifier only in the first 5 iterations of epoch 0 (most
likely an artefact); here it learns in every step, so the ratio follows the network. Round 0 runs before any step,
when the domain classifier is untrained (its ratio is whatever its initial weights give): set ``init_checkpoint`` and
count the first round as CBST's.

Images only: segmentation's rounds (:class:`~syn2real.callbacks.pixel_pseudo_labels.PixelPseudoLabelRounds`) predict
through the evaluation's tiled inference and would need a per-pixel ratio from a convolutional domain classifier on
the feature maps, i.e. a second implementation of both pieces; DRST refuses the ``Segmentation`` task.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from syn2real.adversarial.base import Augmentation
from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.core.distributed import global_mean_weight
from syn2real.losses.adversarial import domain_accuracy, domain_adversarial_loss
from syn2real.losses.drst import density_ratio, robust_cross_entropy, robust_probabilities
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.methods.self_training import SelfTraining
from syn2real.models.discriminators import DiscriminatorConfig
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Segmentation, Task

__all__ = ["DRST", "drst_domain_classifier"]


def drst_domain_classifier() -> DiscriminatorConfig:
    """The density-ratio estimator: features → 500 → 500 → 1 logit, ReLU, no dropout or BatchNorm (deterministic
    and identical under DDP and in one process)."""
    return DiscriminatorConfig(preset="adda")


@null_defaults(task=lambda: Classification(NetworkConfig()), optim=OptimConfig,
               domain_classifier=drst_domain_classifier)
class DRST(SelfTraining):
    """DRST: class-balanced self-training with the density-ratio-scaled robust classifier.

    Args:
        task / optim / augment / init_checkpoint / rounds / source_weight / target_weight: as for
            :class:`SelfTraining` (hard CBST pseudo-labels; ``task`` must be ``Classification``).
        domain_classifier: the MLP on the (detached) bottleneck features that estimates the density ratio;
            ``lr_mult`` scales its learning rate.
        domain_weight: weight of its BCE in the step's total (it only reaches the domain classifier).
        ratio_min / ratio_max: clamp range of r(x) = p_s/p_t; the robust logits are r · f, so ``ratio_min`` bounds how
            flat and ``ratio_max`` how sharp a prediction can become (defaults 0.1, 10).
        gradient: ``robust`` (softmax(r·f) − onehot in the logits, the public code's) or ``autograd`` (r times it).
    """

    supported_tasks = (Classification,)  # the rounds' hook and the ratio need image-level features
    # SelfTraining's own arguments that DRST fixes (hard CBST labels): not hyper-parameters of a DRST checkpoint
    hparams_ignore = (*SelfTraining.hparams_ignore, "variant", "mrkld_weight", "lrent_alpha", "augment_target")

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        init_checkpoint: str | None = None,
        rounds: RoundConfig | None = None,
        source_weight: float = 1.0,
        target_weight: float = 1.0,
        domain_classifier: DiscriminatorConfig | None = None,
        domain_weight: float = 1.0,
        ratio_min: float = 0.1,
        ratio_max: float = 10.0,
        gradient: Literal["robust", "autograd"] = "robust",
    ) -> None:
        if isinstance(task, Segmentation):
            raise ValueError(
                "DRST supports model.init_args.task Classification only: segmentation would need a per-pixel density "
                "ratio (a convolutional domain classifier) inside the pixel rounds' tiled inference, a second "
                "implementation of both; use SelfTraining (CBST/CRST) for segmentation"
            )
        super().__init__(task=task, optim=optim, augment=augment, init_checkpoint=init_checkpoint, variant="cbst",
                         rounds=rounds, source_weight=source_weight, target_weight=target_weight)
        if not (0.0 < ratio_min <= ratio_max):
            raise ValueError(f"DRST: need 0 < ratio_min <= ratio_max, got ratio_min={ratio_min}, ratio_max={ratio_max}")
        if gradient not in ("robust", "autograd"):
            raise ValueError(f"DRST: gradient must be 'robust' or 'autograd', got {gradient!r}")
        if domain_weight < 0:
            raise ValueError(f"DRST: domain_weight must be >= 0, got {domain_weight}")
        self.domain_cfg = domain_classifier or drst_domain_classifier()
        self.domain_classifier = self.domain_cfg.build(self.model.num_features)
        self.domain_weight = float(domain_weight)
        self.ratio_min, self.ratio_max = float(ratio_min), float(ratio_max)
        self.gradient = gradient
        # source and target samples the domain classifier has been trained on (this rank's; only the ratio n_t / n_s,
        # its prior correction, is used, the same on every rank and in one process)
        self.register_buffer("domain_counts", torch.zeros(2, dtype=torch.float64))

    # -- the density ratio and the robust classifier ------------------------------------------------------
    def density_ratio(self, domain_logits: torch.Tensor) -> torch.Tensor:
        """r(x), clamped, from the domain classifier's logits (n_t/n_s = 1 before it has seen a batch)."""
        n_s, n_t = (float(c) for c in self.domain_counts) if bool((self.domain_counts > 0).all()) else (1.0, 1.0)
        return density_ratio(domain_logits, n_s, n_t, self.ratio_min, self.ratio_max)

    @torch.no_grad()
    def pseudo_label_probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The robust classifier's softmax(r(x) · f(x)) and the density ratio r(x) of a batch (the rounds' hook)."""
        logits, features = self.model(x, return_features=True)
        ratio = self.density_ratio(self.domain_classifier(features))
        return robust_probabilities(logits, ratio), {"density_ratio": ratio}

    # -- training -----------------------------------------------------------------------------------------
    def compute_losses(self, batch: Any) -> dict[str, torch.Tensor]:
        x_s, y_s = self.source_batch(batch)
        x_t, labels, _ = self.task.pseudo_labelled_target(batch, self.rounds)
        kept = labels != self.task.unlabelled
        n_s = x_s.shape[0]
        logits, features = self.model(torch.cat([x_s, x_t]), return_features=True)
        d = self.domain_classifier(features.detach())  # the ratio estimator never changes the task network
        d_s, d_t = d[:n_s], d[n_s:]
        domain_loss = domain_adversarial_loss(d_s, d_t)
        with torch.no_grad():
            self.domain_counts += torch.tensor([n_s, x_t.shape[0]], dtype=self.domain_counts.dtype,
                                               device=self.domain_counts.device)
            ratio = self.density_ratio(d.detach())
        ce_s = robust_cross_entropy(logits[:n_s], ratio[:n_s], y_s, self.gradient)
        ce_t = robust_cross_entropy(logits[n_s:], ratio[n_s:], labels, self.gradient, ignore_index=self.task.unlabelled)
        scale = global_mean_weight(self, kept.sum())  # mean over the global batch's kept samples
        loss = self.source_weight * ce_s + self.target_weight * ce_t * scale + self.domain_weight * domain_loss
        return {
            "loss": loss,
            "source_ce": ce_s.detach(),
            "pseudo_ce": ce_t.detach(),
            "pseudo_kept": kept.float().mean(),
            "domain_loss": domain_loss.detach(),
            "domain_acc": domain_accuracy(d_s, d_t),
            "ratio_source": ratio[:n_s].mean(),
            "ratio_target": ratio[n_s:].mean(),
        }

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        lr = self.optim_cfg.lr * self.domain_cfg.lr_mult
        groups.append({"params": list(self.domain_classifier.parameters()), "lr": lr, "name": "domain_classifier"})
        return groups
