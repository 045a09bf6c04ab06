"""Class-balanced self-training: CBST (Zou et al., ECCV 2018) and the CRST regularisers (Zou et al., ICCV 2019).

Shapes: ``probs``/``logits`` are (N, C) for classification or (N, C, H, W) for segmentation (any trailing spatial
dims work); per-position outputs drop the class dim, (N,) or (N, H, W). Pure functions: inputs are never modified.

Threshold rule (:func:`class_balanced_thresholds`). Among the N_c positions whose argmax is class c, sort the
max-probabilities descending and keep the top n_c = max(⌊portion · N_c⌋, 1); k_c is the n_c-th largest, i.e. the
value at 0-based index n_c − 1. This is the official CBST/CRST code (``conf[floor(N_c·p) − 1]``) except that the
official code leaves k_c = 1.0 (keeps nothing) when ⌊portion · N_c⌋ = 0, whereas we keep the most confident one.
A class that nobody predicts gets k_c = +inf, so p_c / k_c = 0 and :func:`pseudo_labels` never assigns it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "class_balanced_thresholds",
    "class_balanced_thresholds_from_histogram",
    "confidence_histogram",
    "lrent_soft_labels",
    "mrkld_loss",
    "portion_schedule",
    "pseudo_labels",
    "soft_cross_entropy",
]


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _check_probs(probs: torch.Tensor, name: str, fn: str) -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim < 2:
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"{fn}: {name} must have shape (N, C) or (N, C, H, W), got {shape}")
    if not probs.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {probs.dtype}")


def _check_portion(portion: float, fn: str) -> float:
    p = float(portion)
    if not (0.0 < p <= 1.0):  # also rejects NaN
        raise ValueError(f"{fn}: portion must be in (0, 1], got {portion!r}")
    return p


def _check_mask(mask: torch.Tensor | None, expected: tuple[int, ...], name: str, fn: str) -> torch.Tensor | None:
    if mask is None:
        return None
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"{fn}: {name} must have shape {expected} (the input without its class dim), got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"{fn}: {name} must be a bool tensor, got {mask.dtype}")
    return mask


def _max_conf_and_pred(
    probs: torch.Tensor, ignore_mask: torch.Tensor | None, fn: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened (conf, pred) of the positions not ignored."""
    conf, pred = probs.max(dim=1)
    mask = _check_mask(ignore_mask, tuple(conf.shape), "ignore_mask", fn)
    if mask is not None:
        keep = ~mask
        return conf[keep], pred[keep]
    return conf.reshape(-1), pred.reshape(-1)


def _num_kept(counts: torch.Tensor, portion: float) -> torch.Tensor:
    """n_c = max(⌊portion · N_c⌋, 1), in float64 like the official code's ``math.floor(len * portion)``."""
    return torch.floor(counts.to(torch.float64) * portion).clamp_min(1)


def _class_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ..., 1) broadcastable against an (N, C, ...) tensor of ``ndim`` dims."""
    return t.reshape(1, -1, *([1] * (ndim - 2)))


def _check_thresholds(thresholds: torch.Tensor, num_classes: int, fn: str) -> None:
    if thresholds.shape != (num_classes,):
        raise ValueError(
            f"{fn}: thresholds must have shape ({num_classes},) (one per class), got {tuple(thresholds.shape)}"
        )
    if bool(torch.isnan(thresholds).any()) or bool((thresholds <= 0).any()):
        raise ValueError(
            f"{fn}: thresholds must be in (0, +inf] (+inf = class never pseudo-labelled), got {thresholds.tolist()}"
        )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None, fn: str) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is True; 0 (still in the graph) when none is."""
    if mask is None:
        return values.mean()
    _check_mask(mask, tuple(values.shape), "mask", fn)
    # where() rather than multiplication so inf/NaN at masked-out positions cannot leak into the sum.
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1).to(values.dtype)


# --------------------------------------------------------------------------------------------------------------
# CBST: class-balanced thresholds and pseudo-labels
# --------------------------------------------------------------------------------------------------------------


