"""Segmentation networks: DeepLabV2 (Chen et al., TPAMI 2017), a light FCN head and the DAFormer decoder (Hoyer et al.,
CVPR 2022) on a timm ``features_only`` CNN backbone or a plain timm ViT (:mod:`syn2real.models.vit_features`).

DeepLabV2's classifier is ASPP-as-in-v2: parallel 3×3 convolutions with dilation rates 6, 12, 18, 24 straight to the
class scores, summed (no image pooling, no BatchNorm; weights N(0, 0.01), as the AdaptSegNet/AdvEnt/CBST code).
``multi_level`` adds a second ASPP on the stride-8 ``layer3`` features (AdaptSegNet's multi-level variant). The
backbone's BatchNorm is frozen by default (batch 1–2 crops make batch statistics useless; every GTA5→Cityscapes paper
freezes it). Outputs are logits at 1/8 of the input; :meth:`SegmentationNet.forward` upsamples them bilinearly to the
input size.

The DAFormer head reads four levels (strides 4, 8, 16, 32: a CNN's last four stages, or a ViT's four blocks through
the BEiT/ViTDet adapter), embeds each to 256 channels by a 1×1 convolution, upsamples them to stride 4, concatenates
them and fuses them with a depthwise-separable ASPP (a 1×1 branch and 3×3 branches of dilation 6, 12, 18, each
conv-BN-ReLU; DAFormer's ``sepaspp`` fusion, image pooling off as in its official config), a 3×3 conv-BN-ReLU,
dropout 0.1 and a 1×1 classifier: logits at stride 4.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torch import nn

from syn2real.models.backbones import create_backbone
from syn2real.models.vit_features import (
    SimpleFeaturePyramid,
    ViTBackbone,
    create_vit_backbone,
    is_vit,
    pad_to_multiple,
)

__all__ = [
    "ASPPClassifier",
    "DAFormerHead",
    "FCNHead",
    "SegNetworkConfig",
    "SegmentationNet",
    "SeparableASPP",
    "build_segmenter",
]


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


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) → BatchNorm → ReLU, the conv He-initialised (fan-out, as mmcv's ConvModule).

    The norm is named ``bn`` (as in mmcv), so the DAFormer optimiser's name rule (``norm``) leaves it decayed, as in
    the official code where the head's lr rule takes precedence."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                     groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels), act=nn.ReLU(inplace=True)))


class SeparableASPP(nn.Module):
    """DAFormer's context-aware fusion: parallel branches (dilation 1: a 1×1 conv-BN-ReLU; dilation r > 1: a
    depthwise 3×3 conv-BN-ReLU of dilation r then a pointwise 1×1 conv-BN-ReLU; optionally image pooling → 1×1),
    concatenated and fused by a 3×3 conv-BN-ReLU to ``channels``."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...] | list[int] = (1, 6, 12, 18),
                 pool: bool = False):
        super().__init__()
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(
                f"model.task.network.daformer_dilations must be a non-empty list of positive integers, got {dilations}"
            )
        branches: list[nn.Module] = []
        for d in (int(d) for d in dilations):
            if d == 1:
                branches.append(conv_bn_relu(in_channels, channels, 1))
            else:
                branches.append(nn.Sequential(OrderedDict(
                    depthwise=conv_bn_relu(in_channels, in_channels, 3, dilation=d, groups=in_channels),
                    pointwise=conv_bn_relu(in_channels, channels, 1),
                )))
        self.branches = nn.ModuleList(branches)
        self.image_pool = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, channels, 1)) if pool else None
        )
        n = len(branches) + int(pool)
        self.bottleneck = conv_bn_relu(n * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        if self.image_pool is not None:
            outs.insert(0, self.image_pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.bottleneck(torch.cat(outs, dim=1))


class DAFormerHead(nn.Module):
    """DAFormer decoder (Hoyer et al., CVPR 2022, Sec. 3.2): levels → 1×1 embeddings (``channels`` each) → bilinear
    resize to the first (finest) level → concatenation → :class:`SeparableASPP` → dropout → 1×1 classifier.

    Input: a list of maps (B, in_channels[i], H_i, W_i), finest first; output: logits (B, num_classes, H_0, W_0).
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256,
                 dilations: tuple[int, ...] | list[int] = (1, 6, 12, 18), pool: bool = False, dropout: float = 0.1):
        super().__init__()
        # DAFormer's per-level "mlp" embedding: a linear map of each pixel's features (with bias, no norm/activation)
        self.embed = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = SeparableASPP(channels * len(in_channels), channels, dilations, pool)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.embed):
            raise ValueError(f"DAFormerHead expects {len(self.embed)} feature levels, got {len(feats)}")
        size = feats[0].shape[-2:]
        x = torch.cat([upsample(embed(f), size) for embed, f in zip(self.embed, feats)], dim=1)
        return self.classifier(self.dropout(self.fuse(x)))


@dataclass
class SegNetworkConfig:
    """Segmentation network from config.

    Args:
        backbone: any timm model that supports ``features_only`` and ``output_stride`` (ResNets: ``resnet101``, the
            DeepLabV2 backbone; ``resnet50``, ``resnet18``, ...), or a plain timm ViT (``vit_small_patch14_dinov2``,
            ``vit_base_patch16_224``, ...: four blocks through the BEiT/ViTDet adapter to strides 4, 8, 16, 32 of the
            patch grid; inputs padded to a multiple of the patch size, logits cropped back).
        num_classes: 19 (GTA5→Cityscapes), 16 or 13 (SYNTHIA→Cityscapes), 11 (segmentation digits).
        in_chans: input channels.
        weights: local ImageNet weight file of the backbone (or ``package:...``); never downloaded. For a ViT, a
            timm-format state dict (a DINOv2 release file works too), loaded strictly (a classifier is ignored).
        head: ``deeplabv2`` (ASPP), ``fcn`` (conv-BN-ReLU-conv) or ``daformer`` (DAFormer's decoder on four levels,
            logits at stride 4).
        aspp_rates: dilation rates of the ASPP branches.
        output_stride: 8 (DeepLab) or 16 or 32 (CNNs only; 32 for the DAFormer head on an undilated CNN).
        multi_level: a second classifier on the previous stage (AdaptSegNet's multi-level output-space adaptation);
            its logits are returned by :meth:`SegmentationNet.forward_levels`.
        freeze_bn: the backbone's BatchNorm as fixed affine layers (statistics and parameters frozen).
        fcn_channels / dropout: the FCN head's width and dropout (also the DAFormer head's dropout).
        daformer_channels: the DAFormer head's embedding and fusion width (256).
        daformer_dilations: its separable-ASPP dilations (1 is the 1×1 branch).
        daformer_pool: add an image-pooling branch to the fusion (off in DAFormer's official config).
        vit_blocks: the four ViT blocks feeding the levels (default: evenly spaced, e.g. [2, 5, 8, 11] of 12).
        vit_norm: apply the ViT's final norm to each of those blocks' outputs.
        backbone_kwargs: extra ``timm.create_model`` arguments (``None`` values dropped); for a ViT e.g.
            ``{img_size: 512}`` (``dynamic_img_size`` is on by default, so any input size works).
    """

    backbone: str = "resnet101"
    num_classes: int = 19
    in_chans: int = 3
    weights: str | None = None
    head: Literal["deeplabv2", "fcn", "daformer"] = "deeplabv2"
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    output_stride: int = 8
    multi_level: bool = False
    freeze_bn: bool = True
    fcn_channels: int = 256
    dropout: float = 0.1
    daformer_channels: int = 256
    daformer_dilations: list[int] = field(default_factory=lambda: [1, 6, 12, 18])
    daformer_pool: bool = False
    vit_blocks: list[int] | None = None
    vit_norm: bool = True
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


class SegmentationNet(nn.Module):
    """Backbone (CNN ``features_only``, or ViT + multi-level adapter ``neck``) → classifier(s) → logits upsampled
    to the input size.

    Seams for the methods: :meth:`forward_levels` (logits per classifier), :meth:`features` (the levels the head
    reads) and :meth:`backbone_features` (the encoder's own outputs, e.g. for DAFormer's ImageNet feature distance
    against a frozen copy of ``backbone``).
    """

    def __init__(self, backbone: nn.Module, cfg: SegNetworkConfig, neck: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.cfg = cfg
        self.num_classes = int(cfg.num_classes)
        # a ViT reads whole patches: inputs are padded to a multiple of the patch size, logits cropped back
        self.input_multiple = int(getattr(backbone, "patch_size", 1))
        channels = backbone.channels() if isinstance(backbone, ViTBackbone) else backbone.feature_info.channels()

        def head(in_channels: int) -> nn.Module:
            if cfg.head == "deeplabv2":
                return ASPPClassifier(in_channels, self.num_classes, tuple(cfg.aspp_rates))
            return FCNHead(in_channels, self.num_classes, cfg.fcn_channels, cfg.dropout)

        if cfg.head == "daformer":
            self.classifier: nn.Module = DAFormerHead(
                list(channels), self.num_classes, cfg.daformer_channels, tuple(cfg.daformer_dilations),
                cfg.daformer_pool, cfg.dropout,
            )
            self.aux_classifier = None
        else:
            self.classifier = head(channels[-1])
            self.aux_classifier = head(channels[0]) if cfg.multi_level else None

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` zero-padded at the bottom/right to a multiple of the ViT's patch size (unchanged for CNNs)."""
        return pad_to_multiple(x, self.input_multiple) if self.input_multiple > 1 else x

    def backbone_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's outputs for ``x`` (padded as :meth:`pad_input`): a CNN's selected stages, or a ViT's four
        block token maps at the patch stride (before the adapter). The last one is the bottleneck."""
        return self.backbone(self.pad_input(x))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature levels the head reads, finest first (a ViT's through the multi-level adapter)."""
        feats = self.backbone_features(x)
        return self.neck(feats) if self.neck is not None else feats

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each classifier: ``[main]`` or ``[main, aux]`` with ``multi_level``; at the feature resolution
        (1/output_stride; 1/4 for the DAFormer head), or at the input's size when the input had to be padded (the
        padded logits are upsampled to the padded size and cropped, so they cover exactly the input)."""
        return self.forward_levels_and_bottleneck(x)[0]

    def forward_levels_and_bottleneck(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`forward_levels` and the encoder's bottleneck (``backbone_features(x)[-1]``) from one pass: DAFormer's
        ImageNet feature distance reads the bottleneck of the source batch the loss is computed on."""
        encoded = self.backbone_features(x)
        feats = self.neck(encoded) if self.neck is not None else encoded
        if isinstance(self.classifier, DAFormerHead):
            out = [self.classifier(feats)]
        else:
            out = [self.classifier(feats[-1])]
            if self.aux_classifier is not None:
                out.append(self.aux_classifier(feats[0]))
        h, w = x.shape[-2:]
        padded = (h + (-h % self.input_multiple), w + (-w % self.input_multiple))
        if padded != (h, w):
            out = [upsample(level, padded)[..., :h, :w] for level in out]
        return out, encoded[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits (B, C, H, W) at the input's size."""
        return upsample(self.forward_levels(x)[0], x.shape[-2:])

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Pretrained backbone parameters vs the new layers: classifier(s) and the ViT adapter (DeepLab and DAFormer:
        lr = 10 × backbone lr)."""
        new = [self.classifier] + [m for m in (self.aux_classifier, self.neck) if m is not None]
        return {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "head": [p for m in new for p in m.parameters() if p.requires_grad],
        }


def upsample(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of logits to ``size`` (align_corners=False); a no-op when the size already matches."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def build_segmenter(cfg: SegNetworkConfig) -> SegmentationNet:
    """The segmentation network of ``cfg``. A CNN: timm backbone with ``features_only`` at ``output_stride``, the last
    two stages as features (the previous one feeds the multi-level classifier), the last four for the DAFormer head.
    A ViT: four blocks' token maps (``vit_blocks``) through :class:`SimpleFeaturePyramid`."""
    if cfg.head not in ("deeplabv2", "fcn", "daformer"):
        raise ValueError(f"model.task.network.head must be 'deeplabv2', 'fcn' or 'daformer', got {cfg.head!r}")
    if cfg.output_stride not in (8, 16, 32):
        raise ValueError(f"model.task.network.output_stride must be 8, 16 or 32, got {cfg.output_stride}")
    if cfg.num_classes < 2:
        raise ValueError(f"model.task.network.num_classes must be >= 2, got {cfg.num_classes}")
    if cfg.head == "daformer" and cfg.multi_level:
        raise ValueError("model.task.network.multi_level is for the deeplabv2/fcn heads; the daformer head already "
                         "fuses four levels: set multi_level: false")
    if is_vit(cfg.backbone):
        vit = create_vit_backbone(cfg.backbone, weights=cfg.weights, blocks=cfg.vit_blocks, norm=cfg.vit_norm,
                                  in_chans=cfg.in_chans, **cfg.backbone_kwargs)
        return SegmentationNet(vit, cfg, neck=SimpleFeaturePyramid(vit.embed_dim))
    if cfg.vit_blocks is not None:
        raise ValueError(f"model.task.network.vit_blocks is set but backbone {cfg.backbone!r} is not a plain timm ViT")
    kwargs = dict(cfg.backbone_kwargs)
    kwargs.setdefault("out_indices", (-4, -3, -2, -1) if cfg.head == "daformer" else (-2, -1))
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
    if cfg.head == "daformer" and len(backbone.feature_info.channels()) < 2:
        raise ValueError("model.task.network.head daformer needs several feature levels; backbone_kwargs.out_indices "
                         f"gives {len(backbone.feature_info.channels())}")
    if cfg.freeze_bn:
        backbone = freeze_batch_norm_2d(backbone)
    return SegmentationNet(backbone, cfg)
