"""Task model for classification: a timm backbone, an optional bottleneck and a linear head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from syn2real.models.backbones import create_backbone

__all__ = ["ImageClassifier", "NetworkConfig", "build_classifier"]


@dataclass
class NetworkConfig:
    """Task network from config.

    Args:
        backbone: any timm model name (``digits_cnn``, ``resnet50``, ``tf_efficientnet_lite0``, ...).
        num_classes: number of classes; must match the data module's class list.
        in_chans: input channels (1 for grayscale digits, 3 for RGB).
        weights: local weight file or ``package:...`` spec; never downloaded.
        bottleneck_dim: optional Linear-BN-ReLU bottleneck before the head (DANN/CDAN use 256).
        bottleneck_norm: BatchNorm in the bottleneck; false gives ASG/CSG's Linear-ReLU head (2048-512-12).
        dropout: dropout before the head.
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (``None`` values dropped).
    """

    backbone: str = "digits_cnn"
    num_classes: int = 10
    in_chans: int = 1
    weights: str | None = None
    bottleneck_dim: int | None = None
    bottleneck_norm: bool = True
    dropout: float = 0.0
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


class ImageClassifier(nn.Module):
    """Backbone -> (bottleneck) -> linear head. ``forward_features`` gives the vector DA losses align."""

    def __init__(self, backbone: nn.Module, num_classes: int, bottleneck_dim: int | None = None, dropout: float = 0.0,
                 bottleneck_norm: bool = True):
        super().__init__()
        self.backbone = backbone
        in_dim = int(backbone.num_features)
        if bottleneck_dim:
            norm: nn.Module = nn.BatchNorm1d(bottleneck_dim) if bottleneck_norm else nn.Identity()
            self.bottleneck: nn.Module = nn.Sequential(nn.Linear(in_dim, bottleneck_dim), norm, nn.ReLU(inplace=True))
            in_dim = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
        self.num_features = in_dim
        self.num_classes = num_classes
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (and bottlenecked) features, shape (B, num_features)."""
        return self.bottleneck(self.backbone(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.forward_features(x)
        logits = self.head(features)
        return (logits, features) if return_features else logits

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Backbone parameters vs newly initialised ones (bottleneck + head), for lr multipliers."""
        return {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "head": [p for m in (self.bottleneck, self.head) for p in m.parameters() if p.requires_grad],
        }


def build_classifier(cfg: NetworkConfig) -> ImageClassifier:
    """Build the task model described by ``cfg``; the backbone's own classifier is removed."""
    backbone = create_backbone(
        cfg.backbone, weights=cfg.weights, num_classes=0, in_chans=cfg.in_chans, **cfg.backbone_kwargs
    )
    return ImageClassifier(backbone, cfg.num_classes, cfg.bottleneck_dim, cfg.dropout, cfg.bottleneck_norm)
