"""MinEnt: entropy minimisation on the target (Vu et al., "ADVENT", CVPR 2019, eq. 3; Grandvalet & Bengio, NeurIPS
2005 for classification), one class for classification and segmentation.

Loss = supervised loss on the labelled source + ``entropy_weight`` · E_t, with E_t the mean normalised entropy
−Σ_c p_c log p_c / log C of the target predictions (per image for classification, per pixel for segmentation).
AdvEnt's MinEnt uses λ_ent = 0.001 on GTA5→Cityscapes (DeepLabV2, SGD 2.5e-4, the AdvEnt code's defaults).
"""

from __future__ import annotations

import torch

from syn2real.adversarial.base import Augmentation
from syn2real.losses.output_space import entropy_loss
from syn2real.methods.base import Batch
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.methods.source_only import SourceOnly
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Task

__all__ = ["MinEnt"]


@null_defaults(task=lambda: Classification(NetworkConfig()), optim=OptimConfig)
class MinEnt(SourceOnly):
    """Source supervised loss + ``entropy_weight`` · mean normalised entropy of the target predictions.

    Args:
        task / optim / augment / init_checkpoint: as :class:`SourceOnly` (``optim`` defaults to DeepLab's SGD for
            segmentation; ``init_checkpoint``: e.g. the source-only run).
        entropy_weight: λ_ent (AdvEnt: 0.001).
    """

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        init_checkpoint: str | None = None,
        entropy_weight: float = 0.001,
    ) -> None:
        super().__init__(task=task, optim=optim, augment=augment, init_checkpoint=init_checkpoint)
        if entropy_weight < 0:
            raise ValueError(f"model.init_args.entropy_weight must be >= 0, got {entropy_weight}")
        self.entropy_weight = float(entropy_weight)

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = super().compute_losses(batch)
        target_logits = self.task.levels(self.model, batch["target"][0])[0]
        entropy = entropy_loss(target_logits.float().softmax(dim=1))
        losses["target_entropy"] = entropy.detach()
        losses["loss"] = losses["loss"] + self.entropy_weight * entropy
        return losses
