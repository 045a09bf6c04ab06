"""Pixel-level self-training rounds (CBST/CRST for segmentation) with bounded memory.

Storing every pixel's probabilities is impossible at Cityscapes scale (2,975 × 1024 × 512 × 19 floats), so a round
makes two streamed passes over the target training images (evaluation transforms, eval mode, the method's inference
settings):

1. every rank predicts its shard (images r, r+W, ...) and accumulates a per-class confidence histogram (C × ``bins``
   counts, :func:`~syn2real.losses.self_training.confidence_histogram`); the histograms are all-reduced (sum), so
   every rank derives the same class-balanced thresholds k_c from all pixels of all ranks;
2. every rank predicts its shard again and writes ŷ = argmax p_c / k_c (kept where ≥ 1, else 255) as a PNG per image
   into ``<default_root_dir>/pseudo_labels/`` (atomically), which the target training set then reads and crops with
   its image. Under DDP on several nodes that folder must be on shared storage.

The first round runs at ``on_fit_start``, before the training loader's workers start reading; later rounds at the
first epoch of each round. Each round records the portion, thresholds, kept fraction per class and, where the target
list has labels (diagnostics only, never trained on), the pseudo-labels' pixel accuracy and mIoU on kept pixels, in
``self_training_rounds.json``, the logger and ``metrics.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Subset

from syn2real.core.labels import IGNORE_INDEX
from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.io import atomic_write, write_json_atomic
from syn2real.losses.self_training import (
    class_balanced_thresholds_from_histogram,
    confidence_histogram,
    portion_schedule,
    pseudo_labels,
)
from syn2real.metrics.segmentation import iou_from_confusion, segment

__all__ = ["PixelPseudoLabelRounds", "write_label_png"]


def write_label_png(label: np.ndarray, path: Path) -> None:
    """Write an HxW uint8 label map as a PNG, atomically (:func:`syn2real.io.atomic_write`)."""
    image = Image.fromarray(label.astype(np.uint8))
    atomic_write(path, lambda f: image.save(f, format="PNG"))


class PixelPseudoLabelRounds(L.Callback):
    """Writes each round's pixel pseudo-labels for the target training set (see the module docstring).

    ``config`` is the images' :class:`~syn2real.callbacks.pseudo_labels.RoundConfig`; pixels always take their
    thresholds from confidence histograms (``bins``: the threshold is the lower edge of the bin holding the exact
    value, at most 1/bins looser than the sort-based one), so ``thresholds`` must be ``null`` or ``histogram``."""

    def __init__(self, config: RoundConfig | None = None, folder: str = "pseudo_labels") -> None:
        self.cfg = config or RoundConfig()
        if self.cfg.thresholds == "exact":
            raise ValueError("segmentation self-training computes thresholds from confidence histograms "
                             "(rounds.thresholds: histogram or null); 'exact' would hold every pixel's probabilities")
        if self.cfg.epochs_per_round < 1 or self.cfg.bins < 1:
            raise ValueError(f"epochs_per_round and bins must be >= 1, got {self.cfg.epochs_per_round}, {self.cfg.bins}")
        self.folder = folder
        self._unlogged: dict[str, float] = {}
        self.round_idx: int | None = None
        self.thresholds: torch.Tensor | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return "PixelPseudoLabelRounds"

    def _dataset(self, trainer: L.Trainer, key: str) -> Any:
        datasets = getattr(trainer.datamodule, "datasets", None) or {}
        if key not in datasets:
            raise RuntimeError(
                f"pixel self-training needs datamodule.datasets[{key!r}] (syn2real.data.SegmentationDataModule "
                f"provides it), got {sorted(datasets)}"
            )
        return datasets[key]

    def pseudo_label_dir(self, trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.folder

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            # set before the training loader (and its workers) exists, so every worker's copy reads the folder
            self._dataset(trainer, "target_train").pseudo_label_dir = self.pseudo_label_dir(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.round_idx is None:  # not restored from a checkpoint
            self.compute_round(trainer, pl_module, 0, log=False)  # self.log is not allowed in on_fit_start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        round_idx = trainer.current_epoch // self.cfg.epochs_per_round
        if self.round_idx != round_idx:
            self.compute_round(trainer, pl_module, round_idx)
        elif self._unlogged:  # the round computed at on_fit_start, where logging is not allowed
            pl_module.log_dict(self._unlogged, on_epoch=True, on_step=False, rank_zero_only=True)
        self._unlogged = {}

    # -- the round --------------------------------------------------------------------------------
    def _shard_loader(self, trainer: L.Trainer, dataset: Any) -> DataLoader:
        indices = list(range(trainer.global_rank, len(dataset), trainer.world_size))
        batch_size = int(getattr(trainer.datamodule, "eval_batch_size", None) or 1)
        return DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=0)

    @torch.no_grad()
    def _probs(self, pl_module: L.LightningModule, x: torch.Tensor) -> torch.Tensor:
        return segment(pl_module.model, x.to(pl_module.device), pl_module.network_cfg.num_classes,
                       getattr(getattr(pl_module, "task", None), "inference", None))

    def _all_reduce(self, trainer: L.Trainer, tensor: torch.Tensor) -> torch.Tensor:
        if trainer.world_size == 1:
            return tensor
        return trainer.strategy.reduce(tensor, reduce_op="sum")

    @torch.no_grad()
    def compute_round(self, trainer: L.Trainer, pl_module: L.LightningModule, round_idx: int, log: bool = True) -> None:
        cfg = self.cfg
        dataset = self._dataset(trainer, "target_predict")
        num_classes = int(pl_module.network_cfg.num_classes)
        if cfg.bins < num_classes:  # a max-probability >= 1/C would fall in bin 0, whose lower edge 0 is no threshold
            raise ValueError(f"rounds.bins ({cfg.bins}) must be at least the number of classes ({num_classes})")
        was_training = pl_module.training
        pl_module.eval()
        try:
            # pass 1: all-reduced confidence histograms -> thresholds identical on every rank
            hist = torch.zeros(num_classes, cfg.bins, dtype=torch.float64, device=pl_module.device)
            for batch in self._shard_loader(trainer, dataset):
                hist += confidence_histogram(self._probs(pl_module, batch[0]), cfg.bins).to(hist)
            hist = self._all_reduce(trainer, hist)
            portion = portion_schedule(round_idx, cfg.portion_start, cfg.portion_step, cfg.portion_cap)
            thresholds = class_balanced_thresholds_from_histogram(hist, portion, dtype=torch.float32)
            # pass 2: pseudo-labels of this rank's shard, one PNG per image
            out_dir = self.pseudo_label_dir(trainer)
            stats = torch.zeros(2, num_classes, dtype=torch.float64, device=pl_module.device)  # predicted, kept
            confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=pl_module.device)
            train_set = self._dataset(trainer, "target_train")
            for x, y, idx in self._shard_loader(trainer, dataset):
                probs = self._probs(pl_module, x)
                labels = pseudo_labels(probs, thresholds, ignore_index=IGNORE_INDEX)
                kept = labels != IGNORE_INDEX
                stats[0] += torch.bincount(probs.argmax(1).flatten(), minlength=num_classes).to(stats)
                stats[1] += torch.bincount(labels[kept], minlength=num_classes).to(stats)
                y = y.to(labels.device)
                known = kept & (y != IGNORE_INDEX)
                if bool(known.any()):
                    pair = y[known] * num_classes + labels[known]
                    confusion += torch.bincount(pair, minlength=num_classes**2).reshape(num_classes, -1).to(confusion)
                for label, i in zip(labels.cpu().numpy().astype(np.uint8), idx.tolist()):
                    write_label_png(label, out_dir / train_set.pseudo_label_path(int(i)).name)
            stats = self._all_reduce(trainer, stats)
            confusion = self._all_reduce(trainer, confusion)
            trainer.strategy.barrier("pseudo_labels_written")
        finally:
            pl_module.train(was_training)
        self.round_idx = round_idx
        self.thresholds = thresholds.cpu()
        record = self._record(round_idx, portion, thresholds, stats.cpu(), confusion.cpu(), dataset, trainer)
        self.history.append(record)
        scalars = {f"self_training/{k}": float(v) for k, v in record.items() if isinstance(v, (int, float))}
        if log:
            pl_module.log_dict(scalars, on_epoch=True, on_step=False, rank_zero_only=True)
        else:
            self._unlogged = scalars
        if trainer.is_global_zero:
            rank_zero_info(
                f"self-training round {round_idx}: portion {portion:.2f}, kept {100 * record['kept_fraction']:.1f} % "
                "of pixels" + (f", pseudo-label mIoU {100 * record['pseudo_label_miou']:.2f} %"
                               if record.get("pseudo_label_miou") is not None else "")
            )
            write_json_atomic({"rounds": self.history}, Path(trainer.default_root_dir) / cfg.filename)

    @staticmethod
    def _record(round_idx: int, portion: float, thresholds: torch.Tensor, stats: torch.Tensor,
                confusion: torch.Tensor, dataset: Any, trainer: L.Trainer) -> dict[str, Any]:
        predicted, kept = stats
        classes = list(getattr(trainer.datamodule, "classes", None) or range(len(predicted)))
        total = float(predicted.sum())
        record: dict[str, Any] = {
            "round": round_idx,
            "portion": portion,
            "pixels": int(total),
            "kept": int(kept.sum()),
            "kept_fraction": float(kept.sum()) / max(total, 1.0),
            "classes": [str(c) for c in classes],
            "thresholds": [None if math.isinf(t) else float(t) for t in thresholds.tolist()],
            "kept_fraction_per_class": [float(k / p) if p > 0 else None for k, p in zip(kept.tolist(), predicted.tolist())],
            "pseudo_label_acc": None,
            "pseudo_label_miou": None,
        }
        if confusion.sum() > 0:
            iou = iou_from_confusion(confusion)
            valid = ~torch.isnan(iou)
            record["pseudo_label_acc"] = float(confusion.diagonal().sum() / confusion.sum())
            record["pseudo_label_miou"] = float(iou[valid].mean()) if bool(valid.any()) else None
            record["pseudo_label_iou_per_class"] = [None if math.isnan(v) else float(v) for v in iou.tolist()]
        return record

    # -- checkpointing: a resumed run reuses the round's pseudo-labels on disk -------------------
    def state_dict(self) -> dict[str, Any]:
        return {"round_idx": self.round_idx, "thresholds": self.thresholds, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round_idx = state_dict.get("round_idx")
        self.thresholds = state_dict.get("thresholds")
        self.history = list(state_dict.get("history") or [])
