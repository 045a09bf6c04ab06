"""Jacobian regularisation as a plug-in loss term (``augment:`` in any config); see
:mod:`syn2real.losses.jacobian` for the estimator.

    model:
      init_args:
        augment:
          class_path: syn2real.adversarial.JacobianReg
          init_args: {weight: 0.01, n_proj: 1, std: [0.5]}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from syn2real.adversarial.base import Augmentation
from syn2real.losses.jacobian import jacobian_regularizer

__all__ = ["JacobianReg"]


class JacobianReg(Augmentation):
    """Adds ``weight · ½‖J‖_F²`` (batch mean) to the method's loss; the batch itself is not changed.

    The Jacobian is taken with respect to **pixels** in [0, 1] (the normalised input's gradient times 1/std), so
    λ means the same whatever the data's normalisation. Cost: one extra forward of the clean batch and one
    double-backward per projection.

    Args:
        weight: λ_JR (paper: 0.01–0.1 range; default 0.01).
        n_proj: random projections per step (paper: 1 suffices).
        std: the data's normalisation std (one value per channel, or one for all).
    """

    def __init__(self, weight: float = 0.01, n_proj: int = 1, std: Sequence[float] = (0.5,)) -> None:
        if weight < 0 or n_proj < 1:
            raise ValueError(f"JacobianReg needs weight >= 0 and n_proj >= 1, got {weight}, {n_proj}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be > 0, got {list(std)}")
        self.weight, self.n_proj, self.std = float(weight), int(n_proj), tuple(float(s) for s in std)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def auxiliary_losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        c = x.shape[1]
        if len(self.std) not in (1, c):
            raise ValueError(f"JacobianReg std has {len(self.std)} values but the batch has {c} channels")
        scale = 1.0 / torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
        inputs = x.detach().requires_grad_(True)
        with torch.enable_grad():
            reg = jacobian_regularizer(inputs, model(inputs), self.n_proj, scale)
        return {"jacobian": self.weight * reg}
