"""Spatial robustness (Engstrom et al., ICML 2019): rotations and translations as augmentations and as attacks.

A transform is (θ degrees, δx, δy pixels) about the image centre, applied with kornia's ``warp_affine`` (bilinear,
zero padding in **pixel space**: the padded border is black whatever the data's normalisation). Defaults are the
paper's CIFAR ones: θ ∈ [−30°, 30°], δ ∈ [−3, 3] px for 32 px images; the exhaustive grid is 5 × 5 translations ×
31 rotations = 775 candidates.

- :class:`RandomSpatial`: one random transform per image (augmentation / the "random" attack);
- :class:`WorstOfK`: k random transforms per image, all k × B candidates scored in one batched forward, the highest
  loss kept (the paper's training defence with k = 10);
- :func:`grid_attack`: the exhaustive grid, evaluated in chunks; returns accuracy under the worst transform and the
  transform that broke each image;
- :func:`vote_predict`: majority vote over random transforms at test time (the paper's defence).

Like every :class:`~syn2real.adversarial.base.Augmentation`, scoring runs in eval mode without gradients and leaves
the model's modes, BatchNorm statistics and parameter gradients as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.adversarial.base import (
    Augmentation,
    check_mode,
    combine,
    eval_mode,
    pixel_stats,
)
from syn2real.core.labels import IGNORE_INDEX

__all__ = ["RandomSpatial", "WorstOfK", "grid_attack", "spatial_grid", "transform_batch", "vote_predict"]


def transform_batch(
    x: torch.Tensor,
    angles: torch.Tensor,
    shifts: torch.Tensor,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
) -> torch.Tensor:
    """Rotate image i of the normalised batch ``x`` (B, C, H, W) by ``angles[i]`` degrees about its centre and shift it
    by ``shifts[i] = (δx, δy)`` pixels; the uncovered border is black in pixel space."""
    from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

    b, _, h, w = x.shape
    if angles.shape != (b,) or shifts.shape != (b, 2):
        raise ValueError(f"need angles (B,) and shifts (B, 2) for B = {b}, got {tuple(angles.shape)}, {tuple(shifts.shape)}")
    m, s = pixel_stats(x, mean, std)
    pixels = x * s + m
    centre = torch.tensor([[(w - 1) / 2.0, (h - 1) / 2.0]], device=x.device, dtype=x.dtype).expand(b, 2)
    matrix = get_rotation_matrix2d(centre, angles.to(x.dtype), torch.ones(b, 2, device=x.device, dtype=x.dtype))
    matrix = matrix.clone()
    matrix[:, :, 2] += shifts.to(x.dtype)
    warped = warp_affine(pixels, matrix, dsize=(h, w), mode="bilinear", padding_mode="zeros", align_corners=True)
    return (warped - m) / s


def spatial_grid(
    max_angle: float = 30.0, n_angles: int = 31, max_shift: float = 3.0, n_shifts: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exhaustive grid: (N,) angles and (N, 2) shifts, N = n_angles × n_shifts² (775 by default)."""
    a = torch.linspace(-max_angle, max_angle, n_angles)
    t = torch.linspace(-max_shift, max_shift, n_shifts)
    aa, tx, ty = torch.meshgrid(a, t, t, indexing="ij")
    return aa.reshape(-1), torch.stack([tx.reshape(-1), ty.reshape(-1)], dim=1)


def _per_sample_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(logits, y, reduction="none", ignore_index=IGNORE_INDEX)
    return loss.flatten(1).mean(dim=1) if loss.ndim > 1 else loss


