"""DAFormer's thing-class ImageNet feature distance (Hoyer et al., CVPR 2022, §3.4, Eq. 7–8).

The student's bottleneck features ``F_θ`` of a source image are pulled towards the features ``F_ImageNet`` that a
frozen copy of the ImageNet-pretrained encoder gives the same image, so that the semantic knowledge of ImageNet
pre-training is not overwritten by the synthetic source: per feature pixel ``d = ||F_θ − F_ImageNet||_2`` and

    L_FD = Σ_j d_j · M_j / Σ_j M_j,

``M`` the mask of *thing-class* pixels (ImageNet holds objects, not stuff): a feature pixel of a label map downscaled
by the feature stride ``s`` belongs to class ``c`` when at least ``ratio`` (0.75) of its ``s × s`` label pixels are
``c`` (255 counts as a class of its own, so a mostly-ignored pixel is never a thing pixel), and it is masked in when
``c`` is a thing class. The total loss adds ``λ_FD · L_FD`` with ``λ_FD = 0.005``.

The official code takes the mean of an empty selection (NaN, with no gradient); here a batch without thing pixels
gives 0 (connected to the graph, so every rank's backward pass sees the same parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from syn2real.core.labels import IGNORE_INDEX

__all__ = [
    "CITYSCAPES_THING_CLASSES",
    "CITYSCAPES_THING_CLASS_IDS",
    "FEATURE_DISTANCE_RATIO",
    "FEATURE_DISTANCE_WEIGHT",
    "downscale_labels_by_ratio",
    "feature_distance_loss",
    "thing_class_ids",
    "thing_pixel_mask",
]

#: λ_FD of DAFormer's configs (``imnet_feature_dist_lambda``)
FEATURE_DISTANCE_WEIGHT = 0.005
#: share of a feature pixel's label pixels that must be one class (``imnet_feature_dist_scale_min_ratio``)
FEATURE_DISTANCE_RATIO = 0.75
#: the thing classes of DAFormer's feature distance (``imnet_feature_dist_classes``), by name: every Cityscapes class
#: that is an object, pole excluded (DAFormer's list leaves it out)
CITYSCAPES_THING_CLASSES: tuple[str, ...] = (
    "traffic light", "traffic sign", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
#: the same as train ids of the 19 Cityscapes classes: DAFormer's ``[6, 7, 11, 12, 13, 14, 15, 16, 17, 18]``
CITYSCAPES_THING_CLASS_IDS: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


def thing_class_ids(classes: Sequence[str], things: Sequence[str] = CITYSCAPES_THING_CLASSES) -> list[int]:
    """The ids of ``things`` in a class list (names not in it are skipped): the 16/13-class SYNTHIA protocols number
    their classes differently from the 19 Cityscapes ones (SYNTHIA-16 has no truck or train)."""
    index = {name: i for i, name in enumerate(classes)}
    return [index[name] for name in things if name in index]


def _scale(labels: torch.Tensor, size: tuple[int, int]) -> int:
    (height, width), (h, w) = labels.shape[-2:], size
    if h < 1 or w < 1 or height % h or width % w or height // h != width // w:
        raise ValueError(
            f"labels of size {height}x{width} (HxW) do not downscale to features of size {h}x{w} by one integer "
            "factor (the encoder's stride); crop the inputs to a multiple of the stride"
        )
    return height // h


def downscale_labels_by_ratio(
    labels: torch.Tensor,
    size: tuple[int, int],
    min_ratio: float = FEATURE_DISTANCE_RATIO,
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """(B, H, W) labels -> (B, h, w): each output pixel takes the most frequent value of its ``s × s`` block
    (``s = H / h``, ``ignore_index`` counted as a value of its own), or ``ignore_index`` when that value covers less
    than ``min_ratio`` of the block. ``num_classes``: default the largest label other than ``ignore_index`` + 1."""
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape (B, H, W), got {tuple(labels.shape)}")
    s = _scale(labels, size)
    labels = labels.long()
    valid = labels != ignore_index
    if num_classes is None:
        num_classes = int(labels[valid].max()) + 1 if bool(valid.any()) else 1
    if bool((valid & ((labels < 0) | (labels >= num_classes))).any()):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} or be {ignore_index}")
    if s == 1:
        return labels.clone()
    as_class = torch.where(valid, labels, torch.full_like(labels, num_classes))  # ignore -> class num_classes
    shares = F.avg_pool2d(F.one_hot(as_class, num_classes + 1).permute(0, 3, 1, 2).float(), kernel_size=s)
    ratio, out = shares.max(dim=1)
    out[(out == num_classes) | (ratio < min_ratio)] = ignore_index
    return out


def thing_pixel_mask(
    labels: torch.Tensor,
    size: tuple[int, int],
    thing_classes: Sequence[int],
    min_ratio: float = FEATURE_DISTANCE_RATIO,
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """(B, h, w) bool: feature pixels whose ``s × s`` label block is at least ``min_ratio`` one thing class."""
    small = downscale_labels_by_ratio(labels, size, min_ratio, num_classes, ignore_index)
    things = torch.as_tensor(list(thing_classes), dtype=small.dtype, device=small.device)
    return torch.isin(small, things)


def feature_distance_loss(
    student: torch.Tensor,
    imagenet: torch.Tensor,
    labels: torch.Tensor | None = None,
    thing_classes: Sequence[int] | None = CITYSCAPES_THING_CLASS_IDS,
    min_ratio: float = FEATURE_DISTANCE_RATIO,
    num_classes: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """L_FD (DAFormer Eq. 7–8): the mean over thing-class feature pixels of ``||student − imagenet||_2`` (over
    channels); 0 when the batch has none. ``student`` and ``imagenet``: (B, C, h, w) bottleneck features of the same
    images (``imagenet`` is detached: the ImageNet model is frozen); ``labels``: (B, H, W) source labels with
    ``ignore_index``. ``thing_classes=None`` (or no ``labels``) averages over every pixel, DAFormer's variant without
    classes. Not weighted: the caller multiplies by ``λ_FD`` (:data:`FEATURE_DISTANCE_WEIGHT`)."""
    if student.ndim != 4 or student.shape != imagenet.shape:
        raise ValueError(
            f"student and imagenet features must both have shape (B, C, h, w), got {tuple(student.shape)} and "
            f"{tuple(imagenet.shape)}"
        )
    distance = torch.linalg.vector_norm(student.float() - imagenet.detach().float(), ord=2, dim=1)  # (B, h, w)
    if labels is None or thing_classes is None:
        return distance.mean()
    if labels.ndim != 3 or labels.shape[0] != student.shape[0]:
        raise ValueError(f"labels must have shape (B, H, W) with B = {student.shape[0]}, got {tuple(labels.shape)}")
    mask = thing_pixel_mask(labels.to(student.device), tuple(student.shape[-2:]), thing_classes, min_ratio,
                            num_classes, ignore_index)
    selected = mask.sum()
    return (distance * mask).sum() / selected.clamp(min=1)
