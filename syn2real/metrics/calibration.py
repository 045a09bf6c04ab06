"""Calibration (Guo et al. 2017): expected calibration error over equal-width confidence bins, reliability
diagrams and temperature scaling."""

from __future__ import annotations

import math

import torch

__all__ = [
    "calibration_error", "expected_calibration_error", "fit_temperature", "plot_reliability", "reliability_bins",
]


def _bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bin index, confidence, correctness) per sample, in float32, with torchmetrics' binning: edges
    ``linspace(0, 1, n_bins + 1)``, bin k = [edge_k, edge_k+1), confidence exactly 1.0 in an extra bin ``n_bins``."""
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"expected probs (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, pred = probs.detach().max(dim=1)
    return _bin_confidences(conf, pred == labels, n_bins)


def _bin_confidences(conf: torch.Tensor, correct: torch.Tensor, n_bins: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bin index, float32 confidence, float32 correctness) of max-softmax confidences (N,) and correctness (N,)."""
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = conf.detach().float()  # torchmetrics bins float32 confidences; the same cast keeps edge cases identical
    correct = correct.detach().float()
    edges = torch.linspace(0, 1, n_bins + 1, device=conf.device, dtype=conf.dtype)
    idx = torch.bucketize(conf, edges, right=True) - 1
    return idx.clamp(0, n_bins), conf, correct


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over ``n_bins`` equal-width bins of max-softmax confidence.

    ``probs``: (N, C) probabilities; ``labels``: (N,) class indices; returns a float32 (). torchmetrics'
    convention (``MulticlassCalibrationError``, the ``<domain>/ece`` of ``metrics.json``), reproduced exactly: bins
    are half-open [lo, hi), confidence exactly 1.0 has a bin of its own, and confidences are binned in float32.
    """
    return calibration_error(*_bins(probs, labels, n_bins)[1:], n_bins=n_bins)


def calibration_error(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """:func:`expected_calibration_error` from the max-softmax ``confidence`` (N,) and the ``correct`` flags (N,)
    alone (all ECE depends on), so a caller can keep two numbers per sample instead of (N, C) probabilities."""
    if confidence.ndim != 1 or correct.shape != confidence.shape:
        raise ValueError(f"expected confidence (N,) and correct (N,), got {tuple(confidence.shape)} and "
                         f"{tuple(correct.shape)}")
    idx, conf, correct = _bin_confidences(confidence, correct, n_bins)
    count = torch.zeros(n_bins + 1, dtype=conf.dtype, device=conf.device).scatter_add_(0, idx, torch.ones_like(conf))
    conf_bin = torch.zeros_like(count).scatter_add_(0, idx, conf)
    acc_bin = torch.zeros_like(count).scatter_add_(0, idx, correct)
    # the same operations, in the same order, as torchmetrics' _binning_bucketize + _ce_compute (norm l1)
    conf_bin = torch.nan_to_num(conf_bin / count)
    acc_bin = torch.nan_to_num(acc_bin / count)
    return torch.sum(torch.abs(acc_bin - conf_bin) * (count / count.sum()))


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """Per-bin ``count``, mean ``confidence`` and ``accuracy`` (NaN for empty bins), the numbers behind a reliability
    diagram and :func:`expected_calibration_error`: ``n_bins`` [lo, hi) bins, then the bin of confidence exactly 1.0.
    """
    idx, conf, correct = _bins(probs, labels, n_bins)
    count = torch.bincount(idx, minlength=n_bins + 1).to(conf.dtype)
    conf_sum = torch.zeros(n_bins + 1, dtype=conf.dtype, device=conf.device).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins + 1, dtype=conf.dtype, device=conf.device).index_add_(0, idx, correct)
    nan = torch.full_like(count, float("nan"))
    return {
        "edges": torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device),
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
    bars of per-bin accuracy against the diagonal (the bin of confidence 1.0 as a point), the gap shaded, ECE in the
    title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from syn2real.io import atomic_write

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    width = 1.0 / n_bins
    for ax, (title, (probs, labels)) in zip(axes[0], panels.items()):
        bins = reliability_bins(probs.float(), labels, n_bins)
        centres = (bins["edges"][:-1] + width / 2).numpy()
        acc = torch.nan_to_num(bins["accuracy"][:n_bins], nan=0.0).numpy()
        conf = torch.nan_to_num(bins["confidence"][:n_bins], nan=0.0).numpy()
        ax.bar(centres, acc, width=width, edgecolor="black", color="#4c72b0", label="accuracy")
        ax.bar(centres, conf - acc, bottom=acc, width=width, edgecolor="#c44e52", color="#c44e52", alpha=0.3,
               label="gap")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        if bins["count"][n_bins] > 0:  # the bin of confidence exactly 1.0: its accuracy as a point on the right edge
            ax.plot([1.0], [float(bins["accuracy"][n_bins])], "o", color="#4c72b0", clip_on=False,
                    label="confidence 1.0")
        ece = float(expected_calibration_error(probs.float(), labels, n_bins))
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{title}: ECE {100 * ece:.2f} %")
        ax.legend(loc="upper left")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