@contextlib.contextmanager
def _scoring(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients for scoring; every submodule's mode restored afterwards."""
    with eval_mode(model), torch.no_grad():
        yield model


class RandomSpatial(Augmentation):
    """One uniformly random rotation in [−max_angle, max_angle] and shift in [−max_shift, max_shift]² per image."""

    def __init__(
        self,
        max_angle: float = 30.0,
        max_shift: float = 3.0,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        mode: Literal["replace", "concat"] = "replace",
    ) -> None:
        if max_angle < 0 or max_shift < 0:
            raise ValueError(f"max_angle and max_shift must be >= 0, got {max_angle}, {max_shift}")
        check_mode(mode)
        self.max_angle, self.max_shift, self.mean, self.std, self.mode = max_angle, max_shift, tuple(mean), tuple(std), mode

    def sample(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        angles = (torch.rand(n, device=device) * 2 - 1) * self.max_angle
        shifts = (torch.rand(n, 2, device=device) * 2 - 1) * self.max_shift
        return angles, shifts

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles, shifts = self.sample(x.shape[0], x.device)
        return combine(x, y, transform_batch(x.detach(), angles, shifts, self.mean, self.std), self.mode)


class WorstOfK(RandomSpatial):
    """k random transforms per image, scored in one forward of k × B images; the highest-loss one is returned."""

    def __init__(
        self,
        k: int = 10,
        max_angle: float = 30.0,
        max_shift: float = 3.0,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        mode: Literal["replace", "concat"] = "replace",
    ) -> None:
        super().__init__(max_angle, max_shift, mean, std, mode)
        if k < 1:
            raise ValueError(f"WorstOfK needs k >= 1, got {k}")
        self.k = int(k)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        angles, shifts = self.sample(self.k * b, x.device)
        candidates = transform_batch(x.detach().repeat(self.k, 1, 1, 1), angles, shifts, self.mean, self.std)
        with _scoring(model) as scoring:
            losses = _per_sample_loss(scoring(candidates), y.repeat(self.k)).view(self.k, b)
        pick = losses.argmax(dim=0)  # (B,) index of the worst candidate of each image
        chosen = candidates.view(self.k, b, *x.shape[1:])[pick, torch.arange(b, device=x.device)]
        return combine(x, y, chosen, self.mode)


def grid_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    angles: torch.Tensor | None = None,
    shifts: torch.Tensor | None = None,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
    chunk: int = 4096,
    early_stop: bool = False,
) -> dict[str, torch.Tensor]:
    """Every image against every transform of the grid (default :func:`spatial_grid`), ``chunk`` images per forward.

    Returns ``correct`` (B,) bool: right under *every* transform; ``worst_angle`` (B,), ``worst_shift`` (B, 2): the
    transform with the highest loss for each image. With ``early_stop`` an image leaves the search at its first
    misclassified transform (``correct`` is the same, far fewer forwards for non-robust models; ``worst_*`` is
    then the first transform that broke the image, or the highest-loss one for images that survive)."""
    if angles is None or shifts is None:
        angles, shifts = spatial_grid()
    angles, shifts = angles.to(x.device), shifts.to(x.device)
    n, b = angles.shape[0], x.shape[0]
    correct = torch.ones(b, dtype=torch.bool, device=x.device)
    worst_loss = torch.full((b,), -float("inf"), device=x.device)
    worst = torch.zeros(b, dtype=torch.long, device=x.device)
    alive = torch.arange(b, device=x.device)  # images still in the search
    start = 0
    with _scoring(model) as scoring:
        while start < n and alive.numel() > 0:
            m = alive.numel()
            idx = torch.arange(start, min(n, start + max(1, chunk // m)), device=x.device)
            start += idx.numel()
            k = idx.numel()
            xs, ys = x[alive], y[alive]
            images = transform_batch(xs.repeat(k, 1, 1, 1), angles[idx].repeat_interleave(m), shifts[idx].repeat_interleave(m, 0), mean, std)
            logits = scoring(images)
            labels = ys.repeat(k)
            loss = _per_sample_loss(logits, labels).view(k, m)
            right = (logits.argmax(dim=1) == labels).view(k, m, -1).flatten(2).all(dim=2)
            still = right.all(dim=0)
            correct[alive] &= still
            if early_stop:  # rank the first wrong transform above every right one
                loss = torch.where(right, loss, loss + 1e9 * (k - torch.arange(k, device=x.device)).view(k, 1))
            best, arg = loss.max(dim=0)
            better = best > worst_loss[alive]
            worst_loss[alive] = torch.where(better, best, worst_loss[alive])
            worst[alive] = torch.where(better, idx[arg], worst[alive])
            if early_stop:
                alive = alive[still]
    return {"correct": correct, "worst_angle": angles[worst], "worst_shift": shifts[worst]}


def vote_predict(
    model: nn.Module,
    x: torch.Tensor,
    n: int = 10,
    max_angle: float = 30.0,
    max_shift: float = 3.0,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
) -> torch.Tensor:
    """Majority vote of the predictions on ``n`` random transforms of each image (classification, (B,) labels)."""
    sampler = RandomSpatial(max_angle, max_shift, mean, std)
    b = x.shape[0]
    angles, shifts = sampler.sample(n * b, x.device)
    with _scoring(model) as scoring:
        preds = scoring(transform_batch(x.repeat(n, 1, 1, 1), angles, shifts, mean, std)).argmax(dim=1).view(n, b)
    return torch.mode(preds, dim=0).values
