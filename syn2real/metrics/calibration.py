"""Calibration (Guo et al. 2017): expected calibration error over equal-width confidence bins, reliability
diagrams and temperature scaling."""

from __future__ import annotations

import math

import torch

__all__ = ["expected_calibration_error", "fit_temperature", "plot_reliability", "reliability_bins"]


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over ``n_bins`` equal-width bins of max-softmax confidence.

    ``probs``: (N, C) probabilities; ``labels``: (N,) class indices. Bins are right-closed, (lo, hi],
    like torchmetrics, so the two agree exactly.
    """
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"expected probs (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(probs.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, device=probs.device, dtype=probs.dtype)
    # bucketize(right=False) puts conf == edge_k into bin k-1, i.e. (lo, hi]; conf == 0 goes to bin 0.
    idx = (torch.bucketize(conf, edges[1:-1], right=False)).clamp(0, n_bins - 1)
    ece = probs.new_zeros(())
    n = probs.shape[0]
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece = ece + mask.sum() / n * (correct[mask].mean() - conf[mask].mean()).abs()
    return ece


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """Per-bin ``count``, mean ``confidence`` and ``accuracy`` (NaN for empty bins) over ``n_bins`` equal-width
    (lo, hi] bins of max-softmax confidence: the numbers behind a reliability diagram."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(probs.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, device=probs.device, dtype=probs.dtype)
    idx = torch.bucketize(conf, edges[1:-1], right=False).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).to(probs.dtype)
    conf_sum = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device).index_add_(0, idx, correct)
    nan = torch.full_like(count, float("nan"))
    return {
        "edges": edges,
        "count": count,
        "confidence": torch.where(count > 0, conf_sum / count.clamp_min(1), nan),
        "accuracy": torch.where(count > 0, acc_sum / count.clamp_min(1), nan),
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, init: float = 1.5, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al. 2017): the scalar T > 0 minimising the NLL of softmax(logits / T) on a
    held-out labelled set, by LBFGS on log T starting from ``init``. Returns T."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if init <= 0:
        raise ValueError(f"the initial temperature must be > 0, got {init}")
    logits, labels = logits.detach().double(), labels.detach()
    log_t = torch.tensor(math.log(init), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())


def plot_reliability(
    panels: dict[str, tuple[torch.Tensor, torch.Tensor]], path: str, n_bins: int = 15
) -> None:
    """Reliability diagrams side by side, one per ``title -> (probs, labels)``, written as a PNG to ``path``:
    bars of per-bin accuracy against the diagonal of perfect calibration, the gap shaded, ECE in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from syn2real.io import atomic_write

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    width = 1.0 / n_bins
    for ax, (title, (probs, labels)) in zip(axes[0], panels.items()):
        bins = reliability_bins(probs.float(), labels, n_bins)
        centres = (bins["edges"][:-1] + width / 2).numpy()
        acc = torch.nan_to_num(bins["accuracy"], nan=0.0).numpy()
        conf = torch.nan_to_num(bins["confidence"], nan=0.0).numpy()
        ax.bar(centres, acc, width=width, edgecolor="black", color="#4c72b0", label="accuracy")
        ax.bar(centres, conf - acc, bottom=acc, width=width, edgecolor="#c44e52", color="#c44e52", alpha=0.3,
               label="gap")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ece = float(expected_calibration_error(probs.float(), labels, n_bins))
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{title}: ECE {100 * ece:.2f} %")
        ax.legend(loc="upper left")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
