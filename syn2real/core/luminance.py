"""Luminance weights of R, G, B (ITU-R BT.601), as EnlightenGAN's official code computes its attention map."""

from __future__ import annotations

__all__ = ["LUMA"]

LUMA = (0.299, 0.587, 0.114)  # Y = 0.299 R + 0.587 G + 0.114 B
