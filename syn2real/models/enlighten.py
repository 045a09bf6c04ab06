"""EnlightenGAN networks (Jiang et al., "EnlightenGAN: Deep Light Enhancement without Paired Supervision",
IEEE TIP 2021).

- :func:`illumination_attention`: the self-regularised attention map A = 1 − Y, Y the illumination of the input in
  [0, 1] (luminance 0.299 R + 0.587 G + 0.114 B as in the official code, or the max over RGB); dark regions get
  more attention.
- :class:`AttentionUNet`: a 5-level U-Net (two 3×3 convs + LeakyReLU 0.2 + norm per level, max-pool down,
  bilinear-resize + 3×3 conv up). A, max-pooled to each level, multiplies the bottleneck and every skip
  connection; the output is residual, ``out = conv1×1(features) · A + input``, so a zero last conv is the identity.
- :class:`EnlightenDiscriminator`: a norm-free conv discriminator, ``n_layers`` stride-2 4×4 convs with channels
  ndf·min(2^i, 8) and LeakyReLU 0.2, one stride-1 conv, then a 1-channel output conv (patch logits, no sigmoid).
  The global discriminator sees whole images (``n_layers`` 5), the local one 32×32 patches (``n_layers`` 4), the
  official settings.

All three networks start from the official initialisation (:func:`normal_init`: conv weights N(0, 0.02), norm
scales N(1, 0.02), biases 0), under which the generator's output starts close to its input.

Images are in "GAN space", [-1, 1]. The generator pads any input to a multiple of 16 (reflect) and crops back, so
outputs always have the input's size; :func:`enhance_tiled` runs it on images of any size in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.core.luminance import LUMA
from syn2real.core.tiling import tiled_forward

__all__ = [
    "AttentionUNet",
    "EnlightenDiscriminator",
    "EnlightenDiscriminatorConfig",
    "EnlightenGeneratorConfig",
    "enhance_tiled",
    "illumination_attention",
    "normal_init",
]

def illumination_attention(x: torch.Tensor, kind: Literal["luminance", "max"] = "luminance") -> torch.Tensor:
    """A = 1 − Y for images ``x`` (B, 3, H, W) in [-1, 1]: (B, 1, H, W) in [0, 1], 1 where the input is black."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"illumination_attention: x must have shape (B, 3, H, W), got {tuple(x.shape)}")
    unit = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
    if kind == "luminance":
        weights = torch.tensor(LUMA, dtype=unit.dtype, device=unit.device).view(1, 3, 1, 1)
        y = (unit * weights).sum(dim=1, keepdim=True)
    elif kind == "max":
        y = unit.amax(dim=1, keepdim=True)
    else:
        raise ValueError(f"illumination_attention: kind must be 'luminance' or 'max', got {kind!r}")
    return 1.0 - y


def normal_init(module: nn.Module, std: float = 0.02) -> nn.Module:
    """The pix2pix / CycleGAN / EnlightenGAN initialisation: every conv weight ~ N(0, std), every norm scale
    ~ N(1, std), all biases 0. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {kind!r}")


class _DoubleConv(nn.Sequential):
    """(3×3 conv → LeakyReLU 0.2 → norm) × 2, the official block order."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), _norm(norm, cout),
            nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), _norm(norm, cout),
        )


