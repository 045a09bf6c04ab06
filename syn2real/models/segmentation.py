"""Segmentation networks: DeepLabV2 (Chen et al., TPAMI 2017) and a light FCN head on any timm ``features_only``
backbone with output stride 8.

DeepLabV2's classifier is ASPP-as-in-v2: parallel 3×3 convolutions with dilation rates 6, 12, 18, 24 straight to the
class scores, summed (no image pooling, no BatchNorm; weights N(0, 0.01), as the AdaptSegNet/AdvEnt/CBST code).
``multi_level`` adds a second ASPP on the stride-8 ``layer3`` features (AdaptSegNet's multi-level variant). The
backbone's BatchNorm is frozen by default (batch 1–2 crops make batch statistics useless; every GTA5→Cityscapes paper
freezes it). Outputs are logits at 1/8 of the input; :meth:`SegmentationNet.forward` upsamples them bilinearly to the
input size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torch import nn

from syn2real.models.backbones import create_backbone

__all__ = ["ASPPClassifier", "FCNHead", "SegNetworkConfig", "SegmentationNet", "build_segmenter"]


class ASPPClassifier(nn.Module):
    """DeepLabV2 ASPP: Σ_r conv3×3_dilation=r(x) → (B, num_classes, H, W), rates (6, 12, 18, 24)."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] | list[int] = (6, 12, 18, 24)):
        super().__init__()
        if not rates or any(int(r) < 1 for r in rates):
            raise ValueError(f"ASPP rates must be a non-empty list of positive integers, got {rates}")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=int(r), dilation=int(r), bias=True) for r in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class FCNHead(nn.Module):
    """A light head: conv3×3 → BatchNorm → ReLU → dropout → conv1×1 to the classes."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class SegNetworkConfig:
    """Segmentation network from config.

    Args:
        backbone: any timm model that supports ``features_only`` and ``output_stride`` (ResNets: ``resnet101``, the
            DeepLabV2 backbone; ``resnet50``, ``resnet18``, ...).
        num_classes: 19 (GTA5→Cityscapes), 16 or 13 (SYNTHIA→Cityscapes), 11 (segmentation digits).
        in_chans: input channels.
        weights: local ImageNet weight file of the backbone (or ``package:...``); never downloaded.
        head: ``deeplabv2`` (ASPP) or ``fcn`` (conv-BN-ReLU-conv).
        aspp_rates: dilation rates of the ASPP branches.
        output_stride: 8 (DeepLab) or 16.
        multi_level: a second classifier on the previous stage (AdaptSegNet's multi-level output-space adaptation);
            its logits are returned by :meth:`SegmentationNet.forward_levels`.
        freeze_bn: the backbone's BatchNorm as fixed affine layers (statistics and parameters frozen).
        fcn_channels / dropout: the FCN head's width and dropout.
        backbone_kwargs: extra ``timm.create_model`` arguments (``None`` values dropped).
    """

    backbone: str = "resnet101"
    num_classes: int = 19
    in_chans: int = 3
    weights: str | None = None
    head: Literal["deeplabv2", "fcn"] = "deeplabv2"
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    output_stride: int = 8
    multi_level: bool = False
    freeze_bn: bool = True
    fcn_channels: int = 256
    dropout: float = 0.1
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


class SegmentationNet(nn.Module):
    """Backbone (features_only, output stride 8) → classifier(s) → logits upsampled to the input size."""

    def __init__(self, backbone: nn.Module, cfg: SegNetworkConfig):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.num_classes = int(cfg.num_classes)
        channels = backbone.feature_info.channels()

        def head(in_channels: int) -> nn.Module:
            if cfg.head == "deeplabv2":
                return ASPPClassifier(in_channels, self.num_classes, tuple(cfg.aspp_rates))
            return FCNHead(in_channels, self.num_classes, cfg.fcn_channels, cfg.dropout)

        self.classifier = head(channels[-1])
        self.aux_classifier = head(channels[0]) if cfg.multi_level else None

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits at the feature resolution (1/output_stride): ``[main]`` or ``[main, aux]`` with ``multi_level``."""
        feats = self.backbone(x)
        out = [self.classifier(feats[-1])]
        if self.aux_classifier is not None:
            out.append(self.aux_classifier(feats[0]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits (B, C, H, W) at the input's size."""
        return upsample(self.forward_levels(x)[0], x.shape[-2:])

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Backbone parameters vs the new classifier(s) (DeepLab: classifier lr = 10 × backbone lr)."""
        heads = [self.classifier] + ([self.aux_classifier] if self.aux_classifier is not None else [])
        return {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "head": [p for m in heads for p in m.parameters() if p.requires_grad],
        }


def upsample(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of logits to ``size`` (align_corners=False); a no-op when the size already matches."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def build_segmenter(cfg: SegNetworkConfig) -> SegmentationNet:
    """The segmentation network of ``cfg``: timm backbone with ``features_only`` at ``output_stride``, the last two
    stages as features (the previous one feeds the multi-level classifier)."""
    if cfg.head not in ("deeplabv2", "fcn"):
        raise ValueError(f"model.task.network.head must be 'deeplabv2' or 'fcn', got {cfg.head!r}")
    if cfg.output_stride not in (8, 16, 32):
        raise ValueError(f"model.task.network.output_stride must be 8, 16 or 32, got {cfg.output_stride}")
    if cfg.num_classes < 2:
        raise ValueError(f"model.task.network.num_classes must be >= 2, got {cfg.num_classes}")
    kwargs = dict(cfg.backbone_kwargs)
    kwargs.setdefault("out_indices", (-2, -1))
    try:
        backbone = create_backbone(
            cfg.backbone, weights=cfg.weights, num_classes=0, in_chans=cfg.in_chans, features_only=True,
            output_stride=cfg.output_stride, **kwargs,
        )
    except (TypeError, RuntimeError, AssertionError) as err:
        if isinstance(err, RuntimeError) and "state_dict" in str(err):
            raise
        raise ValueError(
            f"backbone {cfg.backbone!r} cannot be built with features_only=True, output_stride={cfg.output_stride}: "
            f"{err}; use a timm ResNet (resnet101, resnet50, resnet18) or another dilatable model"
        ) from err
    if not hasattr(backbone, "feature_info"):  # timm models without feature extraction ignore features_only
        raise ValueError(
            f"backbone {cfg.backbone!r} cannot be built with features_only=True (it has no feature_info); use a timm "
            "ResNet (resnet101, resnet50, resnet18) or another model with feature extraction"
        )
    if cfg.freeze_bn:
        backbone = freeze_batch_norm_2d(backbone)
    return SegmentationNet(backbone, cfg)
