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

__all__ = ["ClassificationMetrics"]


class ClassificationMetrics(nn.Module):
    """Overall and class-mean accuracy, per-class accuracy, ECE (15 bins) and a confusion matrix.

    ``compute()`` returns ``{"<prefix>/acc", "<prefix>/acc_class_mean", "<prefix>/ece",
    "<prefix>/acc_class/<name>"...}``; the confusion matrix is kept apart (``confusion()``) since it is
    not a scalar.
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
        self.acc_class_mean = MulticlassAccuracy(num_classes, average="macro")
        self.acc_class = MulticlassAccuracy(num_classes, average=None)
        self.ece = MulticlassCalibrationError(num_classes, n_bins=n_bins, norm="l1")
        self.confmat = MulticlassConfusionMatrix(num_classes)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        probs = logits.softmax(dim=1)
        for metric in (self.acc, self.acc_class_mean, self.acc_class, self.ece, self.confmat):
            metric.update(probs, labels)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {
            f"{self.prefix}/acc": self.acc.compute(),
            f"{self.prefix}/acc_class_mean": self.acc_class_mean.compute(),
            f"{self.prefix}/ece": self.ece.compute(),
        }
        per_class = self.acc_class.compute()
        for name, value in zip(self.class_names, per_class):
            out[f"{self.prefix}/acc_class/{name}"] = value
        return out

    def confusion(self) -> torch.Tensor:
        return self.confmat.compute()

    def has_updates(self) -> bool:
        return bool(self.acc.update_count)

    def reset(self) -> None:
        for metric in (self.acc, self.acc_class_mean, self.acc_class, self.ece, self.confmat):
            metric.reset()
