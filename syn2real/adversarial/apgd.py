"""Auto-PGD (Croce & Hein, ICML 2020): PGD without a step-size to tune, with the cross-entropy (APGD-CE) or the
difference-of-logits-ratio loss (APGD-DLR), and the per-image worst case over several attacks.

Why: a fixed-step PGD over-estimates robustness (on a briefly PGD-trained digits model PGD-40 read 62.0 % at ε 0.3
where the per-image worst case over PGD-40, APGD-CE and APGD-DLR gave 52.7 %). APGD adapts the step per image:

- start at η = 2ε from a uniform point of the L∞ ball; steps with momentum α = 0.75:
  ``z = P(x_k + η·sign ∇f(x_k))``, ``x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))`` (the first step plain);
- checkpoints ``w_j = ⌈p_j N⌉`` with ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``
  (:func:`apgd_checkpoints`); at each, an image's step is halved and its iterate restarted from its best point when
  (1) fewer than ρ = 0.75 of the steps since the last checkpoint raised its loss, or (2) its step was not halved at
  the last checkpoint and its best loss did not change since (:func:`halving_conditions`);
- an image counts as broken as soon as one iterate is misclassified; that iterate is what the attack returns.

The budget ε is in [0, 1] pixel units as for :class:`~syn2real.adversarial.attacks.PGD`; the model is run in eval
mode and only input gradients are taken (parameters' ``.grad`` and BatchNorm statistics untouched).

Differences from the paper worth knowing: condition (2) is also checked at the first checkpoint (the official code
skips it there), and a restart from the best point also resets the momentum (the previous point is the best point).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.base import Augmentation, check_mode, combine, eval_mode, pixel_stats

__all__ = ["APGD", "APGDResult", "apgd_checkpoints", "dlr_loss", "halving_conditions", "worst_case_correct"]

Loss = Literal["ce", "dlr"]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample DLR loss ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e−12)`` (π: classes by decreasing logit).

    Scale- and shift-invariant in the logits, so an attack on it is not fooled by a model that only inflates its
    logits (the failure of CE-based PGD on such models). Needs at least 3 classes."""
    if logits.ndim != 2 or logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs (B, C) logits with C >= 3 classes, got shape {tuple(logits.shape)}")
    z = logits.float()
    top, _ = z.sort(dim=1, descending=True)
    z_y = z.gather(1, y.view(-1, 1)).squeeze(1)
    other = torch.where(top[:, 0] == z_y, top[:, 1], top[:, 0])  # the largest logit of another class
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


def apgd_checkpoints(iterations: int) -> list[int]:
    """The iterations ``w_1 < w_2 < ... ≤ iterations`` at which APGD may halve its step (``w_0 = 0`` excluded).

    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, ``w_j = ⌈p_j · N⌉``; computed in exact
    fractions (0.41 · 100 is 41, not 42), repeated values (small N) kept once."""
    if iterations < 1:
        raise ValueError(f"APGD iterations must be >= 1, got {iterations}")
    prev, p = Fraction(0), Fraction(22, 100)
    out: list[int] = []
    while p <= 1:
        w = math.ceil(p * iterations)
        if w >= 1 and (not out or w > out[-1]):
            out.append(w)
        prev, p = p, p + max(p - prev - Fraction(3, 100), Fraction(6, 100))
    return out


def halving_conditions(
    increases: torch.Tensor, interval: int, halved_last: torch.Tensor, best_now: torch.Tensor,
    best_last: torch.Tensor, rho: float = 0.75,
) -> torch.Tensor:
    """Which images halve their step at a checkpoint (boolean per image).

    Args:
        increases: per image, how many of the ``interval`` steps since the last checkpoint raised the loss.
        interval: ``w_j − w_{j−1}``.
        halved_last: whether the image's step was halved at the previous checkpoint.
        best_now / best_last: the image's best loss now and at the previous checkpoint.
        rho: condition (1)'s fraction (paper: 0.75).

    Condition (1): ``increases < ρ · interval``; condition (2): not halved last time and the best loss unchanged."""
    cond1 = increases.float() < rho * interval
    cond2 = ~halved_last & (best_now <= best_last)
    return cond1 | cond2