def class_balanced_thresholds(
    probs: torch.Tensor,
    portion: float,
    num_classes: int | None = None,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """CBST per-class thresholds k_c (Zou et al., ECCV 2018): the n_c-th largest max-probability among
    positions predicted as c, n_c = max(⌊portion·N_c⌋, 1); +inf for classes with N_c = 0. (N, C[, H, W]) -> (C,).

    Exact (sort-based). ``ignore_mask`` (N[, H, W], True = skip) drops positions. For DDP gather ``probs`` from all
    ranks first, or use :func:`confidence_histogram` + :func:`class_balanced_thresholds_from_histogram`.
    ``num_classes``, when given, must equal C (a guard against class-list mismatches).
    """
    fn = "class_balanced_thresholds"
    _check_probs(probs, "probs", fn)
    portion = _check_portion(portion, fn)
    c = probs.shape[1]
    if num_classes is not None and int(num_classes) != c:
        raise ValueError(f"{fn}: num_classes={num_classes} but probs has C = {c} (shape {tuple(probs.shape)})")
    conf, pred = _max_conf_and_pred(probs, ignore_mask, fn)
    thresholds = torch.full((c,), math.inf, dtype=probs.dtype, device=probs.device)
    if conf.numel() == 0:
        return thresholds
    counts = torch.bincount(pred, minlength=c)
    # Group by class with confidences descending inside each group: sort by confidence, then stably by class.
    by_conf = torch.argsort(conf, descending=True, stable=True)
    by_class = torch.argsort(pred[by_conf], stable=True)
    grouped = conf[by_conf][by_class]
    starts = counts.cumsum(0) - counts
    idx = (starts + _num_kept(counts, portion).to(torch.long) - 1).clamp(0, grouped.numel() - 1)
    return torch.where(counts > 0, grouped[idx], thresholds)


def confidence_histogram(
    probs: torch.Tensor, bins: int = 10000, ignore_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """CBST confidence histogram: per predicted class, counts of max-probabilities in ``bins`` equal bins on [0, 1].
    (N, C[, H, W]) -> (C, bins) int64.

    Bin b holds confidences in [b/bins, (b+1)/bins) (1.0 goes to the last bin); the bin index is computed in float64
    so it is exact. Histograms of disjoint shards add up (all-reduce with SUM across ranks); ``ignore_mask`` as in
    :func:`class_balanced_thresholds`. Feed the sum to :func:`class_balanced_thresholds_from_histogram`.
    """
    fn = "confidence_histogram"
    _check_probs(probs, "probs", fn)
    if int(bins) < 1:
        raise ValueError(f"{fn}: bins must be >= 1, got {bins}")
    bins = int(bins)
    c = probs.shape[1]
    conf, pred = _max_conf_and_pred(probs, ignore_mask, fn)
    bin_idx = torch.floor(conf.to(torch.float64) * bins).to(torch.long).clamp(0, bins - 1)
    return torch.bincount(pred * bins + bin_idx, minlength=c * bins).reshape(c, bins)


def class_balanced_thresholds_from_histogram(
    hist: torch.Tensor, portion: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """CBST thresholds k_c from per-class confidence histograms (C, B) (see :func:`confidence_histogram`) -> (C,).

    Returns the lower edge b/B of the bin holding the n_c-th largest confidence (same n_c rule as
    :func:`class_balanced_thresholds`), so k_hist ≤ k_exact < k_hist + 1/B: never stricter than the exact threshold,
    at most one bin looser. Equal to the exact one when confidences are bin edges below 1 representable in
    ``dtype`` (e.g. multiples of 1/1024 with B = 1024). Classes with an empty histogram get +inf.
    """
    fn = "class_balanced_thresholds_from_histogram"
    if hist.ndim != 2 or hist.shape[1] < 1:
        raise ValueError(f"{fn}: hist must have shape (C, B) (classes x bins), got {tuple(hist.shape)}")
    portion = _check_portion(portion, fn)
    counts_hist = hist.to(torch.float64)  # exact for integer counts < 2**53, also after a float all-reduce
    if bool((counts_hist < 0).any()):
        raise ValueError(f"{fn}: hist must be non-negative counts")
    n_bins = hist.shape[1]
    counts = counts_hist.sum(dim=1)
    n_keep = _num_kept(counts, portion)
    # at_or_above[c, b] = number of samples of class c in bins >= b (non-increasing in b).
    at_or_above = counts_hist.flip(1).cumsum(1).flip(1)
    # The n_c-th largest confidence lies in the highest bin b with at_or_above[c, b] >= n_c.
    bin_of_kth = (at_or_above >= n_keep.unsqueeze(1)).sum(dim=1) - 1
    lower_edge = bin_of_kth.clamp_min(0).to(torch.float64) / n_bins
    thresholds = torch.where(counts > 0, lower_edge, torch.full_like(lower_edge, math.inf))
    return thresholds.to(dtype)


def pseudo_labels(probs: torch.Tensor, thresholds: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """CBST pseudo-labels (Zou et al., ECCV 2018): ŷ = argmax_c p_c / k_c where max_c p_c / k_c ≥ 1, else
    ``ignore_index`` (−1 for classification, 255 for segmentation). (N, C[, H, W]), (C,) -> (N[, H, W]) int64.

    k_c = +inf (class never predicted) gives p_c / k_c = 0, so that class is never assigned; k_c must be > 0.
    """
    fn = "pseudo_labels"
    _check_probs(probs, "probs", fn)
    c = probs.shape[1]
    _check_thresholds(thresholds, c, fn)
    if 0 <= int(ignore_index) < c:
        raise ValueError(f"{fn}: ignore_index={ignore_index} collides with a class index in [0, {c})")
    ratio = probs / _class_view(thresholds.to(probs.device), probs.ndim)
    best, label = ratio.max(dim=1)
    return torch.where(best >= 1, label, torch.full_like(label, int(ignore_index)))


def portion_schedule(round_idx: int, start: float = 0.2, step: float = 0.05, cap: float = 0.5) -> float:
    """CBST portion p for self-training round ``round_idx`` (0-based): min(start + round_idx·step, cap)
    (Zou et al., ECCV 2018: p₀ = 0.2, +0.05 per round, capped at 0.5)."""
    if int(round_idx) != round_idx or round_idx < 0:
        raise ValueError(f"portion_schedule: round_idx must be a non-negative integer, got {round_idx!r}")
    if not (0.0 < start <= 1.0) or not (0.0 < cap <= 1.0) or not (step >= 0.0):
        raise ValueError(f"portion_schedule: need start, cap in (0, 1] and step >= 0, got {start=}, {step=}, {cap=}")
    # round() strips float noise such as 0.2 + 3 * 0.05 = 0.35000000000000003.
    return round(min(start + int(round_idx) * step, cap), 12)


# --------------------------------------------------------------------------------------------------------------
# CRST regularisers
# --------------------------------------------------------------------------------------------------------------


def mrkld_loss(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """CRST model regulariser MRKLD (Zou et al., ICCV 2019): mean over kept positions of mean_c(−log softmax(z)_c)
    = KL(uniform ‖ p) + log C. (N, C[, H, W]) logits, mask (N[, H, W]) bool (True = pseudo-labelled) -> ().

    Unweighted: the caller multiplies by λ (paper: λ = 0.1; the official code's effective weight was 0.01).
    """
    fn = "mrkld_loss"
    _check_probs(logits, "logits", fn)
    per_position = -F.log_softmax(logits.float(), dim=1).mean(dim=1)
    return _masked_mean(per_position, mask, fn)


def lrent_soft_labels(probs: torch.Tensor, thresholds: torch.Tensor, alpha: float = 0.25) -> torch.Tensor:
    """CRST LRENT soft pseudo-labels (Zou et al., ICCV 2019, closed-form LRENT solution):
    ŷ_c = (p_c/k_c)^(1/α) / Σ_j (p_j/k_j)^(1/α). (N, C[, H, W]), (C,) -> shape of ``probs``, summing to 1 over C.
    Paper α = 0.25.

    Computed in log space. Positions where every p_c / k_c is 0 (e.g. predicted only for +inf classes) fall back to
    ``probs``; :func:`pseudo_labels` never keeps them. Select positions with ``pseudo_labels(...) != ignore_index``.
    """
    fn = "lrent_soft_labels"
    _check_probs(probs, "probs", fn)
    _check_thresholds(thresholds, probs.shape[1], fn)
    a = float(alpha)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"{fn}: alpha must be a finite positive number, got {alpha!r}")
    log_p = probs.log()
    log_ratio = (log_p - _class_view(thresholds.to(probs.device).log(), probs.ndim)) / a
    has_support = torch.isfinite(log_ratio).any(dim=1, keepdim=True)
    return torch.softmax(torch.where(has_support, log_ratio, log_p), dim=1)


def soft_cross_entropy(
    logits: torch.Tensor, soft_targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy with soft targets, −Σ_c t_c log softmax(z)_c, averaged over kept positions (CRST LRENT
    training loss). logits and soft_targets (N, C[, H, W]), mask (N[, H, W]) bool -> (). Targets are not detached."""
    fn = "soft_cross_entropy"
    _check_probs(logits, "logits", fn)
    if soft_targets.shape != logits.shape:
        raise ValueError(
            f"{fn}: soft_targets must have the shape of logits {tuple(logits.shape)}, got {tuple(soft_targets.shape)}"
        )
    log_q = F.log_softmax(logits.float(), dim=1)
    soft_targets = soft_targets.float()
    # xlogy-style guard: a zero target times log q = −inf must give 0, not NaN.
    per_position = -torch.where(soft_targets > 0, soft_targets * log_q, torch.zeros_like(log_q)).sum(dim=1)
    return _masked_mean(per_position, mask, fn)
