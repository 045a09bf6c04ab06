"""``syn2real predict`` output: one CSV row per target image (path, predicted class, confidence); for segmentation
each image's predicted label map is written as ``predictions/<image stem>.png`` and its row names that PNG, the class
covering most pixels and the mean confidence."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from syn2real.callbacks.uncertainty import disagreement_of

__all__ = ["PredictionsCSV"]


class PredictionsCSV(BasePredictionWriter):
    """Writes ``<default_root_dir>/<filename>`` (``predictions.rank<r>.csv`` per rank under DDP).

    Columns: ``path`` (when the dataset knows it), ``pred`` (index), ``class`` (name), ``confidence``, and
    ``disagreement`` when an ensemble or MC dropout predicts (``--uncertainty.*``, classification).
    Rows are written as batches arrive, so memory stays bounded on large target sets; the file is
    complete when ``predict`` returns.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self._file: Any = None
        self._writer: Any = None
        self._path: Path | None = None
        self._disagreement = False

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        name = self.filename
        if trainer.world_size > 1:
            stem, ext = os.path.splitext(name)
            name = f"{stem}.rank{trainer.global_rank}{ext}"
        self._path = Path(trainer.default_root_dir) / name
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._path, "w", newline="")
        self._writer = csv.writer(self._file)
        # an ensemble / MC dropout predictor (callbacks.uncertainty, which runs first) adds its disagreement column
        self._disagreement = (hasattr(getattr(pl_module, "model", None), "last_disagreement")
                              and getattr(getattr(pl_module, "task", None), "kind", "classification") == "classification")
        self._writer.writerow(["path", "pred", "class", "confidence", *(["disagreement"] if self._disagreement else [])])

    @staticmethod
    def _dataset(trainer: L.Trainer) -> Any:
        dm = trainer.datamodule
        return getattr(dm, "datasets", {}).get("target_predict") if dm is not None else None

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any, batch_indices: Any,
        batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:
        if self._writer is None or not isinstance(prediction, dict):
            return
        dataset = self._dataset(trainer)
        if prediction["pred"].ndim == 3:  # segmentation: one label-map PNG per image
            self._write_maps(trainer, dataset, prediction, batch_indices)
            return
        classes = list(getattr(dataset, "classes", []) or [])
        preds = prediction["pred"].tolist()
        confs = prediction["confidence"].tolist()
        indices = list(batch_indices) if batch_indices is not None else [None] * len(preds)
        extra: list[list[str]] = [[] for _ in preds]
        if self._disagreement:
            extra = [[f"{v:.6f}"] for v in disagreement_of(pl_module.model).reshape(len(preds), -1).mean(1).tolist()]
        for idx, pred, conf, more in zip(indices, preds, confs, extra):
            path = ""
            if dataset is not None and idx is not None and hasattr(dataset, "indices"):
                path = str(dataset.base.samples[dataset.indices[idx]][0])
            name = classes[pred] if pred < len(classes) else str(pred)
            self._writer.writerow([path, pred, name, f"{conf:.6f}", *more])

    def _write_maps(self, trainer: L.Trainer, dataset: Any, prediction: dict, batch_indices: Any) -> None:
        """Segmentation: ``<root>/predictions/<image stem>.png`` (train ids, 8-bit) and a row per image with the PNG,
        the mean confidence and the class covering most pixels."""
        from syn2real.callbacks.pixel_pseudo_labels import write_label_png

        out_dir = Path(trainer.default_root_dir) / "predictions"
        maps, confs = prediction["pred"].cpu(), prediction["confidence"].float().cpu()
        indices = list(batch_indices) if batch_indices is not None else [None] * len(maps)
        images = getattr(dataset, "images", None)
        classes = list(getattr(trainer.datamodule, "classes", None) or [])
        for k, (idx, label, conf) in enumerate(zip(indices, maps, confs)):
            source = Path(images[idx]) if images is not None and idx is not None else None
            path = out_dir / (f"{source.stem}.png" if source is not None else f"{idx if idx is not None else k:06d}.png")
            write_label_png(label.numpy().astype("uint8"), path)
            top = int(torch.bincount(label.flatten()).argmax())
            name = classes[top] if top < len(classes) else str(top)
            self._writer.writerow([str(source or ""), str(path), name, f"{float(conf.mean()):.6f}"])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
            if trainer.is_global_zero:
                maps = Path(trainer.default_root_dir) / "predictions"
                extra = f" (label maps in {maps})" if maps.is_dir() else ""
                shown = self._path
                if trainer.world_size > 1:  # one file per rank
                    stem, ext = os.path.splitext(self.filename)
                    shown = self._path.parent / f"{stem}.rank*{ext}"
                print(f"predictions written to {shown}{extra}", flush=True)
