"""Uncertainty scores of probabilistic predictions (Ovadia et al. 2019, "Can you trust your model's uncertainty?"):
negative log-likelihood, Brier score, and the AUROC of the confidence for telling correct from wrong predictions.

Conventions (the keys ``<domain>/nll``, ``<domain>/brier``, ``<domain>/auroc_correct`` of ``metrics.json``):

- **NLL** = mean over samples of −log p(y | x), natural log, from ``log_softmax`` of the logits (no clamping).
- **Brier** = mean over samples of Σ_c (p_c − 1[c = y])², the sum over classes (Brier 1950; range [0, 2], 0 is
  perfect). Some papers divide by the number of classes; we do not.
- **AUROC of confidence** = probability that a correct prediction has a higher max-softmax confidence than a wrong
  one (Mann-Whitney U / (n_correct · n_wrong)); tied confidences count one half (average ranks). Undefined, and
  returned as NaN (``null`` in ``metrics.json``), when every prediction is correct or every one is wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["UncertaintyScores", "auroc", "brier_score", "negative_log_likelihood"]


def _check(scores: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"expected {what} (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """−log softmax(logits)[y] per sample (``reduction="none"``) or its mean; computed in float32 or wider."""
    _check(logits, labels, "logits")
    logits = logits.detach()
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.nll_loss(logits.log_softmax(dim=1), labels, reduction=reduction)


def brier_score(probs: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Σ_c (p_c − 1[c = y])² per sample (``reduction="none"``) or its mean over samples (range [0, 2])."""
    _check(probs, labels, "probs")
    probs = probs.detach()
    if probs.dtype in (torch.float16, torch.bfloat16):
        probs = probs.float()
    per_sample = probs.pow(2).sum(dim=1) - 2 * probs.gather(1, labels[:, None]).squeeze(1) + 1
    return per_sample if reduction == "none" else per_sample.mean()


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of ``scores`` (N,) for the boolean ``positive`` (N,), by average ranks (ties count
    one half): (Σ rank of positives − n₊(n₊ + 1)/2) / (n₊ n₋). float64 (); NaN when one of the two sets is empty."""
    if scores.ndim != 1 or positive.shape != scores.shape:
        raise ValueError(f"expected scores (N,) and positive (N,), got {tuple(scores.shape)} and {tuple(positive.shape)}")
    scores, positive = scores.detach().double(), positive.detach().bool()
    n_pos = int(positive.sum())
    n_neg = int(positive.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=scores.device)
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # 1-based rank of each group's last member
    ranks = (last - (counts.double() - 1) / 2)[inverse]  # the mean rank of a tied group
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


class UncertaintyScores(Metric):
    """Streamed NLL, Brier score and AUROC of max-softmax confidence (correct vs wrong), synced across ranks by
    torchmetrics: sums and counts are summed, confidences and correctness gathered (one float and one bool per
    sample), so the result under DDP equals the result on one process.

    ``update(logits, labels)``; ``compute()`` returns ``{"nll", "brier", "auroc_correct"}`` as float32 scalars.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("brier_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("confidence", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:  # type: ignore[override]
        logits = logits.detach().float()
        probs = logits.softmax(dim=1)
        self.nll_sum += negative_log_likelihood(logits, labels, reduction="sum").double()
        self.brier_sum += brier_score(probs, labels, reduction="none").double().sum()
        self.count += labels.numel()
        conf, pred = probs.max(dim=1)
        self.confidence.append(conf)
        self.correct.append((pred == labels).float())  # float: gloo gathers no bool tensors

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        n = self.count.clamp_min(1).double()
        conf, correct = dim_zero_cat(self.confidence), dim_zero_cat(self.correct)
        return {
            "nll": (self.nll_sum / n).float(),
            "brier": (self.brier_sum / n).float(),
            "auroc_correct": auroc(conf, correct > 0.5).float(),
        }
