"""The frozen ImageNet model that ASG's proxy guidance and CSG's key encoder compare the student with, and the
stage feature maps of a timm backbone (``feature_info`` / ``forward_intermediates``) from its one forward pass."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from syn2real.models.backbones import create_backbone
from syn2real.models.heads import NetworkConfig

__all__ = ["build_frozen_imagenet_model", "forward_with_stages", "freeze", "stage_channels"]


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, evaluation mode (frozen BatchNorm statistics); returns ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def build_frozen_imagenet_model(cfg: NetworkConfig, student_backbone: nn.Module, imagenet_classes: int = 1000,
                                where: str = "model.init_args.task.init_args.network") -> nn.Module:
    """A frozen copy of the ImageNet model the student starts from, *with* its ImageNet classifier.

    Built from ``cfg.weights`` (a local file or ``package:...``); its feature extractor is then set to the
    student's initial weights, so guide and student start identical even without weights. Raises when the timm
    model has no classifier (ASG needs ``get_classifier()`` to be a layer mapping features to ImageNet logits)."""
    if cfg.backbone == "digits_cnn":
        raise ValueError(f"{where}.backbone: digits_cnn has no ImageNet classifier; use a timm ImageNet model "
                         "(resnet50, resnet101, tf_efficientnet_lite0, ...) with its weights")
    if cfg.weights is None:
        warnings.warn(f"{where}.weights is null: the frozen ImageNet model has a random classifier (tests only)",
                      stacklevel=2)
    guide = create_backbone(cfg.backbone, weights=cfg.weights, num_classes=imagenet_classes,
                            in_chans=cfg.in_chans, **cfg.backbone_kwargs)
    classifier = guide.get_classifier() if hasattr(guide, "get_classifier") else None
    if not isinstance(classifier, nn.Module) or not any(True for _ in classifier.parameters()):
        raise ValueError(f"{where}.backbone {cfg.backbone!r}: timm model has no ImageNet classifier "
                         "(get_classifier() is empty); proxy guidance needs one")
    student_state = student_backbone.state_dict()
    missing, unexpected = guide.load_state_dict(student_state, strict=False)
    classifier_keys = {k for k in guide.state_dict() if k not in student_state}
    if unexpected or set(missing) - classifier_keys:
        raise ValueError(f"{where}: the student backbone does not match {cfg.backbone!r} with "
                         f"{imagenet_classes} classes: missing {sorted(set(missing) - classifier_keys)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return freeze(guide)


def stage_channels(backbone: nn.Module, stages: Sequence[int]) -> tuple[list[int], list[int]]:
    """(non-negative stage indices, channels) of the ``stages`` entries of a timm model's ``feature_info``
    (negative indices count from the last stage: ``[-2, -1]`` = ResNet layer3, layer4)."""
    info = getattr(backbone, "feature_info", None)
    if not info or not hasattr(backbone, "forward_intermediates"):
        raise ValueError(f"{type(backbone).__name__} has no timm feature_info / forward_intermediates; "
                         "stage features need a timm model with stages (resnet*, efficientnet*, ...)")
    entries = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    idx, chs = [], []
    for s in stages:
        if not -len(entries) <= s < len(entries):
            raise ValueError(f"stage index {s} is out of range for the {len(entries)} feature_info stages")
        idx.append(s % len(entries))
        chs.append(int(entries[s]["num_chs"]))
    return idx, chs


def forward_with_stages(backbone: nn.Module, x: torch.Tensor, stages: Sequence[int]
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward of a timm backbone: its pooled pre-logits features (B, F) and the maps of ``stages``
    (non-negative ``feature_info`` indices), via timm's ``forward_intermediates``."""
    final, maps = backbone.forward_intermediates(x, indices=list(stages))
    return backbone.forward_head(final, pre_logits=True), list(maps)
