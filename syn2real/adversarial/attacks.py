"""Gradient attacks as training augmentations: FGSM (Goodfellow et al. 2015), PGD with L∞ or L2 balls and a random
start (Madry et al. 2018), fast FGSM with random init (Wong et al. 2020).

The budget ε lives in **pixel space** [0, 1] while models see normalised inputs ``(pixel − mean) / std``: the attack
converts the batch to pixel space, perturbs and clips there, and converts back. Gradients are taken with respect to the
input only (``torch.autograd.grad``), with the model in eval mode, so BatchNorm running statistics and the parameters'
``.grad`` are exactly as before the call; the model's train/eval mode is restored afterwards. The returned batch is
detached (Danskin: training on the maximiser with a stopped attack graph is the right gradient).

Use in any config::

    model:
      init_args:
        augment:
          class_path: syn2real.adversarial.PGD
          init_args: {epsilon: 0.3, step_size: 0.01, steps: 40, mean: [0.5], std: [0.5]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from syn2real.adversarial.base import (
    Augmentation,
    check_mode,
    combine,
    eval_mode,
    pixel_stats,
)
from syn2real.core.cross_entropy import task_cross_entropy
from syn2real.core.labels import IGNORE_INDEX

__all__ = ["FGSM", "FastFGSM", "PGD"]


class PGD(Augmentation):
    """Projected gradient descent on the task loss (ascent), L∞ or L2 ball of radius ``epsilon`` in pixel space.

    Args:
        epsilon: radius of the ball in [0, 1] pixel units (MNIST: 0.3; CIFAR: 8/255).
        step_size: α per step (L∞: added as α·sign(∇); L2: α·∇/‖∇‖₂).
        steps: number of steps (Madry: 40 on MNIST, 7 for CIFAR training).
        norm: ``linf`` or ``l2``.
        random_start: start from a uniform point of the ball (L∞) / a random point of the ball (L2).
        mean / std: the data's normalisation (one value per channel; one value broadcasts).
        mode: ``replace`` returns the adversarial batch; ``concat`` returns clean + adversarial (labels repeated).
        ignore_index: label of unlabelled pixels for segmentation logits (255).
    """

    def __init__(
        self,
        epsilon: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        norm: Literal["linf", "l2"] = "linf",
        random_start: bool = True,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        mode: Literal["replace", "concat"] = "replace",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if epsilon < 0 or step_size < 0 or steps < 1:
            raise ValueError(f"PGD needs epsilon >= 0, step_size >= 0, steps >= 1; got {epsilon}, {step_size}, {steps}")
        if norm not in ("linf", "l2"):
            raise ValueError(f"PGD norm must be 'linf' or 'l2', got {norm!r}")
        check_mode(mode)
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need equal lengths and std > 0, got {list(mean)}, {list(std)}")
        self.epsilon, self.step_size, self.steps = float(epsilon), float(step_size), int(steps)
        self.norm, self.random_start, self.mode, self.ignore_index = norm, random_start, mode, ignore_index
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    # -- pixel space ----------------------------------------------------------------------------
    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pixel_stats(x, self.mean, self.std)

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.epsilon, self.epsilon)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (delta.ndim - 1)))
        return delta * (self.epsilon / norms).clamp(max=1.0)

    def _init_delta(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return torch.zeros_like(pixels)
        if self.norm == "linf":
            return torch.empty_like(pixels).uniform_(-self.epsilon, self.epsilon)
        direction = torch.randn_like(pixels)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (pixels.ndim - 1)))
        radius = torch.rand(pixels.shape[0], device=pixels.device, dtype=pixels.dtype) * self.epsilon
        return direction * radius.view(-1, *([1] * (pixels.ndim - 1)))

    def _step(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return self.step_size * grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
        return self.step_size * grad / norms

    # -- the attack -----------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial version of the normalised batch ``x`` (detached, same normalisation)."""
        mean, std = self._stats(x)
        pixels = (x.detach() * std + mean).clamp(0.0, 1.0)
        delta = self._project(self._init_delta(pixels))
        delta = ((pixels + delta).clamp(0.0, 1.0) - pixels).detach()
        with eval_mode(model), torch.enable_grad():
            for _ in range(self.steps):
                delta.requires_grad_(True)
                loss = task_cross_entropy(model((pixels + delta - mean) / std), y, self.ignore_index)
                (grad,) = torch.autograd.grad(loss, delta)
                delta = self._project(delta.detach() + self._step(grad))
                delta = ((pixels + delta).clamp(0.0, 1.0) - pixels).detach()
        return ((pixels + delta - mean) / std).detach()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return combine(x, y, self.perturb(model, x, y), self.mode)


class FGSM(PGD):
    """One signed-gradient step of size ε from the clean point (Goodfellow et al. 2015)."""

    def __init__(
        self,
        epsilon: float = 0.3,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        mode: Literal["replace", "concat"] = "replace",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(epsilon, epsilon, 1, "linf", False, mean, std, mode, ignore_index)


class FastFGSM(PGD):
    """"Fast is better than free" (Wong et al. 2020): uniform random start in the ε-ball, one step of α = 1.25 ε,
    projected back onto the ball; the random start is what avoids catastrophic overfitting."""

    def __init__(
        self,
        epsilon: float = 0.3,
        step_ratio: float = 1.25,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        mode: Literal["replace", "concat"] = "replace",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(epsilon, step_ratio * epsilon, 1, "linf", True, mean, std, mode, ignore_index)