class AttentionUNet(nn.Module):
    """EnlightenGAN's attention-guided U-Net: (B, 3, H, W) in [-1, 1] -> (B, 3, H, W), ``latent · A + input``.

    Args:
        ngf: channels of the first level (32 in the paper; levels ngf, 2ngf, 4ngf, 8ngf, 16ngf).
        depth: number of levels (5: four poolings, inputs padded to a multiple of 16).
        norm: ``batch`` (official), ``instance`` or ``none``.
        attention: ``luminance`` (official grey map) or ``max`` (max over RGB).
        use_attention: multiply skips/bottleneck and the residual by A (the paper's self-regularised attention).
    """

    def __init__(
        self,
        ngf: int = 32,
        depth: int = 5,
        norm: Literal["batch", "instance", "none"] = "batch",
        attention: Literal["luminance", "max"] = "luminance",
        use_attention: bool = True,
    ) -> None:
        super().__init__()
        if ngf < 1 or depth < 2:
            raise ValueError(f"AttentionUNet: need ngf >= 1 and depth >= 2, got ngf={ngf}, depth={depth}")
        _norm(norm, 1)  # validate early, with the message above
        self.attention, self.use_attention = attention, use_attention
        self.multiple = 2 ** (depth - 1)
        widths = [ngf * 2**i for i in range(depth)]
        self.down = nn.ModuleList([_DoubleConv(3, widths[0], norm)])
        self.down.extend(_DoubleConv(widths[i - 1], widths[i], norm) for i in range(1, depth))
        # resize-conv upsampling: bilinear x2, then a 3x3 conv halving the channels
        self.up_convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i - 1], 3, padding=1) for i in range(depth - 1, 0, -1))
        self.up_blocks = nn.ModuleList(_DoubleConv(2 * widths[i - 1], widths[i - 1], norm) for i in range(depth - 1, 0, -1))
        self.out = nn.Conv2d(widths[0], 3, 1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """A = 1 − Y of the input (ones when attention is off)."""
        if not self.use_attention:
            return torch.ones_like(x[:, :1])
        return illumination_attention(x, self.attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"AttentionUNet: x must have shape (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        xp = x
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            xp = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        a = self.attention_map(xp)
        attentions = [a]
        for _ in range(len(self.down) - 1):
            attentions.append(F.max_pool2d(attentions[-1], 2))
        skips: list[torch.Tensor] = []
        feat = xp
        for level, block in enumerate(self.down):
            if level:
                feat = F.max_pool2d(feat, 2)
            feat = block(feat)
            skips.append(feat)
        feat = skips.pop() * attentions[-1] if self.use_attention else skips.pop()
        for i, (conv, block) in enumerate(zip(self.up_convs, self.up_blocks)):
            skip = skips.pop()
            feat = conv(F.interpolate(feat, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            if self.use_attention:
                skip = skip * attentions[len(skips)]
            feat = block(torch.cat([feat, skip], dim=1))
        latent = self.out(feat)
        out = latent * a + xp
        return out[..., :h, :w]


class EnlightenDiscriminator(nn.Module):
    """Norm-free conv discriminator: (B, 3, H, W) -> (B, 1, H', W') logits; see the module docstring."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        if in_channels < 1 or ndf < 1 or n_layers < 1:
            raise ValueError(
                f"EnlightenDiscriminator: need in_channels, ndf, n_layers >= 1, got {in_channels}, {ndf}, {n_layers}"
            )
        self.in_channels = int(in_channels)
        layers: list[nn.Module] = []
        prev = in_channels
        # padding 2 (as the official code) keeps >= 1x1 maps down to 32x32 patches with 4 stride-2 layers
        for i in range(n_layers):
            width = ndf * min(2**i, 8)
            layers += [nn.Conv2d(prev, width, 4, stride=2, padding=2), nn.LeakyReLU(0.2, inplace=True)]
            prev = width
        width = ndf * min(2**n_layers, 8)
        layers += [nn.Conv2d(prev, width, 4, stride=1, padding=2), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"EnlightenDiscriminator: x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self.net(x)


@dataclass
class EnlightenGeneratorConfig:
    """The attention-guided U-Net (defaults: the paper's 32 base channels, 5 levels, BatchNorm, grey attention)."""

    ngf: int = 32
    depth: int = 5
    norm: Literal["batch", "instance", "none"] = "batch"
    attention: Literal["luminance", "max"] = "luminance"
    use_attention: bool = True

    def build(self) -> AttentionUNet:
        return normal_init(AttentionUNet(self.ngf, self.depth, self.norm, self.attention, self.use_attention))


@dataclass
class EnlightenDiscriminatorConfig:
    """Global and local discriminators (official: ndf 64, 5 stride-2 layers globally, 4 on 32×32 patches)."""

    ndf: int = 64
    global_layers: int = 5
    local_layers: int = 4

    def build_global(self) -> EnlightenDiscriminator:
        return normal_init(EnlightenDiscriminator(3, self.ndf, self.global_layers))

    def build_local(self) -> EnlightenDiscriminator:
        return normal_init(EnlightenDiscriminator(3, self.ndf, self.local_layers))


def enhance_tiled(generator: nn.Module, x: torch.Tensor, tile: int = 512, overlap: int = 32) -> torch.Tensor:
    """Enhance (B, 3, H, W) images in [-1, 1] with at most ``tile``×``tile`` pixels through the generator at once
    (:func:`~syn2real.core.tiling.tiled_forward`: windows with ``overlap`` pixels of context on the generator's
    pooling grid, equal to the whole-image result). Output clamped to [-1, 1]; no gradient."""
    return tiled_forward(generator, x, tile, overlap).clamp(-1.0, 1.0)
