"""The augmentation interface every method applies to its labelled batch (``augment:`` in a config)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = ["Augmentation", "check_mode", "combine", "eval_mode", "pixel_stats"]


def pixel_stats(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The data's normalisation as tensors broadcasting over the batch ``x`` (B, C, ...), so that
    ``pixels = x * std + mean``; one value per channel, or one for all."""
    c = x.shape[1]
    if len(mean) not in (1, c) or len(mean) != len(std):
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values but the batch has {c} channels")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = torch.tensor(list(mean), device=x.device, dtype=x.dtype).view(shape)
    s = torch.tensor(list(std), device=x.device, dtype=x.dtype).view(shape)
    return m, s


def check_mode(mode: str) -> None:
    """``replace`` (the augmented batch only) or ``concat`` (clean + augmented)."""
    if mode not in ("replace", "concat"):
        raise ValueError(f"augment mode must be 'replace' or 'concat', got {mode!r}")


def combine(
    x: torch.Tensor, y: torch.Tensor, new: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmentation's output for ``mode``: ``new`` with labels ``y``, or clean + new with labels repeated."""
    if mode == "concat":
        return torch.cat([x, new]), torch.cat([y, y])
    return new, y


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (BatchNorm uses, never updates, its running statistics); every submodule's own mode
    is restored afterwards, so a frozen BatchNorm inside a training model stays frozen."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


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
