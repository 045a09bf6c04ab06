"""Output-space adaptation losses for segmentation: AdvEnt's self-information maps and entropy (Vu et al., CVPR 2019).

The discriminator terms themselves are the domain losses of :mod:`syn2real.losses.adversarial` applied to
fully-convolutional discriminator logits (source = 1): :func:`~syn2real.losses.adversarial.domain_adversarial_loss`
for the discriminator, :func:`~syn2real.losses.adversarial.adda_target_loss` (target maps labelled as source) for the
segmentation network (AdaptSegNet, Tsai et al., CVPR 2018, eq. 4–5).
"""

from __future__ import annotations

import math

import torch

__all__ = ["entropy_loss", "self_information_map"]

_EPS = 1e-30


def _check(probs: torch.Tensor, fn: str) -> int:
    if probs.ndim not in (2, 4):
        raise ValueError(f"{fn}: probs must have shape (B, C, H, W) or (B, C), got {tuple(probs.shape)}")
    c = probs.shape[1]
    if c < 2:
        raise ValueError(f"{fn}: need at least 2 classes, got C = {c}")
    return c


def self_information_map(probs: torch.Tensor) -> torch.Tensor:
    """AdvEnt weighted self-information I = −P ⊙ log₂(P) / log₂(C), per class: (B, C, H, W) -> (B, C, H, W), each
    pixel's channels sum to its normalised entropy in [0, 1]. This is what AdvEnt's discriminator sees. Image-level
    probabilities (B, C) work alike (one "pixel" per image)."""
    c = _check(probs, "self_information_map")
    probs = probs.float()  # 1e-30 underflows to 0 in fp16: log2(0) would make 0·(−inf) = NaN
    return -probs * torch.log2(probs + _EPS) / math.log2(c)


def entropy_loss(probs: torch.Tensor) -> torch.Tensor:
    """AdvEnt MinEnt: the mean over pixels of the normalised entropy −Σ_c p_c log₂ p_c / log₂ C: (B, C, H, W) -> ();
    for (B, C) image-level probabilities the mean over images (entropy minimisation, Grandvalet & Bengio 2005)."""
    _check(probs, "entropy_loss")
    return self_information_map(probs).sum(dim=1).mean()
