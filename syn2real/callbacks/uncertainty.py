"""``--uncertainty.*``: evaluate a deep ensemble or MC dropout instead of the single network, in validate/test/predict.

For the evaluation the method's task network ``model`` is replaced by a predictor returning log of the averaged
softmax (:mod:`syn2real.models.ensemble`), so every metric, validator and prediction of the evaluation is the
ensemble's (its mean probabilities); the network is put back when the evaluation ends. The members' disagreement
(mean KL of the members to their mean, nats) is logged per evaluation domain as ``<domain>/disagreement`` (mean over
samples, exact under DDP) and written to ``predictions.csv`` as a column, for classification. Segmentation gets the
averaged probabilities (averaged at the network's output resolution, before upsampling) but no disagreement.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric

from syn2real.models.checkpoint import load_model_weights
from syn2real.models.ensemble import EnsembleClassifier, MCDropout

__all__ = ["PredictiveUncertainty", "disagreement_of"]


class PredictiveUncertainty(L.Callback):
    """Deep ensembles and MC dropout at evaluation time (validate / test / predict; refused for fit).

    Args:
        mc_dropout: T > 0 evaluates T stochastic passes with dropout on, averaged (MC dropout); the network must have
            a dropout layer with a rate > 0 (classification: ``task.init_args.network.dropout``). 0: off.
        members: further checkpoints whose ``model.*`` weights join the evaluated one (``--ckpt_path``) as members of
            a deep ensemble (same network; each file read with ``weights_only=True``). With ``mc_dropout`` as well,
            every pass runs every member.
    """

    def __init__(self, mc_dropout: int = 0, members: list[str] | None = None) -> None:
        if int(mc_dropout) < 0:
            raise ValueError(f"uncertainty.mc_dropout must be >= 0 (0 = off, T = number of passes), got {mc_dropout}")
        self.mc_dropout = int(mc_dropout)
        self.members = [str(m) for m in (members or [])]
        self._original: nn.Module | None = None
        self._scores: dict[str, MeanMetric] = {}

    @property
    def active(self) -> bool:
        return self.mc_dropout > 0 or bool(self.members)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            raise ValueError(
                "uncertainty.mc_dropout / uncertainty.members evaluate a trained run (validate, test, predict, or "
                "`syn2real ensemble test|validate|predict`); they are not for fit"
            )

    # -- swapping the predictor in and out ----------------------------------------------------------------------
    def _wrap(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or self._original is not None:
            return
        base = pl_module.model
        predictor: nn.Module = base
        if self.members:
            nets = [base]
            for path in self.members:
                member = copy.deepcopy(base)
                load_model_weights(member, path, optional=getattr(getattr(pl_module, "task", None),
                                                                  "optional_weights", ()))
                nets.append(member.eval())
            predictor = EnsembleClassifier(nets)
        if self.mc_dropout:
            predictor = MCDropout(predictor, self.mc_dropout)
        predictor.train(base.training)
        self._original = base
        pl_module.model = predictor
        device = next(base.parameters()).device
        domains = list(getattr(pl_module, "eval_domains", ["target"])) or ["target"]
        self._scores = {d: MeanMetric().to(device) for d in domains}

    def _unwrap(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._original is not None:
            pl_module.model = self._original
            self._original = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wrap(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wrap(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wrap(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unwrap(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unwrap(trainer, pl_module)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unwrap(trainer, pl_module)

    # -- the disagreement score ---------------------------------------------------------------------------------
    def _record(self, pl_module: L.LightningModule, dataloader_idx: int) -> None:
        if self._original is None:
            return
        if getattr(getattr(pl_module, "task", None), "kind", "classification") != "classification":
            # segmentation calls the network once per window / scale / flip: the latest call's disagreement is not
            # the image's, so none is logged (the averaged probabilities are still what is evaluated)
            return
        value = getattr(pl_module.model, "last_disagreement", None)
        domains = list(self._scores)
        if value is None or dataloader_idx >= len(domains):
            return
        per_sample = value.reshape(value.shape[0], -1).mean(dim=1)
        self._scores[domains[dataloader_idx]].update(per_sample)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._record(pl_module, dataloader_idx)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._record(pl_module, dataloader_idx)

    def _log(self, pl_module: L.LightningModule) -> None:
        for domain, metric in self._scores.items():
            if metric.update_count:
                pl_module.log(f"{domain}/disagreement", metric.compute(), sync_dist=False)  # synced by torchmetrics
                metric.reset()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module)


def disagreement_of(model: nn.Module) -> torch.Tensor | None:
    """The per-sample disagreement of the latest forward of an ensemble / MC dropout predictor, else ``None``."""
    return getattr(model, "last_disagreement", None)
