"""ASG proxy guidance (Chen et al., "Automated Synthetic-to-Real Generalization", ICML 2020).

Train on synthetic images only; keep the student's ImageNet predictions close to those of the frozen ImageNet
model it started from: L = CE(head(f(x)), y) + λ · KL(softmax(g(x)) ‖ softmax(W_IN f(x))), with g the frozen
ImageNet model and W_IN its frozen ImageNet classifier applied to the student's pooled features f(x).
The learned layer-wise learning rates of the paper are the separate callback
:class:`syn2real.callbacks.layerwise_lr.LayerwiseLR` (usable with any method).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.base import Augmentation
from syn2real.losses.guidance import guidance_kl
from syn2real.methods.base import Batch
from syn2real.methods.generalisation import GeneralisationMethod, asg_network, asg_optim
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig
from syn2real.tasks import Classification, Task
from syn2real.models.imagenet import build_frozen_imagenet_model

__all__ = ["ASG"]


@null_defaults(task=lambda: Classification(asg_network()), optim=asg_optim)
class ASG(GeneralisationMethod):
    """Proxy guidance: CE on synthetic images + ``kl_weight`` · KL(guide ‖ student) over ImageNet classes.

    Args:
        task / optim / augment: as for every method; defaults are the paper's VisDA network
            (ResNet-101, 2048-512-12 head without BatchNorm) and optimiser (SGD 1e-4, backbone 0.1×, wd 5e-4, poly).
            ``network.weights`` must be the ImageNet weights (with classifier) of ``network.backbone``.
        kl_weight: λ; 0.1 for classification (the paper; 75 for per-pixel segmentation).
        temperature: softmax temperature of both ImageNet predictions (1 in the paper).
        imagenet_classes: size of the backbone's pretrained classifier (1000).
        freeze_bn: keep BatchNorm statistics frozen while training (the paper trains in eval mode).
        flip_eval: evaluate on the mean prediction of each image and its horizontal flip (the paper).
    """

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        kl_weight: float = 0.1,
        temperature: float = 1.0,
        imagenet_classes: int = 1000,
        freeze_bn: bool = True,
        flip_eval: bool = True,
    ) -> None:
        super().__init__(task=task, optim=optim, augment=augment, freeze_bn=freeze_bn, flip_eval=flip_eval)
        if kl_weight < 0 or temperature <= 0:
            raise ValueError(f"model.init_args.kl_weight must be >= 0 and temperature > 0, got {kl_weight}, "
                             f"{temperature}")
        self.kl_weight = float(kl_weight)
        self.temperature = float(temperature)
        self.guide = build_frozen_imagenet_model(self.network_cfg, self.model.backbone, imagenet_classes)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.guide]

    def imagenet_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The student's pooled features through the frozen original ImageNet classifier."""
        return self.guide.get_classifier()(features)

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, y = self.source_batch(batch)
        features = self.model.backbone(x)
        logits = self.model.classify(self.model.bottleneck(features))
        with torch.no_grad():
            guide_logits = self.guide(x)
        kl = guidance_kl(self.imagenet_logits(features), guide_logits, self.temperature)
        ce = F.cross_entropy(logits, y)
        return {
            "loss": ce + self.kl_weight * kl,
            "source_ce": ce,
            "guidance_kl": kl,
            "source_acc": (logits.argmax(dim=1) == y).float().mean().detach(),
        }
