"""Segmentation evaluation: mIoU / per-class IoU from a streamed confusion matrix, and bounded-memory inference.

:class:`SegmentationMetrics` accumulates a C×C confusion matrix (torchmetrics, ``ignore_index`` 255, synchronised
across DDP ranks by torchmetrics) from each batch's argmax, so nothing but the matrix is kept between batches.
IoU_c = TP / (TP + FP + FN); a class absent from both the labels and the predictions has no IoU (NaN) and is left
out of the mean, as the Cityscapes evaluation script does.

:func:`segment` turns an image batch into class scores at any resolution: whole image or sliding window (windows
``window`` with ``stride``, logits summed where windows overlap and divided by the count), optional horizontal-flip
and multi-scale test-time augmentation, upsampled to the label size. One image's scores are the largest tensor it
holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from syn2real.core.labels import IGNORE_INDEX

__all__ = ["InferenceConfig", "SegmentationMetrics", "iou_from_confusion", "segment", "sliding_windows"]


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU from a confusion matrix (rows = truth, columns = prediction); NaN where the class appears in
    neither."""
    confusion = confusion.to(torch.float64)
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


class SegmentationMetrics(nn.Module):
    """mIoU, per-class IoU and pixel accuracy of one evaluation domain, logged as ``<prefix>/miou``,
    ``<prefix>/iou/<class>``, ``<prefix>/pixel_acc``."""

    main_keys = ("miou", "pixel_acc")
    per_class = "iou"

    def __init__(self, num_classes: int, prefix: str, class_names: Sequence[str] | None = None,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.num_classes = int(num_classes)
        self.prefix = prefix
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.ignore_index = int(ignore_index)
        self.confmat = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)

    def update(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        """``pred``: (B, H, W) class indices, or (B, C, H, W) scores (argmax taken); ``labels``: (B, H, W)."""
        if pred.ndim == 4:
            pred = pred.argmax(dim=1)
        if pred.shape != labels.shape:
            raise ValueError(f"{self.prefix}: predictions {tuple(pred.shape)} and labels {tuple(labels.shape)} differ")
        bad = (labels != self.ignore_index) & ((labels < 0) | (labels >= self.num_classes))
        if bool(bad.any()):
            found = sorted(set(labels[bad].unique().tolist()))[:5]
            raise ValueError(
                f"{self.prefix}: label values {found} are outside 0..{self.num_classes - 1} and not the ignore value "
                f"{self.ignore_index}; were the labels converted to train ids (data_prep/*.py) for this class set?"
            )
        self.confmat.update(pred.reshape(-1), labels.reshape(-1).long())

    def has_updates(self) -> bool:
        return bool(self.confmat._update_count)

    def confusion(self) -> torch.Tensor:
        return self.confmat.compute()

    def compute(self) -> dict[str, torch.Tensor]:
        confusion = self.confusion()
        iou = iou_from_confusion(confusion)
        valid = ~torch.isnan(iou)
        miou = iou[valid].mean() if bool(valid.any()) else torch.tensor(0.0, dtype=torch.float64)
        total = confusion.sum()
        out = {
            f"{self.prefix}/miou": miou.float(),
            f"{self.prefix}/pixel_acc": (confusion.diagonal().sum() / total.clamp_min(1)).float(),
        }
        for name, value in zip(self.class_names, iou):
            out[f"{self.prefix}/iou/{name}"] = value.float()
        return out

    def reset(self) -> None:
        self.confmat.reset()


@dataclass
class InferenceConfig:
    """How evaluation images become predictions.

    Args:
        mode: ``whole`` (one forward pass per image) or ``slide`` (windows of ``window`` (h, w) every ``stride``).
        window / stride: sliding-window size and step in pixels of the network input (default 512×512, step 341:
            one third overlap).
        flip: average the softmax of the image and its horizontal mirror.
        scales: resize factors of the input, softmax averaged over them (multi-scale testing); ``[1.0]`` = off.
    """

    mode: Literal["whole", "slide"] = "whole"
    window: list[int] = field(default_factory=lambda: [512, 512])
    stride: list[int] = field(default_factory=lambda: [341, 341])
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])


def sliding_windows(height: int, width: int, window: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of windows covering an image; the last row/column is aligned to the border."""
    wh, ww = min(int(window[0]), height), min(int(window[1]), width)
    sh, sw = int(stride[0]), int(stride[1])
    if sh < 1 or sw < 1:
        raise ValueError(f"sliding-window stride must be positive, got {tuple(stride)}")

    def starts(size: int, win: int, step: int) -> list[int]:
        if size > win and step > win:  # windows would leave gaps: pixels without any prediction
            raise ValueError(
                f"sliding-window stride {tuple(stride)} must not exceed the window {tuple(window)} (pixels between "
                "windows would get no prediction)"
            )
        out = list(range(0, max(size - win, 0) + 1, step))
        if out[-1] + win < size:
            out.append(size - win)
        return out

    return [(y, x) for y in starts(height, wh, sh) for x in starts(width, ww, sw)]


def _slide(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, num_classes: int,
           window: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    b, _, h, w = x.shape
    wh, ww = min(int(window[0]), h), min(int(window[1]), w)
    logits = x.new_zeros(b, num_classes, h, w, dtype=torch.float32)
    count = x.new_zeros(1, 1, h, w, dtype=torch.float32)
    for y0, x0 in sliding_windows(h, w, window, stride):
        out = net(x[:, :, y0:y0 + wh, x0:x0 + ww]).float()
        logits[:, :, y0:y0 + wh, x0:x0 + ww] += out
        count[:, :, y0:y0 + wh, x0:x0 + ww] += 1
    return logits / count


@torch.no_grad()
def segment(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    num_classes: int,
    cfg: InferenceConfig | None = None,
    out_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Class probabilities (B, C, H_out, W_out) of ``net`` (a callable returning logits at its input's size) on
    images ``x`` (B, C_in, H, W), following ``cfg``; ``out_size`` defaults to the input size."""
    cfg = cfg or InferenceConfig()
    if cfg.mode not in ("whole", "slide"):
        raise ValueError(f"inference.mode must be 'whole' or 'slide', got {cfg.mode!r}")
    if not cfg.scales or any(s <= 0 for s in cfg.scales):
        raise ValueError(f"inference.scales must be positive factors, got {cfg.scales}")
    size = tuple(int(s) for s in (out_size or x.shape[-2:]))
    probs: torch.Tensor | None = None
    views = 0
    for scale in cfg.scales:
        xs = x if scale == 1.0 else F.interpolate(
            x, scale_factor=float(scale), mode="bilinear", align_corners=False, recompute_scale_factor=False)
        for flip in ([False, True] if cfg.flip else [False]):
            xi = xs.flip(-1) if flip else xs
            if cfg.mode == "slide":
                logits = _slide(net, xi, num_classes, cfg.window, cfg.stride)
            else:
                logits = net(xi).float()
            if flip:
                logits = logits.flip(-1)
            p = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(dim=1) \
                if tuple(logits.shape[-2:]) != size else logits.softmax(dim=1)
            probs = p if probs is None else probs + p
            views += 1
    assert probs is not None
    return probs / views
