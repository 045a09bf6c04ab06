"""The pieces of mean-teacher self-training (DACS, Tranheden et al., WACV 2021; DAFormer, Hoyer et al., CVPR 2022;
MIC, Hoyer et al., CVPR 2023) as pure functions of tensors: the teacher's momentum and EMA update, the confidence
weight of pseudo-labels, ClassMix masks and mixing, MIC's block masks and the per-element weighted cross-entropy.

Random draws come from one generator per image when ``generators`` are given (the method seeds them from the run's
seed, the step and the image's position in the global batch, so that DDP ranks draw what one process would), else
from the global torch generator. Draws are made on the CPU and moved to the tensors' device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.core.labels import IGNORE_INDEX

__all__ = [
    "block_mask", "class_mix_masks", "confidence_weight", "ema_momentum", "ema_update", "mix",
    "weighted_cross_entropy",
]


def ema_momentum(step: int, momentum: float) -> float:
    """The teacher's momentum at optimiser step ``step`` (≥ 1): ``min(1 − 1/(step + 1), momentum)``, the ramp of
    the DACS/DAFormer code (the teacher follows the student closely while the average has few members)."""
    if step < 1:
        raise ValueError(f"the EMA update starts after the first optimiser step, got step {step}")
    return min(1.0 - 1.0 / (step + 1), float(momentum))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher ← momentum · teacher + (1 − momentum) · student`` for every parameter and floating-point buffer
    (BatchNorm running statistics, so the teacher in eval mode normalises with averaged statistics); integer buffers
    (BatchNorm's batch counter) are copied. Both modules must have the same structure."""
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    t_buffers, s_buffers = dict(teacher.named_buffers()), dict(student.named_buffers())
    if t_params.keys() != s_params.keys() or t_buffers.keys() != s_buffers.keys():
        raise ValueError("the teacher and the student must have the same parameters and buffers")
    for name, t in (*t_params.items(), *t_buffers.items()):
        s = s_params[name] if name in s_params else s_buffers[name]
        if t.is_floating_point():
            t.mul_(momentum).add_(s.detach().to(t.dtype), alpha=1.0 - momentum)
        else:
            t.copy_(s)


def confidence_weight(confidence: torch.Tensor, threshold: float, mode: str = "share",
                      count: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The weight of each pseudo-label, shaped like ``confidence`` (the teacher's max probability per sample or pixel).

    - ``share`` (DACS/DAFormer): every element gets the share of the batch's elements whose confidence is
      ≥ ``threshold`` (0.968 in the papers), one scalar for the whole batch. ``count`` = (above, total) replaces
      the local counts (e.g. summed over DDP ranks, so that the weight is the global batch's share).
    - ``probability`` (MIC for classification): each element is weighted by its own confidence.
    - ``threshold`` (FixMatch-style, not the DACS papers'): 1 where the confidence is ≥ ``threshold``, else 0.
    """
    if mode == "probability":
        return confidence.detach().float()
    if mode == "threshold":
        return (confidence >= threshold).float()
    if mode != "share":
        raise ValueError(f"pseudo-label weight mode must be 'share', 'probability' or 'threshold', got {mode!r}")
    if count is None:
        above = (confidence >= threshold).sum()
        total = torch.tensor(confidence.numel(), device=confidence.device)
    else:
        above, total = count
    share = above.float() / total.float().clamp_min(1)
    return share.expand(confidence.shape).clone()


def class_mix_masks(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                    generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """ClassMix masks (B, H, W) bool: for each label map, half of the classes present (rounded up; ``ignore_index``
    excluded, as in the DACS paper's code) chosen at random; the mask is true on their pixels. Those pixels are
    pasted from the source image onto the target image."""
    if labels.ndim != 3:
        raise ValueError(f"ClassMix needs label maps (B, H, W), got shape {tuple(labels.shape)}")
    masks = torch.zeros_like(labels, dtype=torch.bool)
    for i, label in enumerate(labels):
        classes = torch.unique(label)
        classes = classes[classes != ignore_index]
        n = classes.numel()
        if n == 0:
            continue
        order = torch.randperm(n, generator=generators[i] if generators is not None else None)
        chosen = classes[order.to(classes.device)[: (n + n % 2) // 2]]
        masks[i] = torch.isin(label, chosen)
    return masks


def mix(mask: torch.Tensor, pasted: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``pasted`` where ``mask`` is true, ``base`` elsewhere; ``mask`` (B, H, W) broadcasts over image channels."""
    if pasted.shape != base.shape:
        raise ValueError(f"cannot mix shapes {tuple(pasted.shape)} and {tuple(base.shape)}")
    m = mask if pasted.ndim == mask.ndim else mask.unsqueeze(1)
    return torch.where(m, pasted, base)


def block_mask(batch: int, height: int, width: int, block: int, ratio: float,
               device: torch.device | str | None = None,
               generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """MIC's random block mask (B, 1, H, W), 1 = visible: the image is cut into ``block`` × ``block`` patches
    (round(H / block) × round(W / block), at least 1 × 1) and each patch is hidden with probability ``ratio``
    (0.7 in MIC), then the grid is resized to H × W (nearest)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if block < 1:
        raise ValueError(f"mask block size must be >= 1, got {block}")
    grid = (max(1, round(height / block)), max(1, round(width / block)))
    if generators is not None:
        draws = torch.stack([torch.rand(1, *grid, generator=g) for g in generators[:batch]])
    else:
        draws = torch.rand(batch, 1, *grid)
    visible = (draws > ratio).float().to(device)
    return F.interpolate(visible, size=(height, width), mode="nearest")


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean over all samples or pixels of ``weight · CE`` (ignored pixels contribute 0 but count in the mean, as
    in mmsegmentation's weighted loss that DACS/DAFormer/MIC use). ``logits`` (B, C) or (B, C, H, W), ``labels``
    and ``weight`` shaped like one class channel of ``logits``. Computed in float32."""
    if weight.shape != labels.shape:
        raise ValueError(f"weight {tuple(weight.shape)} must have the labels' shape {tuple(labels.shape)}")
    per_element = F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, reduction="none")
    return (per_element * weight.float()).mean()
