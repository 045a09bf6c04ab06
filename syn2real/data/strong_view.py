"""The strong (photometric) view of mean-teacher self-training: colour jitter + Gaussian blur on normalised image
batches, as in the DACS / DAFormer / MIC code. It never moves a pixel, so label maps stay aligned.

Per image: colour jitter is applied when a uniform draw exceeds ``jitter_p`` (so with probability 1 − ``jitter_p``;
0.8 for the papers' 0.2, as their code does), with brightness (additive, factor − 1), contrast, saturation factors in
[1 − s, 1 + s] and a hue shift in [−s, s] of a turn, applied in that order (saturation and hue only for RGB images);
Gaussian blur is applied when a uniform draw exceeds 0.5, with σ ~ U(0.15, 1.15) and a kernel of about a tenth of
the image side (odd). The official code draws the two decisions once per batch and the factors per image; here every
draw is per image, from that image's generator when ``generators`` are given (so DDP ranks draw what one process
would), else from the global torch generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["StrongViewConfig", "strong_view"]


@dataclass
class StrongViewConfig:
    """The strong view's settings.

    Args:
        jitter_strength: colour-jitter strength s (brightness/contrast/saturation factor in [1 − s, 1 + s], hue
            shift in [−s, s]); DAFormer/MIC 0.2 (0 = no jitter).
        jitter_p: the draw that must be exceeded for jitter (DAFormer/MIC 0.2: jitter with probability 0.8).
        blur: Gaussian blur with probability 0.5.
    """

    jitter_strength: float = 0.2
    jitter_p: float = 0.2
    blur: bool = True

    def __post_init__(self) -> None:
        if self.jitter_strength < 0 or not 0.0 <= self.jitter_p <= 1.0:
            raise ValueError(f"strong view: jitter_strength must be >= 0 and jitter_p in [0, 1], got "
                             f"{self.jitter_strength} and {self.jitter_p}")


def strong_view(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                config: StrongViewConfig | None = None,
                generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """The strong view of a normalised batch (B, C, H, W): de-normalised to [0, 1] pixels, jittered and blurred,
    normalised again. Returns a new tensor."""
    import kornia

    cfg = config or StrongViewConfig()
    mean_t = torch.as_tensor(list(mean), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(list(std), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if mean_t.shape[1] not in (1, x.shape[1]) or std_t.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"strong view: pixel mean/std have {mean_t.shape[1]}/{std_t.shape[1]} values for "
                         f"{x.shape[1]}-channel images")
    s = cfg.jitter_strength
    kernel = (_odd_tenth(x.shape[-2]), _odd_tenth(x.shape[-1]))
    n = x.shape[0]
    # jitter?, brightness, contrast, saturation, hue, blur?, sigma, spare: a fixed number of draws per image
    if generators is not None:
        u = torch.stack([torch.rand(8, generator=g) for g in generators[:n]]) if n else torch.zeros(0, 8)
    else:
        u = torch.rand(n, 8)
    u = u.to(device=x.device, dtype=x.dtype)
    out = x.clone()
    jitter = (u[:, 0] > cfg.jitter_p) & (s > 0)
    if bool(jitter.any()):
        idx, v = jitter.nonzero().flatten(), u[jitter]
        pixels = (out[idx] * std_t + mean_t).clamp(0, 1)
        pixels = kornia.enhance.adjust_brightness(pixels, (2 * v[:, 1] - 1) * s)
        pixels = kornia.enhance.adjust_contrast(pixels, (1 + (2 * v[:, 2] - 1) * s).clamp_min(0))
        if x.shape[1] == 3:
            pixels = kornia.enhance.adjust_saturation(pixels, (1 + (2 * v[:, 3] - 1) * s).clamp_min(0))
            pixels = kornia.enhance.adjust_hue(pixels, (2 * v[:, 4] - 1) * s * 2 * math.pi)
        out[idx] = (pixels.clamp(0, 1) - mean_t) / std_t
    blur = (u[:, 5] > 0.5) & cfg.blur
    if bool(blur.any()):
        idx = blur.nonzero().flatten()
        sigma = (0.15 + u[blur, 6]).unsqueeze(1).expand(-1, 2)
        out[idx] = kornia.filters.gaussian_blur2d(out[idx], kernel, sigma)
    return out


def _odd_tenth(side: int) -> int:
    """The official code's blur kernel size: ⌊⌈0.1·side⌉ − 0.5 + (⌈0.1·side⌉ mod 2)⌋, i.e. ⌈0.1·side⌉ when odd,
    else one less (at least 1)."""
    k = math.ceil(0.1 * side)
    return max(1, int(math.floor(k - 0.5 + k % 2)))
