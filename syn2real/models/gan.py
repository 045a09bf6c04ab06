"""Image-to-image GAN parts of CycleGAN (Zhu et al., ICCV 2017) as used by CyCADA (Hoffman et al., ICML 2018).

- :class:`ResnetGenerator`: c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, two transposed-conv
  upsamplings, c7s1-out, ``tanh``. Reflection padding and instance norm throughout. 9 blocks for 256 px images,
  6 for images of 128 px or less (the CycleGAN defaults). Images of any size: inputs whose sides are not a
  multiple of 4 are reflect-padded and the output cropped back, so the output always has the input's shape.
- :class:`PatchDiscriminator`: the 70×70 PatchGAN (``n_layers`` 3): 4×4 convs, channels ndf-2ndf-4ndf-8ndf,
  LeakyReLU 0.2, instance norm except on the first layer, one logit per patch (no sigmoid; LSGAN losses).
- :class:`ImagePool`: the history of 50 generated images the discriminators are trained on (Shrivastava et al.).

Generators work in "GAN space", images in [-1, 1]; :class:`PixelSpace` converts from and to a data pipeline's
normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GeneratorConfig",
    "ImagePool",
    "PatchDiscriminator",
    "PatchDiscriminatorConfig",
    "PixelSpace",
    "ResnetGenerator",
]


class _ResnetBlock(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: (B, in_channels, H, W) in [-1, 1] -> (B, out_channels, H, W) in [-1, 1]."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        ngf: int = 64,
        n_blocks: int = 9,
        n_downsampling: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if min(in_channels, out_channels, ngf) < 1 or n_blocks < 0 or n_downsampling < 0:
            raise ValueError(
                f"ResnetGenerator: need in/out channels and ngf >= 1, n_blocks and n_downsampling >= 0; got "
                f"in={in_channels}, out={out_channels}, ngf={ngf}, n_blocks={n_blocks}, n_downsampling={n_downsampling}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.multiple = 2**n_downsampling
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
        ]
        width = ngf
        for _ in range(n_downsampling):
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(True)]
            width *= 2
        layers += [_ResnetBlock(width, dropout) for _ in range(n_blocks)]
        for _ in range(n_downsampling):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResnetGenerator: x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.net(x)[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, in_channels, H, W) -> (B, 1, H', W') patch logits; ``n_layers`` 3 is the 70×70 receptive field.

    Small images keep at least a 1×1 output: stride-2 layers whose input is already below 4 px run with
    stride 1."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or ndf < 1 or n_layers < 0:
            raise ValueError(
                f"PatchDiscriminator: need in_channels, ndf >= 1 and n_layers >= 0, got {in_channels}, {ndf}, {n_layers}"
            )
        self.in_channels = int(in_channels)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.strides: list[int] = []
        width, prev = ndf, in_channels
        # n_layers stride-2 blocks (first without norm), one stride-1 block, then the 1-channel stride-1 output
        for i in range(n_layers + 1):
            width = ndf * min(2**i, 8)
            self.convs.append(nn.Conv2d(prev, width, 4, stride=1, padding=1))
            self.norms.append(nn.Identity() if i == 0 else nn.InstanceNorm2d(width))
            self.strides.append(2 if i < n_layers else 1)
            prev = width
        self.out = nn.Conv2d(prev, 1, 4, stride=1, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchDiscriminator: x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        for conv, norm, stride in zip(self.convs, self.norms, self.strides):
            if min(x.shape[-2:]) < 4:
                stride = 1
            x = self.act(norm(F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=1)))
        if min(x.shape[-2:]) < 2:  # keep a >= 1x1 map on tiny inputs
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return self.out(x)


@dataclass
class GeneratorConfig:
    """Both CycleGAN generators (source→target and target→source).

    Args:
        channels: image channels (1 grayscale, 3 RGB).
        ngf: filters of the first layer (64 in CycleGAN).
        n_blocks: residual blocks (9 at 256 px, 6 at 128 px or less).
        dropout: inside the residual blocks (CycleGAN: off).
    """

    channels: int = 3
    ngf: int = 64
    n_blocks: int = 9
    n_downsampling: int = 2
    dropout: float = 0.0

    def build(self) -> ResnetGenerator:
        return ResnetGenerator(self.channels, self.channels, self.ngf, self.n_blocks, self.n_downsampling, self.dropout)


@dataclass
class PatchDiscriminatorConfig:
    """Both image discriminators (on the source and on the target domain): the 70×70 PatchGAN by default."""

    ndf: int = 64
    n_layers: int = 3

    def build(self, channels: int) -> PatchDiscriminator:
        return PatchDiscriminator(channels, self.ndf, self.n_layers)


class ImagePool:
    """Buffer of up to ``size`` past generated images. :meth:`query` returns a batch for the discriminator: while
    the pool fills, the new images; then each image is, with probability 1/2, swapped for a random stored one
    (which the new image replaces). ``size`` 0 disables the pool. Stored images are detached.

    Draws come from torch's global generator (or ``generator``), so a seeded run is reproducible;
    :meth:`state_dict` / :meth:`load_state_dict` carry the stored images through checkpoints."""

    def __init__(self, size: int = 50, generator: torch.Generator | None = None) -> None:
        if size < 0:
            raise ValueError(f"ImagePool: size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"images": torch.stack(self.images).cpu()} if self.images else {}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | None = None) -> None:
        images = state.get("images")
        self.images = [] if images is None else [im.to(device) if device else im for im in images][: self.size]

    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) < 0.5:
                j = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[j].clone())
                self.images[j] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)


class PixelSpace(nn.Module):
    """Converts between a data pipeline's normalisation ``(x / 255 - mean) / std`` and GAN space [-1, 1].

    Digits use mean = std = 0.5, where both spaces coincide; ImageNet-normalised data needs the conversion so
    that generators see and produce images in [-1, 1] while task models keep their input statistics."""

    def __init__(self, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"PixelSpace: mean and std need equal lengths and std > 0, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def to_gan(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean) * 2.0 - 1.0

    def from_gan(self, g: torch.Tensor) -> torch.Tensor:
        return ((g + 1.0) * 0.5 - self.mean) / self.std
