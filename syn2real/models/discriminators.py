"""Domain discriminators: an MLP on features/logits (DANN, ADDA, CDAN, CyCADA feature level) and a fully
convolutional one on segmentation score maps (AdaptSegNet / AdvEnt output space). Both output raw logits; pair
them with :mod:`syn2real.losses.adversarial` (source = 1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "DISCRIMINATOR_PRESETS",
    "ConvDiscriminator",
    "DiscriminatorConfig",
    "MLPDiscriminator",
    "build_discriminator",
]

Preset = Literal["adda", "cycada_logits", "dann", "dann_bn", "dann_small"]

# Sizes from the method notes and the reference code; every preset outputs logits (no sigmoid).
DISCRIMINATOR_PRESETS: dict[str, dict[str, Any]] = {
    # ADDA digits (Tzeng et al. 2017): in -> 500 -> 500 -> 1, ReLU.
    "adda": {"hidden": (500, 500), "out_features": 1},
    # CyCADA digits feature level, on the 10 logits: 10 -> 500 -> 500 -> 2 (two-logit output, class 1 = source).
    "cycada_logits": {"hidden": (500, 500), "out_features": 2},
    # DANN (Ganin et al. 2016) / TLlib DomainDiscriminator(batch_norm=False): in -> 1024 -> 1024 -> 1,
    # ReLU + dropout 0.5.
    "dann": {"hidden": (1024, 1024), "out_features": 1, "dropout": 0.5},
    # TLlib's default DomainDiscriminator (used for its DANN/CDAN tables): Linear-BN-ReLU twice, no dropout.
    "dann_bn": {"hidden": (1024, 1024), "out_features": 1, "batch_norm": True},
    # DANN small-digit experiments: one hidden layer of 100 units.
    "dann_small": {"hidden": (100,), "out_features": 1},
}


class MLPDiscriminator(nn.Module):
    """Blocks Linear -> (BatchNorm1d) -> ReLU -> (Dropout) for each ``hidden`` size, then a Linear to ``out_features``
    logits: (B, in_features) -> (B, out_features). ``out_features`` 1 for BCE losses, 2 for two-logit CE."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (500, 500),
        out_features: int = 1,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if int(in_features) < 1 or int(out_features) < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"MLPDiscriminator: sizes must be >= 1, got in_features={in_features}, hidden={hidden}, "
                f"out_features={out_features}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MLPDiscriminator: dropout must be in [0, 1), got {dropout}")
        self.in_features, self.hidden, self.out_features = int(in_features), hidden, int(out_features)
        layers: list[nn.Module] = []
        width = self.in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = h
        layers.append(nn.Linear(width, self.out_features))
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_preset(cls, preset: Preset, in_features: int, **overrides: Any) -> MLPDiscriminator:
        """The discriminator of ``preset`` (see ``DISCRIMINATOR_PRESETS``) on ``in_features`` inputs; ``overrides``
        (``hidden``, ``dropout``, ``batch_norm``, ...) replace the preset's values."""
        if preset not in DISCRIMINATOR_PRESETS:
            raise ValueError(f"unknown discriminator preset {preset!r}; choose from {sorted(DISCRIMINATOR_PRESETS)}")
        return cls(in_features, **{**DISCRIMINATOR_PRESETS[preset], **overrides})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"MLPDiscriminator: x must have shape (B, {self.in_features}), got {tuple(x.shape)}")
        return self.net(x)


def build_discriminator(preset: Preset, in_features: int) -> MLPDiscriminator:
    """MLP discriminator with a paper's sizes: 'adda' in-500-500-1, 'cycada_logits' in-500-500-2, 'dann'
    in-1024-1024-1 (dropout 0.5), 'dann_bn' in-1024-1024-1 (BatchNorm, TLlib default), 'dann_small' in-100-1."""
    return MLPDiscriminator.from_preset(preset, in_features)


@dataclass
class DiscriminatorConfig:
    """An MLP discriminator from config: a preset's sizes, each field overridable.

    Args:
        preset: ``adda`` (in-500-500-1), ``cycada_logits`` (in-500-500-2), ``dann`` (in-1024-1024-1, dropout 0.5),
            ``dann_bn`` (in-1024-1024-1, BatchNorm), ``dann_small`` (in-100-1).
        hidden: hidden layer sizes, replacing the preset's.
        dropout / batch_norm: replace the preset's.
        lr_mult: the discriminator's learning rate relative to the method's base lr.
    """

    preset: Preset = "dann"
    hidden: list[int] | None = None
    dropout: float | None = None
    batch_norm: bool | None = None
    lr_mult: float = 1.0

    def build(self, in_features: int) -> MLPDiscriminator:
        overrides = {k: getattr(self, k) for k in ("hidden", "dropout", "batch_norm") if getattr(self, k) is not None}
        return MLPDiscriminator.from_preset(self.preset, in_features, **overrides)


class ConvDiscriminator(nn.Module):
    """Output-space discriminator of AdaptSegNet (Tsai et al. 2018) / AdvEnt (Vu et al. 2019): 4×4 convs, stride 2,
    padding 1, channels 64-128-256-512 then ``out_channels``, LeakyReLU(0.2) between them.
    (B, in_channels, H, W) -> (B, out_channels, H/32, W/32) for H, W multiples of 32; in_channels = number of
    classes (softmax maps, or AdvEnt's −p·log p maps)."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (64, 128, 256, 512),
        out_channels: int = 1,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if int(in_channels) < 1 or int(out_channels) < 1 or any(c < 1 for c in channels):
            raise ValueError(
                f"ConvDiscriminator: channel counts must be >= 1, got in_channels={in_channels}, "
                f"channels={channels}, out_channels={out_channels}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        layers: list[nn.Module] = []
        width = self.in_channels
        for c in channels:
            layers += [nn.Conv2d(width, c, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(negative_slope)]
            width = c
        layers.append(nn.Conv2d(width, self.out_channels, kernel_size=4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ConvDiscriminator: x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self.net(x)
