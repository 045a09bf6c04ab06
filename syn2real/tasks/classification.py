"""Image classification (VisDA-2017, digits): one label per image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from syn2real.callbacks.pseudo_labels import PseudoLabelRounds, RoundConfig
from syn2real.core.distributed import global_mean_weight
from syn2real.metrics.classification import ClassificationMetrics
from syn2real.metrics.validators import EntropyValidator, InfoMaxValidator, SNDValidator
from syn2real.models.heads import NetworkConfig, build_classifier
from syn2real.tasks.base import Task

__all__ = ["Classification"]


class Classification(Task):
    """Image classification: a timm backbone + optional bottleneck + linear head; cross-entropy; accuracy,
    class-mean accuracy and ECE per domain; entropy, information-maximisation and SND validators.

    Args:
        network: the classifier (``null`` = the method's default network).
    """

    kind = "classification"

    def __init__(self, network: NetworkConfig | None = None) -> None:
        if network is not None and not isinstance(network, NetworkConfig):
            raise TypeError(
                f"Classification needs task.init_args.network to be a classifier network (backbone, num_classes, "
                f"bottleneck_dim, ...), got {type(network).__name__}"
            )
        self.network = network

    def default_network(self) -> NetworkConfig:
        return NetworkConfig()

    def init_args(self) -> dict[str, Any]:
        return {"network": self.network}

    def build_network(self) -> nn.Module:
        return build_classifier(self.network)

    def levels(self, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        return [model(x)]

    def loss(self, module: Any, levels: Sequence[torch.Tensor], labels: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        loss = F.cross_entropy(levels[0], labels)
        return loss if weight is None else loss * weight

    def masked_loss(self, module: Any, levels: Sequence[torch.Tensor],
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept = labels != self.unlabelled
        per_sample = F.cross_entropy(levels[0], labels.clamp_min(0), reduction="none")
        loss = torch.where(kept, per_sample, torch.zeros_like(per_sample)).sum() / kept.sum().clamp_min(1)
        return loss, global_mean_weight(module, kept.sum())

    def pseudo_label_rounds(self, config: RoundConfig, soft: bool, lrent_alpha: float) -> PseudoLabelRounds:
        return PseudoLabelRounds(config, soft=soft, lrent_alpha=lrent_alpha)

    def pseudo_labelled_target(self, batch: dict[str, Any], rounds: PseudoLabelRounds
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Pseudo-labels are looked up by target item index in the round's tensors (every rank holds them all)."""
        if rounds.labels is None:
            raise RuntimeError("SelfTraining: no pseudo-labels yet; PseudoLabelRounds must run before training")
        if len(batch["target"]) != 3:
            raise ValueError(
                "SelfTraining needs target batches (image, label, index) to look pseudo-labels up; the target "
                "training set of syn2real.data.DomainPairDataModule yields them (TransformedSubset(return_index=True))"
            )
        x_t, _, idx = batch["target"]  # the target label is never used
        labels = rounds.labels.to(idx.device)[idx]
        soft = rounds.soft_labels.to(idx.device)[idx] if rounds.soft_labels is not None else None
        return x_t, labels, soft

    def accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(dim=1) == labels).float().mean()

    def build_metrics(self, domain: str) -> nn.Module:
        return ClassificationMetrics(self.num_classes, prefix=domain)

    def build_validators(self) -> dict[str, nn.Module]:
        return {"entropy": EntropyValidator(), "infomax": InfoMaxValidator(self.num_classes), "snd": SNDValidator()}

    def eval_step(self, module: Any, x: torch.Tensor, y: torch.Tensor, domain: str) -> None:
        logits = module.eval_logits(x)
        module.eval_metrics[domain].update(logits, y)
        if domain == "target":
            probs = logits.detach().float().softmax(dim=1)
            for validator in module.validators.values():
                validator.update(probs)

    def probabilities(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        return module.eval_logits(x).softmax(dim=1)
