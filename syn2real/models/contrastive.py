"""CSG's contrastive pieces with state: MLP projection heads (C → C → 128) and the queue of negative keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NegativeQueue", "ProjectionHead", "ema_update"]


class ProjectionHead(nn.Sequential):
    """Linear(C, C) → ReLU → Linear(C, dim); outputs are L2-normalised (CSG, MoCo-v2 style MLP)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        hidden = hidden_dim or in_dim
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(x), dim=1)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """θ_target ← m · θ_target + (1 − m) · θ_source for every parameter (MoCo's momentum update)."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)


class NegativeQueue(nn.Module):
    """A FIFO of ``size`` L2-normalised keys (rows): the newest keys overwrite the oldest ones.

    ``keys`` are the current negatives; :meth:`enqueue` writes a batch at the pointer (wrapping around the end).
    Buffers, so the queue is saved in checkpoints and moves with the module."""

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got {size}, {dim}")
        init = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("keys", F.normalize(init, dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (N, dim) in order from the pointer, wrapping; with N > size only the last ``size`` stay."""
        keys = keys.detach().to(self.keys.dtype)
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"enqueue expects (N, {self.keys.shape[1]}) keys, got {tuple(keys.shape)}")
        n = keys.shape[0]
        ptr = int(self.ptr)
        if n >= self.size:
            keys, ptr, n = keys[-self.size:], (ptr + n - self.size) % self.size, self.size
        idx = (ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys.index_copy_(0, idx, keys)
        self.ptr.fill_((ptr + n) % self.size)
