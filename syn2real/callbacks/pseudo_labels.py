"""Self-training rounds: predict on every unlabelled target image, choose class-balanced thresholds, pseudo-label.

At the first epoch of each round (every ``epochs_per_round`` epochs) the current model predicts the whole
target training set (evaluation transforms, eval mode). Under DDP each rank predicts a disjoint shard and the
probabilities are gathered, so every rank computes the thresholds from *all* predictions and holds identical
pseudo-labels, the same as one process would. Per round it records the portion, how many images each class
kept, the pseudo-labels' accuracy and the target ECE where the target has labels for evaluation (never used for
training), in ``<default_root_dir>/self_training_rounds.json``, the logger and ``metrics.json``.

The probabilities are the softmax of the method's forward pass, or what its ``pseudo_label_probabilities`` hook
returns (:class:`~syn2real.core.interfaces.SupportsPseudoLabelProbabilities`: DRST's robust classifier), with
per-sample statistics (DRST: the density ratio) gathered alongside and recorded as means per round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset

from syn2real.core.interfaces import SupportsPseudoLabelProbabilities
from syn2real.io import write_json_atomic
from syn2real.losses.self_training import (
    class_balanced_thresholds,
    class_balanced_thresholds_from_histogram,
    confidence_histogram,
    lrent_soft_labels,
    portion_schedule,
    pseudo_labels,
)
from syn2real.metrics.calibration import expected_calibration_error

__all__ = ["PseudoLabelRounds", "RoundConfig", "predict_probs", "predict_round"]

@dataclass
class RoundConfig:
    """The self-training schedule (Zou et al., ECCV 2018).

    Args:
        epochs_per_round: training epochs between two pseudo-labelling steps (official code: 2; 3 rounds).
        portion_start / portion_step / portion_cap: p of round r = min(start + r·step, cap) (0.2, 0.05, 0.5).
        thresholds: ``exact`` (sort all gathered confidences) or ``histogram`` (per-class confidence histograms
            with ``bins`` bins, all-reduced: memory independent of the number of images); ``null`` (default) =
            ``exact`` for images, ``histogram`` for pixels (the only one segmentation supports).
        bins: histogram bins.
        filename: per-round record inside ``trainer.default_root_dir``.
    """

    epochs_per_round: int = 2
    portion_start: float = 0.2
    portion_step: float = 0.05
    portion_cap: float = 0.5
    thresholds: Literal["exact", "histogram"] | None = None
    bins: int = 10000
    filename: str = "self_training_rounds.json"


def _batch_outputs(pl_module: L.LightningModule, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The probabilities the rounds label from and per-sample statistics: the method's hook when it has one
    (DRST's robust classifier), else the softmax of its forward pass and no statistics."""
    if isinstance(pl_module, SupportsPseudoLabelProbabilities):
        probs, stats = pl_module.pseudo_label_probabilities(x)
        return probs.float(), {k: v.float().reshape(-1) for k, v in stats.items()}
    return pl_module(x).float().softmax(dim=1), {}


