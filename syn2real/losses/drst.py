"""Distributionally robust self-training (DRST; Wang, Liu, Yu, Yue, Anandkumar, arXiv 2010.05784): the density ratio
from a domain classifier and the robust classifier whose confidence shrinks with it.

Density ratio. A domain classifier trained with BCE (source = 1, target = 0) on batches of n_s source and n_t target
samples estimates d(x) = n_s p_s(x) / (n_s p_s(x) + n_t p_t(x)), so

    r(x) = p_s(x) / p_t(x) = d / (1 − d) · n_t / n_s,   log r = logit(d) + log(n_t / n_s)

(:func:`density_ratio`, computed from the logit, so d = 0 or 1 never divides by zero). ``r`` is clamped to
[``ratio_min``, ``ratio_max``]: large on the source side, small on target samples unlike the source.

Robust classifier (Liu & Ziebart, NeurIPS 2014, the covariate-shift robust predictor the paper builds on). Its
prediction is softmax(r(x) · f(x)) for the logits f: where r is small the prediction flattens towards uniform
(:func:`robust_probabilities`). We scale the whole logit vector, bias included; the public code scales only W·φ(x)
and adds the bias afterwards (so its r → 0 limit is softmax(b), not uniform).

Gradient (:func:`robust_cross_entropy`). Autograd of cross-entropy on the scaled logits gives
∂/∂f CE(r·f, y) = r · (softmax(r·f) − onehot(y)): samples with a small ratio also get a small gradient. The robust
learning game's gradient (the public code writes it by hand in ``ClassificationFunction.backward``) is the moment
difference softmax(r·f) − onehot(y), *without* the factor r. ``gradient="robust"`` (default) gives that one: the
reported value is still CE(r·f, y), the gradient with respect to f is (softmax(r·f) − onehot(y)) / N. ``"autograd"``
gives plain autograd. The ratio itself never receives a gradient from this loss (the domain classifier learns from
its BCE only). The public code sums over the batch; we average (a learning-rate factor of the batch size).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["density_ratio", "robust_cross_entropy", "robust_logits", "robust_probabilities"]

Gradient = Literal["robust", "autograd"]


def density_ratio(
    domain_logits: torch.Tensor,
    n_source: float = 1.0,
    n_target: float = 1.0,
    ratio_min: float = 0.0,
    ratio_max: float = math.inf,
) -> torch.Tensor:
    """r(x) = p_s(x)/p_t(x) = exp(logit d(x)) · n_t/n_s from a source-vs-target classifier's logits.

    Args:
        domain_logits: (N,) or (N, 1) logits of d(x) = P(source | x).
        n_source / n_target: how many source and target samples the classifier was trained on (per batch or in
            total: only their ratio matters); corrects for the domain prior of its training batches.
        ratio_min / ratio_max: clamp range of r (``0`` / ``inf``: no clamp).

    Returns:
        (N,) float32 ratios, differentiable in ``domain_logits`` (detach where the ratio must not be trained).
    """
    if domain_logits.ndim == 2 and domain_logits.shape[1] == 1:
        domain_logits = domain_logits[:, 0]
    if domain_logits.ndim != 1:
        raise ValueError(
            f"density_ratio: domain_logits must have shape (N,) or (N, 1), got {tuple(domain_logits.shape)}"
        )
    if not (n_source > 0 and n_target > 0):
        raise ValueError(f"density_ratio: n_source and n_target must be > 0, got {n_source}, {n_target}")
    if not (0.0 <= ratio_min <= ratio_max):
        raise ValueError(f"density_ratio: need 0 <= ratio_min <= ratio_max, got {ratio_min}, {ratio_max}")
    log_r = domain_logits.float() + math.log(n_target / n_source)
    lo = math.log(ratio_min) if ratio_min > 0 else -math.inf
    hi = math.log(ratio_max) if math.isfinite(ratio_max) else math.inf
    return log_r.clamp(lo, hi).exp()


def robust_logits(logits: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """r(x) · f(x): (N, C) logits scaled per sample by the (N,) ratio."""
    if logits.ndim != 2:
        raise ValueError(f"robust_logits: logits must have shape (N, C), got {tuple(logits.shape)}")
    if ratio.shape != logits.shape[:1]:
        raise ValueError(f"robust_logits: ratio must have shape ({logits.shape[0]},), got {tuple(ratio.shape)}")
    return logits * ratio.to(logits.dtype)[:, None]


def robust_probabilities(logits: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """The robust classifier's prediction softmax(r(x) · f(x)), (N, C): flatter where r is small."""
    return robust_logits(logits.float(), ratio.float()).softmax(dim=1)


def robust_cross_entropy(
    logits: torch.Tensor,
    ratio: torch.Tensor,
    labels: torch.Tensor,
    gradient: Gradient = "robust",
    ignore_index: int = -1,
) -> torch.Tensor:
    """Mean cross-entropy of the robust prediction softmax(r·f) over the samples whose label is not ``ignore_index``
    (0 when there are none).

    ``gradient="robust"``: the value is the cross-entropy, the gradient with respect to ``logits`` is
    (softmax(r·f) − onehot(y)) / N_labelled (the robust learning gradient, no factor r); ``"autograd"``: plain
    autograd of the value, r · (softmax(r·f) − onehot(y)) / N_labelled. ``ratio`` is always treated as a constant.
    """
    if gradient not in ("robust", "autograd"):
        raise ValueError(f"robust_cross_entropy: gradient must be 'robust' or 'autograd', got {gradient!r}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"robust_cross_entropy: labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}"
        )
    kept = labels != ignore_index
    count = kept.sum().clamp_min(1)
    scaled = robust_logits(logits, ratio.detach())
    per_sample = F.cross_entropy(scaled, labels.clamp_min(0), reduction="none")
    value = torch.where(kept, per_sample, torch.zeros_like(per_sample)).sum() / count
    if gradient == "autograd":
        return value
    # a surrogate whose gradient in the logits is (p − onehot)/N and whose value is 0: added to the detached CE
    with torch.no_grad():
        residual = scaled.softmax(dim=1) - F.one_hot(labels.clamp_min(0), logits.shape[1]).to(scaled.dtype)
        residual = residual * kept[:, None].to(residual.dtype)
    surrogate = (residual * logits).sum() / count
    return value.detach() + surrogate - surrogate.detach()
