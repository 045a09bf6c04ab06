"""Source-only training: the supervised loss on the labelled source, evaluated on the target (the baseline)."""

from __future__ import annotations

import torch

from syn2real.adversarial.base import Augmentation
from syn2real.methods.base import Batch, DAMethod
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig, deeplab_optim
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Segmentation, Task

__all__ = ["SourceOnly"]


@null_defaults(task=lambda: Classification(NetworkConfig()), optim=OptimConfig)
class SourceOnly(DAMethod):
    """Minimise the source's supervised loss only; the target batch is ignored (lower bound for every DA method).

    Args:
        task / optim / augment: as for every method; ``optim`` defaults to DeepLab's SGD (backbone 2.5e-4,
            classifier 2.5e-3, poly 0.9) for segmentation.
        init_checkpoint: continue from a syn2real checkpoint's ``model.*`` (the control for adaptation runs that
            start from a source model: the same extra steps on the source alone).
    """

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__(task=task, optim=optim, augment=augment)
        if init_checkpoint is not None:
            self.load_weights(init_checkpoint)

    def default_optim(self) -> OptimConfig:
        return deeplab_optim() if isinstance(self.task, Segmentation) else OptimConfig()

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = self.source_batch(batch)
        return self.supervised_losses(x, y)
