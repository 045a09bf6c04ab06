"""Label-free validators for unsupervised model selection on the target domain.

Target labels are absent in real use, so checkpoints can be selected by scores computed from target
predictions alone (all "higher is better"):

- **entropy**: ``-mean_i H(p_i)`` (confident predictions; Morerio et al. 2018, pytorch-adapt's EntropyValidator).
- **information maximisation**: ``H(mean_i p_i) - mean_i H(p_i)`` (confident *and* diverse; Shi & Sha 2012,
  used for selection in SHOT / pytorch-adapt's IMValidator).
- **SND**, soft neighbourhood density (Saito et al., ICCV 2021): L2-normalise the softmax outputs, take the
  similarity matrix of the target samples scaled by 1/τ (τ = 0.05), drop self-similarity, soft-max each row,
  and average the row entropies: high when target predictions form dense neighbourhoods.

All are torchmetrics ``Metric`` objects, so DDP sync is torchmetrics' own (sums are all-reduced, SND's
samples gathered).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from syn2real.losses.adversarial import entropy

__all__ = ["EntropyValidator", "InfoMaxValidator", "SNDValidator", "snd_score"]


def snd_score(probs: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Soft neighbourhood density of (N, C) target probabilities (Saito et al. 2021, Eq. 1-3)."""
    if probs.ndim != 2 or probs.shape[0] < 2:
        raise ValueError(f"SND needs (N >= 2, C) probabilities, got shape {tuple(probs.shape)}")
    feats = torch.nn.functional.normalize(probs.float(), dim=1)
    sim = feats @ feats.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    return entropy(sim.softmax(dim=1)).mean()


class EntropyValidator(Metric):
    """``-mean entropy`` of the predictions (higher is better)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor) -> None:
        self.entropy_sum += entropy(probs.double()).sum()
        self.count += probs.shape[0]

    def compute(self) -> torch.Tensor:
        return (-self.entropy_sum / self.count.clamp_min(1)).float()


class InfoMaxValidator(Metric):
    """``H(mean p) - mean H(p)`` (higher is better; at most ``log C``)."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.add_state("prob_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor) -> None:
        probs = probs.double()
        self.prob_sum += probs.sum(dim=0)
        self.entropy_sum += entropy(probs).sum()
        self.count += probs.shape[0]

    def compute(self) -> torch.Tensor:
        n = self.count.clamp_min(1)
        marginal = (self.prob_sum / n).unsqueeze(0)
        return (entropy(marginal)[0] - self.entropy_sum / n).float()


class SNDValidator(Metric):
    """Soft neighbourhood density of the target predictions (higher is better).

    Keeps at most ``max_samples`` predictions per process (the first ones seen; evaluation order is
    fixed), since the similarity matrix is quadratic in the number of samples.
    """

    full_state_update = False

    def __init__(self, temperature: float = 0.05, max_samples: int = 5000) -> None:
        super().__init__()
        self.temperature = temperature
        self.max_samples = max_samples
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self._seen = 0

    def update(self, probs: torch.Tensor) -> None:
        room = self.max_samples - self._seen
        if room > 0:
            kept = probs[:room].detach().float()
            self.probs.append(kept)
            self._seen += kept.shape[0]

    def compute(self) -> torch.Tensor:
        probs = self.probs if isinstance(self.probs, torch.Tensor) else torch.cat(self.probs)
        if probs.shape[0] < 2:  # undefined without a neighbour
            return torch.tensor(float("nan"))
        return snd_score(probs, self.temperature)

    def reset(self) -> None:
        super().reset()
        self._seen = 0
