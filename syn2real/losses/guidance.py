"""Proxy guidance (ASG, Chen et al., ICML 2020): keep the synthetic-trained student close to the frozen ImageNet
model by a KL divergence between their ImageNet predictions.

L = CE(head(f(x)), y) + λ · KL(softmax(g(x)) ‖ softmax(W_IN f(x))), where g is the frozen ImageNet model and W_IN
its (frozen) ImageNet classifier applied to the student's features f(x). λ = 0.1 for classification, 75 for
segmentation (where the KL is per pixel and much smaller).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["guidance_kl"]


def guidance_kl(student_logits: torch.Tensor, guide_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(guide/T) ‖ softmax(student/T)), summed over classes and averaged over the batch (ASG, eq. 2).

    Logits are (B, K) or (B, K, H, W) (segmentation: averaged over pixels too). The guide is treated as a
    constant: no gradient ever reaches it."""
    if student_logits.shape != guide_logits.shape:
        raise ValueError(
            f"guidance_kl: student logits {tuple(student_logits.shape)} and guide logits "
            f"{tuple(guide_logits.shape)} must have the same shape (B, K[, H, W])"
        )
    if student_logits.dim() < 2:
        raise ValueError(f"guidance_kl expects logits (B, K[, H, W]), got shape {tuple(student_logits.shape)}")
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(guide_logits.detach().float() / temperature, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # (B[, H, W])
    return kl.mean()
