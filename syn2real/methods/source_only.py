"""Source-only training: cross-entropy on the labelled source, evaluated on the target (the baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from syn2real.methods.base import Batch, DAMethod, OptimConfig, null_defaults
from syn2real.models.heads import NetworkConfig

__all__ = ["SourceOnly"]


@null_defaults(network=NetworkConfig, optim=OptimConfig)
class SourceOnly(DAMethod):
    """Minimise source cross-entropy only; the target batch is ignored (lower bound for every DA method)."""

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = self.source_batch(batch)
        logits = self.model(x)
        ce = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return {"loss": ce, "source_ce": ce, "source_acc": acc.detach()}
