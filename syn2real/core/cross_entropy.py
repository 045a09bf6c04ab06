"""The task loss every layer uses: cross-entropy of classification or segmentation logits with an ignore label."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from syn2real.core.labels import IGNORE_INDEX

__all__ = ["task_cross_entropy"]


def task_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy for classification (B, C) or segmentation (B, C, H, W) logits. Pixels labelled
    ``ignore_index`` do not count; a batch whose every pixel is ignored gives 0 (not NaN). Computed in float32."""
    logits = logits.float()
    if logits.ndim == 2:
        return F.cross_entropy(logits, labels)
    if logits.ndim != labels.ndim + 1 or logits.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            "segmentation logits (B, C, H, W) need labels (B, H, W); "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)
