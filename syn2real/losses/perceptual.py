"""Perceptual losses on frozen deep features.

EnlightenGAN's self feature-preserving loss (Jiang et al., TIP 2021, eq. 3): with no paired ground truth, the
enhanced image must keep the *content* of its own low-light input, measured as the mean squared distance between
instance-normalised deep features (relu5_1 of VGG16 in the paper) of the input and of the output:

    L_SFP(I) = 1 / (C H W) Σ (IN(φ(I)) − IN(φ(G(I))))²

Instance normalisation (per image and channel, no affine) removes the feature statistics that brightness changes,
so the loss is insensitive to how much the image is brightened but not to changes of structure.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["instance_normalize", "self_feature_preserving_loss"]


def instance_normalize(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, C, H, W) features normalised to zero mean and unit (biased) variance per image and channel."""
    if features.ndim != 4:
        raise ValueError(f"instance_normalize: features must be (B, C, H, W), got {tuple(features.shape)}")
    return F.instance_norm(features, eps=eps)


def self_feature_preserving_loss(
    extractor: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, outputs: torch.Tensor
) -> torch.Tensor:
    """mean (IN(φ(inputs)) − IN(φ(outputs)))²; φ is frozen, the inputs' features carry no gradient."""
    if inputs.shape != outputs.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and outputs {tuple(outputs.shape)} must have the same shape")
    with torch.no_grad():
        reference = instance_normalize(extractor(inputs))
    return F.mse_loss(instance_normalize(extractor(outputs)), reference)
