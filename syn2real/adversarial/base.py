"""The augmentation interface every method applies to its labelled batch (``augment:`` in a config)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

__all__ = ["Augmentation"]


class Augmentation(ABC):
    """``augment(model, x, y) -> (x_aug, y_aug)`` on a batch already on the model's device.

    Implementations (FGSM/PGD, worst-of-k spatial, ...) may query ``model`` but must leave its mode,
    BatchNorm statistics and parameter gradients as they found them.
    """

    @abstractmethod
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented batch and its labels."""