def worst_case_correct(corrects: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image worst case over attacks: an image is robust only if it is classified correctly under **every**
    attack (the logical AND of the attacks' boolean correctness vectors)."""
    values = list(corrects.values()) if isinstance(corrects, Mapping) else list(corrects)
    if not values:
        raise ValueError("worst_case_correct needs at least one attack's correctness")
    out = values[0].bool()
    for v in values[1:]:
        if v.shape != out.shape:
            raise ValueError(f"attack results of different shapes: {tuple(out.shape)} vs {tuple(v.shape)}")
        out = out & v.bool()
    return out


@dataclass
class APGDResult:
    """One APGD run: the adversarial batch (normalised like the input), per image whether every iterate was
    classified correctly, the best loss, and the step sizes after each checkpoint (``step_sizes[j - 1]``: (B,),
    after w_j)."""

    adversarial: torch.Tensor
    correct: torch.Tensor
    best_loss: torch.Tensor
    step_sizes: list[torch.Tensor] = field(default_factory=list)


class APGD(Augmentation):
    """APGD-CE / APGD-DLR, L∞ ball of radius ``epsilon`` in [0, 1] pixel space.

    Args:
        epsilon: the budget (MNIST: 0.3; CIFAR: 8/255).
        loss: ``ce`` (APGD-CE) or ``dlr`` (APGD-DLR; needs ≥ 3 classes).
        iterations: N (paper: 100).
        restarts: independent random starts; images broken by one run are not attacked again (paper: 1 for
            the single attacks, AutoAttack's standard version).
        rho: condition (1)'s fraction of successful steps (0.75).
        momentum: α (0.75).
        mean / std: the data's normalisation.
        mode: as an augmentation, ``replace`` or ``concat``.
    """

    def __init__(
        self,
        epsilon: float = 0.3,
        loss: Loss = "ce",
        iterations: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        mode: Literal["replace", "concat"] = "replace",
    ) -> None:
        if epsilon < 0 or iterations < 1 or restarts < 1:
            raise ValueError(f"APGD needs epsilon >= 0, iterations >= 1, restarts >= 1; got {epsilon}, {iterations}, "
                             f"{restarts}")
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss must be 'ce' or 'dlr', got {loss!r}")
        if not 0 < rho <= 1 or not 0 < momentum <= 1:
            raise ValueError(f"APGD needs 0 < rho <= 1 and 0 < momentum <= 1, got {rho}, {momentum}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need equal lengths and std > 0, got {list(mean)}, {list(std)}")
        check_mode(mode)
        self.epsilon, self.loss, self.iterations, self.restarts = float(epsilon), loss, int(iterations), int(restarts)
        self.rho, self.momentum, self.mode = float(rho), float(momentum), mode
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise ValueError(f"APGD attacks classifiers: logits of shape (B, C), got {tuple(logits.shape)}")
        if self.loss == "dlr":
            return dlr_loss(logits, y)
        return F.cross_entropy(logits.float(), y, reduction="none")

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> APGDResult:
        """One APGD run from a uniform random start (the global torch generator) on the normalised batch ``x``."""
        mean, std = pixel_stats(x, self.mean, self.std)
        pixels = (x.detach() * std + mean).clamp(0.0, 1.0)
        lo, hi = (pixels - self.epsilon).clamp_min(0.0), (pixels + self.epsilon).clamp_max(1.0)
        shape = (-1,) + (1,) * (x.ndim - 1)

        def project(p: torch.Tensor) -> torch.Tensor:
            return torch.maximum(torch.minimum(p, hi), lo)

        def evaluate(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            p = p.detach().requires_grad_(True)
            logits = model((p - mean) / std)
            losses = self._loss(logits, y)
            (grad,) = torch.autograd.grad(losses.sum(), p)
            return losses.detach(), grad.detach(), logits.detach().argmax(1) == y

        noise = torch.rand(pixels.shape, dtype=torch.float32).to(pixels) * 2 - 1  # CPU draw: same start on any device
        checkpoints = set(apgd_checkpoints(self.iterations))
        with eval_mode(model), torch.enable_grad():
            current = project(pixels + self.epsilon * noise)
            loss, grad, correct = evaluate(current)
            best_point, best_grad, best_loss = current.clone(), grad.clone(), loss.clone()
            adversarial = current.clone()  # the first misclassified iterate, else the best point
            found = ~correct
            step = torch.full((x.shape[0],), 2.0 * self.epsilon, device=x.device, dtype=pixels.dtype)
            previous = current.clone()
            increases = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            last_w, halved_last, best_last = 0, torch.zeros_like(found), best_loss.clone()
            step_sizes: list[torch.Tensor] = []
            for k in range(self.iterations):
                z = project(current + step.view(shape) * grad.sign())
                if k == 0:
                    nxt = z
                else:
                    a = self.momentum
                    nxt = project(current + a * (z - current) + (1 - a) * (current - previous))
                previous, current = current, nxt
                new_loss, grad, now_correct = evaluate(current)
                increases += (new_loss > loss).long()
                loss = new_loss
                newly = ~now_correct & ~found
                adversarial[newly] = current[newly]
                found |= ~now_correct
                correct &= now_correct
                better = loss > best_loss
                best_point[better], best_grad[better], best_loss[better] = current[better], grad[better], loss[better]
                if k + 1 in checkpoints:
                    halve = halving_conditions(increases, k + 1 - last_w, halved_last, best_loss, best_last, self.rho)
                    step = torch.where(halve, step / 2, step)
                    current[halve], grad[halve] = best_point[halve], best_grad[halve]
                    previous[halve] = best_point[halve]
                    loss = torch.where(halve, best_loss, loss)
                    last_w, halved_last, best_last = k + 1, halve, best_loss.clone()
                    increases.zero_()
                    step_sizes.append(step.clone())
        adversarial = torch.where(found.view(shape), adversarial, best_point)
        return APGDResult(((adversarial - mean) / std).detach(), correct, best_loss, step_sizes)

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``restarts`` runs; returns the adversarial batch and per image whether it survived every run."""
        result = self.run(model, x, y)
        adversarial, correct = result.adversarial.clone(), result.correct.clone()
        for _ in range(self.restarts - 1):
            alive = correct.nonzero().squeeze(1)
            if alive.numel() == 0:
                break
            again = self.run(model, x[alive], y[alive])
            adversarial[alive], correct[alive] = again.adversarial, again.correct
        return adversarial, correct

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial version of the normalised batch ``x`` (detached, same normalisation)."""
        return self.attack(model, x, y)[0]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return combine(x, y, self.perturb(model, x, y), self.mode)
