"""Backbones: every network comes from ``timm.create_model`` by name.

Small project models (the digits CNN) are registered in timm's registry so they are created the same
way as ``resnet50`` or ``tf_efficientnet_lite0`` and expose the same seams: ``forward_features``,
``forward_head(x, pre_logits=True)``, ``reset_classifier`` and ``num_features``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import register_model
from torch import nn

__all__ = ["DigitsCNN", "create_backbone", "digits_cnn"]


class DigitsCNN(nn.Module):
    """LeNet-style CNN for 28-32 px digits (conv32-pool-conv64-pool-fc), the usual digits DA backbone."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        width: int = 32,
        fc_dim: int = 128,
        batch_norm: bool = True,
        drop_rate: float = 0.0,
        **_: Any,
    ) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else nn.Identity

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 5), norm(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(in_chans, width), block(width, 2 * width))
        # Adaptive pooling keeps the fc size fixed for 28 px (4x4 map) and 32 px (5x5 map) inputs alike.
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, fc_dim), nn.ReLU(inplace=True), nn.Dropout(drop_rate)
        )
        self.num_features = fc_dim
        self.num_classes = num_classes
        self.head = nn.Linear(fc_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = {"input_size": (in_chans, 28, 28), "mean": (0.5,) * in_chans, "std": (0.5,) * in_chans}
        self.default_cfg = self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc(self.pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


@register_model
def digits_cnn(pretrained: bool = False, **kwargs: Any) -> DigitsCNN:
    """Small digits CNN; ``pretrained`` is not supported (there are no published weights)."""
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    if pretrained:
        raise ValueError("digits_cnn has no pretrained weights; pass weights=<local checkpoint> instead")
    return DigitsCNN(**kwargs)


def create_backbone(
    name: str,
    weights: str | Path | None = None,
    num_classes: int = 0,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model by name, optionally with weights from a local file (never downloaded).

    ``weights`` is a path to a state dict (timm key names) or a ``package:...`` spec (see
    :mod:`syn2real.models.pretrained`). ``None`` kwargs are dropped so unset config values never break a model.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: not in timm's registry (see timm.list_models())")
    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    from syn2real.models.pretrained import load_state_dict_file, resolve_weights

    path = resolve_weights(weights)
    if name == "digits_cnn":
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        state = load_state_dict_file(path)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("head.")]
        if bad or unexpected:
            raise ValueError(f"weights file {path} does not fit {name}: missing {bad}, unexpected {unexpected}")
        return model
    return timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_classes=num_classes, **kwargs
    )
