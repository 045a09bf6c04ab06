"""Calibration: expected calibration error (Guo et al. 2017, equal-width confidence bins)."""

from __future__ import annotations

import torch

__all__ = ["expected_calibration_error"]


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over ``n_bins`` equal-width bins of max-softmax confidence.

    ``probs``: (N, C) probabilities; ``labels``: (N,) class indices. Bins are right-closed, (lo, hi],
    like torchmetrics, so the two agree exactly.
    """
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"expected probs (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(probs.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, device=probs.device, dtype=probs.dtype)
    # bucketize(right=False) puts conf == edge_k into bin k-1, i.e. (lo, hi]; conf == 0 goes to bin 0.
    idx = (torch.bucketize(conf, edges[1:-1], right=False)).clamp(0, n_bins - 1)
    ece = probs.new_zeros(())
    n = probs.shape[0]
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece = ece + mask.sum() / n * (correct[mask].mean() - conf[mask].mean()).abs()
    return ece
