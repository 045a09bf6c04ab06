"""Classification metrics with stable names, DDP-correct through torchmetrics' own sync."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)

from syn2real.metrics.uncertainty import UncertaintyScores

__all__ = ["ClassificationMetrics", "accuracy_per_class"]


def accuracy_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """Accuracy (recall) of each class from a (C, C) confusion matrix (rows = truth, columns = prediction): float32
    (C,), NaN for a class absent from the labels, however often it was predicted."""
    support = confusion.sum(dim=1)
    correct = confusion.diagonal()
    nan = torch.full(support.shape, float("nan"), device=confusion.device)
    return torch.where(support > 0, correct.float() / support.clamp_min(1).float(), nan)


class ClassificationMetrics(nn.Module):
    """Overall and class-mean accuracy, per-class accuracy, ECE (15 bins), NLL, Brier score, AUROC of confidence for
    correct vs wrong predictions (:mod:`syn2real.metrics.uncertainty` states the conventions) and a confusion matrix.

    ``compute()`` returns ``{"<prefix>/acc", "<prefix>/acc_class_mean", "<prefix>/ece", "<prefix>/nll",
    "<prefix>/brier", "<prefix>/auroc_correct", "<prefix>/acc_class/<name>"...}``; the confusion matrix is kept apart (``confusion()``) since it is
    not a scalar. A class absent from the labels has no accuracy: ``acc_class/<name>`` is NaN (``null`` in
    ``metrics.json``) and ``acc_class_mean`` is the mean over the classes present, as the segmentation mIoU leaves
    out classes without IoU. ECE is torchmetrics' (see :func:`syn2real.metrics.calibration.expected_calibration_error`).
    """

    main_keys = ("acc", "acc_class_mean")  # shown in the progress bar; the first one in the summary line
    per_class = "acc_class"  # per-class values are logged as <prefix>/acc_class/<name>

    def __init__(self, num_classes: int, prefix: str, class_names: Sequence[str] | None = None, n_bins: int = 15):
        super().__init__()
        self.prefix = prefix
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names given for {num_classes} classes")
        self.acc = MulticlassAccuracy(num_classes, average="micro")
        # per-class accuracies come from the confusion matrix (synced by torchmetrics): recall per labelled class
        self.ece = MulticlassCalibrationError(num_classes, n_bins=n_bins, norm="l1")
        self.confmat = MulticlassConfusionMatrix(num_classes)
        self.uncertainty = UncertaintyScores()

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        probs = logits.softmax(dim=1)
        for metric in (self.acc, self.ece, self.confmat):
            metric.update(probs, labels)
        self.uncertainty.update(logits, labels)

    def compute(self) -> dict[str, torch.Tensor]:
        per_class = accuracy_per_class(self.confmat.compute())
        present = per_class[~torch.isnan(per_class)]
        out = {
            f"{self.prefix}/acc": self.acc.compute(),
            f"{self.prefix}/acc_class_mean": present.mean() if present.numel() else per_class.new_tensor(float("nan")),
            f"{self.prefix}/ece": self.ece.compute(),
        }
        out.update({f"{self.prefix}/{k}": v for k, v in self.uncertainty.compute().items()})
        for name, value in zip(self.class_names, per_class):
            out[f"{self.prefix}/acc_class/{name}"] = value
        return out

    def confusion(self) -> torch.Tensor:
        return self.confmat.compute()

    def has_updates(self) -> bool:
        return bool(self.acc.update_count)

    def reset(self) -> None:
        for metric in (self.acc, self.ece, self.confmat, self.uncertainty):
            metric.reset()
