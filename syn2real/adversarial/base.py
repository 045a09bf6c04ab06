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

    Two optional hooks let an augmentation do more than replace the batch:

    - :meth:`prepare` is called once on the task network when the method is built (AdvProp converts its
      BatchNorm layers to dual BatchNorm there);
    - :meth:`auxiliary_losses` returns extra named loss terms on the *clean* labelled batch, which the method
      adds to its total (AdvProp's adversarial loss through the auxiliary BatchNorms, the Jacobian penalty).
    """

    @abstractmethod
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented batch and its labels."""

    def prepare(self, model: nn.Module) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Adapt the task network once, before its optimizer is built (default: nothing)."""

    def auxiliary_losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms on the clean batch ``(x, y)``, added to the method's loss (default: none)."""
        return {}
