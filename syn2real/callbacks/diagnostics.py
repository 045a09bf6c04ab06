"""Synthetic-to-real diagnostics at every evaluation, for any method: how far the student has drifted from the
ImageNet model (ASG's KL) and how diverse its features are (CSG's hyperspherical energy)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from syn2real.losses.contrastive import hyperspherical_energy
from syn2real.losses.guidance import guidance_kl
from syn2real.models.backbones import create_backbone
from syn2real.models.imagenet import freeze

__all__ = ["GeneralisationDiagnostics"]


class GeneralisationDiagnostics(L.Callback):
    """Logs ``<domain>/diag/imagenet_kl`` = KL(ImageNet model ‖ student's features through the ImageNet
    classifier) and ``<domain>/diag/energy`` = hyperspherical energy (mean over pairs, per evaluation batch) of the
    student's pooled backbone features, averaged over the evaluation set; they land in ``metrics.json``.

    Args:
        weights: the ImageNet weights to compare with; default the method's ``network.weights``.
        imagenet_classes: size of the ImageNet classifier (1000).
    """

    def __init__(self, weights: str | None = None, imagenet_classes: int = 1000) -> None:
        self.weights = weights
        self.imagenet_classes = int(imagenet_classes)
        self.guide: nn.Module | None = None
        self._sums: dict[str, torch.Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        cfg = pl_module.network_cfg
        weights = self.weights or cfg.weights
        if weights is None:
            raise ValueError("diagnostics: neither diagnostics.weights nor model.init_args.task.init_args.network.weights is set; "
                             "the ImageNet KL needs the ImageNet weights")
        self.guide = freeze(create_backbone(cfg.backbone, weights=weights, num_classes=self.imagenet_classes,
                                            in_chans=cfg.in_chans, **cfg.backbone_kwargs))

    @torch.no_grad()
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or self.guide is None:
            return
        x = batch[0]
        self.guide.to(x.device)
        domain = pl_module.eval_domains[dataloader_idx]
        features = pl_module.model.backbone(x)
        kl = guidance_kl(self.guide.get_classifier()(features), self.guide(x))
        n = x.shape[0]
        energy = hyperspherical_energy(features) if n > 1 else torch.zeros((), device=x.device)
        sums = self._sums.setdefault(domain, torch.zeros(3, dtype=torch.float64, device=x.device))
        sums += torch.stack([kl.double() * n, energy.double() * n, torch.tensor(float(n), device=x.device).double()])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for domain, sums in self._sums.items():
            total = trainer.strategy.reduce(sums, reduce_op="sum") if trainer.world_size > 1 else sums
            if float(total[2]) == 0:
                continue
            pl_module.log_dict({f"{domain}/diag/imagenet_kl": float(total[0] / total[2]),
                                f"{domain}/diag/energy": float(total[1] / total[2])}, sync_dist=False)
        self._sums = {}
