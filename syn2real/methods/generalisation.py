"""Shared base of the synthetic-to-real *generalisation* methods (ASG, CSG): training sees only synthetic images
and a frozen ImageNet model; the real domain is used for evaluation only.

What both papers share (ASG code, which CSG builds on): the VisDA head Linear(2048, 512) → ReLU → Linear(512, 12),
SGD (lr 1e-4 for the head, 0.1× for the backbone, momentum 0.9, wd 5e-4, poly 0.9), BatchNorm statistics frozen
while training, and evaluation that averages the predictions of each image and its horizontal flip.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from syn2real.adversarial.base import Augmentation
from syn2real.methods.base import DAMethod
from syn2real.methods.optim import OptimConfig
from syn2real.models.heads import NetworkConfig
from syn2real.tasks import Classification, Task

__all__ = ["GeneralisationMethod", "asg_network", "asg_optim"]


def asg_network() -> NetworkConfig:
    """ASG/CSG's VisDA network: ResNet-101, head 2048 → 512 → ReLU → 12 (no BatchNorm in the head)."""
    return NetworkConfig(backbone="resnet101", num_classes=12, in_chans=3, bottleneck_dim=512, bottleneck_norm=False)


def asg_optim() -> OptimConfig:
    """ASG's VisDA optimiser: SGD, head lr 1e-4, backbone 0.1×, momentum 0.9, wd 5e-4, poly 0.9.

    The paper uses a warm-up without stating its length; the default here has none (configs set
    ``warmup_steps``)."""
    return OptimConfig(name="sgd", lr=1e-4, momentum=0.9, weight_decay=5e-4, backbone_lr_mult=0.1,
                       scheduler="poly", power=0.9)


class GeneralisationMethod(DAMethod):
    """DAMethod + frozen BatchNorm statistics during training (``freeze_bn``) + flip-averaged evaluation
    (``flip_eval``); subclasses keep their frozen ImageNet networks in :attr:`frozen_modules`. Classification only
    (the ImageNet guidance works on image-level predictions); the default network is ASG's VisDA ResNet-101."""

    supported_tasks = (Classification,)

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        freeze_bn: bool = True,
        flip_eval: bool = True,
    ) -> None:
        super().__init__(task=task, optim=optim or asg_optim(), augment=augment)
        self.freeze_bn = bool(freeze_bn)
        self.flip_eval = bool(flip_eval)

    def default_network(self, task: Task) -> NetworkConfig:
        return asg_network()

    def frozen_modules(self) -> list[nn.Module]:
        """Networks that always stay in eval mode (the frozen ImageNet model / key encoder)."""
        return []

    def train(self, mode: bool = True) -> GeneralisationMethod:
        """Lightning's train/eval switch, keeping frozen networks and (with ``freeze_bn``) BatchNorm in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        if mode and self.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """With ``flip_eval``: log of the mean softmax of the image and its horizontal flip (ASG's evaluation)."""
        if not self.flip_eval:
            return self.model(x)
        probs = 0.5 * (self.model(x).float().softmax(dim=1) + self.model(x.flip(-1)).float().softmax(dim=1))
        return probs.clamp_min(1e-12).log()
