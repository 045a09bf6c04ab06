"""Contrastive syn-to-real generalisation (CSG, Chen et al., ICLR 2021): InfoNCE against a queue of negatives,
attentional pooling (A-pool) and the hyperspherical energy diagnostic.

- InfoNCE (MoCo form, eq. 1): for a query q, its positive key k⁺ and negatives {k⁻} from a queue (all L2-normalised),
  L = −log exp(q·k⁺/τ) / (exp(q·k⁺/τ) + Σ exp(q·k⁻/τ)), τ = 0.07.
- A-pool (Sec. 3.3): attention weights over locations a_i = softmax_i(⟨v_i, v̄⟩) with v̄ the global average
  feature; pooled feature Σ_i a_i v_i instead of the plain average.
- Hyperspherical energy (Sec. 2): E = Σ_{i≠j} 1/‖v̂_i − v̂_j‖ of L2-normalised features (lower = more diverse).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["apool", "apool_weights", "hyperspherical_energy", "info_nce", "info_nce_logits"]


def info_nce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Logits (B, 1 + K): column 0 = q·k⁺/τ, columns 1.. = q·queueᵀ/τ. q, k (B, D) and queue (K, D) normalised."""
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"info_nce: q {tuple(q.shape)} and k {tuple(k.shape)} must both be (B, D)")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce: queue {tuple(queue.shape)} must be (K, D) with D = {q.shape[1]}")
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be > 0, got {temperature}")
    pos = (q * k.detach()).sum(dim=1, keepdim=True)
    neg = q @ queue.detach().t()
    return torch.cat([pos, neg], dim=1) / temperature


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Mean InfoNCE loss of queries ``q`` against positives ``k`` and the negatives in ``queue`` (CSG eq. 1).

    Keys and queue are constants (the key encoder is frozen / EMA), so gradients reach only ``q``."""
    logits = info_nce_logits(q, k, queue, temperature)
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def apool_weights(features: torch.Tensor, similarity: Literal["dot", "cosine"] = "dot") -> torch.Tensor:
    """A-pool attention (B, H·W): softmax over locations of each location's similarity to the mean feature."""
    if features.dim() != 4:
        raise ValueError(f"apool expects a feature map (B, C, H, W), got shape {tuple(features.shape)}")
    flat = features.flatten(2)  # (B, C, N)
    mean = flat.mean(dim=2, keepdim=True)  # (B, C, 1)
    if similarity == "cosine":
        flat, mean = F.normalize(flat, dim=1), F.normalize(mean, dim=1)
    elif similarity != "dot":
        raise ValueError(f"apool: similarity must be 'dot' or 'cosine', got {similarity!r}")
    scores = (flat * mean).sum(dim=1)  # (B, N)
    return scores.float().softmax(dim=1).to(features.dtype)


def apool(features: torch.Tensor, similarity: Literal["dot", "cosine"] = "dot") -> torch.Tensor:
    """Attentional pooling of a (B, C, H, W) map to (B, C): Σ_i a_i v_i with :func:`apool_weights`."""
    weights = apool_weights(features, similarity)
    return torch.einsum("bcn,bn->bc", features.flatten(2), weights)


def hyperspherical_energy(features: torch.Tensor, reduction: Literal["sum", "mean"] = "mean",
                          eps: float = 1e-6) -> torch.Tensor:
    """E = Σ_{i≠j} 1/‖v̂_i − v̂_j‖ over the rows of ``features`` (B, D) after L2 normalisation (CSG Sec. 2).

    ``reduction="mean"`` divides by the B(B−1) ordered pairs, so batches of different sizes compare."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"hyperspherical_energy expects (B >= 2, D) features, got {tuple(features.shape)}")
    v = F.normalize(features.detach().float(), dim=1)
    dist = torch.cdist(v, v)
    b = v.shape[0]
    off = ~torch.eye(b, dtype=torch.bool, device=v.device)
    energy = (1.0 / dist[off].clamp_min(eps)).sum()
    return energy / (b * (b - 1)) if reduction == "mean" else energy
