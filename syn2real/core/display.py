"""Normalised image batches shown in [0, 1]: sample grids, method pictures."""

from __future__ import annotations

import torch

__all__ = ["display_rgb", "minmax_unit"]


def minmax_unit(x: torch.Tensor) -> torch.Tensor:
    """A normalised (B, C, H, W) batch in [0, 1] for display: each image min-max scaled over all its pixels."""
    x = x.detach().float()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def display_rgb(x: torch.Tensor) -> torch.Tensor:
    """Normalised (B, C, H, W) images -> (B, 3, H, W) RGB in [0, 1] (:func:`minmax_unit`; grey images repeated,
    channels beyond the third dropped)."""
    x = minmax_unit(x)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
