"""Semantic segmentation (GTA5→Cityscapes, SYNTHIA→Cityscapes, segmentation digits): one label per pixel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.callbacks.pixel_pseudo_labels import PixelPseudoLabelRounds
from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.core.display import display_rgb
from syn2real.core.cross_entropy import task_cross_entropy
from syn2real.core.distributed import global_mean_weight
from syn2real.losses.mean_teacher import weighted_cross_entropy
from syn2real.metrics.segmentation import InferenceConfig, SegmentationMetrics, segment
from syn2real.metrics.validators import EntropyValidator
from syn2real.models.segmentation import SegNetworkConfig, build_segmenter, upsample
from syn2real.tasks.base import Task

__all__ = ["Segmentation", "colorize", "palette"]


def palette(num_classes: int) -> torch.Tensor:
    """(num_classes, 3) uint8 colours: the Cityscapes palette for its 19/16/13-class sets, distinct colours otherwise."""
    from syn2real.data.seg_labels import palette_for

    if num_classes in (19, 16, 13):
        return torch.as_tensor(palette_for(num_classes), dtype=torch.uint8).reshape(num_classes, 3)
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colours = [[int(255 * v) for v in cmap(i % 20)[:3]] for i in range(num_classes)]
    return torch.tensor(colours, dtype=torch.uint8)


def colorize(labels: torch.Tensor, num_classes: int, colours: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W) class indices (255 = ignore, shown white) -> (B, 3, H, W) colours in [0, 1]; ``colours`` (C, 3)
    uint8 defaults to :func:`palette`."""
    colours = palette(num_classes) if colours is None else torch.as_tensor(colours, dtype=torch.uint8).reshape(-1, 3)
    colours = torch.cat([colours, torch.full((1, 3), 255, dtype=torch.uint8)]).to(labels.device)
    idx = torch.where((labels >= 0) & (labels < num_classes), labels, torch.full_like(labels, num_classes))
    return colours[idx.long()].permute(0, 3, 1, 2).float() / 255.0