@torch.no_grad()
def predict_round(
    trainer: L.Trainer, pl_module: L.LightningModule, dataset: Any, batch_size: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Class probabilities (N, C) of ``pl_module`` on every item of ``dataset`` and its named per-sample statistics
    (N,) each (:class:`~syn2real.core.interfaces.SupportsPseudoLabelProbabilities`), identical on all ranks.

    Rank r of W predicts items r, r+W, r+2W, ...; the shards (probabilities and statistics side by side) are padded
    to one length, all-gathered and put back in dataset order."""
    world, rank = trainer.world_size, trainer.global_rank
    n = len(dataset)
    indices = list(range(rank, n, world)) or [0]  # an empty shard still learns the statistics' names (sliced off)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=0)
    was_training = pl_module.training
    pl_module.eval()
    outputs = [_batch_outputs(pl_module, batch[0].to(pl_module.device)) for batch in loader]
    pl_module.train(was_training)
    names = sorted(outputs[0][1]) if outputs else []
    local = torch.cat([torch.cat([p, *(st[k][:, None] for k in names)], dim=1) for p, st in outputs])
    local = local[: len(range(rank, n, world))]
    num_classes = int(pl_module.network_cfg.num_classes)
    if local.shape[1] != num_classes + len(names):
        raise ValueError(f"self-training predicted {local.shape[1] - len(names)} class probabilities per image, "
                         f"expected model.task.network.num_classes = {num_classes}")
    if world == 1:
        table = local
    else:
        per_rank = math.ceil(n / world)
        padded = torch.zeros(per_rank, local.shape[1], device=local.device)
        padded[: local.shape[0]] = local
        gathered = trainer.strategy.all_gather(padded)  # (W, per_rank, C + S)
        table = torch.empty(n, local.shape[1], device=local.device)
        for r in range(world):
            count = len(range(r, n, world))
            table[r::world] = gathered[r, :count]
    return table[:, :num_classes], {k: table[:, num_classes + i] for i, k in enumerate(names)}


def predict_probs(trainer: L.Trainer, pl_module: L.LightningModule, dataset: Any, batch_size: int) -> torch.Tensor:
    """The class probabilities of :func:`predict_round` (N, C), identical on all ranks."""
    return predict_round(trainer, pl_module, dataset, batch_size)[0]


class PseudoLabelRounds(L.Callback):
    """Computes the pseudo-labels of each self-training round; the method reads :attr:`labels` (N,) (−1 =
    ignored) and, for CRST-LRENT, :attr:`soft_labels` (N, C) by the target item index."""

    def __init__(self, config: RoundConfig | None = None, soft: bool = False, lrent_alpha: float = 0.25) -> None:
        self.cfg = config or RoundConfig()
        if self.cfg.epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be >= 1, got {self.cfg.epochs_per_round}")
        self.soft = soft
        self.lrent_alpha = lrent_alpha
        self.round_idx: int | None = None
        self.labels: torch.Tensor | None = None
        self.soft_labels: torch.Tensor | None = None
        self.thresholds: torch.Tensor | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return "PseudoLabelRounds"

    # -- the round --------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        round_idx = trainer.current_epoch // self.cfg.epochs_per_round
        if self.labels is not None and self.round_idx == round_idx:
            return  # resumed inside a round whose pseudo-labels were restored from the checkpoint
        self.compute_round(trainer, pl_module, round_idx)

    def compute_round(self, trainer: L.Trainer, pl_module: L.LightningModule, round_idx: int) -> None:
        dm = trainer.datamodule
        datasets = getattr(dm, "datasets", None) or {}
        if "target_predict" not in datasets:
            raise RuntimeError(
                "self-training needs the unlabelled target images with evaluation transforms as "
                "datamodule.datasets['target_predict'] (syn2real.data.DomainPairDataModule provides it), "
                f"got datasets {sorted(datasets)}"
            )
        dataset = datasets["target_predict"]
        batch_size = int(getattr(dm, "eval_batch_size", None) or getattr(dm, "batch_size", 64))
        probs, stats = predict_round(trainer, pl_module, dataset, batch_size)
        cfg = self.cfg
        portion = portion_schedule(round_idx, cfg.portion_start, cfg.portion_step, cfg.portion_cap)
        if cfg.thresholds in (None, "exact"):
            thresholds = class_balanced_thresholds(probs, portion)
        else:
            hist = confidence_histogram(probs, cfg.bins)
            thresholds = class_balanced_thresholds_from_histogram(hist, portion, dtype=probs.dtype)
        labels = pseudo_labels(probs, thresholds, ignore_index=-1)
        self.round_idx = round_idx
        self.thresholds = thresholds
        self.labels = labels
        self.soft_labels = lrent_soft_labels(probs, thresholds, self.lrent_alpha) if self.soft else None
        record = self._record(round_idx, portion, probs, labels, thresholds, dataset, pl_module)
        for name, values in stats.items():  # e.g. DRST's density ratio: over the target set and the kept samples
            kept = labels >= 0
            record[f"mean_{name}"] = float(values.mean())
            record[f"mean_{name}_kept"] = float(values[kept].mean()) if bool(kept.any()) else None
        self.history.append(record)
        scalars = {f"self_training/{k}": float(v) for k, v in record.items() if isinstance(v, (int, float))}
        for name, n_pred, n_kept in zip(record["classes"], record["predicted_per_class"], record["kept_per_class"]):
            scalars[f"self_training/kept_fraction/{name}"] = n_kept / n_pred if n_pred else 0.0
        pl_module.log_dict(scalars, on_epoch=True, on_step=False, rank_zero_only=True)
        if trainer.is_global_zero:
            kept = ", ".join(f"{c}:{k}" for c, k in zip(record["classes"], record["kept_per_class"]))
            acc = record.get("pseudo_label_acc")
            rank_zero_info(
                f"self-training round {round_idx}: portion {portion:.2f}, kept {record['kept']}/{record['total']} "
                f"({kept})" + (f", pseudo-label acc {100 * acc:.2f} %" if acc is not None else "")
            )
            write_json_atomic({"rounds": self.history}, Path(trainer.default_root_dir) / cfg.filename)

    @staticmethod
    def _record(
        round_idx: int,
        portion: float,
        probs: torch.Tensor,
        labels: torch.Tensor,
        thresholds: torch.Tensor,
        dataset: Any,
        pl_module: L.LightningModule,
    ) -> dict[str, Any]:
        c = probs.shape[1]
        pred = probs.argmax(dim=1)
        kept = labels >= 0
        predicted = torch.bincount(pred, minlength=c)
        kept_per_class = torch.bincount(labels[kept], minlength=c)
        classes = list(getattr(dataset, "classes", None) or range(c))
        record: dict[str, Any] = {
            "round": round_idx,
            "portion": portion,
            "total": int(labels.numel()),
            "kept": int(kept.sum()),
            "kept_fraction": float(kept.float().mean()),
            "classes": [str(x) for x in classes],
            "predicted_per_class": predicted.tolist(),
            "kept_per_class": kept_per_class.tolist(),
            "thresholds": [float(t) for t in thresholds.tolist()],
            "pseudo_label_acc": None,
            "target_acc": None,
            "target_ece": None,
        }
        targets = torch.as_tensor(list(getattr(dataset, "targets", [])), device=probs.device)
        if targets.numel() == labels.numel() and bool((targets >= 0).all()):
            # evaluation labels of the target exist (benchmarks): measure, never train on them
            if kept.any():
                record["pseudo_label_acc"] = float((labels[kept] == targets[kept]).float().mean())
            per_class = []
            for k in range(c):
                mask_k = kept & (labels == k)
                per_class.append(float((targets[mask_k] == k).float().mean()) if mask_k.any() else None)
            record["pseudo_label_acc_per_class"] = per_class
            record["target_acc"] = float((pred == targets).float().mean())
            record["target_ece"] = float(expected_calibration_error(probs, targets))
        return record

    # -- checkpointing: a resumed run reuses the round's pseudo-labels ----------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round_idx": self.round_idx,
            "labels": None if self.labels is None else self.labels.cpu(),
            "soft_labels": None if self.soft_labels is None else self.soft_labels.cpu(),
            "thresholds": None if self.thresholds is None else self.thresholds.cpu(),
            "history": self.history,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round_idx = state_dict.get("round_idx")
        self.labels = state_dict.get("labels")
        self.soft_labels = state_dict.get("soft_labels")
        self.thresholds = state_dict.get("thresholds")
        self.history = list(state_dict.get("history") or [])
