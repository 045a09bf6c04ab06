"""Consistency between predictions of several views of the same images: AugMix's Jensen–Shannon divergence
(Hendrycks et al., ICLR 2020).

``JS(p_1, …, p_k) = 1/k Σ_i KL(p_i ‖ M)`` with ``M = 1/k Σ_i p_i`` (clamped to [1e−7, 1] before the log, as in
the paper's code). It is bounded (≤ log k) and is zero only when all views agree, so it asks the network to be
stable across augmentations without any label. For dense outputs (B, C, H, W) the divergence is computed at every
position and averaged; for (B, C) it equals timm's ``JsdCrossEntropy`` term divided by its α.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["js_divergence"]


def js_divergence(logits: Sequence[torch.Tensor], clamp: float = 1e-7) -> torch.Tensor:
    """Mean (over images and positions) generalised Jensen–Shannon divergence among the softmax distributions
    (over dim 1) of the views ``logits`` (each (B, C, ...), same shape); computed in float32."""
    if len(logits) < 2:
        raise ValueError(f"js_divergence needs at least two views, got {len(logits)}")
    shapes = {tuple(t.shape) for t in logits}
    if len(shapes) != 1:
        raise ValueError(f"js_divergence views must have one shape, got {sorted(shapes)}")
    probs = [t.float().softmax(dim=1) for t in logits]
    log_mixture = torch.stack(probs).mean(dim=0).clamp(clamp, 1.0).log()
    kl = [F.kl_div(log_mixture, p, reduction="none").sum(dim=1).mean() for p in probs]
    return torch.stack(kl).mean()
