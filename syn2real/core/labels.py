"""The label value of unlabelled pixels and items, shared by datasets, losses, attacks, metrics and methods."""

from __future__ import annotations

__all__ = ["IGNORE_INDEX"]

IGNORE_INDEX = 255  # segmentation label maps: 8-bit train ids 0..C-1, 255 = ignore (Cityscapes convention)
