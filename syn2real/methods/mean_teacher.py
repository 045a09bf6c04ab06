"""Mean-teacher self-training: DACS (Tranheden et al., WACV 2021), DAFormer's training loop (Hoyer et al., CVPR
2022) and MIC (Hoyer et al., CVPR 2023), one class for segmentation and classification.

A student (the trained network) and a teacher, the exponential moving average of the student, which is never
trained by gradients, stays in eval mode and labels the target images. Per step:

1. the teacher is updated: θ_T ← α_i θ_T + (1 − α_i) θ_S with α_i = min(1 − 1/(i + 1), α) at optimiser step i
   (α = ``ema_momentum``: DACS 0.99, DAFormer/MIC 0.999, MIC classification 0.9);
2. the supervised loss of the labelled source batch;
3. the teacher's pseudo-labels ŷ_t = argmax p_T(x_t) of the (weakly augmented) target batch, with a confidence weight:
   the share of the batch's pixels (samples) whose max probability is ≥ ``pseudo_threshold`` (0.968), or (MIC
   classification) each sample's own confidence; ``ignore_top``/``ignore_bottom`` pixel rows get weight 0 (DAFormer
   on Cityscapes: 15 and 120);
4. ``mix: classmix`` (DACS, segmentation): half of each source image's classes pasted onto the target image, labels
   and weights pasted alike (source pixels weight 1), then the strong view (colour jitter + blur); ``mix: none``:
   the strong view of the target image itself. Loss: ``target_weight`` · mean(weight · CE(student(x_mix), y_mix));
5. ``mask`` (MIC): the strong view of the target with random ``block``-pixel patches hidden (``ratio`` 0.7), trained
   on the teacher's pseudo-labels of the full image with the same weights: ``mask.weight`` · mean(weight · CE).

Evaluation, predictions and exports use the student (as the papers' code does; ``evaluate: teacher`` evaluates and
predicts with the teacher). The teacher is part of the
checkpoint (``teacher.*``), so a resumed run continues with it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from syn2real.adversarial.base import Augmentation
from syn2real.core.display import display_rgb
from syn2real.data.strong_view import StrongViewConfig, strong_view
from syn2real.data.transforms import normalize_stats
from syn2real.losses.feature_distance import CITYSCAPES_THING_CLASS_IDS, feature_distance_loss, thing_class_ids
from syn2real.losses.mean_teacher import (
    block_mask,
    class_mix_masks,
    confidence_weight,
    ema_momentum,
    ema_update,
    mix,
)
from syn2real.methods.base import Batch, DAMethod
from syn2real.methods.module import null_defaults
from syn2real.methods.optim import OptimConfig, deeplab_optim
from syn2real.models.heads import NetworkConfig
from syn2real.models.segmentation import upsample
from syn2real.tasks import Classification, Segmentation, Task

__all__ = ["FeatureDistanceConfig", "MaskConfig", "MeanTeacher"]


@dataclass
class MaskConfig:
    """MIC's masked image consistency.

    Args:
        block: side of the square patches in pixels (MIC: 64 on 512² crops; scale it with the image size).
        ratio: share of patches hidden (MIC: 0.7).
        weight: λ of the masked loss (MIC: 1).
        strong: hide patches of the strong view (colour jitter + blur) of the target, as MIC's default does;
            ``false`` masks the target image as loaded.
    """

    block: int = 64
    ratio: float = 0.7
    weight: float = 1.0
    strong: bool = True

    def __post_init__(self) -> None:
        if self.block < 1 or not 0.0 <= self.ratio <= 1.0 or self.weight < 0:
            raise ValueError(f"mask: block must be >= 1, ratio in [0, 1] and weight >= 0, got {self.block}, "
                             f"{self.ratio}, {self.weight}")


@dataclass
class FeatureDistanceConfig:
    """DAFormer's ImageNet feature distance: the student's bottleneck features of the source images pulled toward
    those of a frozen copy of the initial (ImageNet) backbone, on the feature pixels of "thing" classes.

    Args:
        weight: λ_FD (DAFormer: 0.005).
        classes: the thing class ids; ``null`` = the Cityscapes things DAFormer uses (traffic light, traffic sign,
            person, rider, car, truck, bus, train, motorcycle, bicycle), found by name in the data's classes.
        ratio: a feature pixel counts when at least this share of its label pixels is one thing class (0.75).
    """

    weight: float = 0.005
    classes: list[int] | None = None
    ratio: float = 0.75

    def __post_init__(self) -> None:
        if self.weight < 0 or not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"feature_distance: weight must be >= 0 and ratio in (0, 1], got {self.weight}, "
                             f"{self.ratio}")


@null_defaults(task=lambda: Classification(NetworkConfig()), optim=OptimConfig, strong_view=StrongViewConfig)
class MeanTeacher(DAMethod):
    """DACS / DAFormer / MIC: an EMA teacher pseudo-labels (mixed, masked) target images for the student.

    Args:
        task / optim / augment: as for every method (``augment`` applies to the labelled source batch); ``optim``
            defaults to DeepLab's SGD for segmentation (DACS: 2.5e-4, head ×10, poly 0.9).
        init_checkpoint: start the student (and the teacher, its copy) from a syn2real checkpoint's ``model.*``.
        ema_momentum: α of the teacher (DACS 0.99; DAFormer/MIC 0.999; MIC classification 0.9).
        pseudo_threshold: confidence above which a pseudo-label counts for the weight (0.968).
        pseudo_weight: ``share`` (DACS/DAFormer: one weight, the share of confident pixels/samples of the global
            batch), ``probability`` (MIC classification: each sample's confidence) or ``threshold`` (1 for the
            pixels/samples above ``pseudo_threshold``, 0 for the others; FixMatch-style, not the papers').
        ignore_top / ignore_bottom: pixel rows of the target whose pseudo-labels get weight 0 (DAFormer:
            15 / 120 on 512-px Cityscapes crops; segmentation only).
        mix: ``classmix`` (DACS; segmentation) or ``none`` (the strong view of the target alone).
        target_weight: weight of the mixed/strong target loss (0 = MIC on top of source-only for classification:
            only the masked loss uses the target).
        strong_view: colour jitter + blur of the mixed image and MIC's masked image (DAFormer/MIC: 0.2 / 0.2 / blur).
        mask: MIC's masked image consistency (``null`` = off: DACS / DAFormer).
        feature_distance: DAFormer's ImageNet feature distance on the source's thing classes (``null`` = off;
            segmentation; the frozen copy of the backbone is taken before ``init_checkpoint`` is loaded, i.e. with
            the network's ``weights``).
        pixel_mean / pixel_std: the data's normalisation, to jitter colours in pixel space; ``null`` = read from the
            data module's ``Normalize`` transform.
        bn_statistics: which forward passes update the student's BatchNorm running statistics: ``all`` (source,
            mixed and masked batches; the papers' networks have frozen BatchNorm or LayerNorm, where this does not
            arise) or ``source`` (only the source batch: the mixed and masked batches, with pasted or hidden regions,
            are normalised with their own batch statistics but leave the running ones, used at evaluation, alone).
        evaluate: the network that validation, test and predict use: ``student`` (the papers' code) or ``teacher``
            (e.g. ``syn2real test --ckpt_path ... --model.init_args.evaluate teacher``); ``both``: the student, and
            the teacher's target metrics next to it as ``teacher/<metric>`` (teacher vs student curves).
    """

    def __init__(
        self,
        task: Task | None = None,
        optim: OptimConfig | None = None,
        augment: Augmentation | None = None,
        init_checkpoint: str | None = None,
        ema_momentum: float = 0.99,
        pseudo_threshold: float = 0.968,
        pseudo_weight: Literal["share", "probability", "threshold"] = "share",
        ignore_top: int = 0,
        ignore_bottom: int = 0,
        mix: Literal["classmix", "none"] = "classmix",
        target_weight: float = 1.0,
        strong_view: StrongViewConfig | None = None,
        mask: MaskConfig | None = None,
        feature_distance: FeatureDistanceConfig | None = None,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        bn_statistics: Literal["all", "source"] = "all",
        evaluate: Literal["student", "teacher", "both"] = "student",
    ) -> None:
        super().__init__(task=task, optim=optim, augment=augment)
        segmentation = isinstance(self.task, Segmentation)
        if not 0.0 <= ema_momentum < 1.0:
            raise ValueError(f"model.init_args.ema_momentum must be in [0, 1), got {ema_momentum}")
        if not 0.0 <= pseudo_threshold <= 1.0:
            raise ValueError(f"model.init_args.pseudo_threshold must be in [0, 1], got {pseudo_threshold}")
        if pseudo_weight not in ("share", "probability", "threshold"):
            raise ValueError(f"model.init_args.pseudo_weight must be 'share', 'probability' or 'threshold', got "
                             f"{pseudo_weight!r}")
        if mix not in ("classmix", "none"):
            raise ValueError(f"model.init_args.mix must be 'classmix' or 'none', got {mix!r}")
        if mix == "classmix" and not segmentation:
            raise ValueError("model.init_args.mix 'classmix' pastes classes of label maps: it needs the task "
                             "Segmentation; use mix: none for classification")
        if (ignore_top or ignore_bottom) and not segmentation:
            raise ValueError("model.init_args.ignore_top / ignore_bottom are pixel rows: segmentation only")
        if min(ignore_top, ignore_bottom, target_weight) < 0:
            raise ValueError("model.init_args.ignore_top, ignore_bottom and target_weight must be >= 0")
        if target_weight == 0 and mask is None:
            raise ValueError("model.init_args: target_weight 0 without mask trains on the source alone; "
                             "use SourceOnly, or give a mask (MIC)")
        self.ema_momentum = float(ema_momentum)
        self.pseudo_threshold = float(pseudo_threshold)
        self.pseudo_weight = pseudo_weight
        self.ignore_top, self.ignore_bottom = int(ignore_top), int(ignore_bottom)
        self.mix = mix
        self.target_weight = float(target_weight)
        self.strong_cfg = strong_view or StrongViewConfig()
        self.mask_cfg = mask
        self.pixel_mean = tuple(pixel_mean) if pixel_mean is not None else None
        self.pixel_std = tuple(pixel_std) if pixel_std is not None else None
        if evaluate not in ("student", "teacher", "both"):
            raise ValueError(f"model.init_args.evaluate must be 'student', 'teacher' or 'both', got {evaluate!r}")
        if bn_statistics not in ("all", "source"):
            raise ValueError(f"model.init_args.bn_statistics must be 'all' or 'source', got {bn_statistics!r}")
        self.bn_statistics = bn_statistics
        self.evaluate = evaluate
        if evaluate == "both":
            self.eval_metrics["teacher"] = self.task.build_metrics("teacher")
        if (self.pixel_mean is None) != (self.pixel_std is None):
            raise ValueError("model.init_args.pixel_mean and pixel_std go together (both or neither)")
        self.fd_cfg = feature_distance
        self.imagenet: torch.nn.Module | None = None
        if feature_distance is not None:
            if not segmentation or not hasattr(self.model, "forward_levels_and_bottleneck"):
                raise ValueError("model.init_args.feature_distance compares bottleneck maps on thing-class pixels: it "
                                 "needs the task Segmentation")
            self.imagenet = copy.deepcopy(self.model.backbone)  # the initial (ImageNet) encoder, frozen
            for p in self.imagenet.parameters():
                p.requires_grad_(False)
            self.imagenet.eval()
            self._thing_classes: list[int] | None = feature_distance.classes
        if init_checkpoint is not None:
            self.load_weights(init_checkpoint)
        self.teacher = copy.deepcopy(self.model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        # the optimiser step the teacher was last averaged at (a buffer: checkpointed, so a resumed run goes on)
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))
        # the seed of the per-image draws (mixing, strong view, masks): the run's seed, kept in the checkpoint
        self.register_buffer("draw_seed", torch.tensor(torch.initial_seed() % 2**31, dtype=torch.long))

    def default_optim(self) -> OptimConfig:
        return deeplab_optim() if isinstance(self.task, Segmentation) else OptimConfig()

    def train(self, mode: bool = True) -> MeanTeacher:
        super().train(mode)
        self.teacher.eval()  # the teacher labels with running statistics and no dropout, always
        if self.imagenet is not None:
            self.imagenet.eval()
        return self

    # -- wiring with the data -------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.fd_cfg is not None and self._thing_classes is None and getattr(dm, "classes", None) is not None:
            self._thing_classes = thing_class_ids(list(dm.classes))
        stats = normalize_stats(getattr(dm, "train_transforms_spec", None)) if self.pixel_mean is None else None
        if stats is not None:
            self.pixel_mean, self.pixel_std = stats

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.pixel_mean is None or self.pixel_std is None:
            raise ValueError(
                "MeanTeacher: the data's normalisation is unknown (no Normalize in data.train_transforms); set "
                "model.init_args.pixel_mean and pixel_std"
            )
        return self.pixel_mean, self.pixel_std

    # -- evaluation -----------------------------------------------------------------------------
    @contextmanager
    def _evaluated_network(self, teacher: bool | None = None) -> Iterator[None]:
        """The teacher stands in for ``model`` (which the task evaluates) during the block (``evaluate: teacher``,
        or ``teacher=True``)."""
        if not (self.evaluate == "teacher" if teacher is None else teacher):
            yield
            return
        modules = self._modules
        modules["model"], modules["teacher"] = modules["teacher"], modules["model"]
        try:
            yield
        finally:
            modules["model"], modules["teacher"] = modules["teacher"], modules["model"]

    def eval_step(self, batch: Any, dataloader_idx: int) -> None:
        with self._evaluated_network():
            super().eval_step(batch, dataloader_idx)
        if self.evaluate == "both" and self.eval_domains[dataloader_idx] == "target":
            with self._evaluated_network(teacher=True):
                self.task.eval_step(self, batch[0], batch[1], "teacher")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        with self._evaluated_network():
            return super().predict_step(batch, batch_idx, dataloader_idx)

    # -- the teacher ----------------------------------------------------------------------------
    def update_teacher(self) -> None:
        """Average the student into the teacher once per optimiser step (before the step's pseudo-labels, as in
        the DACS/DAFormer code); nothing at step 0, when the teacher is the student's copy."""
        step = int(self.global_step)
        if step <= int(self.ema_step):
            return
        ema_update(self.teacher, self.model, ema_momentum(step, self.ema_momentum))
        self.ema_step.fill_(step)

    @torch.no_grad()
    def pseudo_labels(self, x_t: torch.Tensor,
                      all_ranks: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The teacher's pseudo-labels of a target batch, their confidence weights and confidences. ``all_ranks``:
        the ``share`` weight counts the global batch (a collective every rank must enter; ``False`` for work done on
        one rank only, such as the W&B pictures, counts this rank's batch)."""
        probs = self.task.levels(self.teacher, x_t)[0].float().softmax(dim=1)
        confidence, labels = probs.max(dim=1)
        count = None
        if (all_ranks and self.pseudo_weight == "share" and self._trainer is not None
                and self.trainer.world_size > 1):
            stats = torch.stack([(confidence >= self.pseudo_threshold).sum(),
                                 torch.tensor(confidence.numel(), device=confidence.device)]).float()
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
            count = (stats[0], stats[1])
        weight = confidence_weight(confidence, self.pseudo_threshold, self.pseudo_weight, count)
        if self.ignore_top:
            weight[:, : self.ignore_top] = 0
        if self.ignore_bottom:
            weight[:, -self.ignore_bottom:] = 0
        return labels, weight, confidence

    # -- the views ------------------------------------------------------------------------------
    def generators(self, n: int, purpose: int) -> list[torch.Generator]:
        """One CPU generator per image of this rank's batch, seeded by (run seed, step, the image's position in the
        global batch, purpose): rank r of W holds positions r, r + W, ... (the samplers' order), so W ranks draw
        exactly what one process with the global batch draws, and a resumed run draws what the uninterrupted one
        did."""
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)
        base = (int(self.draw_seed) * 1_000_003 + int(self.global_step)) * 8 + purpose
        return [torch.Generator().manual_seed((base * 65_537 + i * world + rank) % 2**63) for i in range(n)]

    def strong(self, x: torch.Tensor, purpose: int) -> torch.Tensor:
        mean, std = self._normalisation()
        return strong_view(x, mean, std, self.strong_cfg, self.generators(x.shape[0], purpose))

    def mixed_target(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, labels: torch.Tensor,
                     weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The target view trained on pseudo-labels: ClassMix of source onto target (``mix: classmix``) or the
        target alone, then the strong view. Returns image, labels and weights."""
        if self.mix == "classmix":
            n = min(x_s.shape[0], x_t.shape[0])  # source image i is pasted onto target image i
            if x_s.shape[-2:] != x_t.shape[-2:]:
                raise ValueError(f"ClassMix needs source and target crops of one size, got {tuple(x_s.shape[-2:])} "
                                 f"and {tuple(x_t.shape[-2:])}: set the crops in data.train_transforms")
            masks = class_mix_masks(y_s[:n], self.task.ignore_index, self.generators(n, purpose=0))
            x_t, labels, weight = x_t[:n], labels[:n], weight[:n]
            x = mix(masks, x_s[:n], x_t)
            labels = mix(masks, y_s[:n], labels)
            weight = mix(masks, torch.ones_like(weight), weight)
        else:
            x = x_t
        return self.strong(x, purpose=1), labels, weight

    def masked_target(self, x_t: torch.Tensor) -> torch.Tensor:
        """MIC's masked image: the (strong view of the) target with ``mask.ratio`` of its patches set to 0
        (the normalised mean colour)."""
        cfg = self.mask_cfg
        assert cfg is not None
        x = self.strong(x_t, purpose=2) if cfg.strong else x_t
        visible = block_mask(x.shape[0], x.shape[-2], x.shape[-1], cfg.block, cfg.ratio, device=x.device,
                             generators=self.generators(x.shape[0], purpose=3))
        return x * visible.to(x.dtype)

    # -- training -------------------------------------------------------------------------------
    @contextmanager
    def _target_forward(self) -> Iterator[None]:
        """``bn_statistics: source``: the student's BatchNorm layers keep their running statistics during the block
        (momentum 0: normalised with the batch's own statistics, running averages unchanged)."""
        if self.bn_statistics == "all":
            yield
            return
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0
        try:
            yield
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.update_teacher()
        x_s, y_s = self.source_batch(batch)
        x_t = batch["target"][0]
        if self.fd_cfg is None:
            out = self.supervised_losses(x_s, y_s)
        else:
            out = self.source_losses_with_feature_distance(x_s, y_s)
        loss = out["loss"]
        labels, weight, confidence = self.pseudo_labels(x_t)
        out["pseudo_weight"] = weight.mean()
        out["pseudo_confident"] = (confidence >= self.pseudo_threshold).float().mean()
        out.update(self._pseudo_label_accuracy(batch, labels, confidence))
        if self.target_weight > 0:
            x_m, y_m, w_m = self.mixed_target(x_s, y_s, x_t, labels, weight)
            with self._target_forward():
                mixed = self.task.weighted_loss(self.task.levels(self.model, x_m), y_m, w_m)
            loss = loss + self.target_weight * mixed
            out["mix_ce"] = mixed.detach()
        if self.mask_cfg is not None and self.mask_cfg.weight > 0:
            with self._target_forward():
                masked = self.task.weighted_loss(self.task.levels(self.model, self.masked_target(x_t)), labels,
                                                 weight)
            loss = loss + self.mask_cfg.weight * masked
            out["masked_ce"] = masked.detach()
        out["loss"] = loss
        out["ema_momentum"] = torch.tensor(ema_momentum(max(int(self.ema_step), 1), self.ema_momentum))
        return out

    def thing_classes(self) -> list[int]:
        """The class ids of the feature distance (from the config, else the data's class names)."""
        if self._thing_classes is not None:
            return list(self._thing_classes)
        if self.task.num_classes == 19:
            return list(CITYSCAPES_THING_CLASS_IDS)
        raise ValueError("model.init_args.feature_distance.classes: the thing classes are unknown for "
                         f"{self.task.num_classes} classes without class names; give their ids")

    def source_losses_with_feature_distance(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The supervised loss of the source batch + λ_FD · the ImageNet feature distance of its bottleneck, from
        one forward pass of the student (DAFormer)."""
        assert self.fd_cfg is not None and self.imagenet is not None
        levels, bottleneck = self.model.forward_levels_and_bottleneck(x)
        out = self.supervised_losses(x, y, levels=[upsample(level, x.shape[-2:]) for level in levels])
        with torch.no_grad():
            reference = self.imagenet(self.model.pad_input(x))[-1]
        distance = feature_distance_loss(bottleneck, reference, y, self.thing_classes(), self.fd_cfg.ratio,
                                         self.task.num_classes, self.task.ignore_index)
        return {**out, "loss": out["loss"] + self.fd_cfg.weight * distance, "feature_distance": distance.detach()}

    def _pseudo_label_accuracy(self, batch: Batch, labels: torch.Tensor,
                               confidence: torch.Tensor) -> dict[str, torch.Tensor]:
        """Diagnostics when the target training set carries labels (never a training signal): the accuracy of
        the teacher's pseudo-labels, overall and on the confident ones."""
        y_t = batch["target"][1]
        if y_t.shape != labels.shape:
            return {}
        known = (y_t != self.task.ignore_index) & (y_t >= 0)
        if not bool(known.any()):
            return {}
        right = (labels == y_t) & known
        confident = known & (confidence >= self.pseudo_threshold)
        return {"pseudo_acc": right.sum() / known.sum(),
                "pseudo_acc_confident": (right & confident).sum() / confident.sum().clamp_min(1)}

    # -- pictures -------------------------------------------------------------------------------
    def training_media(self, batch: Batch, max_images: int = 4) -> dict[str, torch.Tensor]:
        """The task's rows, plus for segmentation: target image | teacher pseudo-label | confidence (white ≥
        threshold) | mixed image | mixed label | masked image; for classification: target | strong view | masked."""
        media = super().training_media(batch, max_images)
        if self.pixel_mean is None:
            return media
        x_s, y_s = batch["source"][0][:max_images], batch["source"][1][:max_images]
        x_t = batch["target"][0][:max_images]
        with torch.no_grad():  # on rank 0 only (WandbMedia): no collective
            labels, weight, confidence = self.pseudo_labels(x_t, all_ranks=False)
            x_m, y_m, _ = self.mixed_target(x_s, y_s, x_t, labels, weight)
            x_mask = self.masked_target(x_t) if self.mask_cfg is not None else None
        if isinstance(self.task, Segmentation):
            size = labels.shape[-2:]
            show = [display_rgb(x_t), self.task.colorize(self, labels),
                    (confidence >= self.pseudo_threshold).float().unsqueeze(1).expand(-1, 3, -1, -1),
                    display_rgb(x_m), self.task.colorize(self, y_m)]
            if x_mask is not None:
                show.append(display_rgb(x_mask))
            n = min(v.shape[0] for v in show)
            show = [F.interpolate(v[:n], size=size, mode="nearest") for v in show]
            media["mean_teacher/target"] = torch.stack(show)
        else:
            show = [display_rgb(x_t), display_rgb(x_m)] + ([display_rgb(x_mask)] if x_mask is not None else [])
            media["mean_teacher/target"] = torch.stack(show)
        return media