class Segmentation(Task):
    """Semantic segmentation: DeepLabV2/FCN on a timm ``features_only`` backbone; cross-entropy ignoring label 255
    (+ ``aux_weight`` · the auxiliary level's with ``network.multi_level``), as a mean over the labelled pixels of
    the global batch under DDP; mIoU per domain at the labels' resolution; the pixel-entropy validator; W&B rows
    image | ground truth | prediction.

    Args:
        network: the segmenter (``null`` = the method's default, DeepLabV2: ResNet-101, ASPP 6/12/18/24, frozen BatchNorm).
        inference: evaluation and pseudo-labelling protocol (whole image or sliding window, flip, scales).
        aux_weight: weight of the auxiliary level's cross-entropy (0.1, AdaptSegNet).
    """

    kind = "segmentation"
    unlabelled = Task.ignore_index  # pixels without a pseudo-label are ignored like void
    accuracy_name = "pixel_acc"
    optional_weights = ("aux_classifier.",)  # a single-level run may start a multi-level one

    def __init__(self, network: SegNetworkConfig | None = None, inference: InferenceConfig | None = None,
                 aux_weight: float = 0.1) -> None:
        if network is not None and not isinstance(network, SegNetworkConfig):
            raise TypeError(
                f"Segmentation needs task.init_args.network to be a segmentation network (backbone, num_classes, "
                f"head, aspp_rates, ...), got {type(network).__name__}"
            )
        if aux_weight < 0:
            raise ValueError(f"task.init_args.aux_weight must be >= 0, got {aux_weight}")
        self.network = network
        self.inference = inference or InferenceConfig()
        self.aux_weight = float(aux_weight)
        self._eval_sample: tuple[torch.Tensor, ...] | None = None

    def default_network(self) -> SegNetworkConfig:
        return SegNetworkConfig()

    def init_args(self) -> dict[str, Any]:
        return {"network": self.network, "inference": self.inference, "aux_weight": self.aux_weight}

    def build_network(self) -> nn.Module:
        return build_segmenter(self.network)

    def levels(self, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        return [upsample(level, x.shape[-2:]) for level in model.forward_levels(x)]

    def loss(self, module: Any, levels: Sequence[torch.Tensor], labels: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """CE(main) + ``aux_weight`` · CE(auxiliary level), ignoring label 255, times ``weight`` (default
        :meth:`global_pixel_weight` of ``labels``: the mean over the labelled pixels of the global batch)."""
        return self._cross_entropy(levels, labels) * (self.global_pixel_weight(module, labels) if weight is None
                                                       else weight)

    def _cross_entropy(self, levels: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        loss = task_cross_entropy(levels[0], labels, self.ignore_index)
        for aux in levels[1:]:
            loss = loss + self.aux_weight * task_cross_entropy(aux, labels, self.ignore_index)
        return loss

    def masked_loss(self, module: Any, levels: Sequence[torch.Tensor],
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # pseudo-labelled pixels vary most between ranks: the weight makes the loss a mean over the global batch's
        return self._cross_entropy(levels, labels), self.global_pixel_weight(module, labels)

    def weighted_loss(self, levels: Sequence[torch.Tensor], labels: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
        """Weighted cross-entropy of the main level + ``aux_weight`` · that of the auxiliary level."""
        loss = weighted_cross_entropy(levels[0], labels, weight, self.ignore_index)
        for aux in levels[1:]:
            loss = loss + self.aux_weight * weighted_cross_entropy(aux, labels, weight, self.ignore_index)
        return loss

    def pseudo_label_rounds(self, config: RoundConfig, soft: bool, lrent_alpha: float) -> PixelPseudoLabelRounds:
        """Pixel rounds: thresholds from all-reduced confidence histograms, pseudo-labels written as PNGs that the
        target training set crops with its image. LRENT's soft labels would need C maps per image on disk."""
        if soft:
            raise ValueError("self-training variant 'lrent' (soft labels) is not offered for segmentation; "
                             "use 'cbst' or 'mrkld'")
        return PixelPseudoLabelRounds(config)

    def pseudo_labelled_target(self, batch: dict[str, Any], rounds: Any
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The target loader reads each round's pseudo-label maps like ground truth (cropped with the image)."""
        return batch["target"][0], batch["target"][1], None

    def global_pixel_weight(self, module: Any, labels: torch.Tensor) -> torch.Tensor:
        """:func:`~syn2real.core.distributed.global_mean_weight` of this rank's labelled (not ignored) pixels:
        without it a rank whose crops are mostly ignored (pseudo-labels, GTA5's void) would weigh as much as one
        full of labels."""
        return global_mean_weight(module, (labels != self.ignore_index).sum())

    def accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pixel accuracy over the labelled pixels; ``logits`` are upsampled to the labels' size when smaller."""
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = upsample(logits, labels.shape[-2:])
        valid = labels != self.ignore_index
        return ((logits.argmax(1) == labels) & valid).sum() / valid.sum().clamp_min(1)

    # -- evaluation -----------------------------------------------------------------------------------
    def build_metrics(self, domain: str) -> nn.Module:
        return SegmentationMetrics(self.num_classes, prefix=domain)

    def build_validators(self) -> dict[str, nn.Module]:
        return {"entropy": EntropyValidator()}  # mean pixel entropy; SND's N×N similarity does not scale to pixels

    def on_eval_epoch_start(self) -> None:
        self._eval_sample = None  # the W&B sample is taken from this evaluation, not the sanity check

    def segment(self, model: nn.Module, x: torch.Tensor, out_size: Sequence[int] | None = None) -> torch.Tensor:
        """Class probabilities of a batch under ``inference``, at ``out_size``."""
        return segment(model, x, self.num_classes, self.inference, out_size)

    def eval_step(self, module: Any, x: torch.Tensor, y: torch.Tensor, domain: str) -> None:
        probs = self.segment(module.model, x, y.shape[-2:])
        pred = probs.argmax(dim=1)
        module.eval_metrics[domain].update(pred, y)
        if domain == "target":
            module.validators["entropy"].update(probs.permute(0, 2, 3, 1).reshape(-1, probs.shape[1]))
            if self._eval_sample is None:  # the first target images of this evaluation, for W&B
                self._eval_sample = (x[:4].detach().cpu(), y[:4].cpu(), pred[:4].cpu())

    def probabilities(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        return self.segment(module.model, x)

    # -- pictures ---------------------------------------------------------------------------------------
    def colorize(self, module: Any, labels: torch.Tensor) -> torch.Tensor:
        """Label maps in the data's palette (``datamodule.palette`` when it has one)."""
        dm = getattr(module._trainer, "datamodule", None) if module._trainer is not None else None
        return colorize(labels, self.num_classes, getattr(dm, "palette", None))

    def eval_media(self, module: Any) -> dict[str, torch.Tensor]:
        """Rows image | ground truth | prediction of the first evaluated target images (then forgotten)."""
        sample, self._eval_sample = self._eval_sample, None
        if sample is None:
            return {}
        x, y, pred = sample
        image = F.interpolate(display_rgb(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        return {"segmentation/eval_target": torch.stack([image, self.colorize(module, y), self.colorize(module, pred)])}

    def training_media(self, module: Any, batch: dict[str, Any], max_images: int) -> dict[str, torch.Tensor]:
        """Rows (image, ground truth, prediction[, pseudo-label]) of the source and target batches, in [0, 1]."""
        media: dict[str, torch.Tensor] = {}
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                for domain in ("source", "target"):
                    item = batch.get(domain)
                    if item is None:
                        continue
                    x, y = item[0][:max_images], item[1][:max_images]
                    pred = self.segment(module.model, x).argmax(dim=1)
                    rows = [display_rgb(x)]
                    if domain == "source":
                        rows += [self.colorize(module, y), self.colorize(module, pred)]
                    else:  # target labels in training are pseudo-labels
                        rows += [self.colorize(module, pred), self.colorize(module, y)]
                    media[f"segmentation/{domain}"] = torch.stack(rows)
        finally:
            module.train(was_training)
        return media
