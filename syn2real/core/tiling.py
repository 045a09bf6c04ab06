"""Exact tiled inference of an image-to-image network: bounded memory, the same pixels as one whole-image pass."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["tiled_forward"]


def _starts(size: int, core: int) -> list[int]:
    return list(range(0, size, core))


@torch.no_grad()
def tiled_forward(network: nn.Module, x: torch.Tensor, tile: int = 512, overlap: int = 32) -> torch.Tensor:
    """``network(x)`` for (B, C, H, W) images with at most ``tile``×``tile`` pixels through the network at once.

    The image is cut into cores of ``tile − 2·overlap`` pixels; each core is computed from a window that adds
    ``overlap`` pixels of context on each side (clipped at the image border, where the whole-image run sees the
    border too) and only the core is kept. ``tile`` and ``overlap`` are rounded down to the network's pooling
    multiple (its ``multiple`` attribute, default 1), so every window lies on the whole image's pooling grid. The
    network must map an image to one of the same size."""
    multiple = int(getattr(network, "multiple", 1))
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return network(x)
    tile = max(multiple, tile // multiple * multiple)
    overlap = overlap // multiple * multiple
    core = tile - 2 * overlap
    if core < multiple:
        raise ValueError(f"tile {tile} must exceed 2 x overlap {overlap} by at least {multiple} pixels")
    out = torch.empty_like(x)
    for y0 in _starts(h, core):
        y1 = min(h, y0 + core)
        wy0, wy1 = max(0, y0 - overlap), min(h, y1 + overlap)
        for x0 in _starts(w, core):
            x1 = min(w, x0 + core)
            wx0, wx1 = max(0, x0 - overlap), min(w, x1 + overlap)
            window = network(x[..., wy0:wy1, wx0:wx1])
            out[..., y0:y1, x0:x1] = window[..., y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    return out
